"""The callback listener: a werkzeug WSGI app under a secret path segment, served from a
background thread.

It answers every callback at once (204 to on-call-enter, 200 to the rest) and hands the
checked payload to the dispatcher, which only queues it; commands go out later from the app's
worker pool. Bad input never reaches a call: a wrong secret is 404, a body over 64 KiB 413,
malformed JSON or a body of the wrong shape 400.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .errors import ConfigError

__all__ = ["CallbackListener", "CALLBACKS", "MAX_BODY", "validate_callback"]

log = logging.getLogger("ivrscript.listener")

CALLBACKS = ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")
MAX_BODY = 64 * 1024

# A handler may return a function to run once the answer has been sent (after the response is
# closed), e.g. to release a call's first command only after the 204 to on-call-enter.
Handler = Callable[[str, dict[str, Any], float], "Callable[[], None] | None"]
MediaLookup = Callable[[str, str], "tuple[str, str] | None"]


class BadCallback(ValueError):
    """The body of a callback does not have the required shape."""


def _need_str(body: dict[str, Any], key: str, *, optional: bool = False,
              where: str = "") -> None:
    value = body.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise BadCallback(f"{where}{key} must be a non-empty string")


def validate_callback(kind: str, body: Any) -> None:
    """Raise BadCallback unless ``body`` has the shape DESIGN.md requires for ``kind``."""
    if not isinstance(body, dict):
        raise BadCallback("the body must be a JSON object")
    _need_str(body, "sessionId")
    if kind == "on-call-enter":
        _need_str(body, "partyId")
        party = body.get("inParty")
        if not isinstance(party, dict):
            raise BadCallback("inParty must be an object")
        _need_str(party, "id", where="inParty.")
        for end in ("from", "to"):
            number = party.get(end)
            if number is not None:
                if not isinstance(number, dict):
                    raise BadCallback(f"inParty.{end} must be an object")
                value = number.get("phoneNumber")
                if value is not None and not isinstance(value, str):
                    raise BadCallback(f"inParty.{end}.phoneNumber must be a string")
        for key in ("accountId", "extensionId"):
            if body.get(key) is not None and not isinstance(body[key], str | int):
                raise BadCallback(f"{key} must be a string")
    elif kind == "on-command-update":
        for key in ("command", "status"):
            if not isinstance(body.get(key), str):
                raise BadCallback(f"{key} must be a string")
        if "commandId" in body and body["commandId"] is not None \
                and not isinstance(body["commandId"], str):
            raise BadCallback("commandId must be a string")
        params = body.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                raise BadCallback("parameters must be an object")
            digits = params.get("digits")
            if digits is not None and not isinstance(digits, str):
                raise BadCallback("parameters.digits must be a string")


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's request handler without its per-request log lines (they would print into
    notebook cells and the terminal phone); errors still go to logging."""

    # A client that stalls (half a request, a body that never comes, an idle keep-alive) is
    # dropped after this many seconds instead of holding its thread for ever.
    timeout = 60

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s", self.requestline, code)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - werkzeug's signature
        log.debug("listener: " + format, *args)


class CallbackListener:
    """Serves the four callbacks and local media under ``/{secret}/``."""

    def __init__(self, handler: Handler, *, secret: str, media: MediaLookup | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.secret = secret
        self.media = media
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.stats = {"callbacks": 0, "rejected": 0, "errors": 0}

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> CallbackListener:
        try:
            server = make_server(self.host, self.port, self.wsgi, threaded=True,
                                 request_handler=_QuietHandler)
        except SystemExit:  # werkzeug exits the process on a taken port; say it instead
            raise ConfigError(
                f"port {self.port} on {self.host} is already in use: stop the other program "
                "(or App) using it, or choose another port (port=0 picks a free one)") from None
        except OSError as error:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {error}") from None
        server.daemon_threads = True
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"ivrscript-listener-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    # -- the WSGI app ------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as error:
            response = error.get_response(environ)
        except Exception:  # a bug in a handler must never take the listener down
            self.stats["errors"] += 1
            log.exception("listener: error handling %s %s", request.method,
                          request.path.replace(self.secret, "<secret>"))
            response = Response("internal error\n", status=500, mimetype="text/plain")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) < 2 or not hmac.compare_digest(parts[0].encode(), self.secret.encode()):
            self.stats["rejected"] += 1
            raise NotFound()
        if parts[1] == "media" and len(parts) == 4 and request.method in ("GET", "HEAD"):
            return self._serve_media(request, parts[2], parts[3])
        kind = parts[1]
        if len(parts) != 2 or kind not in CALLBACKS:
            raise NotFound()
        if request.method != "POST":
            return Response("use POST\n", status=405, mimetype="text/plain",
                            headers={"Allow": "POST"})
        return self._callback(request, kind)

    def _callback(self, request: Request, kind: str) -> Response:
        received = time.monotonic()
        length = request.content_length
        if length is not None and length > MAX_BODY:
            self.stats["rejected"] += 1
            return _text(413, f"body over {MAX_BODY} bytes")
        try:
            raw = request.stream.read(MAX_BODY + 1)
        except (OSError, ValueError):  # a broken chunked body, a client that stalled or left
            self.stats["rejected"] += 1
            return _text(400, "the body could not be read")
        if len(raw) > MAX_BODY:
            self.stats["rejected"] += 1
            return _text(413, f"body over {MAX_BODY} bytes")
        if "json" not in (request.mimetype or ""):
            self.stats["rejected"] += 1
            return _text(400, "expected a JSON body (Content-Type: application/json)")
        try:
            body = json.loads(raw)
            validate_callback(kind, body)
        except (ValueError, RecursionError) as error:  # JSONDecodeError and BadCallback
            self.stats["rejected"] += 1
            reason = str(error) if isinstance(error, BadCallback) else "malformed JSON"
            log.info("listener: %s rejected with 400: %s", kind, reason)
            return _text(400, reason)
        self.stats["callbacks"] += 1
        after: Callable[[], None] | None = None
        try:
            after = self.handler(kind, body, received)
        except Exception:
            self.stats["errors"] += 1
            log.exception("listener: dispatching %s failed", kind)
        answer = _NO_CONTENT if kind == "on-call-enter" else _OK
        if callable(after):  # run by the WSGI server's close() of the body, once it is sent
            answer = Response(status=answer.status_code)
            answer.call_on_close(self._after_answer(after, kind))
        return answer

    def _after_answer(self, after: Callable[[], None], kind: str) -> Callable[[], None]:
        def run() -> None:
            try:
                after()
            except Exception:
                self.stats["errors"] += 1
                log.exception("listener: dispatching %s failed", kind)
        return run

    def _serve_media(self, request: Request, media_id: str, name: str) -> Response:
        found = self.media(media_id, name) if self.media else None
        if found is None:
            raise NotFound()
        path, ctype = found
        with open(path, "rb") as handle:  # prompts are small: no file handle outlives this
            data = handle.read()
        return Response(data, mimetype=ctype)


# The answers to a good callback, built once: calling a Response does not change it, and
# building one per callback was a measurable share of the listener's time.
_NO_CONTENT = Response(status=204)
_OK = Response(status=200)


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")
