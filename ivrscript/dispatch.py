"""Between the engine and the platform: callbacks into engine events, engine requests into
client calls. The app and replay both use these (neither imports the other).

The client is anything with RingCentral's command methods (``play``, ``collect``,
``cancel_play``, ``forward``, ``drop``, each taking ``retry=``): the REST client when live, the
in-memory recording player in a replay.
"""

from __future__ import annotations

import logging
from typing import Any

from .call import Call
from .engine import CommandError, Exited, Request, SendFailed, Sent, Update
from .errors import PlatformError, RetryLater

__all__ = ["send_with", "call_from_enter", "callback_event"]

log = logging.getLogger("ivrscript.app")  # the app's logger: these lines are the app's


def send_with(client: Any, request: Request) -> Sent | SendFailed:
    """Send one engine request through ``client``; the outcome to feed back to the engine."""
    args = request.args
    try:
        if request.op == "play":
            return Sent(request.token, client.play(**args, retry=False))
        if request.op == "collect":
            return Sent(request.token, client.collect(**args, retry=False))
        if request.op == "cancel":
            client.cancel_play(**args, retry=False)
        elif request.op == "forward":
            client.forward(**args, retry=False)
        elif request.op == "drop":
            client.drop(**args, retry=False)
        else:
            raise ValueError(f"unknown request {request.op}")
        return Sent(request.token)
    except RetryLater as error:
        log.warning("%s answered %s; retrying in %.1f s", request.op, error.status,
                    error.retry_after)
        return SendFailed(request.token, error, retry_after=error.retry_after)
    except PlatformError as error:
        level = logging.DEBUG if request.op == "cancel" else logging.WARNING
        if error.status == 404:  # the session is gone (the caller hung up): not a warning
            level = min(level, logging.INFO)
        log.log(level, "%s failed: %s", request.op, error)
        return SendFailed(request.token, error)
    except Exception as error:
        log.exception("%s failed", request.op)
        return SendFailed(request.token, error)


def call_from_enter(body: dict[str, Any]) -> Call:
    """The :class:`Call` an on-call-enter body describes."""
    party = body["inParty"]
    return Call(body["sessionId"], party_id=body["partyId"], caller_party_id=party["id"],
                caller=(party.get("from") or {}).get("phoneNumber"),
                called=(party.get("to") or {}).get("phoneNumber"),
                account_id=_opt_str(body.get("accountId")),
                extension_id=_opt_str(body.get("extensionId")))


def callback_event(kind: str, body: dict[str, Any], received: float | None) -> Any:
    """The engine event for a callback other than on-call-enter."""
    if kind == "on-command-update":
        params = body.get("parameters") or {}
        return Update(body["command"], body["status"], body.get("commandId"),
                      params.get("digits"), received)
    if kind == "on-call-exit":
        return Exited(received)
    return CommandError(body)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
