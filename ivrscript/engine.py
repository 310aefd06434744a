"""The call engine: a pure state machine that runs one call's script.

Events go in (the platform's callbacks, and the outcome of each request the engine asked for),
actions come out (requests to send, timers to set, the end). No sockets, no threads, no clock
of its own: the app feeds it, replay feeds it from a recording, tests feed it by hand.

Deterministic given its inputs: every decision that depends on time uses ``clock()``, which the
durable driver (:mod:`ivrscript.durable`) sets to the logged wall-clock time of the input being
processed, so replaying a call's log takes exactly the decisions the live run took.

Rules it keeps (DESIGN.md):
- one request in flight at a time, in script order (a prompted collect is play, then collect);
- a command's result resumes the yield; a failed one raises ``CommandFailed`` there;
- duplicate, stale and after-exit updates change nothing;
- when the call ends while the script waits, ``CallEnded(reason)`` is raised at that yield and
  the script gets no more commands; returning hangs up; raising runs ``on_error``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import sys
import time
import types
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from .call import RESULT, Call
from .commands import Collect, Effect, Forward, Hangup, Menu, Play, PlayResult, collect_result
from .errors import CallEnded, CommandFailed, IvrError, PlatformError
from .text import clean, shown
from .tracebacks import script_traceback

__all__ = [
    "CallEngine",
    "Media",
    "Request",
    "Wait",
    "Finished",
    "Update",
    "CommandError",
    "Exited",
    "Sent",
    "SendFailed",
    "Resend",
    "GoneTimeout",
    "Abort",
    "EffectDone",
    "Overdue",
]

log = logging.getLogger("ivrscript.engine")

MAX_ATTEMPTS = 5  # a request answered 429/503 is sent at most this many times (then CommandFailed)
GONE_WAIT = 1.0  # seconds to wait for on-call-exit after a 404 before ending the call
MAX_BAD_YIELDS = 20  # a script that keeps yielding junk after TypeError is stopped
OVERDUE_MARGIN = 30.0  # seconds past a command's natural end before its update counts as lost
SEEN_KEYS = 64  # update keys remembered for dedupe (hashed; a flood of forged ones stays small)


# -- what the engine asks for (actions) ------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """A resolved prompt: the URI the platform fetches and, if known, its length in seconds."""

    uri: str
    seconds: float | None = None


@dataclass(frozen=True)
class Request:
    """Send one request to the platform; answer with :class:`Sent` or :class:`SendFailed`.

    ``op`` is ``play``, ``collect``, ``cancel``, ``forward`` or ``drop``; ``args`` are the
    client method's keyword arguments (session and party ids included).
    """

    token: int
    op: str
    args: dict[str, Any]
    command: str = field(default="", compare=False)  # the yielded command, in script terms
    where: str = field(default="", compare=False)  # the script's file:line that yielded it
    effect: Effect | None = field(default=None, compare=False, repr=False)  # op "effect"


@dataclass(frozen=True)
class Wait:
    """Feed ``event`` back after ``seconds`` (a retry, or the wait for on-call-exit)."""

    seconds: float
    event: Any


@dataclass(frozen=True)
class Finished:
    """The call is over and the script is done; ``reason`` is the call's end reason."""

    reason: str


# -- what the engine is told (events) --------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """An on-command-update callback."""

    command: str
    status: str
    command_id: str | None = None
    digits: str | None = None
    received_at: float | None = None


@dataclass(frozen=True)
class CommandError:
    """An on-command-error callback: the pending command failed."""

    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exited:
    """An on-call-exit callback: the call ended or left the app."""

    received_at: float | None = None


@dataclass(frozen=True)
class Sent:
    """The request ``token`` was accepted; ``command_id`` if the platform gave one."""

    token: int
    command_id: str | None = None


@dataclass(frozen=True)
class SendFailed:
    """The request ``token`` failed. ``retry_after`` set: it was not executed, try again."""

    token: int
    error: BaseException
    retry_after: float | None = None


