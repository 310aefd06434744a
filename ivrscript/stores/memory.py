"""``MemoryStore``: calls' logs in this process's memory (standard library only).

Today's behaviour and the default for the simulator, notebooks and tests: nothing survives the
process, and only this process can drive its calls. It is also the reference the conformance
suite (``tests/stores/``) holds every other backend to.
"""

from __future__ import annotations

import array
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .base import CallInfo, DueTimer, LogEntry, StoreError

__all__ = ["MemoryStore"]

_SEP = "\x1f"  # between an entry's kind, time and JSON (json.dumps escapes control characters)
_KINDS = {kind: kind for kind in ("enter", "callback", "request", "outcome", "timer", "effect",
                                  "abort", "end")}  # one copy of each kind's name
_KEYS_AS_SET = 32  # dedupe keys kept in a tuple up to this many, then in a set


class _Call:
    """One call's log, kept compact: a parked call costs its log's text and little more.

    The log is one bytearray of records ``kind US at US json`` separated by newlines (a JSON
    text never holds a raw newline or control character), with the end offset of each record
    in ``ends``; dedupe keys are a tuple (a set only for long logs); the lease is its owner
    and expiry; timers exist only while set, their data as JSON text."""

    __slots__ = ("started", "log", "ends", "keys", "finished", "end_reason", "lease_owner",
                 "lease_expires", "timers")

    def __init__(self, started: float) -> None:
        self.started = started
        self.log = bytearray()
        self.ends = array.array("I")
        self.keys: tuple[str, ...] | set[str] = ()
        self.finished: float | None = None
        self.end_reason: str | None = None
        self.lease_owner: str | None = None
        self.lease_expires = 0.0  # on the monotonic clock
        self.timers: dict[str, tuple[float, str]] | None = None  # key -> (due, JSON)

    def entries(self) -> int:
        return len(self.ends)

    def has_key(self, key: str) -> bool:
        return key in self.keys

    def add_key(self, key: str) -> None:
        keys = self.keys
        if isinstance(keys, set):
            keys.add(key)
        elif len(keys) >= _KEYS_AS_SET:
            self.keys = {*keys, key}
        else:
            # Short keys repeat across calls ("enter", "o:2", "end"): share one copy.
            self.keys = (*keys, sys.intern(key) if len(key) <= 12 else key)


