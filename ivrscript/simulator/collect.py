"""Collect: pattern matching, the input buffer, settle and timeouts, and the caller's keys.

Collect
  * ``patterns``: strings of ``0-9 * # x`` (``X`` taken as ``x``; ``x`` is any digit 0-9).
    ``timeout`` (default 10000 ms) and ``interDigitTimeout`` (default 3000 ms) are
    milliseconds > 0. ``terminator``: ``"#"`` or ``"*"``; absent or null means ``"#"`` (the
    guide: "``#`` by default"; whether the real platform has a way to switch the terminator off
    is unknown, so the simulator has none). A key equal to the terminator always terminates;
    the other of ``#`` and ``*`` is an ordinary key.
    ``resetInput`` defaults to true.
  * Keys go to the active collect, else to the party's input buffer (the last 64 keys are
    kept). Digits a collect consumed are never put back in the buffer; with
    ``resetInput: false`` a collect starts by consuming the buffered keys, in order.
  * ``interDigitTimeout`` runs only once the input has at least the shortest pattern's length,
    restarting at each key. When ``timeout`` passes with at least that many keys, the input
    ends ``Completed`` if it equals a pattern, else ``Not Found``.
  * One collect at a time per party: a second while one is active -> 409 ``TAS-409``.
  * Answered 204 without a body; with ``collect_ids=True``, 201 ``{"id"}`` and the update
    carries it as ``commandId``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import IvrError
from ..scheduler import Timer
from .common import UPDATE

if TYPE_CHECKING:
    from .core import Simulator
    from .phone import Phone

_PATTERN = re.compile(r"^[0-9*#xX]+$")
_DEFAULT_TERMINATOR = "#"  # when a Collect has no terminator (or null)


@dataclass(eq=False)
class _CollectState:
    patterns: tuple[str, ...]
    timeout: float  # seconds, before speed
    inter_digit: float  # seconds, before speed
    terminator: str
    command_id: str | None
    digits: str = ""
    fed_by_press: bool = False
    timer: Timer | None = None
    digit_timer: Timer | None = None

    @property
    def min_len(self) -> int:
        return min(len(p) for p in self.patterns)

    def cancel_timers(self) -> None:
        for timer in (self.timer, self.digit_timer):
            if timer is not None:
                timer.cancel()


def _pattern_allows(pattern: str, digits: str) -> bool:
    """True if ``digits`` is a prefix of what ``pattern`` matches (``x`` = any digit)."""
    if len(digits) > len(pattern):
        return False
    return all(p == d or (p == "x" and d.isdigit()) for p, d in zip(pattern, digits,
                                                                    strict=False))


def _match_state(patterns: Iterable[str], digits: str) -> tuple[bool, bool]:
    """(input equals a pattern, a longer pattern could still match)."""
    exact = longer = False
    for pattern in patterns:
        if _pattern_allows(pattern, digits):
            if len(pattern) == len(digits):
                exact = True
            else:
                longer = True
    return exact, longer


class CollectRules:
    """The Simulator's collect rules and keys (a mixin: ``self`` is the Simulator)."""

    def _start_collect(self: Simulator, phone: Phone, collect: _CollectState,
                       reset_input: bool) -> None:
        if reset_input:
            phone._buffer.clear()
        phone._collect = collect
        collect.timer = self._scheduler.call_later(
            collect.timeout / self.speed, lambda: self._collect_timeout(phone, collect))
        self._event(phone, "listen", " ".join(collect.patterns))
        pending = list(phone._buffer)
        phone._buffer.clear()
        for index, key in enumerate(pending):
            if phone._collect is not collect:
                phone._buffer.extend(pending[index:])
                break
            self._collect_key(phone, collect, key)
        self._changed.notify_all()

    def _collect_key(self: Simulator, phone: Phone, collect: _CollectState, key: str) -> None:
        if key == collect.terminator:
            exact, _ = _match_state(collect.patterns, collect.digits)
            self._finish_collect(phone, collect, "Completed" if exact else "Not Found")
            return
        collect.digits += key
        exact, longer = _match_state(collect.patterns, collect.digits)
        if not exact and not longer:
            self._finish_collect(phone, collect, "Not Found")
        elif exact and not longer:
            self._finish_collect(phone, collect, "Completed")
        elif len(collect.digits) >= collect.min_len:
            if collect.digit_timer is not None:
                collect.digit_timer.cancel()
            collect.digit_timer = self._scheduler.call_later(
                collect.inter_digit / self.speed, lambda: self._collect_settle(phone, collect))

    def _collect_settle(self: Simulator, phone: Phone, collect: _CollectState) -> None:
        """interDigitTimeout passed: the input is what it is."""
        with self._changed:
            if phone._collect is collect:
                exact, _ = _match_state(collect.patterns, collect.digits)
                self._finish_collect(phone, collect, "Completed" if exact else "Not Found")

    def _collect_timeout(self: Simulator, phone: Phone, collect: _CollectState) -> None:
        with self._changed:
            if phone._collect is not collect:
                return
            if len(collect.digits) < collect.min_len:
                self._finish_collect(phone, collect, "Timeout")
            else:
                exact, _ = _match_state(collect.patterns, collect.digits)
                self._finish_collect(phone, collect, "Completed" if exact else "Not Found")

    def _finish_collect(self: Simulator, phone: Phone, collect: _CollectState, status: str) -> None:
        collect.cancel_timers()
        if phone._collect is collect:
            phone._collect = None
        fields: dict[str, Any] = {"command": "Collect"}
        if collect.command_id is not None:
            fields["commandId"] = collect.command_id
        fields.update(partyId=phone.caller_party_id, status=status,
                      parameters={"digits": collect.digits})
        self._queue(phone, UPDATE, self._body(phone, **fields))
        self._event(phone, "collected", f"{collect.digits!r} {status}")
        self._changed.notify_all()

    def _press(self: Simulator, phone: Phone, keys: str, wait: bool, timeout: float) -> None:
        with self._changed:
            if wait:
                def ready() -> bool:
                    collect = phone._collect
                    return phone.ended or (collect is not None and not collect.fed_by_press)

                if not self._changed.wait_for(ready, timeout):
                    raise IvrError(f"press({keys!r}): the app did not start a new collect on "
                                   f"call {phone.session_id} within {timeout} s")
            if phone.ended:
                raise IvrError(f"press({keys!r}): call {phone.session_id} has ended "
                               f"({phone.end_reason})")
            self._event(phone, "keys", keys)
            for key in keys:
                play = phone._play
                if play is not None and play.interrupt_by_dtmf:
                    self._finish_play(phone, play, "Interrupted")
                collect = phone._collect
                if collect is None:
                    phone._buffer.append(key)
                else:
                    collect.fed_by_press = True
                    self._collect_key(phone, collect, key)
            self._changed.notify_all()