@dataclass(frozen=True)
class Resend:
    """Time to send request ``token`` again (after a Retry-After)."""

    token: int


@dataclass(frozen=True)
class GoneTimeout:
    """The wait for on-call-exit after a 404 is over."""


@dataclass(frozen=True)
class EffectDone:
    """The effect ``token`` returned ``value`` or raised ``error``."""

    token: int
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Overdue:
    """The update for request ``token`` is overdue past its natural end: it was lost."""

    token: int
    seconds: float = 0.0


@dataclass(frozen=True)
class Abort:
    """Stop the script from outside (Ctrl-C, shutdown): it is closed (its ``finally`` runs),
    ``error`` is recorded as its failure and ``on_error`` ends the call."""

    error: BaseException


Action = Request | Wait | Finished
MediaResolver = Callable[[str], Media]


def _default_resolver(ref: str) -> Media:
    return Media(ref, None)


def _status_word(status: str) -> str:
    return status


@dataclass(slots=True)
class _Outgoing:
    token: int
    op: str
    args: dict[str, Any]
    attempts: int = 0
    purpose: str = "command"  # command | prompt | cancel | end
    waited: float = 0.0  # seconds of Retry-After waited so far (RetryLater.budget bounds it)
    effect: Effect | None = None


@dataclass(slots=True)
class _PendingCollect:
    sent_at: float
    timeout: float  # seconds as sent to the platform
    command_id: str | None = None
    sent: bool = False


