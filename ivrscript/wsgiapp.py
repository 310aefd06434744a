"""The app as a WSGI application for any production server (``ivrscript.wsgi``).

``App.start()`` serves from its own HTTP server, right for notebooks, the terminal phone and
tests. In production a real WSGI server (gunicorn: ``python -m ivrscript serve``; or any
other) serves the same listener: :func:`wsgi` builds a full App (worker pool, timers, store)
without a server of its own and returns its WSGI callable. Build one per process, after the
server forks its workers (no "preload"): the App's threads do not survive a fork.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ConfigError

__all__ = ["wsgi", "WSGIApp"]


class WSGIApp:
    """A running App behind a WSGI callable: ``application(environ, start_response)``.

    ``app`` is the :class:`~ivrscript.App`. ``close()`` stops it: no new calls, leases of the
    calls it holds released so another process takes them over (with a shared store).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._wsgi = app.wsgi_app
        self._closed = threading.Event()

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self._wsgi(environ, start_response)  # type: ignore[no-any-return]

    @property
    def health_path(self) -> str:
        """The health check's path (it carries the secret: keep it private)."""
        return f"/{self.app.secret}/health"

    def close(self) -> None:
        """Stop the app (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.app.stop()

    def __repr__(self) -> str:
        return f"<WSGIApp {self.app!r}>"


def wsgi(script: Callable[..., Any], *, platform: Any, public_url: str,
         store: Any = None, secret: str | None = None, **options: Any) -> WSGIApp:
    """A WSGI application serving ``script``'s callbacks, for any WSGI server.

    ``platform`` is a :class:`~ivrscript.RingCentral` client (or the simulator);
    ``public_url`` is the base URL the platform reaches this server at (a load balancer's,
    a tunnel's); ``store`` a :class:`~ivrscript.stores.CallStore` or URL shared by every
    process serving the script; ``secret`` the callback path's secret, the same in every
    process. Other ``options`` go to :class:`~ivrscript.App` (``keep_calls`` defaults to
    1,000 here: a server keeps that many ended calls in ``app.calls``). Health: ``GET
    /{secret}/health`` answers 200 with counts, 503 when the store is unreachable.
    """
    from .app import App

    if not public_url:
        raise ConfigError("wsgi() needs public_url: the base URL the platform reaches this "
                          "server at (e.g. https://ivr.example.com)")
    if store is not None:
        options["store"] = store
    options.setdefault("keep_calls", 1000)  # a server runs for weeks: app.calls stays bounded
    app = App(script, platform=platform, public_url=public_url, secret=secret, **options)
    app.start(listen=False)
    return WSGIApp(app)