class MemoryStore:
    """A :class:`~ivrscript.stores.CallStore` in memory; safe from any thread.

    Subscribers are called in the appending thread, right after the append.
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()
        self._subscribers: tuple[Callable[[str], Any], ...] = ()  # replaced, never mutated
        self.url = "memory:"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        if url.rstrip("/") not in ("memory:", "memory:/", "memory://"):
            raise StoreError(f"a memory store URL is just 'memory:', got {url!r}")
        return cls(**options)

    # -- the log -----------------------------------------------------------------------------

    def append(self, session_id: str, kind: str, data: dict[str, Any], *,
               key: str | None = None, at: float | None = None) -> int | None:
        # Kept as JSON text: what a durable backend would give back, no aliasing of the
        # caller's dicts, and a parked call's log costs one string per entry.
        try:
            stored = json.dumps(data, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise StoreError(f"log data must be JSON: {error}") from None
        when = time.time() if at is None else float(at)
        if kind not in _KINDS:
            if not isinstance(kind, str) or _SEP in kind or "\n" in kind:
                raise StoreError(f"an entry kind is a word, got {kind!r}")
        record = f"{kind}{_SEP}{when!r}{_SEP}{stored}\n".encode()
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=when)
            if key is not None:
                if call.has_key(key):
                    return None
                call.add_key(key)
            call.log += record
            call.ends.append(len(call.log))
            seq = len(call.ends)
            subscribers = self._subscribers
        for fn in subscribers:
            fn(session_id)
        return seq

    def load(self, session_id: str, after: int = 0) -> list[LogEntry]:
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                return []
            start = max(after, 0)
            if start >= len(call.ends):
                return []
            chunk = bytes(call.log[call.ends[start - 1] if start else 0:])
        entries = []
        loads = json.loads
        for seq, record in enumerate(chunk.decode().split("\n")[:-1], start=start + 1):
            kind, at, text = record.split(_SEP, 2)
            entries.append(LogEntry(seq, _KINDS.get(kind, kind), loads(text), float(at)))
        return entries

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, session_id: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=time.time())
            if call.lease_owner is not None and call.lease_owner != owner \
                    and call.lease_expires > now:
                return False
            if call.finished is not None:
                return False  # a finished call has no one to drive it
            call.lease_owner, call.lease_expires = owner, now + ttl
            return True

    def release(self, session_id: str, owner: str) -> None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is not None and call.lease_owner == owner:
                call.lease_owner = None

    def holder(self, session_id: str) -> str | None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is None or call.lease_owner is None or \
                    call.lease_expires <= time.monotonic():
                return None
            return call.lease_owner

    # -- timers ------------------------------------------------------------------------------

    def schedule(self, session_id: str, key: str, due: float,
                 data: dict[str, Any] | None = None) -> None:
        try:
            stored = json.dumps(data or {}, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise StoreError(f"timer data must be JSON: {error}") from None
        if len(stored) <= 256:
            stored = sys.intern(stored)  # a flow's timers repeat across calls: one copy
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=time.time())
            if call.timers is None:
                call.timers = {}
            call.timers[key] = (due, stored)

    def cancel(self, session_id: str, key: str) -> None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is not None and call.timers is not None:
                call.timers.pop(key, None)
                if not call.timers:
                    call.timers = None

    def claim_due(self, owner: str, now: float | None = None, *, limit: int = 100,
                  hold: float = 5.0) -> list[DueTimer]:
        now = time.time() if now is None else now
        found: list[DueTimer] = []
        with self._lock:
            due = sorted((when, session_id, key)
                         for session_id, call in self._calls.items() if call.timers
                         for key, (when, _) in call.timers.items() if when <= now)
            claimed = []
            for when, session_id, key in due[:limit]:
                timers = self._calls[session_id].timers
                assert timers is not None
                _, text = timers[key]
                timers[key] = (now + hold, text)
                claimed.append((session_id, key, when, text))
        for session_id, key, when, text in claimed:
            found.append(DueTimer(session_id, key, when, json.loads(text)))
        return found

    # -- calls -------------------------------------------------------------------------------

    def finish(self, session_id: str, end_reason: str, at: float | None = None) -> None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=time.time())
            if call.finished is None:
                call.finished = time.time() if at is None else at
                call.end_reason = end_reason
            call.timers = None
            call.lease_owner = None

    def calls(self, *, active: bool | None = None) -> list[CallInfo]:
        with self._lock:
            infos = [CallInfo(sid, c.started, c.finished, c.end_reason, c.entries())
                     for sid, c in self._calls.items()]
        if active is not None:
            infos = [i for i in infos if (i.finished is None) == active]
        return sorted(infos, key=lambda i: (i.started, i.session_id))

    def expire(self, retention: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            gone = [sid for sid, c in self._calls.items()
                    if c.finished is not None and c.finished < now - retention]
            for sid in gone:
                del self._calls[sid]
        return len(gone)

    # -- store-wide --------------------------------------------------------------------------

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._lock:
            return self._meta.setdefault(key, value)

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        with self._lock:
            self._subscribers = (*self._subscribers, fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    kept = list(self._subscribers)
                    kept.remove(fn)
                    self._subscribers = tuple(kept)

        return unsubscribe

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._subscribers = ()

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._calls)} calls>"

    def orphans(self, grace: float, now: float | None = None, *,
                limit: int = 100) -> list[str]:
        now = time.time() if now is None else now
        clock = time.monotonic()
        with self._lock:
            found = sorted((c.started, sid) for sid, c in self._calls.items()
                           if c.finished is None and c.started <= now - grace
                           and (c.lease_owner is None or c.lease_expires <= clock))
        return [sid for _, sid in found[:max(int(limit), 1)]]
