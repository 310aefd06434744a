"""Side by side: the callback listener's WSGI app under werkzeug's dev server, waitress and
cheroot (each in its own process), for the two things that matter at the edge:

- keep-alive throughput: 4 client threads, each one keep-alive connection, posting callbacks;
  the server process's CPU per callback (user + sys, from /proc) and callbacks/s;
- slow clients: N connections trickling one header byte every 2 s, then 20 legitimate
  callbacks on fresh connections: how long each waited (or that it failed).

    python benchmarks/listener_servers.py [--requests 4000] [--tricklers 1500]

Needs waitress and cheroot installed (cheroot only for this comparison). Loopback only; every
process it starts it stops.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

SECRET = "s" * 32
BODY = json.dumps({"sessionId": "s-1", "command": "Play", "status": "Completed",
                   "commandId": "c-1"}).encode()
HEADERS = {"Content-Type": "application/json", "Content-Length": str(len(BODY))}


def serve(kind: str) -> None:
    """Child process: serve the listener's WSGI app with ``kind``; print the port."""
    from ivrscript.listener import CallbackListener

    listener = CallbackListener(lambda *a: None, secret=SECRET)
    app = listener.wsgi
    if kind == "werkzeug":
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *a: object) -> None:
                pass

        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
        print(server.server_port, flush=True)
        server.serve_forever()
    elif kind == "waitress":  # stock, poll() instead of select() for >1024 sockets
        import waitress

        server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4,
                                        asyncore_use_poll=True, connection_limit=5000)
        print(server.effective_port, flush=True)
        server.run()
    elif kind == "listener":  # ivrscript's CallbackListener as it is
        listener.start()
        print(listener.port, flush=True)
        threading.Event().wait()
    elif kind == "cheroot":
        from cheroot import wsgi

        server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4)
        server.prepare()
        print(server.bind_addr[1], flush=True)
        server.serve()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(port: int, pid: int, total: int) -> tuple[float, float]:
    per_thread = total // 4
    errors: list[BaseException] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(per_thread):
                conn.request("POST", f"/{SECRET}/on-command-update", BODY, HEADERS)
                answer = conn.getresponse()
                answer.read()
                if answer.status != 200:
                    raise AssertionError(answer.status)
                if answer.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    cpu, start = cpu_seconds(pid), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    if errors:
        raise errors[0]
    return per_thread * 4 / wall, cpu / (per_thread * 4) * 1e6


def slow_clients(port: int, count: int) -> list[float | str]:
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"P")
                socks.append(sock)
            except OSError:
                break

        def trickle() -> None:
            while not stop.wait(2):
                for sock in socks:
                    try:
                        sock.send(b"O")
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()
        waits: list[float | str] = []
        for _ in range(20):
            start = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", f"/{SECRET}/on-command-update", BODY, HEADERS)
                status = conn.getresponse().status
                conn.close()
                waits.append(time.perf_counter() - start if status == 200 else f"HTTP {status}")
            except OSError as error:
                waits.append(type(error).__name__)
        return waits
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--tricklers", type=int, default=1500)
    parser.add_argument("--servers", default="werkzeug,waitress,cheroot")
    args = parser.parse_args()
    if args.servers.startswith("serve:"):
        serve(args.servers.split(":", 1)[1])
        return
    for kind in args.servers.split(","):
        child = subprocess.Popen([sys.executable, __file__, "--servers", f"serve:{kind}"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            rate, cpu_us = throughput(port, child.pid, args.requests)
            print(f"{kind:<9} keep-alive: {rate:7.0f} callbacks/s, {cpu_us:6.0f} us CPU each",
                  flush=True)
            waits = slow_clients(port, args.tricklers)
            ok = sorted(w for w in waits if isinstance(w, float))
            failed = [w for w in waits if not isinstance(w, float)]
            worst = f"{ok[-1] * 1000:.0f} ms" if ok else "-"
            print(f"{kind:<9} {args.tricklers} tricklers: {len(ok)}/20 callbacks answered, "
                  f"worst {worst}"
                  + (f", failed: {sorted(set(failed))}" if failed else ""), flush=True)
        finally:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
