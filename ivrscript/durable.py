"""Durable calls: the driver between a call's stored log and its engine (standard library only).

"A call is its log" (DESIGN.md), stored. Every input the engine consumes is appended to the
call's log in a :class:`~ivrscript.stores.CallStore` BEFORE the engine sees it, and the engine
is only ever fed from log entries, live or in a replay, through the same code. So a process
that has no live generator for a call (a restart, an eviction from the cache, a lease that
moved) rebuilds it exactly by feeding the logged entries to a fresh engine.

The log of one call, entry kinds and their data:

``enter``     ``{"body": on-call-enter body, "script": {"file", "function", "hash"}}``
``callback``  ``{"kind", "command", "status", "commandId", "digits"}`` (updates), ``{"kind"}``
              (exit), ``{"kind", "message", "errorCode"}`` (command errors); deduped by key
``request``   ``{"token", "op", "args", "command", "where"}``: a request as it is issued
``outcome``   ``{"req": seq of the request, "ok", "command_id" | "status", "error_code",
              "message", "method", "path", "retry_after"}``
``timer``     ``{"key", "event", "token", "seconds"}``: a durable timer fired
``effect``    ``{"req", "value"}`` or ``{"req", "error": {"type", "message"}}``
``abort``     ``{"type", "message"}``: the call was stopped from outside, or drifted
``end``       ``{"reason"}``

Order of consumption (the same live and in replay): entries in log order, except that a
request's outcome is consumed right after the request (the platform's answer to a POST is
synchronous; callbacks that arrived meanwhile come after it). ``request`` entries are not
inputs: a replay compares each request the script issues with the next logged one, and a
difference raises :class:`~ivrscript.errors.ScriptChanged` at that yield. A logged request with
no outcome was in flight at a crash: it is the one request that may be sent again.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import inspect
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .call import Call
from .engine import (
    Abort,
    CallEngine,
    CommandError,
    EffectDone,
    Exited,
    Finished,
    GoneTimeout,
    Overdue,
    Request,
    Resend,
    SendFailed,
    Sent,
    Update,
    Wait,
    update_key,
)
from .errors import IvrError, PlatformError, RetryLater, ScriptChanged
from .stores.base import CallStore, LeaseLost, LogEntry, StoreError, StoreUnavailable, write
from .text import shown

__all__ = ["Driver", "CallRunner", "script_identity", "callback_entry", "default_store_url",
           "store_path", "ENTRY_KINDS"]

log = logging.getLogger("ivrscript.durable")

MAX_DIGITS = 128  # keys of one update kept in the log
ENTRY_KINDS = ("enter", "callback", "request", "outcome", "timer", "effect", "abort", "end")
_INPUTS = frozenset(("enter", "callback", "timer", "effect", "abort"))


def store_path(environ: Mapping[str, str] | None = None) -> str:
    """Where live mode keeps calls' logs by default: ``$XDG_STATE_HOME/ivrscript/calls.db``,
    else ``~/.local/state/ivrscript/calls.db``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ivrscript", "calls.db")


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """The store URL live mode uses without ``--store``."""
    return "sqlite:///" + os.path.abspath(store_path(environ))


# The identity of each script object, computed once: reading and hashing the source costs
# more than a whole replay of a short call, and a function's code does not change after it is
# made (a file edited since, as --reload sees it, does not change the running function).
_IDENTITIES: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


def script_identity(script: Callable[..., Any]) -> dict[str, str]:
    """The script's file, function and source hash, stored at enter (a new dict each time;
    computed once per script object)."""
    try:
        known = _IDENTITIES.get(script)
    except TypeError:  # not weakly referenceable or not hashable: computed each time
        return _identity(script)
    if known is None:
        known = _identity(script)
        try:
            _IDENTITIES[script] = known
        except TypeError:
            pass
    return dict(known)


def _identity(script: Callable[..., Any]) -> dict[str, str]:
    target = inspect.unwrap(script)
    try:
        source = inspect.getsource(target)
    except Exception:  # no file, or a file edited since (a half-typed change: TokenError)
        source = getattr(getattr(target, "__code__", None), "co_code", b"").hex()
    try:
        filename = inspect.getsourcefile(target) or "?"
    except TypeError:
        filename = "?"
    return {"file": filename, "function": getattr(target, "__qualname__", repr(target)),
            "hash": hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]}


