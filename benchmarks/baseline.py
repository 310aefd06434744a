"""The benchmark flow written by hand, the way RingCentral's own IVR demo was written.

The demo (an Express app) sent its REST command from inside the on-call-enter handler and kept
what it knew about a call in memory. This is that style in Python, made correct enough to run
the benchmark flow under load, and no more:

* one plain werkzeug WSGI function serves the four callback paths (no secret path, no body
  validation), on werkzeug's threaded server, like ivrscript's listener;
* a per-call state dict ``calls[sessionId] = {"state", "party", "app_party", "play_id",
  "lock"}``, removed on on-call-exit;
* every callback is answered at once (204 for on-call-enter, 200 for the rest, as PLATFORM.md
  requires) and the work is handed to a ``ThreadPoolExecutor`` of ``workers`` threads (the same
  size as ivrscript's pool), which sends the next command with one shared ``requests.Session``
  as a user makes it: the Bearer header in ``session.headers`` and an adapter whose pool is as
  large as the worker pool (so it logs no "pool is full"); nothing else changed;
* a per-call ``threading.Lock`` is held while a command is sent and while an update is handled,
  so an update that arrives before the POST that started it has returned waits for the play's
  id (without it, the hand-written flow loses calls under load: the first thing a user learns);
* a Play update is taken only if its ``commandId`` is the awaited play's, so the barge-in
  prompt's own update never advances the flow.

No retries, no timeouts beyond the socket timeout, no transcript, no error handling: a failing
command just leaves the call where it is.

``loopback_rate`` measures the limit of this same stack: a ``requests.Session`` posting to
werkzeug's threaded server whose handler does nothing.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

KINDS = ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class BaselineApp:
    """enter -> play ``welcome`` -> prompt ``prompt`` with a 4-digit collect -> play ``thanks``
    -> forward to ``extension``, by hand."""

    def __init__(self, server_url: str, token: str, *, welcome: str, prompt: str, thanks: str,
                 extension: str, collect_timeout_ms: int, workers: int = 16) -> None:
        self.base = server_url.rstrip("/") + "/restapi/v1.0/account/~/telephony/sessions"
        self.welcome, self.prompt, self.thanks = welcome, prompt, thanks
        self.extension = extension
        self.collect_timeout_ms = collect_timeout_ms
        self.calls: dict[str, dict[str, Any]] = {}
        self.http = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=workers, max_retries=0)
        self.http.mount("http://", adapter)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.workers = workers
        self.pool: ThreadPoolExecutor | None = None
        self.server: BaseWSGIServer | None = None
        self.thread: threading.Thread | None = None
        self.callback_urls: dict[str, str] = {}

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> BaselineApp:
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="baseline-worker")
        server = make_server("127.0.0.1", 0, self.wsgi, threaded=True, request_handler=_Quiet)
        server.daemon_threads = True
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        self.callback_urls = {kind: f"{base}/{kind}" for kind in KINDS}
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.http.close()

    # -- callbacks: answer at once, work on the pool -----------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        kind = request.path.rsplit("/", 1)[-1]
        body = json.loads(request.get_data())
        session_id = body["sessionId"]
        pool = self.pool
        if kind == "on-call-enter":
            self.calls[session_id] = {"state": "welcome", "party": body["inParty"]["id"],
                                      "app_party": body["partyId"], "play_id": None,
                                      "lock": threading.Lock()}
            answer = Response(status=204)
            if pool is not None:  # the first command only once the 204 is sent (PLATFORM.md)
                answer.call_on_close(lambda: pool.submit(self.on_enter, session_id))
            return answer(environ, start_response)
        if kind == "on-command-update" and pool is not None:
            pool.submit(self.on_update, body)
        elif kind == "on-call-exit":
            self.calls.pop(session_id, None)
        return Response(status=200)(environ, start_response)

    def on_enter(self, session_id: str) -> None:
        call = self.calls.get(session_id)
        if call is not None:
            with call["lock"]:
                call["play_id"] = self.play(session_id, call["party"], self.welcome, False)

    def on_update(self, body: dict[str, Any]) -> None:
        session_id = body["sessionId"]
        call = self.calls.get(session_id)
        if call is None:
            return
        with call["lock"]:
            state, command = call["state"], body["command"]
            if command == "Play" and body.get("commandId") != call["play_id"]:
                return  # the barge-in prompt's update, or a stale one
            if state == "welcome" and command == "Play":
                call["state"] = "pin"
                call["play_id"] = None
                self.play(session_id, call["party"], self.prompt, True)
                self.post(f"{session_id}/parties/{call['party']}/collect", {
                    "patterns": ["xxxx"], "timeout": self.collect_timeout_ms,
                    "interDigitTimeout": 3000, "terminator": "#", "resetInput": True})
            elif state == "pin" and command == "Collect":
                call["state"] = "thanks"
                call["digits"] = (body.get("parameters") or {}).get("digits")
                call["play_id"] = self.play(session_id, call["party"], self.thanks, False)
            elif state == "thanks" and command == "Play":
                call["state"] = "forward"
                self.post(f"{session_id}/parties/{call['app_party']}/forward",
                          {"extensionNumber": self.extension})

    # -- REST --------------------------------------------------------------------------------

    def play(self, session_id: str, party: str, uri: str, barge_in: bool) -> str:
        answer = self.post(f"{session_id}/parties/{party}/play", {
            "resources": [{"uri": uri}], "interruptByDtmf": barge_in, "repeatCount": 1})
        return str(answer.json()["id"])

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        response = self.http.post(f"{self.base}/{path}", json=body, timeout=(3.05, 10.0))
        response.raise_for_status()
        return response


# -- the limit: the same stack with an empty handler -----------------------------------------


def _empty(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


def loopback_rate(threads: int, seconds: float) -> float:
    """HTTP exchanges per second from ``threads`` threads sharing one ``requests.Session`` to a
    werkzeug threaded server whose handler does nothing (a callback-sized JSON POST each)."""
    server = make_server("127.0.0.1", 0, _empty, threaded=True, request_handler=_Quiet)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                               daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_port}/on-command-update"
    body = {"accountId": "400131801008", "extensionId": "400137552008", "command": "Play",
            "commandId": "171888866234845407", "partyId": "p-" + "0" * 32,
            "sessionId": "s-" + "0" * 32, "status": "Completed"}
    http = requests.Session()
    http.trust_env = False
    http.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=threads, max_retries=0))
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def hammer(index: int) -> None:
        start.wait()
        n = 0
        while time.monotonic() < deadline[0]:
            http.post(url, json=body, timeout=(3.05, 10.0)).close()
            n += 1
        counts[index] = n

    workers = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    began = time.monotonic()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    server.shutdown()
    server.server_close()
    serving.join(5)
    http.close()
    return sum(counts) / elapsed