class CallEngine:
    """Runs one call's script. Feed it events with :meth:`handle`; do what it returns.

    ``resolve_media`` turns a media reference into a :class:`Media` (raising CommandFailed for a
    missing file); ``on_error`` is the command run when the script raises; ``time_scale`` is the
    platform's clock relative to real time (1/speed on the simulator; 0 disables timing checks,
    as in replay).
    """

    # A parked call keeps its engine: slots, not a dict per engine.
    __slots__ = ("script", "call", "resolve_media", "on_error", "clock", "time_scale",
                 "overdue_margin", "_stack", "_waiting", "_out", "_next_token", "_play_id",
                 "_prompt_id", "_prompt_open", "_collect", "_queued_collect", "_phase",
                 "_end_reason", "_gone", "_seen", "_awaited", "_play_seconds", "_bad_yields",
                 "_in_on_error")

    def __init__(self, script: Callable[[Call], Any], call: Call, *,
                 resolve_media: MediaResolver = _default_resolver,
                 on_error: Play | Forward | Hangup | None = None,
                 clock: Callable[[], float] = time.time, time_scale: float = 1.0,
                 overdue_margin: float | None = OVERDUE_MARGIN) -> None:
        self.script = script
        self.call = call
        self.resolve_media = resolve_media
        self.on_error = on_error if on_error is not None else Hangup()
        self.clock = clock
        self.time_scale = time_scale
        self.overdue_margin = overdue_margin  # None: never treat an update as lost
        self._stack: list[Generator[Any, Any, Any]] = []
        self._waiting: Play | Collect | Forward | Hangup | Effect | None = None  # yielded
        self._out: _Outgoing | None = None  # the request in flight or waiting to be retried
        self._next_token = 0
        self._play_id: str | None = None  # the awaited play's command id
        self._prompt_id: str | None = None  # a prompted collect's barge-in play
        self._prompt_open = False
        self._collect: _PendingCollect | None = None
        self._queued_collect: dict[str, Any] | None = None  # collect waiting for its prompt
        self._phase = "new"  # new | running | ending | done
        self._end_reason: str | None = None
        self._gone = False
        self._seen: dict[bytes, None] = {}  # hashed update keys, oldest first, bounded
        self._awaited: int | None = None  # token of the request whose update is awaited
        self._play_seconds: float | None = None  # the awaited play's length, when known
        self._bad_yields = 0
        self._in_on_error = False

    # -- public ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def awaited(self) -> int | None:
        """The token of the request whose update the engine is waiting for, if any."""
        return self._awaited if self._phase == "running" else None

    def where(self) -> str:
        """The script's ``file:line`` where it is suspended (its innermost generator)."""
        for gen in reversed(self._stack):
            frame = getattr(gen, "gi_frame", None)
            if frame is not None:
                return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return "?"

    def start(self) -> list[Action]:
        """The call entered: record it and run the script to its first command."""
        if self._phase != "new":
            return []
        self._phase = "running"
        c = self.call
        # (the numbers came from the callback: escaped, so a forged one adds no line)
        self.call.transcript.add("enter", f"from {clean(c.caller or '?', 80)} to "
                                 f"{clean(c.called or '?', 80)}",
                                 session_id=c.session_id)
        try:
            gen = self.script(c)
        except Exception as exc:
            return self._script_failed(exc)
        if not inspect.isgenerator(gen):
            return self._script_failed(TypeError(
                f"script {getattr(self.script, '__name__', self.script)!r} returned "
                f"{type(gen).__name__}, not a generator: use 'yield' to issue commands"))
        self._stack.append(gen)
        return self._step(None, None)

    def handle(self, event: Any) -> list[Action]:
        """Apply one event; returns the actions to carry out, in order."""
        if self._phase in ("new", "done"):
            return []
        if isinstance(event, Sent):
            return self._on_sent(event)
        if isinstance(event, SendFailed):
            return self._on_send_failed(event)
        if isinstance(event, Resend):
            if self._out is not None and self._out.token == event.token:
                return [self._emit(self._out)]
            return []
        if isinstance(event, Update):
            return self._on_update(event)
        if isinstance(event, CommandError):
            return self._on_command_error(event)
        if isinstance(event, Exited):
            return self._on_exit()
        if isinstance(event, GoneTimeout):
            return self._on_exit() if self._gone else []
        if isinstance(event, EffectDone):
            return self._on_effect_done(event)
        if isinstance(event, Overdue):
            if self._phase != "running" or event.token != self._awaited or self.call.ended:
                return []
            what = _kind(self._waiting) if self._waiting is not None else "command"
            error = IvrError(f"no update came for the {what} within {event.seconds:.0f} s of "
                             "its natural end (the platform's update was lost)")
            log.error("call %s: %s", shown(self.call.session_id), error)
            return self.handle(Abort(error))
        if isinstance(event, Abort):
            if self._phase != "running" or self.call.ended:
                return []
            self._out = None
            self._awaited = None
            self._reset_waits()
            self._prompt_open = False
            self._close_stack()
            return self._script_failed(event.error)
        raise TypeError(f"unknown engine event {event!r}")

    # -- running the script ------------------------------------------------------------------

    def _step(self, value: Any, exc: BaseException | None) -> list[Action]:
        """Resume the script with a value or an exception until it yields a command or ends."""
        while self._stack:
            gen = self._stack[-1]
            try:
                yielded = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                self._stack.pop()
                value, exc = stop.value, None
                if not self._stack:
                    return self._script_returned(value)
                continue
            except BaseException as error:  # noqa: BLE001 - the script's failure is data here
                self._stack.pop()
                if self._stack:
                    value, exc = None, error
                    continue
                if isinstance(error, CallEnded) and self.call.ended:
                    return self._finish()
                if isinstance(error, KeyboardInterrupt):
                    raise  # Ctrl-C is not the script's failure
                # Anything else, SystemExit (exit() in a script) included, is: a worker that
                # let it escape would leave the caller in silence.
                return self._script_failed(error)
            value, exc = None, None
            if self.call.ended:
                # The script caught CallEnded and tried to go on: it gets no more commands.
                self._close_stack()
                return self._finish()
            if isinstance(yielded, Menu):
                self._stack.append(yielded.run())
                continue
            if isinstance(yielded, types.GeneratorType):
                self._stack.append(yielded)
                continue
            if isinstance(yielded, Play | Collect | Forward | Hangup | Effect):
                self._bad_yields = 0
                return self._issue(yielded)
            self._bad_yields += 1
            if self._bad_yields > MAX_BAD_YIELDS:
                self._close_stack()
                return self._script_failed(TypeError("script kept yielding non-commands"))
            exc = TypeError(_bad_yield_message(yielded))
        return self._finish()

    def _close_stack(self) -> None:
        while self._stack:
            gen = self._stack.pop()
            try:
                gen.close()
            except Exception:
                log.exception("closing the script of call %s failed", shown(self.call.session_id))

    def _issue(self, command: Play | Collect | Forward | Hangup | Effect) -> list[Action]:
        c = self.call
        self._waiting = command
        c.transcript.add(_kind(command), command.describe(), command=command)
        session = c.session_id
        if isinstance(command, Effect):
            return [self._request("effect", dict(
                fn=command.name, args=_json_or_repr(list(command.args)),
                kwargs=_json_or_repr(dict(command.kwargs))), effect=command)]
        if isinstance(command, Play):
            try:
                media = [self.resolve_media(m) for m in command.media]
            except CommandFailed as error:
                return self._fail_waiting(error)
            self._play_id = None
            known = [m.seconds for m in media]
            self._play_seconds = (sum(known) * command.repeat  # type: ignore[arg-type]
                                  if command.repeat and None not in known else None)
            return [self._request("play", dict(
                session_id=session, party_id=c.caller_party_id, uris=[m.uri for m in media],
                interrupt_by_dtmf=command.interrupt_by_dtmf, repeat=command.repeat))]
        if isinstance(command, Collect):
            try:
                prompt = [self.resolve_media(m) for m in command.prompt]
            except CommandFailed as error:
                return self._fail_waiting(error)
            extra = sum(m.seconds or 0.0 for m in prompt)
            timeout = command.timeout + extra
            collect_args = dict(
                session_id=session, party_id=c.caller_party_id, patterns=list(command.patterns),
                timeout_ms=int(round(timeout * 1000)),
                inter_digit_timeout_ms=int(round(command.inter_digit_timeout * 1000)),
                terminator=command.terminator, reset_input=command.reset_input)
            self._collect = _PendingCollect(sent_at=self.clock(), timeout=timeout)
            if prompt:
                self._queued_collect = collect_args
                self._prompt_id = None
                self._prompt_open = True
                return [self._request("play", dict(
                    session_id=session, party_id=c.caller_party_id, uris=[m.uri for m in prompt],
                    interrupt_by_dtmf=True, repeat=1), purpose="prompt")]
            return [self._request("collect", collect_args)]
        if isinstance(command, Forward):
            return [self._request("forward", dict(
                session_id=session, app_party_id=c.party_id, extension=command.extension,
                phone_number=command.phone_number))]
        return [self._request("drop", dict(session_id=session))]

    def _request(self, op: str, args: dict[str, Any], purpose: str = "command",
                 effect: Effect | None = None) -> Request:
        self._next_token += 1
        out = _Outgoing(self._next_token, op, args, purpose=purpose, effect=effect)
        if purpose != "cancel":
            self._out = out
        return self._emit(out)

    def _emit(self, out: _Outgoing) -> Request:
        out.attempts += 1
        if out.op == "collect" and self._collect is not None:
            self._collect.sent_at = self.clock()
        waiting = self._waiting
        if out.purpose == "end":
            label = "hangup (the app ends the call)"
        elif waiting is not None:
            label = f"{_kind(waiting)} {waiting.describe()}".rstrip()
        else:
            label = out.op
        return Request(out.token, out.op, dict(out.args), command=label, where=self.where(),
                       effect=out.effect)

    # -- outcomes of requests ----------------------------------------------------------------

    def _on_sent(self, event: Sent) -> list[Action]:
        out = self._out
        if out is None or out.token != event.token:
            return []  # a cancel, or something already superseded
        self._out = None
        if out.purpose == "end":
            return self._end_call(self._end_reason or "hangup")
        if out.op == "play" and out.purpose == "prompt":
            self._prompt_id = event.command_id
            if self._queued_collect is None:
                return []
            args, self._queued_collect = self._queued_collect, None
            return [self._request("collect", args)]
        if out.op == "play":
            self._play_id = event.command_id
            return self._expect_update(out.token, self._play_seconds)
        if out.op == "collect":
            pending = self._collect
            if pending is None:
                return []
            pending.sent = True
            pending.command_id = event.command_id
            waiting = self._waiting
            longest = max((len(p) for p in waiting.patterns), default=1) \
                if isinstance(waiting, Collect) else 1
            inter = waiting.inter_digit_timeout if isinstance(waiting, Collect) else 0.0
            return self._expect_update(out.token, pending.timeout + inter * longest)
        if out.op == "forward":
            return self._end_call("forwarded")
        if out.op == "drop":
            return self._end_call("hangup")
        return []

    def _expect_update(self, token: int, natural: float | None) -> list[Action]:
        """The request ``token`` now awaits its update; past its natural end (platform
        seconds) plus the margin, the update counts as lost."""
        self._awaited = token
        if natural is None or self.overdue_margin is None or self.time_scale <= 0:
            return []
        seconds = natural * self.time_scale + self.overdue_margin
        return [Wait(seconds, Overdue(token, seconds))]

    def _on_effect_done(self, event: EffectDone) -> list[Action]:
        out = self._out
        if self._phase != "running" or out is None or out.token != event.token \
                or not isinstance(self._waiting, Effect):
            return []
        self._out = None
        self._waiting = None
        if event.error is not None:
            self.call.transcript.add(RESULT, f"raised {type(event.error).__name__}: "
                                             f"{event.error}")
            return self._step(None, event.error)
        shown_value = repr(event.value)
        if len(shown_value) > 80:
            shown_value = shown_value[:77] + "..."
        self.call.transcript.add(RESULT, shown_value)
        return self._step(event.value, None)

    def _on_send_failed(self, event: SendFailed) -> list[Action]:
        out = self._out
        if out is None or out.token != event.token:
            return []  # a failed cancel changes nothing
        error = event.error
        budget = getattr(error, "budget", None)
        if event.retry_after is not None and out.attempts < MAX_ATTEMPTS and (
                budget is None or out.waited + event.retry_after <= budget):
            out.waited += max(event.retry_after, 0.0)
            return [Wait(max(event.retry_after, 0.0), Resend(out.token))]
        self._out = None
        if isinstance(error, PlatformError) and error.status == 404:
            # The session is gone: the caller hung up while the request was in flight.
            if out.purpose == "end":
                return self._end_call("caller-hangup")
            self._gone = True
            return [Wait(GONE_WAIT, GoneTimeout())]
        if out.purpose == "end":
            # Hanging up failed: nothing more the app can do for this call.
            self.call.transcript.add("error", f"hang-up failed: {error}")
            return self._end_call("hangup")
        failure = CommandFailed(f"{out.op} failed: {error}", command=self._waiting, cause=error)
        failure.__cause__ = error
        return self._fail_waiting(failure)

    def _fail_waiting(self, error: CommandFailed) -> list[Action]:
        self._reset_waits()
        self.call.transcript.add(RESULT, f"failed: {error}", failure=type(error).__name__)
        return self._step(None, error)

    def _reset_waits(self) -> None:
        self._awaited = None
        self._waiting = None
        self._play_id = None
        self._collect = None
        self._queued_collect = None

    # -- callbacks ---------------------------------------------------------------------------

    def _on_update(self, u: Update) -> list[Action]:
        if u.command_id is not None:
            key = update_key(u.command, u.command_id, u.status, u.digits)
            if key in self._seen:
                log.debug("duplicate update ignored: %s %s", shown(u.command), shown(u.command_id))
                return []
            self._seen[key] = None
            if len(self._seen) > SEEN_KEYS:
                del self._seen[next(iter(self._seen))]
        if self._phase != "running":
            return []
        if u.command == "Play":
            return self._on_play_update(u)
        if u.command == "Collect":
            return self._on_collect_update(u)
        log.info("call %s: update for unknown command %s ignored", shown(self.call.session_id),
                 shown(u.command))
        return []

    def _on_play_update(self, u: Update) -> list[Action]:
        if self._prompt_open and u.command_id is not None and u.command_id == self._prompt_id:
            self._prompt_open = False
            if u.status == "Failed":
                error = CommandFailed(f"the prompt {self._waiting_media()} could not be played",
                                      command=self._waiting)
                return self._fail_waiting(error)
            return []
        if not isinstance(self._waiting, Play) or self._play_id is None \
                or u.command_id != self._play_id:
            log.info("call %s: stale Play update %s %s ignored", shown(self.call.session_id),
                     shown(u.command_id), shown(u.status))
            return []
        command = self._waiting
        self._waiting = None
        self._play_id = None
        self._awaited = None
        if u.status == "Failed":
            self.call.transcript.add(RESULT, "Failed")
            error = CommandFailed(f"play of {' '.join(command.media)} failed "
                                  "(the platform could not fetch or play it)", command=command)
            return self._step(None, error)
        self.call.transcript.add(RESULT, u.status, status=u.status)
        return self._step(PlayResult(u.status, command.media), None)

    def _on_collect_update(self, u: Update) -> list[Action]:
        pending = self._collect
        if not isinstance(self._waiting, Collect) or pending is None or not pending.sent:
            log.info("call %s: stale Collect update %s ignored", shown(self.call.session_id),
                     shown(u.status))
            return []
        if pending.command_id is not None or u.command_id is not None:
            if u.command_id != pending.command_id:
                log.info("call %s: Collect update for another collect ignored",
                         shown(self.call.session_id))
                return []
        else:
            arrived = u.received_at
            if arrived is not None and self.time_scale > 0:
                if arrived < pending.sent_at:
                    log.info("call %s: Collect update from before this collect ignored",
                             shown(self.call.session_id))
                    return []
                expected = pending.timeout * self.time_scale
                if u.status == "Timeout" and arrived - pending.sent_at < expected * 0.5:
                    log.info("call %s: early Collect Timeout (%.3fs of %.3fs) ignored",
                             shown(self.call.session_id), arrived - pending.sent_at, expected)
                    return []
        command, self._waiting = self._waiting, None
        self._collect = None
        self._awaited = None
        digits = collect_result(command, u.digits or "", u.status)
        self.call.transcript.add(RESULT, digits.transcript_line(), digits=digits.shown(),
                                 status=u.status)
        actions: list[Action] = []
        if self._prompt_open and self._prompt_id is not None:
            # The caller is done; stop what is left of the prompt (timing-dependent, never
            # compared in replay).
            self._prompt_open = False
            self._next_token += 1
            actions.append(Request(self._next_token, "cancel", dict(
                session_id=self.call.session_id, party_id=self.call.caller_party_id,
                command_id=self._prompt_id)))
        self._prompt_open = False
        self._prompt_id = None
        return actions + self._step(digits, None)

    def _waiting_media(self) -> str:
        w = self._waiting
        if isinstance(w, Collect):
            return " ".join(w.prompt)
        if isinstance(w, Play):
            return " ".join(w.media)
        return ""

    def _on_command_error(self, e: CommandError) -> list[Action]:
        if self._phase != "running" or self._waiting is None:
            return []
        detail = e.payload.get("message") or e.payload.get("errorCode") or "no details"
        error = CommandFailed(f"the platform reported an error for "
                              f"{_kind(self._waiting)}: {detail}", command=self._waiting)
        self._out = None
        return self._fail_waiting(error)

    def _on_exit(self) -> list[Action]:
        if self.call.ended:
            return []
        if self._phase == "ending":
            # We were hanging up (script returned or on_error) and the call is gone.
            self._out = None
            return self._end_call(self._end_reason or "hangup")
        self._out = None
        return self._end_call("caller-hangup")

    # -- ending ------------------------------------------------------------------------------

    def _end_call(self, reason: str) -> list[Action]:
        """The call is over: record it and raise CallEnded at the script's yield."""
        c = self.call
        already = c.ended
        c.ended = True
        c.end_reason = c.end_reason or reason
        if not already:
            c.transcript.add("exit", reason, reason=reason)
        self._reset_waits()
        self._prompt_open = False
        self._gone = False
        if self._phase == "running" and self._stack:
            return self._step(None, CallEnded(reason))
        return self._finish()

    def _script_returned(self, value: Any) -> list[Action]:
        if self._in_on_error:
            if self.call.ended:
                return self._finish()
            self.call.transcript.add("hangup", "(on_error)")
            return self._hang_up("hangup")
        self.call.result = value
        if self.call.ended:
            return self._finish()
        self.call.transcript.add("hangup", "(script returned)")
        return self._hang_up("hangup")

    def _script_failed(self, error: BaseException) -> list[Action]:
        c = self.call
        if c.error is None:
            c.error = error
        self._close_stack()
        text = script_traceback(error)
        log.error("call %s: the script raised %s", shown(c.session_id), text)
        c.transcript.add("error", text, error=repr(error))
        if c.ended:
            return self._finish()
        command = self.on_error
        if isinstance(command, Hangup):
            c.transcript.add("hangup", "(on_error)")
            return self._hang_up("hangup")
        # on_error runs as a one-line script; if it fails too, the app hangs up.
        self._phase = "running"
        self._in_on_error = True
        self._stack = [_on_error_flow(command)]
        self.on_error = Hangup()  # a second failure just hangs up
        return self._step(None, None)

    def _hang_up(self, reason: str) -> list[Action]:
        self._phase = "ending"
        self._end_reason = reason
        self._waiting = None
        return [self._request("drop", dict(session_id=self.call.session_id), purpose="end")]

    def _finish(self) -> list[Action]:
        if self._phase == "done":
            return []
        if not self.call.ended:
            # The script is over but the call is not: hang up so no caller waits in silence.
            if self._phase != "ending":
                self.call.transcript.add("hangup", "(script ended)")
                return self._hang_up("hangup")
            return []
        self._phase = "done"
        self._out = None
        self._close_stack()
        self.call._finish(self.call.end_reason or "hangup")
        return [Finished(self.call.end_reason or "hangup")]


