"""Errors raised by ivrscript.

    IvrError                 base of everything ivrscript raises on purpose
     +-- CallEnded           the call ended while the script waited at a yield (.reason)
     +-- CommandFailed       a command could not be carried out (missing media, Failed play, ...)
     +-- PlatformError       the platform answered an error (.status, .error_code, .message)
     |    +-- RetryLater     429/503: not executed, send again after .retry_after seconds
     +-- ReplayMismatch      a replayed script issued something the recording does not have
     +-- ScriptChanged       a durable call's script issues other commands than its log has
     +-- ConfigError         missing credentials or a bad set-up; the message says what to set
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IvrError",
    "CallEnded",
    "CommandFailed",
    "PlatformError",
    "RetryLater",
    "ReplayMismatch",
    "ScriptChanged",
    "ConfigError",
]

END_REASONS = ("caller-hangup", "forwarded", "hangup")


class IvrError(Exception):
    """Base class of every error ivrscript raises on purpose."""


class CallEnded(IvrError):
    """Raised at the pending ``yield`` when the call ends.

    ``reason`` is ``"caller-hangup"`` (any exit the app did not cause), ``"forwarded"`` or
    ``"hangup"``. Catch it (or use ``try/finally``) to clean up; the call gets no more commands.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"call ended: {reason}")


class CommandFailed(IvrError):
    """A command could not be carried out; raised at the ``yield`` that issued it."""

    def __init__(self, message: str, *, command: Any = None, cause: BaseException | None = None):
        super().__init__(message)
        self.command = command
        self.cause = cause


class PlatformError(IvrError):
    """The platform answered with an error.

    ``status`` is the HTTP status (0 when no answer came), ``error_code`` the platform's
    ``errorCode`` (e.g. ``"CMN-102"``), ``message`` its message.
    """

    def __init__(self, status: int, error_code: str | None, message: str, *, method: str = "",
                 path: str = "") -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.method = method
        self.path = path
        where = f" for {method} {path}" if method else ""
        code = f" {error_code}" if error_code else ""
        super().__init__(f"platform answered {status}{code}{where}: {message}")

    @property
    def errorCode(self) -> str | None:  # noqa: N802 - the platform's own spelling
        return self.error_code


class RetryLater(PlatformError):
    """429 or 503: the request was not executed; send it again after ``retry_after`` s.

    ``budget``: the seconds one command may spend waiting in all (None: no bound); a caller
    that schedules the retries stops, and fails the command, before passing it.
    """

    def __init__(self, status: int, error_code: str | None, message: str, *,
                 retry_after: float, method: str = "", path: str = "",
                 budget: float | None = None) -> None:
        super().__init__(status, error_code, message, method=method, path=path)
        self.retry_after = retry_after
        self.budget = budget


class ReplayMismatch(IvrError, AssertionError):
    """A replayed script issued a request the recording does not have at that step."""

    def _repr_html_(self) -> str:
        """In a notebook: recorded and issued side by side (a table, not wrapped text)."""
        from .notebook import mismatch_html

        return mismatch_html(self)


class ScriptChanged(IvrError):
    """Resuming a durable call, the script issued a command other than the one its log has at
    that step (the script changed while the call was in progress); the call ends through
    ``on_error``. The message names the step, the logged command and the new one."""


class ConfigError(IvrError):
    """Missing credentials or a bad set-up. The message says what to set."""
