"""``MemoryStore``: calls' logs in this process's memory (standard library only).

Today's behaviour and the default for the simulator, notebooks and tests: nothing survives the
process, and only this process can drive its calls. It is also the reference the conformance
suite (``tests/stores/``) holds every other backend to.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import CallInfo, DueTimer, LogEntry, StoreError

__all__ = ["MemoryStore"]


@dataclass
class _Call:
    started: float
    entries: list[tuple[str, str, float]] = field(default_factory=list)  # kind, JSON, at
    keys: set[str] = field(default_factory=set)
    finished: float | None = None
    end_reason: str | None = None
    lease: tuple[str, float] | None = None  # (owner, expires on the monotonic clock)
    timers: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)


class MemoryStore:
    """A :class:`~ivrscript.stores.CallStore` in memory; safe from any thread.

    Subscribers are called in the appending thread, right after the append.
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], Any]] = []
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
        when = time.time() if at is None else at
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=when)
            if key is not None:
                if key in call.keys:
                    return None
                call.keys.add(key)
            seq = len(call.entries) + 1
            call.entries.append((kind, stored, when))
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(session_id)
        return seq

    def load(self, session_id: str, after: int = 0) -> list[LogEntry]:
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                return []
            start = max(after, 0)
            rows = call.entries[start:]
        return [LogEntry(seq, kind, json.loads(text), at)
                for seq, (kind, text, at) in enumerate(rows, start=start + 1)]

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, session_id: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=time.time())
            if call.lease is not None and call.lease[0] != owner and call.lease[1] > now:
                return False
            if call.finished is not None:
                return False  # a finished call has no one to drive it
            call.lease = (owner, now + ttl)
            return True

    def release(self, session_id: str, owner: str) -> None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is not None and call.lease is not None and call.lease[0] == owner:
                call.lease = None

    def holder(self, session_id: str) -> str | None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is None or call.lease is None or call.lease[1] <= time.monotonic():
                return None
            return call.lease[0]

    # -- timers ------------------------------------------------------------------------------

    def schedule(self, session_id: str, key: str, due: float,
                 data: dict[str, Any] | None = None) -> None:
        stored = json.loads(json.dumps(data or {}))
        with self._lock:
            call = self._calls.get(session_id)
            if call is None:
                call = self._calls[session_id] = _Call(started=time.time())
            call.timers[key] = (due, stored)

    def cancel(self, session_id: str, key: str) -> None:
        with self._lock:
            call = self._calls.get(session_id)
            if call is not None:
                call.timers.pop(key, None)

    def claim_due(self, owner: str, now: float | None = None, *, limit: int = 100,
                  hold: float = 5.0) -> list[DueTimer]:
        now = time.time() if now is None else now
        found: list[DueTimer] = []
        with self._lock:
            due = sorted((when, session_id, key)
                         for session_id, call in self._calls.items()
                         for key, (when, _) in call.timers.items() if when <= now)
            for when, session_id, key in due[:limit]:
                call = self._calls[session_id]
                _, data = call.timers[key]
                call.timers[key] = (now + hold, data)
                found.append(DueTimer(session_id, key, when, copy.deepcopy(data)))
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
            call.timers.clear()
            call.lease = None

    def calls(self, *, active: bool | None = None) -> list[CallInfo]:
        with self._lock:
            infos = [CallInfo(sid, c.started, c.finished, c.end_reason, len(c.entries))
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
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._subscribers.clear()

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._calls)} calls>"

    def orphans(self, grace: float, now: float | None = None, *,
                limit: int = 100) -> list[str]:
        now = time.time() if now is None else now
        clock = time.monotonic()
        with self._lock:
            found = sorted((c.started, sid) for sid, c in self._calls.items()
                           if c.finished is None and c.started <= now - grace
                           and (c.lease is None or c.lease[1] <= clock))
        return [sid for _, sid in found[:max(int(limit), 1)]]
