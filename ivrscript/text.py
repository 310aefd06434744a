"""Showing values that came from outside (a callback, a platform answer) in logs and on a
terminal, safely (standard library only).

A forged session id with CR/LF would forge log lines; one with escape sequences would retitle
the window, clear the screen or write the clipboard (OSC 52) of whoever reads the terminal.
Every value that came from a callback or a platform message goes through :func:`shown`
before it is logged or printed.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["shown", "clean"]

# C0 controls (tab included), DEL, C1 controls, and the Unicode line/paragraph separators and
# bidi overrides that can reorder what a reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(value: Any, limit: int = 200) -> str:
    """``value`` as text with every control character escaped (``\\x1b``, ``\\n``, ...) and
    cut to ``limit`` characters; no quotes added."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return _UNSAFE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def shown(value: Any, limit: int = 80) -> str:
    """An id or status from outside as it may appear in a log line: quoted, escaped, short."""
    if value is None:
        return "None"
    return repr(clean(value, limit))
