"""A call as the script sees it, and its transcript: a readable view of the call's log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Call", "Transcript", "TranscriptEvent", "mask_number", "sensitive_collect"]

log = logging.getLogger("ivrscript.call")

# Kinds of transcript events. Commands use their own names (play, collect, forward, hangup).
RESULT = "result"

_NO_DATA: dict[str, Any] = {}  # shared by events without data: never mutated (see add)
_ENDING = threading.Lock()  # guards Call._done's lazy creation (few waiters, short holds)


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """One entry of a call's log: ``kind``, human ``details``, wall-clock ``time`` and ``data``."""

    kind: str
    details: str
    time: float = field(default_factory=time.time, compare=False)
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def line(self) -> str:
        if self.kind == RESULT:
            return f"  -> {self.details}"
        if not self.details:
            return self.kind
        body = self.details
        if "\n" in body:  # tracebacks: indent continuation lines under the kind
            body = body.replace("\n", "\n        ")
        return f"{self.kind:<7} {body}"

    def __str__(self) -> str:
        return self.line()


class Transcript:
    """The events of one call in the order they happened; ``str()`` gives one line per event.

    Safe to read from any thread while the call runs; ``subscribe(fn)`` calls ``fn(event)`` for
    each new event (from the thread that records it: keep it quick).
    """

    __slots__ = ("_events", "_lock", "_subscribers")

    def __init__(self, events: list[TranscriptEvent] | None = None) -> None:
        self._events: list[TranscriptEvent] = list(events or ())
        self._lock = threading.Lock()
        # A tuple, replaced on (un)subscribe: most calls have no viewer, and an empty tuple is
        # shared, so a parked call pays nothing for it; add() reads it without copying.
        self._subscribers: tuple[Callable[[TranscriptEvent], Any], ...] = ()

    def add(self, kind: str, details: str = "", **data: Any) -> TranscriptEvent:
        # Events without data share one empty dict (a parked call keeps every event).
        event = TranscriptEvent(kind, details, time.time(), data or _NO_DATA)
        with self._lock:
            self._events.append(event)
            subscribers = self._subscribers
        for fn in subscribers:
            try:
                fn(event)
            except Exception:  # a broken viewer must not break the call
                log.exception("transcript subscriber %r failed", fn)
        return event

    def subscribe(self, fn: Callable[[TranscriptEvent], Any]) -> Callable[[], None]:
        """Call ``fn(event)`` for every new event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers = (*self._subscribers, fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    kept = list(self._subscribers)
                    kept.remove(fn)
                    self._subscribers = tuple(kept)

        return unsubscribe

    def _snapshot(self) -> list[TranscriptEvent]:
        with self._lock:
            return list(self._events)

    def __iter__(self) -> Iterator[TranscriptEvent]:
        return iter(self._snapshot())

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> TranscriptEvent:
        return self._snapshot()[index]

    def kinds(self) -> list[str]:
        return [e.kind for e in self._snapshot()]

    def lines(self) -> list[str]:
        return [e.line() for e in self._snapshot()]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return f"<Transcript {len(self)} events>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Transcript):
            return self.lines() == other.lines()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Call:
    """The script's one argument: who called, the call's ``data`` and its ``transcript``."""

    def __init__(self, session_id: str, *, party_id: str = "", caller_party_id: str = "",
                 caller: str | None = None, called: str | None = None,
                 account_id: str | None = None, extension_id: str | None = None) -> None:
        self.session_id = session_id
        self.party_id = party_id
        self.caller_party_id = caller_party_id
        self.caller = caller
        self.called = called
        self.account_id = account_id
        self.extension_id = extension_id
        self.data: dict[str, Any] = {}
        self.transcript = Transcript()
        self.ended = False
        self.end_reason: str | None = None
        self.error: BaseException | None = None  # what the script raised, if it did
        self.result: Any = None  # what the script returned
        self.script_name: str = ""
        self._script_key: Any = None  # which of its App's scripts the call began with
        self.started = time.time()
        # Made by the first wait_until_ended (a threading.Event is ~1 KiB: most calls are
        # never waited on, and a parked call should cost little); see _finish.
        self._done: threading.Event | None = None
        self._over = False  # _finish ran: the call ended and the script is done

    @property
    def failed(self) -> bool:
        """Whether the script raised, or a local prompt was missing (even one it caught): what
        makes the CLI exit 1."""
        return self.error is not None or any(
            e.data.get("failure") == "PromptNotFound" for e in self.transcript)

    def note(self, text: str) -> None:
        """Record a line of the script's own logic in the transcript (``note    text``).

        Decisions that never reach the platform (a balance looked up, a caller flagged) show in
        the transcript, and a replay that takes another branch differs from the recording.
        """
        self.transcript.add("note", str(text))

    def _finish(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.end_reason = reason
        with _ENDING:
            self._over = True
            done = self._done
        if done is not None:
            done.set()

    def wait_until_ended(self, timeout: float | None = 10.0) -> str | None:
        """Block until the call has ended and the script is done; returns ``end_reason``."""
        with _ENDING:
            done = self._done
            if done is None:
                done = self._done = threading.Event()
                if self._over:
                    done.set()
        if not done.wait(timeout):
            from .errors import IvrError

            raise IvrError(f"call {self.session_id} has not ended after {timeout} s")
        return self.end_reason

    def __repr__(self) -> str:
        state = f"ended {self.end_reason}" if self.ended else "in progress"
        return f"<Call {self.session_id} from {mask_number(self.caller)} {state}>"


def sensitive_collect(call: Call | None, index: int | None = None) -> bool:
    """Whether the ``index``-th collect (0-based; None: any) the call's script issued was
    ``sensitive``: a view of the caller's side (the terminal phone, the keypad) masks the keys
    then."""
    if call is None:
        return False
    collects = [e.data.get("command") for e in call.transcript if e.kind == "collect"]
    if index is None or index >= len(collects):  # not seen yet: be safe
        return any(getattr(c, "sensitive", False) for c in collects)
    return bool(getattr(collects[index], "sensitive", False))


def mask_number(number: str | None) -> str:
    """Mask a phone number for logs: keep the last two digits."""
    if not number:
        return "?"
    return "*" * max(len(number) - 2, 0) + number[-2:]
