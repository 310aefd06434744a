"""A round-robin load balancer for the scale-out tests, like nginx or a cloud LB in front of
several app processes: each request goes to the next backend in turn; a backend that refuses
the connection is skipped (the next one gets the request), as a LB's health checks would.

Real loopback HTTP (werkzeug's threaded server in, requests out).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class RoundRobin:
    """``RoundRobin([base_url, ...]).start()``: ``url`` is its own base URL, ``hits`` how many
    requests each backend answered, ``backends`` may be changed while it runs. With
    ``relay_delay`` it holds each answer that long before passing it on (a slow proxy: the
    app has sent its answer, the platform has not got it yet)."""

    def __init__(self, backends: Iterable[str], *, relay_delay: float = 0.0) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.relay_delay = relay_delay
        self.hits: dict[str, int] = dict.fromkeys(self.backends, 0)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> RoundRobin:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True,
                                   request_handler=_Quiet)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05}, name="round-robin")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def rewrite(self, urls: dict[str, str]) -> dict[str, str]:
        """An app's callback URLs, pointed at the balancer instead."""
        out = {}
        for kind, url in urls.items():
            base = next(b for b in self.backends if url.startswith(b))
            out[kind] = self.url + url[len(base):]
        return out

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            first = next(self._turn)
            order = [self.backends[(first + i) % len(self.backends)]
                     for i in range(len(self.backends))]
        for backend in order:
            try:
                answer = self._session().request(
                    request.method, backend + request.full_path.rstrip("?"), data=body,
                    headers={"Content-Type": request.content_type or ""}, timeout=10)
            except requests.ConnectionError:
                continue  # that process is gone: the next one takes it
            with self._lock:
                self.hits[backend] = self.hits.get(backend, 0) + 1
            if self.relay_delay:
                threading.Event().wait(self.relay_delay)  # latency, not synchronisation
            response = Response(answer.content, status=answer.status_code,
                                content_type=answer.headers.get("Content-Type"))
            return response(environ, start_response)
        return Response("no backend answered\n", status=502)(environ, start_response)
