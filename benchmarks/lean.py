"""A lean fake platform for app-side figures: its own process, asyncio, keep-alive both ways.

The full simulator is a werkzeug server that closes every connection and shares nothing with
the measured app only when it runs in another process; even then its cost per exchange hides
the app's. This one does as little as a platform can: it answers the REST commands of the
benchmark flow with the simulator's shapes and calls back at once, over kept-alive
connections, so what is left in a measurement is the app.

    enter -> Play (201, id)            -> update Play Completed
          -> Play interruptible (201)  -> (held: the barge-in prompt)
          -> Collect (204)             -> update Play Interrupted (the prompt), then
                                          update Collect Completed "1234"
          -> Play (201, id)            -> update Play Completed
          -> Forward (200)             -> on-call-exit
    DELETE session (204)               -> on-call-exit;   DELETE play/{id} (204)

It speaks JSON lines on stdin/stdout (run by ``app_cpu.py``)::

    -> {"url": ..., "token": ...}                               at start
    <- {"op": "run", "urls": {...}, "calls": N, "concurrency": C, "fresh": false}
    -> {"calls": N, "ok": n, "seconds": s, "reactions": [ms, ...], "lost": k, "errors": [...]}
    <- {"op": "hammer", "url": URL, "seconds": s, "concurrency": c}   the loopback limit
    -> {"exchanges_per_s": x, ...}
    <- {"op": "quit"}

``reactions`` are milliseconds from a callback's first byte written to the command it caused
fully read (the four commands that answer a callback; the collect follows the prompt's 201 at
once), measured here, outside the app. ``fresh: true`` opens a new connection for every
callback (a platform without keep-alive); ``lost`` counts callbacks whose connection failed.
Standard library only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlsplit

DIGITS = "1234"


class Conn:
    """One kept-alive HTTP/1.1 client connection to the app."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class Pool:
    """Kept-alive connections to one app (host, port), reused LIFO."""

    def __init__(self, host: str, port: int, fresh: bool) -> None:
        self.host, self.port, self.fresh = host, port, fresh
        self.idle: list[Conn] = []

    async def post(self, path: str, body: bytes, on_sent: Any) -> int:
        conn = self.idle.pop() if self.idle and not self.fresh else None
        for attempt in range(2):
            if conn is None:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                conn = Conn(reader, writer)
            head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    + ("Connection: close\r\n" if self.fresh else "") + "\r\n").encode()
            try:
                on_sent()
                conn.writer.write(head + body)
                await conn.writer.drain()
                status, keep = await read_response(conn.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                conn.writer.close()
                conn = None
                if attempt:
                    raise
                continue  # a kept connection the app had closed: once more on a new one
            if keep and not self.fresh:
                self.idle.append(conn)
            else:
                conn.writer.close()
            return status
        raise ConnectionError("unreachable")


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status_line, headers = await read_head(reader)
    status = int(status_line.split()[1])
    length = headers.get("content-length")
    keep = headers.get("connection", "").lower() != "close" and status_line.startswith(
        "HTTP/1.1")
    if length is not None:
        if int(length):
            await reader.readexactly(int(length))
    elif status not in (204, 304):
        await reader.read()  # until close
        keep = False
    return status, keep


class Call:
    __slots__ = ("session", "caller_party", "app_party", "prompt_id", "done", "waiting_since",
                 "pool", "urls")

    def __init__(self, n: int, pool: Pool, urls: dict[str, str]) -> None:
        self.session = f"s-{n:032x}"
        self.caller_party = f"p-c{n:031x}"
        self.app_party = f"p-a{n:031x}"
        self.prompt_id: str | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.waiting_since: float | None = None
        self.pool = pool
        self.urls = urls


class Platform:
    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(16)
        self.calls: dict[str, Call] = {}
        self.ids = itertools.count(171888866234845407)
        self.numbers = itertools.count(1)  # sessions never repeat, across runs too
        self.reactions: list[float] = []
        self.errors: list[str] = []
        self.lost = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- callbacks to the app -------------------------------------------------------------

    def callback(self, call: Call, kind: str, body: dict[str, Any], *, reacts: bool) -> None:
        task = asyncio.ensure_future(self._callback(call, kind, body, reacts))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _callback(self, call: Call, kind: str, body: dict[str, Any],
                        reacts: bool) -> None:
        url = urlsplit(call.urls[kind])

        def sent() -> None:
            if reacts:
                call.waiting_since = time.perf_counter()

        try:
            status = await call.pool.post(url.path, json.dumps(body).encode(), sent)
        except (OSError, asyncio.IncompleteReadError) as error:
            self.lost += 1
            self.errors.append(f"{kind}: {error!r}")
            if not call.done.done():
                call.done.set_result(False)
            return
        if status >= 300:
            self.errors.append(f"{kind} answered {status}")
        if kind == "on-call-exit" and not call.done.done():
            call.done.set_result(True)

    def update(self, call: Call, command: str, status: str, command_id: str | None = None,
               digits: str | None = None, reacts: bool = True) -> None:
        body: dict[str, Any] = {"accountId": "400131801008", "extensionId": "400137552008",
                                "command": command, "partyId": call.caller_party,
                                "sessionId": call.session, "status": status}
        if command_id is not None:
            body["commandId"] = command_id
        if digits is not None:
            body["parameters"] = {"digits": digits}
        self.callback(call, "on-command-update", body, reacts=reacts)

    def exit(self, call: Call) -> None:
        self.callback(call, "on-call-exit", {"accountId": "400131801008",
                                             "extensionId": "400137552008",
                                             "partyId": call.app_party,
                                             "sessionId": call.session}, reacts=False)

    # -- the REST side --------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request_line, headers = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, answer = self.handle(request_line, body)
                payload = json.dumps(answer).encode() if answer is not None else b""
                head = (f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                        + ("Content-Type: application/json\r\n" if payload else "")
                        + "\r\n").encode()
                writer.write(head + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def handle(self, request_line: str, body: bytes) -> tuple[int, Any]:
        method, path, _ = request_line.split(" ", 2)
        parts = path.split("?")[0].strip("/").split("/")
        # restapi v1.0 account ~ telephony sessions {s} [parties {p} verb [id]]
        if len(parts) < 7 or parts[4] != "telephony":
            return 404, {"errorCode": "CMN-102", "message": "not found"}
        call = self.calls.get(parts[6])
        if call is None:
            return 404, {"errorCode": "CMN-102", "message": "unknown session"}
        now = time.perf_counter()
        if call.waiting_since is not None and not (method == "POST"
                                                   and parts[-1] == "collect"):
            self.reactions.append((now - call.waiting_since) * 1000)
            call.waiting_since = None
        if method == "DELETE" and len(parts) == 7:
            self.calls.pop(call.session, None)
            self.exit(call)
            return 204, None
        verb = parts[9] if len(parts) > 9 else ""
        if method == "DELETE" and verb == "play":
            return 204, None
        data = json.loads(body or b"{}")
        if verb == "play":
            command_id = str(next(self.ids))
            if data.get("interruptByDtmf"):
                call.prompt_id = command_id  # the barge-in prompt: held until the collect
            else:
                self.update(call, "Play", "Completed", command_id)
            return 201, {"id": command_id, "status": "InProgress", **data}
        if verb == "collect":
            if call.prompt_id is not None:
                self.update(call, "Play", "Interrupted", call.prompt_id, reacts=False)
                call.prompt_id = None
            self.update(call, "Collect", "Completed", digits=DIGITS)
            return 204, None
        if verb == "forward":
            self.calls.pop(call.session, None)
            self.exit(call)
            return 200, {"id": call.app_party, "status": {"code": "Gone"}}
        return 404, {"errorCode": "CMN-102", "message": f"unknown command {verb}"}

    # -- a run ----------------------------------------------------------------------------

    async def run(self, urls: dict[str, str] | list[dict[str, str]], calls: int,
                  concurrency: int, fresh: bool) -> dict[str, Any]:
        """``urls``: one app's callback URLs, or a list of apps' (calls go to each in turn:
        processes sharing a call store, benchmarks/scaleout.py)."""
        self.reactions, self.errors, self.lost = [], [], 0
        apps = urls if isinstance(urls, list) else [urls]
        pools = [Pool(urlsplit(u["on-call-enter"]).hostname or "127.0.0.1",
                      urlsplit(u["on-call-enter"]).port or 80, fresh) for u in apps]
        ok = 0
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            nonlocal ok
            async with slots:
                turn = index % len(apps)
                call = Call(next(self.numbers), pools[turn], apps[turn])
                self.calls[call.session] = call
                self.callback(call, "on-call-enter", {
                    "accountId": "400131801008", "extensionId": "400137552008",
                    "inParty": {"from": {"phoneNumber": "+15550100"}, "id": call.caller_party,
                                "to": {"phoneNumber": "+15550199"}},
                    "partyId": call.app_party, "sessionId": call.session}, reacts=True)
                try:
                    ended = bool(await asyncio.wait_for(call.done, 60))
                    ok += ended
                except TimeoutError:
                    self.errors.append(f"{call.session} did not end within 60 s")
                self.calls.pop(call.session, None)

        began = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(calls)))
        seconds = time.perf_counter() - began
        for conn in (conn for pool in pools for conn in pool.idle):
            conn.writer.close()
        return {"calls": calls, "ok": ok, "seconds": seconds, "reactions": self.reactions,
                "lost": self.lost, "errors": self.errors[:10]}


async def hammer(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Exchanges/s of this client against a server that answers at once (the loopback limit
    of a kept-alive asyncio pair of processes)."""
    target = urlsplit(url)
    pool = Pool(target.hostname or "127.0.0.1", target.port or 80, False)
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await pool.post(target.path or "/", b"{}", lambda: None)
            count += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    for conn in pool.idle:
        conn.writer.close()
    return {"exchanges": count, "seconds": elapsed, "exchanges_per_s": count / elapsed}


async def main() -> None:
    platform = Platform()
    server = await asyncio.start_server(platform.serve, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "token": platform.token}), flush=True)
    while line := await reader.readline():
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "hammer":
            print(json.dumps(await hammer(request["url"], float(request["seconds"]),
                                          int(request["concurrency"]))), flush=True)
            continue
        result = await platform.run(request["urls"], int(request["calls"]),
                                    int(request["concurrency"]), bool(request.get("fresh")))
        print(json.dumps(result), flush=True)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
