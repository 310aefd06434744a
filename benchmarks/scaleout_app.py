"""One app process of the scale-out benchmark: the benchmark flow on a store.

    python scaleout_app.py STORE_URL PLATFORM_URL TOKEN [SERVER]

SERVER is how the App's callbacks are served: ``listener`` (the default: ``App.start()``'s
own listener), ``werkzeug`` (werkzeug's threaded dev server serving ``app.wsgi_app``) or
``serve`` (``python -m ivrscript serve`` with one gunicorn worker, in a child process).

Prints ``{"urls": {...}}`` once serving; ``quit`` on stdin stops it (``cpu`` answers its
user+sys seconds; for ``serve``, of the gunicorn processes too). Every process uses the same
callback secret, as processes sharing calls must.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SECRET = "scale-out-benchmark-secret-0123456789"
KINDS = ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")


def urls(base: str) -> dict[str, str]:
    return {kind: f"{base}/{SECRET}/{kind}" for kind in KINDS}


def children_cpu(pid: int) -> float:
    """user+sys seconds of ``pid`` and its children (from /proc), for the serve mode."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    for one in pids:
        try:
            with open(f"/proc/{one}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def serve_child(store: str, url: str, token: str) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, RINGCENTRAL_SERVER_URL=url, RINGCENTRAL_TOKEN=token,
               IVRSCRIPT_SECRET=SECRET)
    child = subprocess.Popen(
        [sys.executable, "-m", "ivrscript", "serve", os.path.join(HERE, "run.py") + ":flow",
         "--workers", "1", "--store", store, "--bind", f"127.0.0.1:{port}",
         "--public-url", base], stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("Health:"):
            break
    else:
        raise RuntimeError(f"serve ended early (exit {child.wait()})")
    threading.Thread(target=child.stdout.read, daemon=True).start()
    # The worker builds its App after the fork: wait until it answers.
    import requests

    for _ in range(200):
        try:
            if requests.get(f"{base}/{SECRET}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        threading.Event().wait(0.05)
    return child, base


def main() -> None:
    from run import flow

    from ivrscript import App, RingCentral

    store, url, token = sys.argv[1:4]
    server = sys.argv[4] if len(sys.argv) > 4 else "listener"
    app: Any = None
    child: subprocess.Popen[str] | None = None
    dev: Any = None
    if server == "listener":
        app = App(flow, platform=RingCentral(server_url=url, token=token), store=store,
                  secret=SECRET).start()
        print(json.dumps({"urls": dict(app.callback_urls)}), flush=True)
    elif server == "werkzeug":
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass  # no access log (serve has none either)

        holder: dict[str, Any] = {}
        dev = make_server("127.0.0.1", 0, lambda e, s: holder["app"](e, s), threaded=True,
                          request_handler=Quiet)
        base = f"http://127.0.0.1:{dev.server_port}"
        app = App(flow, platform=RingCentral(server_url=url, token=token), store=store,
                  secret=SECRET, public_url=base).start(listen=False)
        holder["app"] = app.wsgi_app
        threading.Thread(target=dev.serve_forever, daemon=True).start()
        print(json.dumps({"urls": urls(base)}), flush=True)
    elif server == "serve":
        child, base = serve_child(store, url, token)
        print(json.dumps({"urls": urls(base)}), flush=True)
    else:
        raise SystemExit(f"unknown server {server!r}: listener, werkzeug or serve")
    try:
        for line in sys.stdin:
            op = line.strip()
            if op == "cpu":
                times = os.times()
                cpu = times.user + times.system
                if child is not None:
                    cpu += children_cpu(child.pid)
                print(json.dumps({"cpu": cpu}), flush=True)
            elif op == "quit":
                break
    finally:
        if dev is not None:
            dev.shutdown()
        if app is not None:
            app.stop()
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


if __name__ == "__main__":
    main()
