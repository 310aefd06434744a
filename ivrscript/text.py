"""Showing values that came from outside (a callback, a platform answer) in logs and on a
terminal, safely (standard library only).

A forged session id with CR/LF would forge log lines; one with escape sequences would retitle
the window, clear the screen or write the clipboard (OSC 52) of whoever reads the terminal.
Every value that came from a callback or a platform message goes through :func:`shown` (or
:func:`clean`) before it is logged or printed, and text the CLI prints through
:func:`terminal`.

Each unsafe character is escaped exactly once, as Python writes it (``\\n``, ``\\r``,
``\\x1b``, ``\\u202e``); everything else, backslashes and quotes included, is left as it is:
the escapes are all printable ASCII, so escaping text that was already escaped changes
nothing (``clean(clean(x)) == clean(x)``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["shown", "clean", "terminal"]

# C0 controls (tab included), DEL, C1 controls, and the Unicode line/paragraph separators and
# bidi overrides that can reorder what a reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same but line feeds: text printed as several lines (a transcript, a traceback).
_UNSAFE_IN_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e"
                              "\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return match.group(0).encode("unicode_escape").decode("ascii")


def clean(value: Any, limit: int = 200) -> str:
    """``value`` as text with every control character escaped (``\\x1b``, ``\\n``, ...) and
    cut to ``limit`` characters; no quotes added."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return _UNSAFE.sub(_escape, text)


def shown(value: Any, limit: int = 80) -> str:
    """An id or status from outside as it may appear in a log line: quoted, escaped, short.

    Quoted as ``repr`` would quote it (single quotes, or double ones for a value with a single
    quote in it and no double one), but escaped once: ``shown("a\\nb")`` is the five
    characters ``'a\\nb'``, not ``repr``'s ``'a\\\\nb'`` of the escaped text.
    """
    if value is None:
        return "None"
    text = clean(value, limit)
    quote = '"' if "'" in text and '"' not in text else "'"
    return f"{quote}{text}{quote}"


def terminal(text: str) -> str:
    """Text the CLI prints, with control characters escaped as :func:`clean` does, but its
    line feeds kept (a transcript is several lines); not cut."""
    return _UNSAFE_IN_LINES.sub(_escape, text)
