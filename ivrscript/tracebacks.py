"""A script's failure as its author wants to read it: the script's own frames only.

The engine resumes the script from its own frames (``gen.throw``, the menu sub-flow), so a raw
traceback starts with ivrscript's internals. :func:`script_traceback` leaves those out (the full
traceback goes to the ``ivrscript.engine`` log at DEBUG) and says a missing prompt in one
sentence with the script's file and line.
"""

from __future__ import annotations

import logging
import os
import traceback

__all__ = ["script_traceback"]

log = logging.getLogger("ivrscript.engine")

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_frame(frame: traceback.FrameSummary) -> bool:
    return os.path.abspath(frame.filename).startswith(_PACKAGE)


def _script_only(exc: traceback.TracebackException | None, seen: set[int]) -> None:
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.stack = traceback.StackSummary.from_list(
            [f for f in exc.stack if not _library_frame(f)])
        _script_only(exc.__context__, seen)
        exc = exc.__cause__


def script_traceback(error: BaseException) -> str:
    """The traceback of ``error`` raised by a script, without ivrscript's frames.

    A missing prompt (:class:`~ivrscript.media.PromptNotFound`) is one line,
    ``script.py:12: prompt file not found: 'x.wav' (looked in ...)``. The full traceback is
    logged at DEBUG on ``ivrscript.engine``.
    """
    from .media import PromptNotFound  # media imports the engine, which imports this

    if log.isEnabledFor(logging.DEBUG):
        log.debug("full traceback:\n%s", "".join(traceback.format_exception(error)).rstrip())
    exc = traceback.TracebackException.from_exception(error)
    _script_only(exc, set())
    if isinstance(error, PromptNotFound) and exc.stack:
        where = exc.stack[-1]
        return f"{where.filename}:{where.lineno}: {error}"
    return "".join(exc.format()).rstrip()
