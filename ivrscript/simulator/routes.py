"""The REST side: werkzeug's server, the routes and their handlers, auth and error bodies.

Auth
  * ``/restapi/oauth/token`` needs ``Authorization: Basic base64(id:secret)`` (any id/secret;
    else 401 ``OAU-153``), grants ``jwt-bearer`` (any non-empty assertion) and
    ``refresh_token`` (single use; unknown or used -> 400 ``OAU-211``; other grant types -> 400
    ``OAU-250``; a missing parameter -> 400 ``OAU-251``). OAuth errors also carry ``error`` and
    ``error_description``.
  * ``/restapi/v1.0`` without a Bearer token -> 401 ``OAU-123``; an unknown, expired
    (older than ``token_ttl`` real seconds) or expired-by-:meth:`Simulator.expire_tokens`
    token -> 401 ``OAU-213``. ``expire_tokens`` invalidates access tokens only: refresh tokens
    keep working, so a client can recover by refreshing. The static token never expires.

Validation and errors
  * Unknown session, party, play id, ring-out id or path -> 404 ``CMN-102``; a command on an
    ended session -> 404 ``CMN-102``; Play/Collect on the app party or Forward on the caller
    party -> 404 ``CMN-102`` with a hint naming the right party. A bad body -> 400 ``CMN-101``
    naming the parameter; a wrong method -> 405 ``CMN-405``; a body over 1 MiB -> 413.
  * Order of checks for a session command: token, session exists, fault injection, session
    still in progress, party, body.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .collect import _DEFAULT_TERMINATOR, _PATTERN, _CollectState
from .common import ACCOUNT_ID, _origin
from .courier import _CALLBACK_TIMEOUT
from .faults import rest_fault
from .play import _PlayState

if TYPE_CHECKING:
    from .core import Simulator
    from .phone import Phone

_log = logging.getLogger("ivrscript.simulator")

_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_BODY_MAX_BYTES = 1 << 20
_REFRESH_TTL = 604800
_V1 = "/restapi/v1.0/account/<account>"
_SESSION = f"{_V1}/telephony/sessions/<session_id>"
_PARTY = f"{_SESSION}/parties/<party_id>"
_ANSWERED_KEY = "ivrscript.simulator.answered"


@dataclass(frozen=True)
class RestRecord:
    """One REST request the simulator received and how it answered.

    ``json`` is the parsed JSON body (``None`` when absent or not JSON; token requests are
    never kept), ``time`` is ``time.monotonic()`` when the answer was made.
    """

    method: str
    path: str
    json: Any
    status: int
    session_id: str | None
    time: float


@dataclass(eq=False)
class _RingOut:
    id: str
    phone: Phone


class _ApiError(Exception):
    """An error answer: status, errorCode, message and the parameter it is about."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None, *,
                 headers: Mapping[str, str] | None = None, oauth: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})
        self.oauth = oauth

    def response(self) -> Response:
        error: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.parameter is not None:
            error["parameterName"] = self.parameter
        body: dict[str, Any] = {"errorCode": self.code, "message": self.message,
                                "errors": [error]}
        if self.oauth is not None:
            body["error"] = self.oauth
            body["error_description"] = self.message
        return _json_response(body, self.status, self.headers)


def _json_response(body: Any, status: int, headers: Mapping[str, str] | None = None
                   ) -> Response:
    return Response(json.dumps(body), status=status, headers=dict(headers or {}),
                    mimetype="application/json")


def _bad(parameter: str, message: str) -> _ApiError:
    return _ApiError(400, "CMN-101", f"Parameter [{parameter}] value is invalid: {message}",
                     parameter)


def _not_found(parameter: str, message: str) -> _ApiError:
    return _ApiError(404, "CMN-102", f"Resource for parameter [{parameter}] is not found: "
                     f"{message}", parameter)


