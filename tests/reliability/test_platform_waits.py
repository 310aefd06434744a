"""Waiting on the platform is bounded: an answer that trickles in hits the request's total
deadline, a Retry-After is capped and a command's waits have a budget (then CommandFailed and
on_error), dial keeps to its timeout, and no log line of a failed call shows the token scheme
or a full phone number. Real loopback HTTP: the simulator, the fault proxy, a raw trickler."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ivrscript as ivr
from ivrscript import RingCentral, Simulator

from .conftest import FIGURES, REMOTE, count_call, finish


class Trickler:
    """A raw loopback server that reads a request, then answers it a byte every
    ``interval`` seconds: in its headers (``mode="headers"``) or in its body."""

    def __init__(self, mode: str, interval: float) -> None:
        self.mode = mode
        self.interval = interval
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._threads.append(threading.Thread(target=self._accept, daemon=True))
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                if self.mode == "headers":
                    head, drip = b"HTTP/1.1 201 Created\r\nX-Slow: ", b"a"
                else:
                    head, drip = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 500\r\n\r\n"), b" "
                conn.sendall(head)
                while not self._stop.wait(self.interval):
                    conn.sendall(drip)
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def trickler() -> Iterator[Any]:
    made: list[Trickler] = []

    def make(mode: str, interval: float) -> Trickler:
        made.append(Trickler(mode, interval))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_trickling_answer_fails_at_the_total_deadline(trickler, mode):
    """An answer that sends a byte every 0.3 s (so the 1 s read timeout never fires) fails
    once ``total_timeout`` (1.5 s) has passed: status 0, not retried (a POST may have run)."""
    server = trickler(mode, 0.3)
    client = RingCentral(server_url=server.url, token="t" * 20, timeout=(1.0, 1.0),
                         total_timeout=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(ivr.PlatformError) as info:
            client.play("s-1", "p-1", ["https://m/a.wav"], interrupt_by_dtmf=False, repeat=1)
    finally:
        client.close()
    took = time.monotonic() - started
    assert info.value.status == 0 and "within 1.5 s" in info.value.message
    assert "not retried" in info.value.message and server.connections == 1
    assert 1.4 < took < 10, f"took {took:.2f} s"
    FIGURES["trickling answers cut at the total deadline"] += 1
    print(f"trickling {mode}: failed after {took:.2f} s (total_timeout 1.5 s)")


def _is(method: str, path: str, verb: str, word: str) -> bool:
    return method == verb and path.rsplit("/", 1)[-1] == word


def test_trickling_answers_do_not_stall_the_workers(fault_proxy, apps):
    """Every play answer trickles: with 2 workers, 6 calls still each get CommandFailed at
    their play after the total deadline and hang up; no call waits behind the others for
    ever (before, each trickling answer held a worker until the platform stopped)."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("trickle", 0.3) if _is(m, p, "POST", "play")
                            else None)
        client = RingCentral(server_url=proxy.url, token=sim.token, timeout=(1.0, 1.0),
                             total_timeout=1.0)
        failures: list[str] = []

        def main(call):
            try:
                yield ivr.play(REMOTE + "a.wav")
            except ivr.CommandFailed as error:
                failures.append(str(error))

        app = apps(main, platform=client, workers=2)
        started = time.monotonic()
        phones = [sim.call(app) for _ in range(6)]
        for phone in phones:
            call = finish(app, phone, timeout=60)
            assert call.end_reason == "hangup"
            count_call(True)
        took = time.monotonic() - started
    assert len(failures) == 6 and all("total deadline" in f for f in failures), failures
    assert len(proxy.requests_to("POST", "play")) == 6
    FIGURES["calls ended despite trickling answers"] += 6
    print(f"6 calls, every play answer trickling, 2 workers: all ended in {took:.1f} s")


