"""A platform that opens a connection per callback: 500 calls entering at once, each on its own
fresh connection, all opened before any is answered. Every connection is accepted and answered
(0 lost) and every call runs its script to the end."""

from __future__ import annotations

import json
import selectors
import socket
import time

import ivrscript as ivr
from ivrscript import Simulator

from .conftest import FIGURES, call_of, enter_body

CALLS = 500


def _burst(port: int, requests: list[bytes], timeout: float = 60) -> list[bytes]:
    """Open one connection per request, all at once (non-blocking), send each request whole,
    and read each answer to its end; an answer is b"" for a connection lost on the way."""
    selector = selectors.DefaultSelector()
    answers = [b""] * len(requests)
    pending = {}
    for index, payload in enumerate(requests):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        pending[sock] = [index, payload, b""]
        selector.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            for key, events in selector.select(timeout=1):
                sock = key.fileobj
                state = pending[sock]
                try:
                    if events & selectors.EVENT_WRITE:
                        sent = sock.send(state[1])
                        state[1] = state[1][sent:]
                        if not state[1]:
                            selector.modify(sock, selectors.EVENT_READ)
                        continue
                    chunk = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    state[2] += chunk
                    continue
                answers[state[0]] = state[2]
                selector.unregister(sock)
                sock.close()
                del pending[sock]
    finally:
        for sock in pending:
            selector.unregister(sock)
            sock.close()
        selector.close()
    return answers


def test_500_calls_entering_at_once_on_500_connections_lose_none(apps):
    """500 on-call-enter callbacks, one fresh connection each, all connecting at once: all
    500 connections are answered 204 (none refused or reset: the listen backlog is 1,024 and
    no request costs a thread), and all 500 calls run their script to its end."""
    ran = []

    def main(call):
        ran.append(call.session_id)
        yield ivr.hangup()  # the platform does not know these sessions: 404, the call ends

    with Simulator(speed=20) as sim:
        app = apps(main, platform=sim)
        payloads = []
        for i in range(CALLS):
            body = json.dumps(enter_body(f"s-burst-{i}", caller=f"+1555{i:07d}")).encode()
            payloads.append((f"POST /{app.secret}/on-call-enter HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nConnection: close\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        started = time.monotonic()
        answers = _burst(app.port, payloads)
        took = time.monotonic() - started
        lost = sum(1 for answer in answers if not answer)
        statuses = sorted({answer.split(b" ", 2)[1] for answer in answers if answer})
        for i in range(CALLS):
            call_of(app, f"s-burst-{i}").wait_until_ended(60)
    assert lost == 0, f"{lost} of {CALLS} connections were lost"
    assert statuses == [b"204"], statuses
    assert len(ran) == CALLS
    FIGURES["connections opened at once (one per callback)"] += CALLS
    FIGURES["connections lost of those"] += lost
    print(f"{CALLS} connections at once: all answered in {took:.2f} s, {lost} lost")
