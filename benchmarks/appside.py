"""One side of the app-side benchmark in a process of its own, so its CPU time is its alone.

    python appside.py SIDE PLATFORM_URL TOKEN      # SIDE: ivrscript | baseline | floor | echo

Prints ``{"urls": {...}}`` (its callback URLs) once serving, then answers each line on stdin:
``cpu`` -> ``{"cpu": user+sys seconds of this process so far}``; ``quit`` -> exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def start(side: str, url: str, token: str) -> tuple[dict[str, str], object]:
    if side == "ivrscript":
        from run import flow

        from ivrscript import App, RingCentral

        app = App(flow, platform=RingCentral(server_url=url, token=token)).start()
        return dict(app.callback_urls), app.stop
    if side == "baseline":
        from baseline import BaselineApp
        from run import COLLECT_TIMEOUT, EXTENSION, PROMPT, THANKS, WELCOME

        app = BaselineApp(url, token, welcome=WELCOME, prompt=PROMPT, thanks=THANKS,
                          extension=EXTENSION,
                          collect_timeout_ms=int(COLLECT_TIMEOUT * 1000)).start()
        return dict(app.callback_urls), app.stop
    if side == "floor":
        from floor import FloorApp

        loop = asyncio.new_event_loop()
        floor = FloorApp(url, token)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(floor.start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return dict(floor.callback_urls), lambda: loop.call_soon_threadsafe(loop.stop)
    if side == "echo":  # answers every POST at once: the far end of the loopback limit
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        port: list[int] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from lean import read_head

            try:
                while True:
                    _, headers = await read_head(reader)
                    length = int(headers.get("content-length") or 0)
                    if length:
                        await reader.readexactly(length)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
            port.append(server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)
        return ({"on-call-enter": f"http://127.0.0.1:{port[0]}/echo"},
                lambda: loop.call_soon_threadsafe(loop.stop))
    raise SystemExit(f"unknown side {side!r}")


def main() -> None:
    side, url, token = sys.argv[1:4]
    urls, stop = start(side, url, token)
    print(json.dumps({"urls": urls}), flush=True)
    for line in sys.stdin:
        op = line.strip()
        if op == "cpu":
            times = os.times()
            print(json.dumps({"cpu": times.user + times.system}), flush=True)
        elif op == "quit":
            break
    stop()  # type: ignore[operator]


if __name__ == "__main__":
    main()
