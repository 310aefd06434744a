"""The reliability suite's tools: a fault proxy in front of the simulator, a phone driver that
presses keys as soon as a call listens, forged callbacks, and the figures printed at the end.

Everything here runs over real loopback HTTP; every server and thread a test starts is stopped.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

import ivrscript as ivr

# Figures of the suite (bad inputs tried, faults injected, calls completed, calls lost),
# printed in the terminal summary.
FIGURES: collections.Counter[str] = collections.Counter()

REMOTE = "https://media.example/"  # media the simulator never fetches (default length)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("ivrscript reliability figures")
    for name in sorted(FIGURES):
        terminalreporter.write_line(f"{name:<62} {FIGURES[name]:>6}")


def count_call(ok: bool) -> None:
    FIGURES["calls completed"] += ok
    FIGURES["calls lost"] += not ok


def count_faults(sim: Any) -> None:
    for kind, n in sim.faults_injected.items():
        FIGURES[f"faults injected: {kind}"] += n


@pytest.fixture(autouse=True)
def _ivrscript_logs_reach_caplog() -> Iterator[None]:
    """Tests here read log records: undo, for the test, what an in-process CLI run may have
    set on the library's loggers (its own handler, propagate=False, levels)."""
    saved = []
    for name in ("ivrscript", "ivrscript.engine"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level, list(logger.handlers)))
        logger.propagate = True
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
    yield
    for logger, propagate, level, handlers in saved:
        logger.propagate = propagate
        logger.handlers = handlers
        logger.setLevel(level)


# -- callbacks the test forges ---------------------------------------------------------------


def post(app: Any, kind: str, body: Any, **kw: Any) -> requests.Response:
    """POST a callback to the app's listener over loopback, as the platform would."""
    return requests.post(app.callback_urls[kind], json=body, timeout=5, **kw)


def enter_body(session_id: str, caller: str = "+15550100") -> dict[str, Any]:
    return {"accountId": "1", "extensionId": "2", "partyId": f"p-app-{session_id}",
            "sessionId": session_id,
            "inParty": {"id": f"p-caller-{session_id}", "from": {"phoneNumber": caller},
                        "to": {"phoneNumber": "+15550199"}}}


def call_of(app: Any, session_id: str) -> Any:
    for call in list(app.calls):
        if call.session_id == session_id:
            return call
    raise AssertionError(f"the app has no call {session_id}")


def finish(app: Any, phone: Any, timeout: float = 20) -> Any:
    """Wait for the phone and the app's call to end; the app's Call."""
    phone.wait_until_ended(timeout)
    call = call_of(app, phone.session_id)
    call.wait_until_ended(timeout)
    return call


def successful_requests(sim: Any, session_id: str) -> list[tuple[str, str]]:
    """(method, last path word) of the session's REST requests that the simulator carried
    out (2xx), in order; a DELETE of the session is ``("DELETE", "session")``."""
    out = []
    for record in list(sim.requests_log):
        if record.session_id != session_id or not 200 <= record.status < 300:
            continue
        word = record.path.rsplit("/", 1)[-1]
        if record.method == "DELETE" and word == session_id:
            word = "session"
        elif record.method == "DELETE":
            word = "play-cancel"
        out.append((record.method, word))
    return out


