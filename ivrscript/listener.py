"""The callback listener: a werkzeug WSGI app under a secret path segment, served by
waitress from a background thread.

Why waitress: it reads every connection in one event loop and hands a request to a thread
only once the request is whole, so slow or idle clients cost a socket, not a thread (werkzeug's
development server spends a thread per connection and hands the request over before its body
is read); it keeps connections alive; it is pure Python and embeds in a thread. On top of it
this module adds what waitress lacks against hostile clients: deadlines for a request's headers
and body, a connection cap that makes room for whole requests, and no busy loop when the
process runs out of file descriptors.

It answers every callback at once (204 to on-call-enter, 200 to the rest) and hands the
checked payload to the dispatcher, which only queues it; commands go out later from the app's
worker pool. Bad input never reaches a call: a wrong secret is 404, a body over 64 KiB 413,
malformed JSON or a body of the wrong shape 400. What the platform may send in a slightly
different form is accepted: a JSON body under any content type, an integer ``commandId``.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask
from waitress.utilities import BadRequest
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Request, Response

from .errors import ConfigError
from .stores.base import StoreUnavailable
from .text import shown

__all__ = ["CallbackListener", "CALLBACKS", "MAX_BODY", "SERVER", "raise_open_file_limit",
           "validate_callback"]

log = logging.getLogger("ivrscript.listener")

CALLBACKS = ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")
MAX_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024  # request line + headers; the platform's are a few hundred bytes
AFTER_SENT = "ivrscript.after_sent"  # environ key: hooks our server runs once an answer is sent
SERVER = "listener"  # the Server header of every answer: no software name, no version

# A handler may return a function to run once the answer has been sent (after the response is
# closed), e.g. to release a call's first command only after the 204 to on-call-enter.
Handler = Callable[[str, dict[str, Any], float], "Callable[[], None] | None"]
Health = Callable[[], "tuple[bool, dict[str, Any]]"]  # (healthy, JSON counts)
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
    """Raise BadCallback unless ``body`` has the shape DESIGN.md requires for ``kind``.

    Liberal where a strict check would reject real callbacks over a detail: an integer
    ``commandId`` is accepted and turned into its string, in place.
    """
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
        command_id = body.get("commandId")
        if command_id is not None:
            if isinstance(command_id, int) and not isinstance(command_id, bool):
                body["commandId"] = str(command_id)  # be liberal: the id is an opaque token
            elif not isinstance(command_id, str):
                raise BadCallback("commandId must be a string or an integer")
        params = body.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                raise BadCallback("parameters must be an object")
            digits = params.get("digits")
            if digits is not None and not isinstance(digits, str):
                raise BadCallback("parameters.digits must be a string")


class CallbackListener:
    """Serves the four callbacks and local media under ``/{secret}/``.

    The server is waitress's event loop (one thread reads every connection; a request reaches
    the app only once it is whole) with a small pool of ``threads`` for the app, plus three
    bounds that waitress lacks: a request's line and headers must arrive within
    ``header_timeout`` seconds of its first byte (of the connection, for a new one), its body
    within ``body_timeout`` more; a connection idle between requests is closed after
    ``idle_timeout``. At most ``max_connections`` are open at once: above that the one that
    has waited longest without a whole request is closed to make room, and if every one is
    being answered the newcomer gets 503. Connections are kept alive (after a 204 too), and
    every answer says ``Server: listener`` (:data:`SERVER`).
    """

    def __init__(self, handler: Handler, *, secret: str, media: MediaLookup | None = None,
                 host: str = "127.0.0.1", port: int = 0, threads: int = 4,
                 max_connections: int = 4096, header_timeout: float = 5.0,
                 body_timeout: float = 5.0, idle_timeout: float = 30.0,
                 backlog: int = 1024, health: Health | None = None) -> None:
        for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout),
                            ("idle_timeout", idle_timeout)):
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        for name, value in (("threads", threads), ("max_connections", max_connections),
                            ("backlog", backlog)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.handler = handler
        self.health = health
        self.secret = secret
        self.media = media
        self.host = host
        self.port = port
        self.threads = threads
        self.max_connections = max_connections
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.idle_timeout = float(idle_timeout)
        self.backlog = backlog
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = {"callbacks": 0, "rejected": 0, "errors": 0, "timed_out": 0,
                      "evicted": 0, "busy": 0}

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> CallbackListener:
        raise_open_file_limit()
        sock = _bound_socket(self.host, self.port)
        limit = _open_file_limit()
        cap = self.max_connections if limit is None else max(1, min(self.max_connections,
                                                                     limit - _FD_RESERVE))
        adj = Adjustments(
            sockets=[sock], threads=self.threads, backlog=self.backlog, ident=SERVER,
            connection_limit=sys.maxsize, cleanup_interval=1,
            channel_timeout=max(1, math.ceil(self.idle_timeout)), asyncore_use_poll=True,
            asyncore_loop_timeout=1, max_request_body_size=MAX_BODY,
            max_request_header_size=MAX_HEADERS, expose_tracebacks=False,
            log_socket_errors=False, clear_untrusted_proxy_headers=True)
        dispatcher = _Dispatcher()
        dispatcher.set_thread_count(self.threads)
        try:
            server = _Server(self.wsgi, {}, _start=True, _sock=sock, dispatcher=dispatcher,
                             adj=adj, bind_socket=False,
                             sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
        except BaseException:
            dispatcher.shutdown(timeout=1)
            sock.close()
            raise
        server.limits = self
        server.cap = cap
        self._server = server
        self.port = sock.getsockname()[1]
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, args=(server,),
                                        name=f"ivrscript-listener-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self, server: _Server) -> None:
        socket_map = server._map
        try:
            while not self._stopping:
                wasyncore.loop(timeout=_LOOP_SECONDS, use_poll=True, map=socket_map, count=1)
        except Exception:  # never a silent death: say so, the app's calls depend on it
            log.exception("listener: the server loop failed; callbacks are no longer answered")
        finally:
            wasyncore.close_all(socket_map, ignore_all=True)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # The workers first, while the loop still runs: a request being answered gets its
        # answer flushed (the loop writes it), and no worker wakes a loop whose trigger pipe
        # is already closed (EBADF, logged with a traceback by waitress at Ctrl-C).
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        self._stopping = True
        try:
            server.pull_trigger()  # wake the loop now rather than at its next poll timeout
        except OSError:
            pass
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

    @property
    def connections(self) -> int:
        """Connections open right now."""
        server = self._server
        return len(server.active_channels) if server is not None else 0

    # -- the WSGI app ------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as error:
            response = error.get_response(environ)
        except Exception:  # a bug in a handler must never take the listener down
            self.stats["errors"] += 1
            log.exception("listener: error handling %s %s", shown(request.method),
                          shown(request.path.replace(self.secret, "<secret>")))
            response = Response("internal error\n", status=500, mimetype="text/plain")
        if isinstance(response, _Empty):
            start_response(response.status, list(response.headers))
            return []
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) < 2 or not hmac.compare_digest(parts[0].encode(), self.secret.encode()):
            self.stats["rejected"] += 1
            raise NotFound()
        if parts[1] == "media" and len(parts) == 4 and request.method in ("GET", "HEAD"):
            return self._serve_media(request, parts[2], parts[3])
        if parts[1:] == ["health"] and self.health is not None and request.method == "GET":
            healthy, counts = self.health()  # GET /{secret}/health: 200 or 503 with counts
            return Response(json.dumps(counts), status=200 if healthy else 503,
                            mimetype="application/json")
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
        try:
            body = json.loads(raw)
            validate_callback(kind, body)
        except (ValueError, RecursionError) as error:  # JSONDecodeError and BadCallback
            self.stats["rejected"] += 1
            if isinstance(error, BadCallback):
                reason = str(error)
            elif "json" in (request.mimetype or ""):
                reason = "malformed JSON"
            else:  # a JSON body is parsed whatever its declared type; this one is not JSON
                reason = "expected a JSON body (Content-Type: application/json)"
            log.info("listener: %s rejected with 400: %s", kind, reason)
            return _text(400, reason)
        self.stats["callbacks"] += 1
        after: Callable[[], None] | None = None
        try:
            after = self.handler(kind, body, received)
        except StoreUnavailable as error:  # not stored: the platform must send it again
            self.stats["errors"] += 1
            log.warning("listener: %s answered 503, the call store is unavailable: %s", kind,
                        error)
            return Response("the call store is unavailable, try again\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": "1"})
        except Exception:
            self.stats["errors"] += 1
            log.exception("listener: dispatching %s failed", kind)
        answer = _NO_CONTENT if kind == "on-call-enter" else _OK
        if callable(after):
            hook = self._after_answer(after, kind)
            deferred = request.environ.get(AFTER_SENT)
            if isinstance(deferred, list):  # our server: run once the answer is on the wire
                deferred.append(hook)
            else:  # any WSGI server: its close() of the body, once the body is written
                answer = Response(status=answer.status_code)
                answer.call_on_close(hook)
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


class _Empty:
    """An answer without a body, sent as is (cheaper than a werkzeug Response, and the
    ``Content-Length: 0`` keeps a keep-alive connection open after a 200)."""

    __slots__ = ("status", "headers", "status_code")

    def __init__(self, status: str) -> None:
        self.status = status
        self.status_code = int(status.split(" ", 1)[0])
        self.headers = (("Content-Length", "0"),)


# The answers to a good callback, built once.
_NO_CONTENT = _Empty("204 No Content")
_OK = _Empty("200 OK")


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


# -- the server: waitress, bounded -----------------------------------------------------------

_LOOP_SECONDS = 0.5  # the event loop's poll timeout: how soon deadlines and stop() are seen
_FD_RESERVE = 64  # file descriptors kept free of connections (files, the platform client)
_ACCEPT_PAUSE = 0.05  # out of file descriptors: stop accepting this long (no busy loop)...
_EMFILE_ROOM = 16  # ...after closing this many of the slowest connections
_ACCEPT_BATCH = 128  # connections accepted per wake-up of the loop, at most
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nServer: " + SERVER.encode() +
         b"\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
_wlog = logging.getLogger("ivrscript.listener.server")


class _Parser(HTTPRequestParser):
    """waitress's request parser, noting when the request's first byte came."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.time()


