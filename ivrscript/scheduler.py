"""One timer thread for many timers (standard library only).

``threading.Timer`` costs a thread per timer; a parked call must cost memory only, so every
delayed action (a retry after Retry-After, the wait for on-call-exit) goes through one of these.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Scheduler"]

log = logging.getLogger("ivrscript.scheduler")


class Scheduler:
    """Runs callables after a delay on a single daemon thread; callables must be quick."""

    def __init__(self, name: str = "ivrscript-timers") -> None:
        self._heap: list[tuple[float, int, Callable[[], Any]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> Scheduler:
        with self._cond:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0),
                                        next(self._counter), fn))
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __len__(self) -> int:
        return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    due = self._heap[0][0] - time.monotonic()
                    if due <= 0:
                        break
                    self._cond.wait(due)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("timer callback %r failed", fn)
