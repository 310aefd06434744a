"""One timer thread for many timers (standard library only).

``threading.Timer`` costs a thread per timer; a parked call must cost memory only, so every
delayed action (a retry after Retry-After, the wait for on-call-exit, the simulator's play and
collect timers) goes through one of these.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Scheduler", "Timer"]

log = logging.getLogger("ivrscript.scheduler")

MAX_WAIT = 3600.0  # Condition.wait overflows past threading.TIMEOUT_MAX: wake up and look again


class Timer:
    """A scheduled call; ``cancel()`` is lazy (the entry is dropped when it comes due)."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], Any]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Runs callables after a delay, in time order, on one daemon thread; keep them quick."""

    def __init__(self, name: str = "ivrscript-timers") -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
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

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        timer = Timer(time.monotonic() + max(delay, 0.0), fn)
        with self._cond:
            if self._stopped:
                timer.cancel()
                return timer
            heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
            if self._heap[0][2] is timer:  # a new earliest timer: wake the thread
                self._cond.notify()
        return timer

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __len__(self) -> int:
        return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, _, timer = self._heap[0]
                    now = time.monotonic()
                    if when > now:
                        self._cond.wait(min(when - now, MAX_WAIT))
                        continue
                    heapq.heappop(self._heap)
                    if not timer.cancelled:
                        break
            try:
                timer.fn()
            except Exception:  # a timer must never kill the timer thread
                log.exception("timer callback %r failed", timer.fn)