def _on_error_flow(command: Play | Forward | Hangup) -> Generator[Any, Any, None]:
    yield command


_KIND_NAMES: dict[type, str] = {}


def _kind(command: Any) -> str:
    """``play``, ``collect``, ...: one string per type (a parked call's transcript keeps them)."""
    kind = type(command)
    name = _KIND_NAMES.get(kind)
    if name is None:
        name = _KIND_NAMES.setdefault(kind, sys.intern(kind.__name__.lower()))
    return name


def _bad_yield_message(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    hint = ""
    if callable(value) and getattr(value, "__module__", "").startswith("ivrscript"):
        hint = f" (did you forget to call it: {getattr(value, '__name__', 'it')}(...)?)"
    elif inspect.isgeneratorfunction(value):
        hint = " (a generator function: call it to get a sub-flow, e.g. yield ask_pin(call))"
    return (f"cannot yield {text} of type {type(value).__name__}{hint}: yield one of "
            "ivr.play(...), ivr.collect(...), ivr.forward(...), ivr.hangup(), ivr.menu(...), "
            "ivr.effect(...) or a generator (a sub-flow)")


def update_key(command: str, command_id: str | None, status: str, digits: str | None) -> bytes:
    """What dedupe of an update needs, hashed: a short key whatever the digits' size."""
    raw = json.dumps([command, command_id, status, digits]).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16).digest()


def _json_or_repr(value: Any) -> Any:
    """``value`` as JSON data if it is that, else a placeholder naming its type (compared on
    replay, so it must not change between runs)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return f"<{type(value).__name__}>"
