"""``python -m ivrscript serve``: the app under gunicorn, for production (the only module
importing gunicorn; ``pip install "ivrscript[serve]"``).

    python -m ivrscript serve SCRIPT.py[:function] --workers N --store URL
        [--bind HOST:PORT] [--public-url URL | --domain D] [--threads T]

gunicorn's master binds the port and forks ``--workers`` processes (threaded workers, no
preload); each builds its own full App (``ivrscript.wsgi``: worker pool, timers, a connection
to the shared store) after the fork. Every worker serves any callback of any call: the store
(SQLite on one host, Redis across hosts) decides which process drives a call.

SIGTERM stops gracefully: the master stops accepting, each worker answers the requests it has
and stops its App, which releases the leases of the calls it held, so the other workers (or
the next deploy) take them over; then it exits. SIGINT does the same without waiting for
requests in progress.

The platform is RingCentral from the environment (``RINGCENTRAL_*``, as live mode; the
standalone simulator prints the values to use); the callback secret is ``IVRSCRIPT_SECRET``
or the kept one (the same in every worker; set it on every host).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gunicorn.app.base import BaseApplication

from .errors import ConfigError

__all__ = ["main", "build_parser"]

log = logging.getLogger("ivrscript.serve")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ivrscript serve",
        description="Run a script's app under gunicorn: several worker processes sharing a "
                    "call store, for production.")
    parser.add_argument("script", metavar="SCRIPT.py[:function]",
                        help="the script file, and the function to run (default: main)")
    parser.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                        help="worker processes (default 2)")
    parser.add_argument("--threads", type=_positive_int, default=8, metavar="T",
                        help="request threads per worker (default 8)")
    parser.add_argument("--store", metavar="URL",
                        help="the call store every worker shares: sqlite:////path/calls.db "
                             "(one host) or redis://host:6379/0 (several hosts)")
    parser.add_argument("--bind", default="127.0.0.1:8000", metavar="HOST:PORT",
                        help="address to listen on (default 127.0.0.1:8000; port 0 picks one)")
    public = parser.add_mutually_exclusive_group()
    public.add_argument("--public-url", metavar="URL",
                        help="the base URL the platform reaches (a load balancer's)")
    public.add_argument("--domain", metavar="DOMAIN",
                        help="open an ngrok tunnel on this domain (endpoint pooling: the same "
                             "domain on several hosts shares the traffic)")
    parser.add_argument("--graceful-timeout", type=_positive_int, default=30, metavar="S",
                        help="seconds a stopping worker has to answer what it was asked "
                             "(default 30)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO lines too")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _split_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--bind takes HOST:PORT (e.g. 0.0.0.0:8000), got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(BaseApplication):  # type: ignore[misc]
    """gunicorn with our settings and our app factory (called in each worker)."""

    def __init__(self, settings: dict[str, Any], factory: Callable[[], Any]) -> None:
        self._settings = settings
        self._factory = factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._factory()


class _Serving:
    """What the master decides before forking, and the hooks that use it."""

    def __init__(self, args: argparse.Namespace, script: Any, secret: str) -> None:
        self.args = args
        self.script = script
        self.secret = secret
        self.public_url: str | None = args.public_url
        self.application: Any = None  # the worker's WSGIApp (after the fork)
        self.client: Any = None
        self.tunnel: Any = None

    # -- master ------------------------------------------------------------------------------

    def when_ready(self, server: Any) -> None:
        """The port is bound (its number known for port 0); workers fork after this."""
        host, port = server.LISTENERS[0].sock.getsockname()[:2]
        local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if self.args.domain:
            from .tunnel import open_tunnel

            self.tunnel = open_tunnel("ngrok", local, domain=self.args.domain, **_pooling())
            self.public_url = self.tunnel.url.rstrip("/")
        if not self.public_url:
            self.public_url = local
        base = f"{self.public_url}/{self.secret}"
        print(f"Serving {getattr(self.script, '__name__', 'main')}() on {local} with "
              f"{self.args.workers} workers, store {self.args.store}, public {self.public_url}",
              flush=True)
        print("Configure these callback URLs for the IVR app (keep them private):", flush=True)
        for kind in ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error"):
            print(f"  {kind:<18} {base}/{kind}", flush=True)
        print(f"Health: {base}/health", flush=True)

    def on_exit(self, server: Any) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    # -- workers -----------------------------------------------------------------------------

    def make_app(self) -> Any:
        """In a worker, after the fork: the platform client and a full App on the store."""
        from .ringcentral import RingCentral
        from .wsgiapp import wsgi

        self.client = RingCentral.from_env()
        assert self.public_url is not None
        self.application = wsgi(self.script, platform=self.client, public_url=self.public_url,
                                store=self.args.store, secret=self.secret)
        log.info("worker %d serving", os.getpid())
        return self.application

    def worker_exit(self, server: Any, worker: Any) -> None:
        """A worker stops (SIGTERM, SIGINT, a restart): stop its App, so the leases of the
        calls it held are released and another worker takes them over."""
        if self.application is not None:
            try:
                self.application.close()
            except Exception:
                log.exception("stopping the app of worker %d failed", os.getpid())
            self.application = None
        if self.client is not None:
            self.client.close()
            self.client = None


def _pooling() -> dict[str, Any]:
    """ngrok endpoint pooling (the same domain on several hosts) needs ngrok >= 1.5."""
    try:
        version = importlib.metadata.version("ngrok")
    except importlib.metadata.PackageNotFoundError:
        return {}
    major, minor = (int(part) if part.isdigit() else 0 for part in version.split(".")[:2])
    if (major, minor) >= (1, 5):
        return {"pooling_enabled": True}
    log.warning("ngrok %s has no endpoint pooling (1.5+ on Python 3.12+): one host only on "
                "this domain", version)
    return {}


def _check(args: argparse.Namespace) -> tuple[Any, str]:
    """Everything a user can get wrong, said before any worker starts."""
    from .config import load_secret
    from .loader import load_script_file
    from .ringcentral import RingCentral
    from .stores import open_store

    if not RingCentral.credentials_in_env():
        raise ConfigError("serve needs RingCentral credentials: set RINGCENTRAL_TOKEN, or "
                          "RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET and RINGCENTRAL_JWT "
                          "(and RINGCENTRAL_SERVER_URL for a server other than production)")
    if not args.store:
        raise ConfigError("serve needs --store, the call store the workers share: "
                          "sqlite:////var/lib/ivr/calls.db on one host, "
                          "redis://host:6379/0 for several")
    if args.store.split(":", 1)[0].lower() == "memory" and args.workers > 1:
        raise ConfigError("a memory store is one process's: with --workers above 1 use "
                          "--store sqlite:////path/calls.db or redis://host:6379/0")
    _split_bind(args.bind)
    script, _ = load_script_file(args.script)
    store = open_store(args.store)  # a bad URL, an unwritable file or no Redis: say it now
    try:
        if not store.ping():
            raise ConfigError(f"the call store {args.store!r} is unreachable")
    finally:
        store.close()
    return script, load_secret()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ivrscript serve ...``; returns the exit status (gunicorn's when it ran)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        script, secret = _check(args)
    except ConfigError as error:
        print(f"ivrscript serve: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    serving = _Serving(args, script, secret)
    settings = {
        "bind": [args.bind],
        "workers": args.workers,
        "worker_class": "gthread",
        "threads": args.threads,
        "graceful_timeout": args.graceful_timeout,
        "timeout": 60,
        "keepalive": 30,
        "preload_app": False,
        "proc_name": "ivrscript",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info" if args.verbose else "warning",
        "when_ready": serving.when_ready,
        "worker_exit": serving.worker_exit,
        "on_exit": serving.on_exit,
    }
    try:
        _Server(settings, serving.make_app).run()
    except SystemExit as stop:  # gunicorn's master exits through sys.exit
        return int(stop.code or 0) if not isinstance(stop.code, str) else 1
    return 0
