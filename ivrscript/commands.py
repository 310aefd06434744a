"""The verbs a script yields, and the results it gets back.

Commands are inert, immutable values: building one does nothing, yielding it asks the platform
to do it. Arguments are checked when a command is built, so a mistake points at the line that
made it.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Play",
    "Collect",
    "Forward",
    "Hangup",
    "Menu",
    "Digits",
    "PlayResult",
    "play",
    "collect",
    "forward",
    "hangup",
    "menu",
    "COMMAND_TYPES",
    "MASK",
    "Effect",
    "effect",
]

_PATTERN = re.compile(r"^[0-9*#xX]+$")

# No IVR waits this long for keys: a value above is milliseconds passed as seconds.
MAX_TIMEOUT = 600.0
MAX_INTER_DIGIT_TIMEOUT = 60.0
MASK = "****"  # what transcripts, logs and reprs show for the keys of a sensitive collect


def _media_tuple(name: str, media: Iterable[str] | str | None) -> tuple[str, ...]:
    if media is None:
        return ()
    if isinstance(media, str | bytes):
        media = (media,)
    items = tuple(media)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise TypeError(f"{name}: media must be non-empty strings (URLs or file paths), "
                            f"got {item!r}")
    return items


def time_limit_message(name: str, value: float, limit: float) -> str:
    """The one sentence for a time beyond what an IVR means (the loader's check uses it too)."""
    if value >= 120:
        length = f"{value / 60:g} minutes"
    else:
        length = f"{value:g} seconds"
    return (f"{name}={value!r} is in SECONDS, so it means {length}, more than the "
            f"{limit:g} s an IVR waits (did you pass milliseconds?)")


def _seconds(name: str, value: Any, *, limit: float = MAX_TIMEOUT) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")
    if value > limit:
        raise ValueError(time_limit_message(name, value, limit))
    return float(value)


def _patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"patterns must be a string or a list of strings, got {value!r}") from None
    if not items:
        raise ValueError("patterns must not be empty")
    for p in items:
        if not isinstance(p, str) or not _PATTERN.match(p):
            raise ValueError(f"bad pattern {p!r}: use digits, '*', '#' and 'x' (any digit)")
    return tuple(p.lower() for p in items)


@dataclass(frozen=True)
class Play:
    """Play media to the caller. Resumes with a :class:`PlayResult`."""

    media: tuple[str, ...]
    interrupt_by_dtmf: bool = False
    repeat: int = 1

    def __post_init__(self) -> None:
        if not self.media:
            raise ValueError("play() needs at least one media URL or file path")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 0:
            raise ValueError(f"repeat must be a whole number >= 0, got {self.repeat!r}")
        if self.repeat == 0 and not self.interrupt_by_dtmf:
            raise ValueError("repeat=0 plays until a key interrupts it, so it needs "
                             "interrupt_by_dtmf=True")

    def describe(self) -> str:
        extra = []
        if self.interrupt_by_dtmf:
            extra.append("interruptible")
        if self.repeat != 1:
            extra.append("repeat forever" if self.repeat == 0 else f"repeat {self.repeat}")
        return " ".join(self.media) + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Collect:
    """Collect keys from the caller. Resumes with :class:`Digits`.

    Times are seconds. With a prompt, the prompt plays with barge-in and ``timeout`` counts from
    its end (for local WAV prompts; for remote prompts the platform's timer includes the prompt).
    """

    patterns: tuple[str, ...]
    timeout: float = 10.0
    inter_digit_timeout: float = 3.0
    terminator: str | None = "#"
    reset_input: bool = True
    prompt: tuple[str, ...] = ()
    sensitive: bool = False  # the keys are secret: shown as **** outside the script

    def __post_init__(self) -> None:
        if self.terminator not in (None, "#", "*"):
            raise ValueError(f"terminator must be '#', '*' or None, got {self.terminator!r}")

    def describe(self) -> str:
        text = " ".join(self.patterns)
        if self.prompt:
            text += f" (prompt {' '.join(self.prompt)})"
        if self.sensitive:
            text += " (sensitive)"
        return text