def callback_entry(kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """What the log keeps of a callback other than on-call-enter (only what the engine
    consumes) and its dedupe key (None: not deduped here)."""
    if kind == "on-command-update":
        params = body.get("parameters") or {}
        digits = params.get("digits")
        if isinstance(digits, str) and len(digits) > MAX_DIGITS:
            digits = digits[:MAX_DIGITS]  # no keypad sends more; a forged flood stays small
        data = {"kind": kind, "command": body["command"], "status": body["status"],
                "commandId": body.get("commandId"), "digits": digits}
        if data["commandId"] is None:
            return data, None  # no id: the engine tells stale collect updates apart by time
        return data, "u:" + update_key(data["command"], data["commandId"], data["status"],
                                       data["digits"]).hex()
    if kind == "on-call-exit":
        return {"kind": kind}, "exit"
    data = {"kind": kind, "message": body.get("message"), "errorCode": body.get("errorCode")}
    raw = json.dumps([body.get("commandId"), data["message"], data["errorCode"]])
    return data, "e:" + hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


# A command answered 409 this soon after the enter is sent again (see _before_answer_seen).
_EARLY_409_WINDOW = 2.0
_EARLY_409_FIRST = 0.02


@dataclass(slots=True)
class _Pending:
    """One call's writes waiting for its next round trip (see Driver.append)."""

    entries: list[tuple[str, dict[str, Any], str | None, float | None]] = field(
        default_factory=list)
    schedule: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)


class _Corrupt(Exception):
    """A log entry that cannot be read back."""


class _Seqs(list):  # type: ignore[type-arg]
    """A few seqs (a list is a third of an empty set's size): what ``CallRunner.own`` holds
    between appending entries and loading them back, a handful at most."""

    __slots__ = ()

    def add(self, seq: int) -> None:
        if seq not in self:
            self.append(seq)

    def discard(self, seq: int) -> None:
        if seq in self:
            self.remove(seq)


class _Replay:
    """What a replay (a cache miss) still has to match; dropped once the call goes live."""

    __slots__ = ("requests", "head", "outcomes", "effect_results", "fired", "aborts",
                 "deferred")

    def __init__(self) -> None:
        self.requests: list[LogEntry] = []  # logged requests, in order; head: the next one
        self.head = 0
        self.outcomes: dict[int, LogEntry] = {}  # by request seq
        self.effect_results: set[int] = set()  # request seqs with a result
        self.fired: set[str] = set()  # timer keys already fired
        self.aborts: list[LogEntry] = []
        self.deferred: list[tuple[int, Wait, float]] = []  # the replay's timers

    def next_request(self) -> LogEntry | None:
        return self.requests[self.head] if self.head < len(self.requests) else None

    def remaining(self) -> list[LogEntry]:
        return self.requests[self.head:]


@dataclass(slots=True, eq=False)
class CallRunner:
    """One call this process drives: its engine (None until the enter is fed), where it is in
    the log, and what a replay still has to match.

    A parked call keeps one of these for as long as it is cached, so containers are made
    only when needed (``_replay`` only on a cache miss, dropped once the call is live)."""

    session_id: str
    engine: CallEngine | None = None
    call: Call | None = None
    loaded: int = 0  # highest seq loaded from the store
    cursor: int = 0  # highest seq fed in log order
    _own: _Seqs | None = None  # appended here, already consumed (see ``own``)
    _errors: dict[int, BaseException] | None = None  # see ``live_errors``
    lease_at: float = -1e9  # monotonic time the lease was last taken or renewed
    _pending: list[LogEntry] | None = None  # inputs loaded, not yet fed, in log order
    _head: int = 0  # the next of _pending to feed
    _replay: _Replay | None = None
    _tokens: dict[int, int] | None = None  # effect request seq -> token
    steps: int = 0  # requests matched or logged so far
    now: float = 0.0  # the logged time of the entry being fed (the engine's clock)
    replaying: bool = True
    observed: bool = False  # this process received the call's enter and announced the call
    started: bool = False  # the enter was fed to the engine
    entered_at: float = 0.0  # the logged time of the enter
    overdue_key: str | None = None
    done: bool = False
    scheduled: bool = False
    wake_again: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def own(self) -> _Seqs:
        """Seqs this process appended and consumed already (skipped when loaded back); a
        set's add, discard and ``in``."""
        if self._own is None:
            self._own = _Seqs()
        return self._own

    @property
    def live_errors(self) -> dict[int, BaseException]:
        """Effect exceptions raised in this process, by request token (re-raised as is)."""
        if self._errors is None:
            self._errors = {}
        return self._errors

    @property
    def entries(self) -> dict[int, LogEntry]:
        """The inputs loaded and not yet fed, by seq (a snapshot)."""
        pending = self._pending
        return {} if pending is None else {e.seq: e for e in pending[self._head:]}

    @property
    def requests(self) -> list[LogEntry]:
        """The logged requests a replay has not matched yet (a snapshot)."""
        return [] if self._replay is None else self._replay.remaining()

    @property
    def deferred(self) -> list[tuple[int, Wait, float]]:
        """Timers a replay met, set once it is over (a snapshot)."""
        return [] if self._replay is None else list(self._replay.deferred)

    def effect_token(self, seq: int, token: int) -> None:
        if self._tokens is None:
            self._tokens = {}
        self._tokens[seq] = token

    def clock(self) -> float:
        """The engine's clock: the logged time of the entry being fed."""
        return self.now

    def replay_state(self) -> _Replay:
        if self._replay is None:
            self._replay = _Replay()
        return self._replay