class Spy:
    """An app observer that records the kind of every callback the app accepted."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._cond = threading.Condition()

    def callback(self, kind: str, body: Any) -> None:
        with self._cond:
            self.seen.append(kind)
            self._cond.notify_all()

    def finished(self, call: Any) -> None:
        pass

    def wait_for(self, n: int, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= n, timeout), \
                f"the app accepted {len(self.seen)} callbacks, expected {n}: {self.seen}"


class KeyPresser:
    """Presses ``keys`` on every call as soon as it listens (from the simulator's event
    thread, so hundreds of calls need no thread each)."""

    def __init__(self, sim: Any, keys: str) -> None:
        self.keys = keys
        self.pressed = 0
        sim.add_listener(self._on_event)

    def _on_event(self, phone: Any, event: Any) -> None:
        if event.kind == "listen" and not phone.ended:
            try:
                phone.press(self.keys, wait=False)
                self.pressed += 1
            except ivr.IvrError:  # the call ended in between
                pass


# -- a platform stand-in that misbehaves on cue ----------------------------------------------


class FaultProxy:
    """A loopback HTTP proxy in front of the simulator's REST API.

    ``rule(method, path, n)`` (``n``: how many requests of that method and path came before)
    picks what happens to each request: None forwards it; ``("status", code, retry_after)``
    answers that error without forwarding (the request is not carried out; a fourth item is
    the error message, a ``retry_after`` of None sends no header); ``("trickle", seconds)``
    answers 201 a byte every ``seconds`` (an answer that never completes); ``("hang",
    seconds)`` holds the request until :meth:`release` or ``seconds`` pass, then answers 504
    without forwarding (a POST that may or may not have run, as far as the client knows).
    ``log`` lists ``(time, method, path, outcome)`` for every request, in arrival order.
    """

    def __init__(self, upstream: str,
                 rule: Callable[[str, str, int], tuple[Any, ...] | None]) -> None:
        self.upstream = upstream
        self.rule = rule
        self.log: list[tuple[float, str, str, str]] = []
        self.hanging = 0
        self._seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._http = requests.Session()
        self._http.trust_env = False
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FaultProxy:
        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any) -> None:
                pass

        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True,
                                   request_handler=Quiet)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="test-fault-proxy")
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._http.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"fault proxy: {what} did not happen within {timeout} s "
                                     f"(log: {[entry[1:] for entry in self.log]})")

    def requests_to(self, method: str, word: str) -> list[tuple[float, str, str, str]]:
        with self._cond:
            return [e for e in self.log if e[1] == method and e[2].rsplit("/", 1)[-1] == word]

    def _note(self, method: str, path: str, outcome: str, *, hanging: int = 0) -> None:
        with self._cond:
            self.log.append((time.monotonic(), method, path, outcome))
            self.hanging += hanging
            self._cond.notify_all()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        method, path = request.method, request.path
        body = request.get_data()
        with self._cond:
            n = self._seen[(method, path)]
            self._seen[(method, path)] += 1
        action = self.rule(method, path, n)
        if action is None:
            self._note(method, path, "forwarded")
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("authorization", "content-type", "accept")}
            answer = self._http.request(method, self.upstream + request.full_path.rstrip("?"),
                                        data=body, headers=headers, timeout=10)
            keep = {k: v for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "retry-after")}
            response = Response(answer.content, status=answer.status_code, headers=keep)
        elif action[0] == "status":
            _, code, retry_after, *rest = action
            message = rest[0] if rest else "injected by the test proxy"
            self._note(method, path, f"answered {code}")
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            response = Response(json.dumps({"errorCode": f"CMN-{code}", "message": message}),
                                status=code, mimetype="application/json", headers=headers)
        elif action[0] == "trickle":
            _, interval = action
            self._note(method, path, "trickled", hanging=1)
            released = self._released

            def trickle() -> Iterator[bytes]:
                try:
                    for _ in range(200):  # a byte every ``interval`` s, well past any deadline
                        if released.wait(interval):
                            return
                        yield b" "
                finally:
                    with self._cond:
                        self.hanging -= 1

            response = Response(trickle(), status=201, mimetype="application/json",
                                headers={"Content-Length": "200"})
        else:
            _, seconds = action
            self._note(method, path, "held", hanging=1)
            self._released.wait(seconds)
            with self._cond:
                self.hanging -= 1
            response = Response("held and dropped by the test proxy", status=504)
        return response(environ, start_response)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Build started FaultProxy objects; all stopped at the end of the test."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, rule: Callable[[str, str, int], tuple[Any, ...] | None]
             ) -> FaultProxy:
        proxy = FaultProxy(upstream, rule).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def apps() -> Iterator[Callable[..., Any]]:
    """Build and start Apps with any platform; all stopped at the end of the test."""
    started: list[Any] = []

    def make(script: Any, **kwargs: Any) -> Any:
        app = ivr.App(script, **kwargs).start()
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()