@dataclass(frozen=True)
class Forward:
    """Forward the call to an extension or a phone number; the call then leaves the app."""

    extension: str | None = None
    phone_number: str | None = None

    def __post_init__(self) -> None:
        if (self.extension is None) == (self.phone_number is None):
            raise ValueError("forward() needs exactly one of extension= or phone_number=")
        for name in ("extension", "phone_number"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"forward(): {name} must be a non-empty string, got {value!r}")

    @property
    def target(self) -> str:
        return self.extension if self.extension is not None else str(self.phone_number)

    def describe(self) -> str:
        if self.extension is not None:
            return f"extension {self.extension}"
        return f"number {self.phone_number}"


@dataclass(frozen=True)
class Hangup:
    """The app ends the call."""

    def describe(self) -> str:
        return ""


@dataclass(frozen=True)
class Menu:
    """A sub-flow: ask for one of ``choices`` up to ``tries`` times; returns it, or ``None``.

    Yield it (``choice = yield ivr.menu(...)``) or delegate to it (``yield from``).
    """

    prompt: tuple[str, ...]
    choices: tuple[str, ...]
    tries: int = 3
    timeout: float = 5.0
    invalid: tuple[str, ...] = ()
    no_input: tuple[str, ...] = ()
    inter_digit_timeout: float = field(default=2.0)
    sensitive: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 1:
            raise ValueError(f"tries must be a whole number >= 1, got {self.tries!r}")
        keys = set("".join(self.choices))
        if "#" in keys and "*" in keys:
            raise ValueError(f"menu choices {list(self.choices)!r} use both '#' and '*': the "
                             "menu's collect needs one of them as its terminator")

    @property
    def terminator(self) -> str:
        """The key that ends the menu's input: '#', or '*' when '#' is one of the choices."""
        return "*" if "#" in "".join(self.choices) else "#"

    def __iter__(self) -> Iterator[Any]:
        return self.run()

    def run(self) -> Generator[Any, Any, str | None]:
        for attempt in range(1, self.tries + 1):
            digits = yield Collect(self.choices, timeout=self.timeout,
                                   inter_digit_timeout=self.inter_digit_timeout,
                                   terminator=self.terminator, prompt=self.prompt,
                                   sensitive=self.sensitive)
            if digits.matched:
                return str(digits)
            if attempt == self.tries:
                return None
            retry_prompt = self.no_input if digits.status == "Timeout" and not digits \
                else self.invalid
            if retry_prompt:
                yield Play(retry_prompt)
        return None

    def describe(self) -> str:
        return f"{' '.join(self.choices)} (prompt {' '.join(self.prompt)}, tries {self.tries})"


COMMAND_TYPES = (Play, Collect, Forward, Hangup, Menu)


@dataclass(frozen=True)
class Effect:
    """Run ``fn(*args, **kwargs)`` on the worker pool and resume with its JSON result (or raise
    its exception at the yield); a replay gets the logged result and never calls ``fn``."""

    fn: Any
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    timeout: float = 10.0

    @property
    def name(self) -> str:
        module = getattr(self.fn, "__module__", None) or ""
        qualname = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"{module}.{qualname}" if module and module != "__main__" else qualname

    def describe(self) -> str:
        return getattr(self.fn, "__name__", None) or repr(self.fn)