class _Task(WSGITask):
    """waitress's WSGI task, keeping a keep-alive connection open after a 204: waitress 3
    closes the connection after any answer without a Content-Length, and a 204 may not have
    one (RFC 9110 15.3.5), so every on-call-enter would cost the platform a new connection."""

    _bodiless = False

    def build_response_header(self) -> bytes:
        self._bodiless = (self.status[:3] in ("204", "304") and self.version == "1.1"
                          and self.request.headers.get("CONNECTION", "").lower() != "close")
        try:
            return super().build_response_header()
        finally:
            self._bodiless = False

    def set_close_on_finish(self) -> None:
        if not self._bodiless:  # in build_response_header only for "no Content-Length"
            super().set_close_on_finish()

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ.setdefault(AFTER_SENT, [])
        return environ

    def service(self) -> None:
        super().service()
        deferred = (getattr(self, "environ", None) or {}).get(AFTER_SENT)
        if not deferred:
            return
        # waitress queues an answer for its event loop to send; push this one out now, so
        # what the hooks start (a call's first command) cannot reach the platform before it.
        channel = self.channel
        try:
            with channel.outbuf_lock:
                channel._flush_exception(channel._flush_some, do_close=False)
        except Exception:  # a connection that went away: the hooks still run
            log.debug("listener: flushing an answer failed", exc_info=True)
        for hook in deferred:
            hook()