class _Connections:
    """The server's open client connections, so stop() can end keep-alive threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)

    def close_all(self) -> None:
        with self._lock:
            open_now = list(self._open)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's request handler, tracked, without one log line per request on stderr."""

    def setup(self) -> None:
        super().setup()
        connections = getattr(self.server, "ivrscript_connections", None)
        if isinstance(connections, _Connections):
            connections.add(self.connection)

    def finish(self) -> None:
        connections = getattr(self.server, "ivrscript_connections", None)
        if isinstance(connections, _Connections):
            connections.discard(self.connection)
        super().finish()

    def parse_request(self) -> bool:
        # The request line has just arrived: note which on-call-enter answers had arrived
        # before it, so a command can be told to have come before the app's answer (409).
        arrivals = getattr(self.server, "ivrscript_arrivals", None)
        self.ivrscript_answered = arrivals() if arrivals is not None else None
        return bool(super().parse_request())

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ[_ANSWERED_KEY] = getattr(self, "ivrscript_answered", None)
        return environ

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        _log.debug("http %s: " + message.rstrip(), type, *args)


class _Request(Request):
    max_content_length = _BODY_MAX_BYTES


def _route_map() -> Map:
    return Map([
        Rule("/restapi/oauth/token", endpoint="token", methods=["POST"]),
        Rule(_SESSION, endpoint="session", methods=["GET", "DELETE"]),
        Rule(f"{_PARTY}/play", endpoint="play", methods=["POST"]),
        Rule(f"{_PARTY}/play/<command_id>", endpoint="cancel_play", methods=["DELETE"]),
        Rule(f"{_PARTY}/collect", endpoint="collect", methods=["POST"]),
        Rule(f"{_PARTY}/forward", endpoint="forward", methods=["POST"]),
        Rule(f"{_V1}/extension/<extension>/ring-out", endpoint="ring_out",
             methods=["POST"]),
        Rule(f"{_V1}/extension/<extension>/ring-out/<ring_out_id>",
             endpoint="ring_out_item", methods=["GET", "DELETE"]),
    ], strict_slashes=False, merge_slashes=False)


_Server = BaseWSGIServer