def effect(fn: Any, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Effect:
    """A side effect the script needs (an account lookup, the time, a random number): yield it
    to run ``fn(*args, **kwargs)`` once per call, durably (see README "Durable calls")."""
    if not callable(fn):
        raise TypeError(f"effect() needs a function to call, got {fn!r}")
    return Effect(fn, tuple(args), tuple(kwargs.items()), _seconds("timeout", timeout))


class Digits(str):
    """The keys a collect got: a ``str`` with ``.status`` and ``.matched``.

    ``status`` is ``"Completed"`` (the keys matched a pattern), ``"Not Found"`` (they matched
    none) or ``"Timeout"`` (too few keys in time). The keys of a ``sensitive`` collect reach
    the script unchanged, but ``repr()`` (tracebacks, logs) and :meth:`shown` mask them.
    """

    status: str
    sensitive: bool

    def __new__(cls, digits: str = "", status: str = "Completed", *,
                sensitive: bool = False) -> Digits:
        obj = super().__new__(cls, digits)
        obj.status = status
        obj.sensitive = bool(sensitive)
        return obj

    @property
    def matched(self) -> bool:
        return self.status == "Completed"

    def shown(self) -> str:
        """The keys as logs and transcripts may show them: ``****`` when sensitive."""
        return MASK if self.sensitive and str(self) else str(self)

    def transcript_line(self) -> str:
        """The details of the transcript's result line: ``'1234' Completed``."""
        return f"{self.shown()!r} {self.status}"

    def __repr__(self) -> str:
        extra = ", sensitive=True" if self.sensitive else ""
        return f"Digits({self.shown()!r}, status={self.status!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self.sensitive:
            return (_sensitive_digits, (str(self), self.status))
        return (Digits, (str(self), self.status))


def _sensitive_digits(digits: str, status: str) -> Digits:
    return Digits(digits, status, sensitive=True)


def collect_result(command: Collect | None, digits: str, status: str) -> Digits:
    """The :class:`Digits` a collect's update gives the script (masked outside it if the
    collect was ``sensitive``)."""
    return Digits(digits, status, sensitive=bool(command is not None and command.sensitive))


@dataclass(frozen=True)
class PlayResult:
    """How a play ended: ``status`` is ``"Completed"``, ``"Interrupted"`` or ``"Canceled"``."""

    status: str
    media: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.status == "Completed"

    @property
    def interrupted(self) -> bool:
        return self.status == "Interrupted"


# -- the builders scripts call -------------------------------------------------------------


def play(*media: str, interrupt_by_dtmf: bool = False, repeat: int = 1) -> Play:
    """Play one or more media (http(s) URLs or local file paths) to the caller.

    Resumes with a :class:`PlayResult`; a play the platform reports ``Failed`` raises
    :class:`~ivrscript.CommandFailed` at the yield. ``repeat=0`` plays until a key interrupts
    it and so needs ``interrupt_by_dtmf=True``.
    """
    if len(media) == 1 and isinstance(media[0], list | tuple):
        media = tuple(media[0])
    return Play(_media_tuple("play()", media), bool(interrupt_by_dtmf), repeat)


def collect(patterns: str | Iterable[str], *, timeout: float = 10.0,
            inter_digit_timeout: float = 3.0, terminator: str | None = "#",
            reset_input: bool = True, prompt: str | Iterable[str] | None = None,
            sensitive: bool = False) -> Collect:
    """Collect keys matching one of ``patterns`` (digits, ``*``, ``#``, ``x`` = any digit).

    Times are SECONDS (``timeout`` at most 600, ``inter_digit_timeout`` at most 60). The request
    carries ``terminator`` (``"#"`` or ``"*"``); ``None`` sends none, which leaves the
    platform's default ``#``. ``sensitive=True`` (a PIN): the script gets the keys, the
    transcript, logs and reprs show ``****``. Resumes with :class:`Digits`.
    """
    return Collect(
        _patterns(patterns),
        _seconds("timeout", timeout),
        _seconds("inter_digit_timeout", inter_digit_timeout, limit=MAX_INTER_DIGIT_TIMEOUT),
        terminator,
        bool(reset_input),
        _media_tuple("collect(prompt=...)", prompt),
        bool(sensitive),
    )


def forward(extension: str | int | None = None, *, phone_number: str | None = None) -> Forward:
    """Forward the call to an extension or an external number (exactly one of them).

    ``CallEnded("forwarded")`` is raised at the yield once the platform accepts it.
    """
    if isinstance(extension, int) and not isinstance(extension, bool):
        extension = str(extension)
    return Forward(extension, phone_number)


def hangup() -> Hangup:
    """End the call. ``CallEnded("hangup")`` is raised at the yield."""
    return Hangup()


def menu(prompt: str | Iterable[str], choices: Iterable[str], *, tries: int = 3,
         timeout: float = 5.0, invalid: str | Iterable[str] | None = None,
         no_input: str | Iterable[str] | None = None, sensitive: bool = False) -> Menu:
    """Ask for one of ``choices`` (key strings).

    Plays ``prompt`` with barge-in; on no input plays ``no_input``, on a wrong key ``invalid``
    (each if given) and asks again, ``tries`` times in all. Returns the choice, or ``None``
    after the last failed try. Use as ``choice = yield ivr.menu(...)``. The collect's
    terminator is ``#``, or ``*`` when ``#`` is a choice's key; choices using both are a
    ``ValueError``. ``sensitive=True`` masks the keys as :func:`collect` does.
    """
    prompt_media = _media_tuple("menu() prompt", prompt)
    if not prompt_media:
        raise ValueError("menu() needs a prompt")
    return Menu(prompt_media, _patterns(choices), tries, _seconds("timeout", timeout),
                _media_tuple("menu(invalid=...)", invalid),
                _media_tuple("menu(no_input=...)", no_input), sensitive=bool(sensitive))