@pytest.mark.parametrize("header", ["86400", "1e300", None])
def test_a_huge_retry_after_is_capped_and_the_budget_ends_the_command(fault_proxy, apps,
                                                                       header):
    """Every play answered 429 with Retry-After 86400, 1e300 or none: each wait is capped at
    max_wait (0.3 s), the waits stop at the retry budget (1 s: three waits), then the script
    gets CommandFailed and on_error hangs up. Before: a day's wait, or OverflowError."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("status", 429, header)
                            if _is(m, p, "POST", "play") else None)
        client = RingCentral(server_url=proxy.url, token=sim.token, max_wait=0.3,
                             retry_budget=1.0)

        def main(call):
            yield ivr.play(REMOTE + "a.wav")

        app = apps(main, platform=client)
        started = time.monotonic()
        phone = sim.call(app)
        call = finish(app, phone, timeout=30)
        took = time.monotonic() - started
    assert call.end_reason == "hangup"
    assert len(proxy.requests_to("POST", "play")) == 4  # sent, then 3 capped waits
    assert any("429" in entry.details for entry in call.transcript)
    assert took < 20, f"the call took {took:.1f} s"
    count_call(True)
    FIGURES["Retry-After waits capped (calls)"] += 1


@pytest.mark.parametrize("fault", [("status", 429, "86400"), ("trickle", 0.3)])
def test_dial_keeps_to_its_timeout(fault_proxy, apps, fault):
    """dial(timeout=2) raises within about its timeout when RingOut is answered 429 with a
    day's Retry-After, or trickles: the wait is not started, the request is cut."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: fault if _is(m, p, "POST", "ring-out")
                            else None)
        client = RingCentral(server_url=proxy.url, token=sim.token, extension_number="201")

        def main(call):
            yield ivr.hangup()

        app = apps(main, platform=client)
        started = time.monotonic()
        with pytest.raises(ivr.IvrError):
            app.dial("+15550100", timeout=2)
        took = time.monotonic() - started
    assert took < 6, f"dial(timeout=2) took {took:.1f} s"
    FIGURES["dial timeouts kept"] += 1
    print(f"dial(timeout=2) with {fault[0]}: raised after {took:.2f} s")


def test_no_log_line_shows_the_token_scheme_or_a_full_number(fault_proxy, apps, caplog):
    """A call whose forward is refused with a message repeating the number, and whose play
    times out (a traceback through the auth call, at ERROR): the whole log, every level and
    every traceback, never has the word Bearer or the token; INFO and above never the full
    phone number."""
    number = "+15557654321"
    with Simulator(speed=20) as sim:
        def rule(method: str, path: str, n: int) -> Any:
            if _is(method, path, "POST", "forward"):
                return ("status", 400, None, f"Phone number {number} is not allowed")
            if _is(method, path, "POST", "play"):
                return ("hang", 5.0)
            return None

        proxy = fault_proxy(sim.url, rule)
        client = RingCentral(server_url=proxy.url, token=sim.token, timeout=(1.0, 0.3))

        def main(call):
            try:
                yield ivr.forward(phone_number=number)
            except ivr.CommandFailed:
                pass
            yield ivr.play(REMOTE + "a.wav")  # times out: the script fails, with a traceback

        caplog.set_level(logging.DEBUG)
        app = apps(main, platform=client)
        phone = sim.call(app, caller=number)
        call = finish(app, phone)
        proxy.release()
    assert call.end_reason == "hangup"
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    lines = [(record.levelno, formatter.format(record)) for record in caplog.records]
    whole = "\n".join(text for _, text in lines)
    assert "Traceback" in whole and "timed out" in whole, "the failure was not logged"
    assert "bearer" not in whole.lower() and sim.token not in whole
    loud = "\n".join(text for level, text in lines if level >= logging.INFO)
    assert number not in loud and number[1:] not in loud and number[-10:] not in loud
    assert "*********21" in loud  # the platform's message, masked
    FIGURES["log lines scanned for tokens and numbers"] += len(lines)