def _make_server(host: str, port: int, app: Callable[..., Iterable[bytes]],
                 connections: _Connections,
                 arrivals: Callable[[], tuple[int, frozenset[str]]]) -> _Server:
    """werkzeug's threaded server with quiet, tracked request handlers (OSError if taken)."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    server.ivrscript_connections = connections  # type: ignore[attr-defined]
    server.ivrscript_arrivals = arrivals  # type: ignore[attr-defined]
    return server


class RestApi:
    """The Simulator's REST handlers (a mixin: ``self`` is the Simulator)."""

    def _wsgi(self: Simulator, environ: dict[str, Any],
              start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _Request(environ)
        record: dict[str, Any] = {"json": None, "session_id": None}
        try:
            response = self._handle(request, record)
        except _ApiError as exc:
            response = exc.response()
        except HTTPException as exc:  # e.g. a form body over the size limit
            status = exc.code or 500
            response = _ApiError(status, f"CMN-{status}", str(exc.description)).response()
        except Exception:
            _log.exception("simulator: %s %s failed", request.method, request.path)
            response = _ApiError(500, "CMN-500", "internal error in the simulator").response()
        with self._changed:
            self.requests_log.append(RestRecord(request.method, request.path, record["json"],
                                                response.status_code, record["session_id"],
                                                time.monotonic()))
            counted = record.get("counted")
            if counted is not None:
                left = self._rest_open[counted] - 1
                if left > 0:
                    self._rest_open[counted] = left
                else:
                    del self._rest_open[counted]
                    self._changed.notify_all()  # Phone.wait_until_ended sees it logged
        return response(environ, start_response)

    def _handle(self: Simulator, request: Request, record: dict[str, Any]) -> Response:
        path = request.path
        if path.startswith("/restapi/v1.0/") or path == "/restapi/v1.0":
            self._check_bearer(request)
        adapter = self._routes.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            raise _ApiError(405, "CMN-405", f"method {request.method} is not allowed for "
                            f"{path}") from None
        except HTTPException:
            raise _not_found("path", f"no such resource {path}") from None
        if endpoint == "token":
            return self._oauth_token(request)
        if args.get("account") not in ("~", ACCOUNT_ID):
            raise _not_found("accountId", f"account {args.get('account')!r}")
        session_id = args.get("session_id")
        if session_id is not None:
            record["session_id"] = session_id
            with self._lock:  # in progress until logged (a phone's end waits for its log)
                self._rest_open[session_id] = self._rest_open.get(session_id, 0) + 1
                record["counted"] = session_id
        handler = getattr(self, f"_api_{endpoint}")
        result: Response = handler(request, record, **args)
        return result

    def _check_bearer(self: Simulator, request: Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(401, "OAU-123", "Authorization header is missing or is not "
                            "'Bearer <token>'", headers=challenge)
        if secrets.compare_digest(token.encode(), self.token.encode()):
            return
        with self._lock:
            expiry = self._access_tokens.get(token)
            if expiry is None:
                raise _ApiError(401, "OAU-213", "Token not found", headers=challenge)
            if time.monotonic() >= expiry:
                del self._access_tokens[token]
                raise _ApiError(401, "OAU-213", "Token expired", headers=challenge)

    def _oauth_token(self: Simulator, request: Request) -> Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, sep, _secret = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id, sep = "", ""
        if scheme.lower() != "basic" or not sep or not client_id:
            raise _ApiError(401, "OAU-153", "Invalid client: send Authorization: Basic "
                            "base64(clientId:clientSecret)", "client_id", oauth="invalid_client")
        form = request.form
        grant = form.get("grant_type", "")
        if grant == _JWT_GRANT:
            if not form.get("assertion"):
                raise _ApiError(400, "OAU-251", "Required parameter [assertion] is missing",
                                "assertion", oauth="invalid_request")
        elif grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if not refresh:
                raise _ApiError(400, "OAU-251", "Required parameter [refresh_token] is missing",
                                "refresh_token", oauth="invalid_request")
            with self._lock:
                expiry = self._refresh_tokens.pop(refresh, None)
            if expiry is None or time.monotonic() >= expiry:
                raise _ApiError(400, "OAU-211", "Token is revoked (refresh tokens are single "
                                "use)", "refresh_token", oauth="invalid_grant")
        else:
            raise _ApiError(400, "OAU-250", f"Unsupported grant type {grant!r}", "grant_type",
                            oauth="unsupported_grant_type")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._access_tokens[access] = now + self.token_ttl
            self._refresh_tokens[refresh] = now + _REFRESH_TTL
            self.token_grants += 1
            owner = self._extension_id(next(iter(self._apps), "201"))
        return _json_response({
            "access_token": access, "token_type": "bearer", "expires_in": int(self.token_ttl),
            "refresh_token": refresh, "refresh_token_expires_in": _REFRESH_TTL,
            "scope": "CallControl ReadAccounts RingOut", "owner_id": owner,
        }, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    @staticmethod
    def _json_object(request: Request, record: dict[str, Any]) -> dict[str, Any]:
        try:
            data = request.get_data()
        except RequestEntityTooLarge:
            raise _ApiError(413, "CMN-413", "request body is too large") from None
        if not data.strip():
            raise _bad("body", "a JSON object is required")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise _bad("body", "not valid JSON") from None
        record["json"] = body
        if not isinstance(body, dict):
            raise _bad("body", "a JSON object is required")
        return body

    def _command_session(self: Simulator, session_id: str) -> Phone:
        """The session of a command, after fault injection (raises the fault)."""
        with self._lock:
            phone = self._sessions.get(session_id)
            if phone is None:
                raise _not_found("sessionId", f"no call session {session_id}")
            fault = rest_fault(phone._rest_rng, self.rate_limited, self.unavailable)
            if fault is not None:
                self.faults_injected[fault.name] += 1
                self._event(phone, "rejected", f"{fault.status} {fault.code} (injected)")
                raise _ApiError(fault.status, fault.code, fault.message, headers=fault.headers)
            return phone

    def _check_live(self: Simulator, phone: Phone, party_id: str | None, role: str | None, *,
                    request: Request | None = None) -> None:
        """Under the lock: the session is in progress, its on-call-enter had been answered when
        ``request`` (a command) came (else 409) and ``party_id`` is the ``role`` party."""
        if phone.ended:
            raise _not_found("sessionId", f"call session {phone.session_id} has ended "
                             f"({phone.end_reason})")
        if request is not None:
            self._check_answered(phone, request)
        if party_id is None or role is None:
            return
        caller, app = phone.caller_party_id, phone.app_party_id
        want, other = (caller, app) if role == "caller" else (app, caller)
        if party_id == want:
            return
        if party_id == other:
            hint = ("Play and Collect target the caller party (inParty.id of on-call-enter), "
                    "not the app party (partyId)" if role == "caller" else
                    "Forward targets the app party (partyId of on-call-enter), not the caller "
                    "party (inParty.id)")
            raise _not_found("partyId", f"{party_id}: {hint}")
        raise _not_found("partyId", f"no party {party_id} in session {phone.session_id}")

    def _check_answered(self: Simulator, phone: Phone, request: Request) -> None:
        """Under the lock: 409 ``CMN-409`` if the app's answer to on-call-enter had not arrived
        when this command's request line did (the snapshot its handler took then; without one,
        now). An answer that had arrived but is still being read counts as sent: wait for it
        to be read (the call ends if it was not a 2xx)."""
        if phone._enter_done:
            return
        snapshot = request.environ.get(_ANSWERED_KEY) or self._answers_arrived()
        last, ready = snapshot
        arrival = phone._enter_arrival
        if not ((arrival is not None and arrival <= last) or phone.session_id in ready):
            raise _ApiError(409, "CMN-409", "command before on-call-enter was answered: send "
                            "commands only once the 204 to on-call-enter has been sent")
        self._changed.wait_for(lambda: phone._enter_done, _CALLBACK_TIMEOUT)
        if phone.ended:
            raise _not_found("sessionId", f"call session {phone.session_id} has ended "
                             f"({phone.end_reason})")

    def _reject(self: Simulator, phone: Phone, request: Request, exc: _ApiError) -> _ApiError:
        with self._lock:
            self._event(phone, "rejected", f"{request.method} {request.path.rsplit('/', 1)[-1]}"
                                           f" -> {exc.status} {exc.code}: {exc.message}")
        return exc

    def _api_play(self: Simulator, request: Request, record: dict[str, Any], *,
                  account: str, session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "caller", request=request)
            body = self._json_object(request, record)
            resources = body.get("resources")
            if not isinstance(resources, list) or not resources:
                raise _bad("resources", "a non-empty list of {\"uri\": ...} is required")
            uris: list[str] = []
            for index, resource in enumerate(resources):
                uri = resource.get("uri") if isinstance(resource, dict) else None
                if not isinstance(uri, str) or _origin(uri) is None:
                    raise _bad(f"resources[{index}].uri", f"an http(s) URL is required, got "
                               f"{uri!r}")
                uris.append(uri)
            interrupt = body.get("interruptByDtmf", True)
            if not isinstance(interrupt, bool):
                raise _bad("interruptByDtmf", f"true or false, got {interrupt!r}")
            repeat = body.get("repeatCount", 1)
            if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
                raise _bad("repeatCount", f"a whole number >= 0, got {repeat!r}")
            seconds = [self._media_seconds(phone, uri) for uri in uris]  # may fetch: no lock
            with self._changed:
                self._check_live(phone, party_id, "caller")
                play = _PlayState(str(next(self._ids)), tuple(uris), seconds, interrupt, repeat)
                self._start_play(phone, play)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return _json_response({"id": play.command_id, "interruptByDtmf": interrupt,
                               "repeatCount": repeat, "resources": [{"uri": u} for u in uris],
                               "status": "InProgress"}, 201)

    def _api_cancel_play(self: Simulator, request: Request, record: dict[str, Any], *,
                         account: str, session_id: str, party_id: str, command_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._changed:
                self._check_live(phone, party_id, "caller")
                if command_id not in phone._play_ids:
                    raise _not_found("commandId", f"no play {command_id} in session "
                                     f"{session_id}")
                play = phone._play
                if play is not None and play.command_id == command_id:
                    self._finish_play(phone, play, "Canceled")
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return Response(status=204)

    def _api_collect(self: Simulator, request: Request, record: dict[str, Any], *,
                     account: str, session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "caller", request=request)
            body = self._json_object(request, record)
            patterns = body.get("patterns")
            if not isinstance(patterns, list) or not patterns or not all(
                    isinstance(p, str) and _PATTERN.match(p) for p in patterns):
                raise _bad("patterns", "a non-empty list of strings of 0-9, '*', '#' and 'x' "
                           f"is required, got {patterns!r}")
            times: dict[str, float] = {}
            for name, default in (("timeout", 10000), ("interDigitTimeout", 3000)):
                value = body.get(name, default)
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise _bad(name, f"milliseconds > 0, got {value!r}")
                times[name] = value / 1000.0
            terminator = body.get("terminator")
            if terminator not in (None, "#", "*"):
                raise _bad("terminator", f"'#', '*' or absent (then '#'), got {terminator!r}")
            reset = body.get("resetInput", True)
            if not isinstance(reset, bool):
                raise _bad("resetInput", f"true or false, got {reset!r}")
            with self._changed:
                self._check_live(phone, party_id, "caller")
                if phone._collect is not None:
                    raise _ApiError(409, "TAS-409", f"a Collect is already active on party "
                                    f"{party_id}; wait for its update before the next one")
                command_id = str(next(self._ids)) if self.collect_ids else None
                collect = _CollectState(tuple(p.lower() for p in patterns), times["timeout"],
                                        times["interDigitTimeout"],
                                        terminator or _DEFAULT_TERMINATOR, command_id)
                self._start_collect(phone, collect, reset)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        if command_id is not None:
            return _json_response({"id": command_id}, 201)
        return Response(status=204)

    def _api_forward(self: Simulator, request: Request, record: dict[str, Any], *,
                     account: str, session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "app", request=request)
            body = self._json_object(request, record)
            given = {k: body[k] for k in ("extensionNumber", "phoneNumber") if k in body}
            if len(given) != 1:
                raise _bad("extensionNumber", "exactly one of extensionNumber and phoneNumber "
                           f"is required, got {sorted(given) or 'neither'}")
            (name, target), = given.items()
            if not isinstance(target, str) or not target.strip():
                raise _bad(name, f"a non-empty string is required, got {target!r}")
            with self._changed:
                self._check_live(phone, party_id, "app")
                self._event(phone, "forward", target)
                self._end(phone, "forwarded", forwarded_to=target)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return _json_response({
            "id": phone.app_party_id,
            "status": {"code": "Gone", "reason": "CallForwarded"},
            "direction": "Inbound",
            "from": {"phoneNumber": phone.caller},
            "to": {name: target},
            "missedCall": False, "standAlone": False, "muted": False,
            "owner": {"accountId": ACCOUNT_ID, "extensionId": phone.extension_id},
        }, 200)

    def _api_session(self: Simulator, request: Request, record: dict[str, Any], *,
                     account: str, session_id: str) -> Response:
        if request.method == "GET":
            with self._lock:
                phone = self._sessions.get(session_id)
                if phone is None:
                    raise _not_found("sessionId", f"no call session {session_id}")
                code = "Disconnected" if phone.ended else "Answered"
                return _json_response({
                    "id": session_id,
                    "origin": {"type": "Call"},
                    "parties": [
                        {"id": phone.caller_party_id, "status": {"code": code},
                         "direction": "Inbound", "from": {"phoneNumber": phone.caller},
                         "to": {"phoneNumber": phone.called}},
                        {"id": phone.app_party_id,
                         "status": {"code": "Gone" if phone.ended else "Answered"},
                         "direction": "Inbound", "from": {"phoneNumber": phone.caller},
                         "to": {"phoneNumber": phone.called},
                         "owner": {"accountId": ACCOUNT_ID,
                                   "extensionId": phone.extension_id}},
                    ],
                }, 200)
        phone = self._command_session(session_id)
        try:
            with self._changed:
                self._check_live(phone, None, None)
                self._event(phone, "hangup", "the app dropped the call")
                self._end(phone, "hangup")
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return Response(status=204)

    def _ring_out_body(self: Simulator, ring_out: _RingOut) -> dict[str, Any]:
        phone = ring_out.phone
        if not phone._enter_done:
            status = {"callStatus": "InProgress", "callerStatus": "InProgress",
                      "calleeStatus": "InProgress"}
        elif phone._entered:
            status = {"callStatus": "Success", "callerStatus": "Success",
                      "calleeStatus": "Success"}
        else:
            status = {"callStatus": "GenericError", "callerStatus": "Success",
                      "calleeStatus": "GenericError"}
        uri = (f"{self.url}/restapi/v1.0/account/{ACCOUNT_ID}/extension/"
               f"{phone.extension_id}/ring-out/{ring_out.id}")
        return {"id": ring_out.id, "uri": uri, "status": status}

    def _api_ring_out(self: Simulator, request: Request, record: dict[str, Any], *,
                      account: str, extension: str) -> Response:
        body = self._json_object(request, record)
        numbers: dict[str, str] = {}
        for side in ("from", "to"):
            value = body.get(side)
            number = value.get("phoneNumber") if isinstance(value, dict) else None
            if not isinstance(number, str) or not number.strip():
                raise _bad(f"{side}.phoneNumber", f"a phone number is required, got {number!r}")
            numbers[side] = number
        with self._lock:
            if not self._apps:
                raise _not_found("to.phoneNumber", "no app is connected to the simulator; "
                                 "call sim.connect(app, extension_number=...) first")
            if numbers["to"] in self._apps:
                number = numbers["to"]
            elif len(self._apps) == 1:
                number = next(iter(self._apps))
            else:
                raise _not_found("to.phoneNumber", f"no connected app has extension number "
                                 f"{numbers['to']}; connected: {', '.join(sorted(self._apps))}")
            urls, apps = self._apps[number]
            phone = self._new_phone(urls, apps, numbers["from"], numbers["to"],
                                    self._extension_id(number), claimed=False)
            ring_out = _RingOut(str(next(self._ids)), phone)
            self._ring_outs[ring_out.id] = ring_out
            record["session_id"] = phone.session_id
            answer = self._ring_out_body(ring_out)
        self._courier.submit(phone, self._enter_item(phone))
        return _json_response(answer, 200)

    def _api_ring_out_item(self: Simulator, request: Request, record: dict[str, Any], *,
                           account: str, extension: str, ring_out_id: str) -> Response:
        with self._changed:
            ring_out = self._ring_outs.get(ring_out_id)
            if ring_out is None:
                raise _not_found("ringOutId", f"no ring-out {ring_out_id}")
            record["session_id"] = ring_out.phone.session_id
            if request.method == "GET":
                return _json_response(self._ring_out_body(ring_out), 200)
            del self._ring_outs[ring_out_id]
            phone = ring_out.phone
            if not phone.ended:
                self._event(phone, "hangup", "the ring-out was canceled")
                self._end(phone, "hangup")
        return Response(status=204)