class Driver:
    """Drives calls from their stored logs for one :class:`~ivrscript.App`.

    ``host`` is the app: it builds engines (``new_engine``), sends requests (``send``), runs
    effects (``run_effect``), and hears about calls entering and ending.
    """

    def __init__(self, store: CallStore, host: Any, *, owner: str, cache_size: int,
                 lease_ttl: float) -> None:
        self.store = store
        self.host = host
        self.owner = owner
        self.cache_size = max(int(cache_size), 1)
        self.lease_ttl = lease_ttl
        self.cache: collections.OrderedDict[str, CallRunner] = collections.OrderedDict()
        # Calls whose lease this process holds (cached or not): when it was last confirmed
        # (monotonic). Renewed by every fenced write, else by the housekeeper when due.
        self.leases: dict[str, float] = {}
        self.lock = threading.Lock()
        self._local = threading.local()
        # Entries this process appended to a cached call's log (callbacks, timer firings,
        # effect results), handed to its runner so the drain need not load them again; calls
        # another process appended to (load what is new); writes waiting for the call's next
        # round trip (outcomes, timers: written before anything acts on them).
        self._inbox: dict[str, list[LogEntry]] = {}
        self._stale: set[str] = set()
        self._pending: dict[str, _Pending] = {}
        # True when the host hands every entry it appends to offer() and reports every other
        # append with news(): an empty inbox then means nothing new, without a load.
        self.hands_entries = False

    # -- appending ---------------------------------------------------------------------------

    def append(self, session_id: str, kind: str, data: dict[str, Any], *,
               key: str | None = None, at: float | None = None) -> int | None:
        """Append for a call this process drives (its own entries: no wake-up needed).

        An outcome waits for the call's next write (the next request, the end, or the end of
        the drain, whichever comes first: one round trip for both); every other entry is
        written at once with what waits, under the call's lease (fencing: a process that
        lost the call writes nothing, :class:`LeaseLost`), so a request is logged, the lease
        renewed and the previous outcome logged in one round trip before it is sent."""
        if kind == "outcome":
            self._pending_for(session_id).entries.append((kind, data, key, at))
            return None
        return self._write(session_id, (kind, data, key, at), fenced=True)

    def _pending_for(self, session_id: str) -> _Pending:
        with self.lock:
            pending = self._pending.get(session_id)
            if pending is None:
                pending = self._pending[session_id] = _Pending()
            return pending

    def _write(self, session_id: str, entry: tuple[str, dict[str, Any], str | None,
                                                    float | None] | None = None, *,
               fenced: bool, finish: str | None = None) -> int | None:
        """Write what waits for the call (and ``entry``) in one round trip; ``entry``'s seq."""
        with self.lock:
            pending = self._pending.pop(session_id, None) or _Pending()
        entries = list(pending.entries)
        if entry is not None:
            entries.append(entry)
        if not entries and not pending.schedule and not pending.cancel and finish is None:
            return None
        with self.local():
            seqs = write(self.store, session_id, entries,
                         owner=self.owner if fenced else None, ttl=self.lease_ttl,
                         schedule=pending.schedule, cancel=pending.cancel, finish=finish,
                         quiet_for=self.owner)
        if seqs is None:
            with self.lock:
                self.leases.pop(session_id, None)
            raise LeaseLost(f"call {shown(session_id)}: another process holds its lease")
        with self.lock:
            runner = self.cache.get(session_id)
            if fenced and finish is None:
                self.leases[session_id] = time.monotonic()
        if runner is not None:
            if fenced:
                runner.lease_at = time.monotonic()
            for seq in seqs[:len(pending.entries)]:
                self._own(runner, seq)
        if pending.schedule and finish is None:  # a timer due at once: claim it now
            soonest = min(due for _, due, _ in pending.schedule)
            if soonest - time.time() < 0.05:
                self.host.timer_set(0.0)
        return seqs[-1] if entry is not None else None

    def _defer_timer(self, session_id: str, key: str, due: float,
                     data: dict[str, Any]) -> None:
        self._pending_for(session_id).schedule.append((key, due, data))

    def _defer_cancel(self, session_id: str, key: str) -> None:
        pending = self._pending_for(session_id)
        pending.schedule = [t for t in pending.schedule if t[0] != key]
        pending.cancel.append(key)

    def _finish(self, runner: CallRunner, reason: str, *, logged: bool) -> None:
        """Log the end (unless it is logged) and finish the call: one round trip."""
        entry = None if logged else ("end", {"reason": reason}, "end", None)
        self._own(runner, self._write(runner.session_id, entry, fenced=not logged,
                                      finish=reason))

    def flush(self, runner: CallRunner) -> None:
        """Write what waits for the call (its last outcome, its timers): end of a drain."""
        self._write(runner.session_id, fenced=False)

    @contextmanager
    def local(self) -> Iterator[None]:
        """Appends of this process in this thread: store subscribers called in the appending
        thread skip them (whoever appends wakes the call, with the entry)."""
        self._local.own = True
        try:
            yield
        finally:
            self._local.own = False

    def appending(self) -> bool:
        """True in a thread appending one of this process's own entries (store subscribers
        that run in the appending thread use it to skip waking the call they come from)."""
        return bool(getattr(self._local, "own", False))

    def _own(self, runner: CallRunner, seq: int | None) -> None:
        if seq is not None and seq > runner.loaded:
            runner.own.add(seq)

    def taken(self, session_id: str, runner: CallRunner | None) -> None:
        """This process just took the call's lease (with its enter)."""
        now = time.monotonic()
        with self.lock:
            self.leases[session_id] = now
        if runner is not None:
            runner.lease_at = now

    def offer(self, session_id: str, entry: LogEntry) -> None:
        """An entry this process appended to the call's log: its runner takes it from here
        instead of loading it (if the runner is cached)."""
        with self.lock:
            if session_id in self.cache:
                self._inbox.setdefault(session_id, []).append(entry)

    def news(self, session_id: str) -> None:
        """Another process (or store object) appended to the call's log: load what is new."""
        with self.lock:
            if session_id in self.cache:
                self._stale.add(session_id)

    def _drop_locked(self, session_id: str) -> None:
        self._inbox.pop(session_id, None)
        self._stale.discard(session_id)
        self._pending.pop(session_id, None)

    def _fresh(self, runner: CallRunner) -> list[LogEntry]:
        """The call's entries past what the runner has: from the inbox when it holds all of
        them (no round trip), else loaded from the store."""
        sid = runner.session_id
        with self.lock:
            inbox = self._inbox.pop(sid, None) or []
            stale = sid in self._stale
            self._stale.discard(sid)
        while runner.loaded + 1 in runner.own:  # consumed already, when written
            runner.own.discard(runner.loaded + 1)
            runner.loaded += 1
        fresh: list[LogEntry] = []
        expected = runner.loaded + 1
        for entry in sorted((e for e in inbox if e.seq > runner.loaded), key=lambda e: e.seq):
            while expected in runner.own:
                expected += 1
            if entry.seq != expected:
                stale = True  # a gap: entries someone else appended meanwhile
                break
            fresh.append(entry)
            expected += 1
        if fresh and not stale:
            return fresh
        if not stale and self.hands_entries and runner.loaded > 0:
            return fresh  # nothing new (a wake-up whose entry an earlier drain took)
        return self.store.load(sid, after=runner.loaded)

    # -- leases ------------------------------------------------------------------------------

    def renew(self) -> None:
        """Renew the leases this process holds that no write renewed for a third of their
        time (one loop for all calls); a lease found lost (another process took the call)
        drops the call from the cache."""
        due = time.monotonic() - self.lease_ttl / 3
        with self.lock:
            held = [sid for sid, at in self.leases.items() if at <= due]
        for session_id in held:
            try:
                kept = self.store.acquire(session_id, self.owner, self.lease_ttl)
            except StoreError as error:
                log.warning("renewing the lease of call %s failed: %s", shown(session_id),
                            error)
                continue
            with self.lock:
                runner = self.cache.get(session_id)
                if kept:
                    if session_id in self.leases:
                        self.leases[session_id] = time.monotonic()
                    if runner is not None:
                        runner.lease_at = time.monotonic()
                    continue
                self.leases.pop(session_id, None)
                if runner is not None and not runner.scheduled:
                    del self.cache[session_id]
                    self._drop_locked(session_id)
            log.info("call %s: its lease moved to another process", shown(session_id))

    def release_all(self) -> None:
        with self.lock:
            held, self.leases = list(self.leases), {}
        for session_id in held:
            try:
                self.store.release(session_id, self.owner)
            except StoreError:
                pass

    # -- the cache ---------------------------------------------------------------------------

    def runner(self, session_id: str, *, create: bool = True) -> CallRunner | None:
        with self.lock:
            runner = self.cache.get(session_id)
            if runner is not None:
                self.cache.move_to_end(session_id)
                return runner
            if not create:
                return None
            runner = self.cache[session_id] = CallRunner(session_id)
            evicted = self._evict_locked()
        for old in evicted:  # the lease stays: a later callback replays it here
            log.debug("call %s evicted from the cache", shown(old.session_id))
        return runner

    def _evict_locked(self) -> list[CallRunner]:
        evicted: list[CallRunner] = []
        if len(self.cache) <= self.cache_size:
            return evicted
        for session_id in list(self.cache):
            if len(self.cache) <= self.cache_size:
                break
            candidate = self.cache[session_id]
            if candidate.scheduled:
                continue  # being driven right now
            del self.cache[session_id]
            self._drop_locked(session_id)
            evicted.append(candidate)
        return evicted

    def _uncache_locked(self, runner: CallRunner) -> None:
        """Take ``runner`` out of the cache if it is the one there (under ``self.lock``)."""
        if self.cache.get(runner.session_id) is runner:
            del self.cache[runner.session_id]
            self._drop_locked(runner.session_id)

    def evict(self, runner: CallRunner) -> None:
        """Drop the call's engine (the lease stays): its next wake-up rebuilds it by replay."""
        runner.done = True
        with self.lock:
            self._uncache_locked(runner)

    def forget(self, runner: CallRunner, *, release: bool = True) -> None:
        with self.lock:
            self._uncache_locked(runner)
            held = self.leases.pop(runner.session_id, None) is not None
        if release and held:
            self._release(runner)

    def lost(self, runner: CallRunner) -> None:
        """The call's lease moved to another process: drop it here, write nothing more."""
        runner.done = True
        with self.lock:
            self._uncache_locked(runner)
            self.leases.pop(runner.session_id, None)

    def _release(self, runner: CallRunner) -> None:
        try:
            self.store.release(runner.session_id, self.owner)
        except StoreError:
            log.warning("releasing the lease of call %s failed", shown(runner.session_id))

    def held(self) -> list[str]:
        with self.lock:
            return [sid for sid, r in self.cache.items() if not r.done]

    # -- draining one call (a worker) --------------------------------------------------------

    def drain(self, runner: CallRunner) -> None:
        """Feed every new entry of the call's log to its engine, in order. One worker at a
        time per call (the host's scheduling guarantees it)."""
        if runner.done:
            return
        try:
            if time.monotonic() - runner.lease_at > self.lease_ttl / 3:
                if not self.store.acquire(runner.session_id, self.owner, self.lease_ttl):
                    log.debug("call %s is driven by another process", shown(runner.session_id))
                    self.lost(runner)
                    return
                runner.lease_at = time.monotonic()
                with self.lock:
                    self.leases[runner.session_id] = runner.lease_at
            fresh = self._fresh(runner)
        except StoreUnavailable:
            raise  # the host retries once the store answers; the call is not broken
        except StoreError as error:
            self._broken(runner, f"its log could not be read ({error})")
            return
        try:
            for entry in fresh:
                self._index(runner, entry)
            if runner.engine is None and any(e.kind == "end" for e in runner.entries.values()):
                runner.done = True  # a call that ended already: nothing to rebuild
                self.forget(runner)
                return
            while True:
                entry = self._next_input(runner)
                if entry is None:
                    break
                self._feed(runner, entry)
                if runner.done:
                    return
        except _Corrupt as error:
            self._broken(runner, str(error))
            return
        if runner.replaying and not runner.requests:
            runner.replaying = False
        if not runner.replaying and runner.deferred:
            self._flush_timers(runner)
        self._watch_overdue(runner)
        if not runner.done:
            self.flush(runner)

    def _index(self, runner: CallRunner, entry: LogEntry) -> None:
        if not isinstance(entry, LogEntry) or not isinstance(entry.data, dict) \
                or entry.kind not in ENTRY_KINDS:
            raise _Corrupt(f"log entry {getattr(entry, 'seq', '?')} is not an entry this "
                           "version writes")
        if entry.seq > runner.loaded:
            runner.loaded = entry.seq
        own = runner._own
        if own is not None and entry.seq in own:
            own.discard(entry.seq)
            if not own:
                runner._own = None
            return
        data = entry.data
        kind = entry.kind
        try:
            if kind == "request":
                runner.replay_state().requests.append(entry)
                return
            if kind == "outcome":
                runner.replay_state().outcomes[int(data["req"])] = entry
                return
            if kind == "timer":
                key = str(data["key"])
                if runner.replaying:
                    runner.replay_state().fired.add(key)
            elif kind == "effect":
                req = int(data["req"])
                if runner.replaying:
                    runner.replay_state().effect_results.add(req)
            elif kind == "abort":
                runner.replay_state().aborts.append(entry)
            pending = runner._pending
            if pending is None:
                runner._pending = [entry]
            else:
                pending.append(entry)
        except (KeyError, TypeError, ValueError) as error:
            raise _Corrupt(f"log entry {entry.seq} ({entry.kind}) is corrupt: "
                           f"{type(error).__name__} {error}") from None

    def _next_input(self, runner: CallRunner) -> LogEntry | None:
        """The next input in log order (entries are indexed in load order, which is log
        order); None once all are fed, and then a replay that matched every logged request
        is over: its pending timers are set and its state dropped."""
        pending = runner._pending
        if pending is not None:
            head = runner._head
            if head < len(pending):
                entry = pending[head]
                runner._head = head + 1
                runner.cursor = entry.seq
                return entry
            runner._pending = None
            runner._head = 0
        replay = runner._replay
        if replay is not None and replay.head >= len(replay.requests) and not runner.done:
            runner.replaying = False
            if replay.deferred:
                self._flush_timers(runner)
            runner._replay = None
        return None

    def _feed(self, runner: CallRunner, entry: LogEntry) -> None:
        runner.now = entry.at
        try:
            if entry.kind == "end":
                if runner.engine is None or runner.engine.done:
                    self._done(runner, str(entry.data.get("reason") or "hangup"), logged=True)
                return
            if entry.kind == "enter":
                if not runner.started:
                    self._enter(runner, entry)
                return
            engine = runner.engine
            if engine is None or not runner.started:
                # A log that does not begin with its enter: a call this store never knew
                # (the app hangs it up when the callback arrives) or a corrupt log.
                return
            event = self._event(runner, entry)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _Corrupt(f"log entry {entry.seq} ({entry.kind}) is corrupt: "
                           f"{type(error).__name__} {error}") from None
        if event is not None:
            self._run(runner, entry, self._handle(runner, event))

    def _enter(self, runner: CallRunner, entry: LogEntry) -> None:
        if runner.engine is None or runner.call is None:
            runner.engine, runner.call = self._new_engine(entry.data)
        engine, call = runner.engine, runner.call
        engine.clock = runner.clock
        runner.started = True
        runner.entered_at = entry.at
        logged = entry.data.get("script") or {}
        current = script_identity(engine.script)
        if runner.replaying and logged.get("hash") and logged.get("hash") != current["hash"]:
            log.warning("call %s: the script %s changed since the call entered (source hash "
                        "%s, now %s); replaying it against the log", shown(runner.session_id),
                        current["function"], logged.get("hash"), current["hash"])
        if not runner.observed:
            self.host.call_entered(call, observed=False)
        self._run(runner, entry, self._start(runner))

    def _new_engine(self, data: dict[str, Any]) -> tuple[CallEngine, Call]:
        """A fresh engine for a replay: the host is given the script identity the call
        entered with, so it can run the very script the call began with (see
        ``App.script``); a host that does not take it gets the body alone."""
        try:
            return self.host.new_engine(data["body"], script=data.get("script") or None)
        except TypeError as error:
            if "script" not in str(error):
                raise
            return self.host.new_engine(data["body"])

    def _start(self, runner: CallRunner) -> list[Any]:
        assert runner.engine is not None
        try:
            return runner.engine.start()
        except KeyboardInterrupt:
            return self._handle(runner, Abort(IvrError("the script raised KeyboardInterrupt")))

    def _handle(self, runner: CallRunner, event: Any) -> list[Any]:
        assert runner.engine is not None
        try:
            return runner.engine.handle(event)
        except KeyboardInterrupt:
            # Only a script raising it by hand gets here (signals go to the main thread).
            return runner.engine.handle(Abort(IvrError("the script raised KeyboardInterrupt")))

    def _event(self, runner: CallRunner, entry: LogEntry) -> Any:
        data = entry.data
        if entry.kind == "callback":
            kind = data["kind"]
            if kind == "on-command-update":
                return Update(str(data["command"]), str(data["status"]),
                              _opt(data.get("commandId")), _opt(data.get("digits")), entry.at)
            if kind == "on-call-exit":
                return Exited(entry.at)
            return CommandError({"message": data.get("message"),
                                 "errorCode": data.get("errorCode")})
        if entry.kind == "timer":
            event = data["event"]
            if event == "resend":
                return Resend(int(data["token"]))
            if event == "gone":
                return GoneTimeout()
            if event == "overdue":
                return Overdue(int(data["token"]), float(data["seconds"]))
            raise ValueError(f"unknown timer event {event!r}")
        if entry.kind == "effect":
            tokens = runner._tokens
            token = None if tokens is None else tokens.pop(int(data["req"]), None)
            if token is None:
                return None  # the result of an effect a drifted script no longer waits for
            if not tokens:
                runner._tokens = None
            error = data.get("error")
            if error is not None:
                errors = runner._errors
                return EffectDone(token, error=_rebuild_error(
                    error["type"], error["message"],
                    None if errors is None else errors.pop(token, None)))
            return EffectDone(token, data.get("value"))
        if entry.kind == "abort":
            if data.get("type") == "ScriptChanged":
                return None  # fed where the drift is found (see _drifted)
            return Abort(IvrError(str(data.get("message") or "the call was stopped")))
        raise ValueError(f"{entry.kind} is not an input")

    # -- carrying out the engine's actions ---------------------------------------------------

    def _run(self, runner: CallRunner, cause: LogEntry, actions: list[Any]) -> None:
        queue = collections.deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Request):
                outcome = self._request(runner, action)
                if outcome == "drift":
                    queue.clear()
                    queue.extend(self._drifted(runner, action))
                elif outcome is not None:
                    queue.extend(self._handle(runner, outcome))
            elif isinstance(action, Wait):
                self._schedule(runner, cause, action)
            elif isinstance(action, Finished):
                self._done(runner, action.reason)
                return

    def _request(self, runner: CallRunner, request: Request) -> Any:
        """Match the request with the log (replay) or log and send it (live); the engine
        event to feed back (None for a cancel and for an effect: its result comes later)."""
        replay = runner._replay
        logged = None if replay is None else replay.next_request()
        if logged is not None:
            assert replay is not None
            data = logged.data
            # Request args are JSON-shaped already (str, numbers, bool, None, lists).
            if data.get("op") != request.op or data.get("args") != request.args:
                return "drift"
            replay.head += 1
            runner.steps += 1
            seq = logged.seq
            if request.op == "effect":
                runner.effect_token(seq, request.token)
                if seq not in replay.effect_results:
                    log.warning("call %s: the effect %s was running at a restart: running it "
                                "again", shown(runner.session_id), request.command)
                    self.host.run_effect(runner, request, seq)
                return None
            outcome = replay.outcomes.pop(seq, None)
            if outcome is None:
                if request.op == "cancel":
                    return None
                log.warning("call %s: %s was in flight at a restart: sending it again",
                            shown(runner.session_id), request.command)
                return self._send(runner, request, seq, again=True)
            if request.op == "cancel":
                return None
            runner.now = outcome.at
            return _outcome_event(request.token, outcome.data)
        runner.replaying = False
        seq = self.append(runner.session_id, "request", {
            "token": request.token, "op": request.op, "args": request.args,
            "command": request.command, "where": request.where})
        assert seq is not None
        self._own(runner, seq)
        runner.steps += 1
        if request.op == "effect":
            runner.effect_token(seq, request.token)
            self.host.run_effect(runner, request, seq)
            return None
        return self._send(runner, request, seq)

    def _send(self, runner: CallRunner, request: Request, seq: int, *,
              again: bool = False) -> Any:
        outcome = self.host.send(request)
        if not again:
            outcome = self._before_answer_seen(runner, request, outcome)
        if again and isinstance(outcome, SendFailed) and \
                isinstance(outcome.error, PlatformError) and outcome.error.status == 409:
            # The platform has the command active already: the first send, the one in
            # flight at the crash, did reach it.
            log.info("call %s: the platform already had %s (409): it is the one in flight",
                     shown(runner.session_id), request.command)
            outcome = Sent(request.token, None)
        data: dict[str, Any] = {"req": seq}
        if isinstance(outcome, Sent):
            data.update(ok=True, command_id=outcome.command_id)
        else:
            data.update(ok=False, **_error_data(outcome))
        at = time.time()
        self._own(runner, self.append(runner.session_id, "outcome", data, key=f"o:{seq}",
                                      at=at))
        if request.op == "cancel":
            return None
        runner.now = at
        return _outcome_event(request.token, data)

    def _before_answer_seen(self, runner: CallRunner, request: Request,
                            outcome: Sent | SendFailed) -> Sent | SendFailed:
        """A 409 just after the enter: the platform may not have our 204 yet (a proxy or load
        balancer in front of the app relays it after we sent it), so send again shortly, a few
        times, while the call is young. A 409 later means what it says."""
        delay = _EARLY_409_FIRST
        while (isinstance(outcome, SendFailed) and isinstance(outcome.error, PlatformError)
               and outcome.error.status == 409
               and time.time() - runner.entered_at + delay < _EARLY_409_WINDOW):
            log.debug("call %s: %s answered 409 %.2f s after the enter; sending again in "
                      "%.0f ms", shown(runner.session_id), request.command,
                      time.time() - runner.entered_at, delay * 1000)
            time.sleep(delay)
            delay *= 2
            outcome = self.host.send(request)
        return outcome

    def _drifted(self, runner: CallRunner, request: Request) -> list[Any]:
        """The script issued something else than the log has here: ScriptChanged."""
        replay = runner.replay_state()
        logged = replay.next_request()
        assert logged is not None
        step = runner.steps + 1
        old, new = logged.data.get("args") or {}, json.loads(json.dumps(request.args))
        if logged.data.get("op") == request.op and isinstance(old, dict):
            keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            was = ", ".join(f"{k}: {_short(old.get(k))}" for k in keys)
            now = ", ".join(f"{k}: {_short(new.get(k))}" for k in keys)
        else:
            was, now = str(logged.data.get("op")), request.op
        message = (f"step {step}: the call's log has {logged.data.get('command') or '?'} "
                   f"({was}) but the script now issues {request.command} ({now}) at "
                   f"{request.where}: the script changed since the call began")
        error = ScriptChanged(message)
        existing = next((a for a in replay.aborts if a.data.get("type") == "ScriptChanged"), None)
        if existing is None:
            seq = self.append(runner.session_id, "abort",
                              {"type": "ScriptChanged", "message": message},
                              key="abort:script-changed")
            self._own(runner, seq)
            seq = seq if seq is not None else runner.loaded
        else:
            seq = existing.seq
        replay.requests = [r for r in replay.remaining() if r.seq > seq]
        replay.head = 0
        log.error("call %s: %s", shown(runner.session_id), message)
        return self._handle(runner, Abort(error))

    def _schedule(self, runner: CallRunner, cause: LogEntry, wait: Wait) -> None:
        if runner.replaying:
            # Most timers a replay meets are long over (a collect's overdue timer, a wait
            # whose resend is logged): set only the ones still pending once it is done.
            runner.replay_state().deferred.append((cause.seq, wait, runner.now + wait.seconds))
            return
        self._set_timer(runner, cause.seq, wait, runner.now + wait.seconds)

    def _flush_timers(self, runner: CallRunner) -> None:
        replay = runner._replay
        if replay is None:
            return
        deferred, replay.deferred = replay.deferred, []
        awaited = runner.engine.awaited if runner.engine is not None else None
        for cause_seq, wait, due in deferred:
            if isinstance(wait.event, Overdue) and wait.event.token != awaited:
                continue
            self._set_timer(runner, cause_seq, wait, due)

    def _set_timer(self, runner: CallRunner, cause_seq: int, wait: Wait, due: float) -> None:
        event = wait.event
        if isinstance(event, Resend):
            data = {"event": "resend", "token": event.token}
        elif isinstance(event, GoneTimeout):
            data = {"event": "gone"}
        elif isinstance(event, Overdue):
            data = {"event": "overdue", "token": event.token, "seconds": event.seconds}
        else:
            raise TypeError(f"cannot store a timer for {event!r}")
        # Interned: the same flow gives the same keys in every call (one copy for all).
        key = sys.intern(f"{data['event']}:{data.get('token', '')}:{cause_seq}")
        replay = runner._replay
        if replay is not None and key in replay.fired:
            return
        data["key"] = key
        self._defer_timer(runner.session_id, key, due, data)
        if isinstance(event, Overdue):
            runner.overdue_key = key
        self.host.timer_set(max(due - time.time(), 0.0))

    def _watch_overdue(self, runner: CallRunner) -> None:
        """Cancel the overdue timer of a command whose update came."""
        key = runner.overdue_key
        engine = runner.engine
        if key is None or engine is None:
            return
        token = int(key.split(":")[1])
        if engine.awaited != token:
            runner.overdue_key = None
            self._defer_cancel(runner.session_id, key)

    def _done(self, runner: CallRunner, reason: str, *, logged: bool = False) -> None:
        if runner.done:
            return
        runner.done = True
        try:
            self._finish(runner, reason, logged=logged)
            finished = True
        except StoreError as error:
            finished = False
            log.warning("call %s: recording its end failed: %s", shown(runner.session_id),
                        error)
        self.forget(runner, release=not finished)  # finishing dropped the lease
        if runner.call is not None:
            self.host.call_finished(runner, runner.call)

    def _broken(self, runner: CallRunner, why: str) -> None:
        """A log that cannot be read: end this call through on_error, nothing else."""
        log.error("call %s: %s; ending the call", shown(runner.session_id), why)
        engine = runner.engine
        runner._pending = None
        runner._head = 0
        runner._replay = None
        if engine is not None and not engine.done:
            runner.now = time.time()
            try:
                self._run(runner, LogEntry(runner.loaded, "abort", {}, runner.now),
                          self._handle(runner, Abort(IvrError(f"the call's log is broken: "
                                                              f"{why}"))))
            except StoreError as error:
                log.error("call %s: the store failed too (%s)", shown(runner.session_id), error)
            if runner.done:
                return
        self.host.hang_up_unknown(runner.session_id, None)
        runner.done = True
        try:
            self.store.finish(runner.session_id, "hangup")
        except StoreError:
            pass
        self.forget(runner)


