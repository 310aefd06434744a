"""The floor: the benchmark flow as a minimal asyncio app (standard library only).

One event loop, no threads: an HTTP/1.1 keep-alive server for the callbacks and kept-alive
client connections to the platform for the commands, a dict of per-call state, a per-call
``asyncio.Lock`` so an update never overtakes the POST that started its command. No secret
path, no validation, no retries, no transcript: the least CPU a call of this flow can cost in
Python. Used by ``app_cpu.py`` to say how far ivrscript is from it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from lean import read_head

WELCOME = "https://media.example/welcome.wav"
PROMPT = "https://media.example/enter-pin.wav"
THANKS = "https://media.example/thanks.wav"
EXTENSION = "101"
BASE = "/restapi/v1.0/account/~/telephony/sessions"


class Client:
    """Kept-alive connections to the platform, reused LIFO."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.auth = f"Bearer {token}"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write((f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                      f"Authorization: {self.auth}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
        await writer.drain()
        status_line, headers = await read_head(reader)
        length = int(headers.get("content-length") or 0)
        data = await reader.readexactly(length) if length else b""
        self.idle.append((reader, writer))
        return json.loads(data) if data else {}


class FloorApp:
    def __init__(self, server_url: str, token: str) -> None:
        self.client = Client(server_url, token)
        self.calls: dict[str, dict[str, Any]] = {}
        self.callback_urls: dict[str, str] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, backlog=4096)
        port = self.server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        self.callback_urls = {k: f"{base}/{k}" for k in ("on-call-enter", "on-command-update",
                                                         "on-call-exit", "on-command-error")}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line, headers = await read_head(reader)
                length = int(headers.get("content-length") or 0)
                body = json.loads(await reader.readexactly(length)) if length else {}
                kind = request_line.split(" ", 2)[1].rsplit("/", 1)[-1]
                enter = kind == "on-call-enter"
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n" if enter
                             else b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                task = asyncio.ensure_future(self.handle(kind, body))
                self.tasks.add(task)  # the loop keeps only a weak reference to a task
                task.add_done_callback(self.tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def handle(self, kind: str, body: dict[str, Any]) -> None:
        session = body["sessionId"]
        if kind == "on-call-enter":
            call = self.calls[session] = {"party": body["inParty"]["id"],
                                          "app_party": body["partyId"], "lock": asyncio.Lock(),
                                          "state": "welcome", "play": None}
            async with call["lock"]:
                call["play"] = await self.play(session, call, WELCOME, False)
            return
        call = self.calls.get(session)
        if call is None:
            return
        if kind == "on-call-exit":
            self.calls.pop(session, None)
            return
        async with call["lock"]:
            command, status = body.get("command"), body.get("status")
            if command == "Play" and body.get("commandId") == call["play"]:
                if call["state"] == "welcome":
                    call["state"] = "collect"
                    call["play"] = None
                    await self.play(session, call, PROMPT, True)
                    await self.client.request("POST", f"{BASE}/{session}/parties/{call['party']}"
                                              "/collect", {"patterns": ["xxxx"],
                                                           "timeout": 3600000,
                                                           "interDigitTimeout": 3000,
                                                           "terminator": "#",
                                                           "resetInput": True})
                elif call["state"] == "thanks":
                    call["state"] = "forward"
                    await self.client.request("POST", f"{BASE}/{session}/parties/"
                                              f"{call['app_party']}/forward",
                                              {"extensionNumber": EXTENSION})
            elif command == "Collect" and call["state"] == "collect" and status == "Completed":
                call["state"] = "thanks"
                call["play"] = await self.play(session, call, THANKS, False)

    async def play(self, session: str, call: dict[str, Any], uri: str, barge_in: bool) -> str:
        answer = await self.client.request(
            "POST", f"{BASE}/{session}/parties/{call['party']}/play",
            {"resources": [{"uri": uri}], "interruptByDtmf": barge_in, "repeatCount": 1})
        return str(answer.get("id"))
