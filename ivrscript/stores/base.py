"""The store seam: where a call's log lives (standard library only).

"A call is its log" (DESIGN.md): every input the engine consumed — the enter, each accepted
callback, each request's outcome, each timer firing, each effect's result — and each command
as it is issued, is appended to the call's log before it is acted on. A process that has no
live generator for a call rebuilds it by replaying that log through a fresh engine.

A backend is any object with the methods of :class:`CallStore` (a protocol as small as vcrpy's
persister). Every backend passes the same conformance suite (``tests/stores/``):
``MemoryStore`` (one process, today's behaviour), ``SQLiteStore`` (several processes on one
host, one file), ``RedisStore`` (several hosts). Times are wall-clock seconds
(``time.time()``), so they mean the same in every process and after a restart.

Entry ``data`` is JSON (dicts, lists, str, int, float, bool, None): a backend may store it as
JSON text and must give back what ``json.loads(json.dumps(data))`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["CallStore", "LogEntry", "DueTimer", "CallInfo", "StoreError", "StoreUnavailable",
           "LeaseLost", "Append", "write"]


class StoreError(Exception):
    """A store could not do what was asked (a corrupt row, a bad URL, ...)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is locked past its busy timeout; try again later."""


class LeaseLost(StoreError):
    """A fenced write found the call's lease held by another process: this one must stop
    driving the call (and issue nothing more for it)."""


@dataclass(frozen=True)
class LogEntry:
    """One entry of a call's log: its 1-based position, what it is, its JSON data, when."""

    seq: int
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True)
class DueTimer:
    """A timer whose due time has come, claimed by one process (see ``claim_due``)."""

    session_id: str
    key: str
    due: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallInfo:
    """A call the store knows: when its log began, and when and how it finished (or None)."""

    session_id: str
    started: float
    finished: float | None = None
    end_reason: str | None = None
    entries: int = 0


@runtime_checkable
class CallStore(Protocol):
    """Where calls' logs, leases and timers live. Every method is safe from any thread.

    Unavailability (a Redis that is down, a SQLite file locked past the busy timeout) raises
    :class:`StoreUnavailable`; nothing else is raised for a well-formed call.
    """

    # -- the log -----------------------------------------------------------------------------

    def append(self, session_id: str, kind: str, data: dict[str, Any], *,
               key: str | None = None, at: float | None = None) -> int | None:
        """Append one entry to the call's log (creating the call if it is new) and return its
        ``seq``; with ``key``, an entry with the same key already in this call's log makes
        this a no-op that returns ``None`` (dedupe, atomically with the append). ``at``
        defaults to now."""
        ...

    def load(self, session_id: str, after: int = 0) -> list[LogEntry]:
        """The call's entries with ``seq > after``, in order; ``[]`` for a call the store does
        not know (never seen, or expired)."""
        ...

    # -- leases: one process drives a call at a time -----------------------------------------

    def acquire(self, session_id: str, owner: str, ttl: float) -> bool:
        """Take the call's lease for ``owner`` for ``ttl`` seconds, or renew it if ``owner``
        holds it. False if another owner holds an unexpired lease, or the call is finished
        (nobody drives it any more)."""
        ...

    def release(self, session_id: str, owner: str) -> None:
        """Give the lease back, only if ``owner`` holds it (a lapsed holder releases nothing)."""
        ...

    def holder(self, session_id: str) -> str | None:
        """The owner of the call's unexpired lease, or None."""
        ...

    # -- durable timers ----------------------------------------------------------------------

    def schedule(self, session_id: str, key: str, due: float,
                 data: dict[str, Any] | None = None) -> None:
        """Set (or move) the call's timer ``key`` to fire at ``due``."""
        ...

    def cancel(self, session_id: str, key: str) -> None:
        """Remove the call's timer ``key`` if it is set."""
        ...

    def claim_due(self, owner: str, now: float | None = None, *, limit: int = 100,
                  hold: float = 5.0) -> list[DueTimer]:
        """Timers due at ``now``, at most ``limit``, claimed atomically: each is moved to
        ``now + hold`` so no other process claims it meanwhile, and fires again then unless
        ``cancel`` removes it (at-least-once: log the firing with a dedupe key, then cancel)."""
        ...

    # -- calls -------------------------------------------------------------------------------

    def finish(self, session_id: str, end_reason: str, at: float | None = None) -> None:
        """Mark the call finished (its log stays until ``expire`` removes it)."""
        ...

    def calls(self, *, active: bool | None = None) -> list[CallInfo]:
        """The calls the store knows, oldest first; ``active=True`` only unfinished ones,
        ``False`` only finished ones."""
        ...

    def expire(self, retention: float, now: float | None = None) -> int:
        """Remove calls finished more than ``retention`` seconds before ``now`` (their log,
        lease and timers); returns how many."""
        ...

    # -- store-wide --------------------------------------------------------------------------

    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there already; return the stored
        value (e.g. the script an SQLite file belongs to)."""
        ...

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``fn(session_id)`` soon after any process appends to a call's log or a timer
        comes due (at once where the backend can push, else within a poll interval); returns
        a function that unsubscribes. An append made through this store object calls ``fn``
        in the appending thread before ``append`` returns (once: not again from the store's
        thread); other processes' appends call it on a store thread. Keep ``fn`` quick."""
        ...

    def ping(self) -> bool:
        """True if the store is reachable now (for health checks)."""
        ...

    def orphans(self, grace: float, now: float | None = None, *,
                limit: int = 100) -> list[str]:
        """Unfinished calls nobody holds (no lease, or a lapsed one) that began at least
        ``grace`` seconds before ``now``, at most ``limit`` (with more, which ones is up to the
        backend), oldest first: the calls a live process should take up. One cheap query,
        whatever the number of calls held."""
        ...

    def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...


Append = tuple[str, dict[str, Any], "str | None", "float | None"]
"""One entry for :func:`write`: ``(kind, data, dedupe key or None, at or None)``."""


def write(store: CallStore, session_id: str, entries: Sequence[Append] = (), *,
          owner: str | None = None, ttl: float = 0.0,
          schedule: Sequence[tuple[str, float, dict[str, Any]]] = (),
          cancel: Sequence[str] = (), finish: str | None = None,
          quiet_for: str | None = None) -> list[int | None] | None:
    """Several writes for one call, in one round trip where the backend can (``RedisStore``
    has a ``write`` method of this signature: one Lua script), else one call each.

    With ``owner``, the call's lease is first taken or renewed for ``owner`` for ``ttl``
    seconds and, if another owner holds it (or the call is finished), nothing is written and
    the result is None
    (fencing: a process that lost a call writes nothing more to its log). Then ``entries``
    are appended in order (each as :meth:`CallStore.append`: its seq, or None when its key
    was there already), timers set (``(key, due, data)``) and cancelled (keys), and, with
    ``finish``, the call is finished with that end reason (see :meth:`CallStore.finish`).

    ``quiet_for``: an owner that handles these entries itself; while it holds the call's lease
    other processes' subscribers are not told of them (a backend may tell them anyway).
    """
    native = getattr(store, "write", None)
    if native is not None:
        return native(session_id, entries, owner=owner, ttl=ttl, schedule=schedule,
                      cancel=cancel, finish=finish, quiet_for=quiet_for)
    if owner is not None and not store.acquire(session_id, owner, ttl):
        return None
    seqs = [store.append(session_id, kind, data, key=key, at=at)
            for kind, data, key, at in entries]
    for key, due, data in schedule:
        store.schedule(session_id, key, due, data)
    for key in cancel:
        store.cancel(session_id, key)
    if finish is not None:
        store.finish(session_id, finish)
    return seqs