class _Channel(HTTPChannel):
    """One connection. A client that half-closes after part of a body gets 400 (waitress
    would close without an answer)."""

    parser_class = _Parser
    task_class = _Task
    logger = _wlog

    def handle_read(self) -> None:
        try:
            data = self.socket.recv(self.adj.recv_bytes)
        except OSError:
            self.handle_close()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
            return
        request = self.request
        if request is not None and request.headers_finished and not self.requests \
                and not self.will_close:
            request.error = BadRequest("the body ended before its declared length")
            request.completed = True
            self.request = None
            self.requests.append(request)
            self.server.add_task(self)
            return
        self.handle_close()


class _Server(TcpWSGIServer):
    """waitress's TCP server with deadlines, a connection cap and no busy loop on EMFILE."""

    channel_class = _Channel
    logger = _wlog
    limits: CallbackListener
    cap: int
    _paused_until = 0.0
    _warn_after = 0.0

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting) and time.monotonic() >= self._paused_until

    def maintenance(self, now: float) -> None:
        """Close each connection past its deadline (waitress's own closes only the idle)."""
        limits = self.limits
        header, body, idle = limits.header_timeout, limits.body_timeout, limits.idle_timeout
        for channel in list(self.active_channels.values()):
            if channel.requests or channel.will_close:
                continue  # being answered, or closing already
            request = channel.request
            if request is None:
                fresh = channel.last_activity == channel.creation_time
                late = now - channel.last_activity > (header if fresh else idle)
            elif not request.headers_finished:
                late = now - request.started > header
            else:
                late = now - request.started > header + body
            if late:
                channel.will_close = True
                limits.stats["timed_out"] += 1

    def handle_accept(self) -> None:
        # Many per wake-up: one per turn of a loop that visits every connection would let a
        # burst of connections queue in the backlog behind each other.
        for _ in range(_ACCEPT_BATCH):
            if not self._accept_one() or time.monotonic() < self._paused_until:
                return

    def _accept_one(self) -> bool:
        """Accept one connection; False when there was none to accept (or no room)."""
        try:
            pair = self.accept()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: the backlog keeps the newcomers; free a few
                # descriptors and try again shortly, instead of spinning on a listening
                # socket that stays readable.
                self._paused_until = time.monotonic() + _ACCEPT_PAUSE
                for _ in range(_EMFILE_ROOM):
                    if not self._make_room():
                        break
                if time.monotonic() >= self._warn_after:  # one line per 10 s, not a flood
                    self._warn_after = time.monotonic() + 10
                    log.warning("listener: out of file descriptors (%s) with %d connections "
                                "open; closing the slowest", errno.errorcode.get(error.errno),
                                len(self.active_channels))
            return False
        if pair is None:
            return False
        conn, addr = pair
        if len(self.active_channels) >= self.cap and not self._make_room():
            self.limits.stats["busy"] += 1
            try:
                conn.setblocking(False)
                conn.send(_BUSY)
            except OSError:
                pass
            conn.close()
            return True
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.channel_class(self, conn, addr, self.adj, map=self._map)
        return True

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a whole request; False if
        every connection is being answered."""
        for channel in self.active_channels.values():  # oldest first
            if not channel.requests and not channel.will_close:
                channel.will_close = True
                channel.handle_close()
                self.limits.stats["evicted"] += 1
                return True
        return False


class _Dispatcher(ThreadedTaskDispatcher):
    logger = _wlog
    queue_logger = logging.getLogger("ivrscript.listener.queue")


def _bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port), or ConfigError in one sentence."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use: stop the other program (or App) "
                "using it, or choose another port (port=0 picks a free one)") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.setblocking(False)
    return sock


def _open_file_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int | None:
    """Raise this process's soft open-file limit to its hard limit (each connection is a
    descriptor; the usual soft 1,024 is what a flood of slow clients exhausts first).
    Returns the soft limit now in force (None where there is no such limit)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. macOS refuses RLIM_INFINITY: keep the soft one
            return None if soft == resource.RLIM_INFINITY else soft
        soft = hard
    return None if soft == resource.RLIM_INFINITY else soft