def _outcome_event(token: int, data: dict[str, Any]) -> Sent | SendFailed:
    if data.get("ok"):
        return Sent(token, _opt(data.get("command_id")))
    retry_after = data.get("retry_after")
    status = int(data.get("status") or 0)
    message = str(data.get("message") or "")
    if retry_after is not None:
        error: BaseException = RetryLater(status, data.get("error_code"), message,
                                          retry_after=float(retry_after),
                                          method=data.get("method") or "",
                                          path=data.get("path") or "",
                                          budget=_opt_float(data.get("budget")))
        return SendFailed(token, error, retry_after=float(retry_after))
    if data.get("platform"):
        error = PlatformError(status, data.get("error_code"), message,
                              method=data.get("method") or "", path=data.get("path") or "")
    else:
        error = IvrError(message)
    return SendFailed(token, error)


def _error_data(outcome: SendFailed) -> dict[str, Any]:
    error = outcome.error
    if isinstance(error, PlatformError):
        return {"platform": True, "status": error.status, "error_code": error.error_code,
                "message": error.message, "method": error.method, "path": error.path,
                "retry_after": outcome.retry_after,
                # the retry budget decides whether the engine resends: a replay must see it
                "budget": getattr(error, "budget", None)}
    return {"platform": False, "message": f"{type(error).__name__}: {error}",
            "retry_after": outcome.retry_after}


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _rebuild_error(type_name: str, message: str, live: BaseException | None) -> BaseException:
    """The exception an effect raised: the live one, or rebuilt from its logged type name
    (``module.Qualname``) and message; a type that cannot be rebuilt becomes an IvrError."""
    if live is not None:
        return live
    module, _, qualname = str(type_name).rpartition(".")
    try:
        target: Any = importlib.import_module(module or "builtins")
        for part in qualname.split("."):
            target = getattr(target, part)
        if isinstance(target, type) and issubclass(target, Exception):
            return target(message)
    except Exception:  # noqa: BLE001 - any failure to rebuild falls back below
        pass
    return IvrError(f"{type_name}: {message}")


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "?"
    return text if len(text) <= 120 else text[:117] + "..."
