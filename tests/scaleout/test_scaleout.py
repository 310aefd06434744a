"""Scale-out end to end: several app processes on one store behind a load balancer, any of
which may get any callback of any call; one killed with SIGKILL mid-call; Redis restarted
mid-call. Real processes, real loopback HTTP, the simulator as the platform.

Every call must complete with exactly its command sequence (the simulator's request log is the
platform side's proof that nothing was sent twice).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ivrscript import IvrError, Simulator
from ivrscript.stores.redis import RedisStore

from ..redis_helpers import own_redis_server, redis_store_url, wait_for
from .balancer import RoundRobin

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WAIT = 60.0
EXPECTED = [("play", "https://media.example/welcome.wav"),
            ("play", "https://media.example/pin.wav"), ("collect", "xxxx"),
            ("forward", "101")]


class AppProcess:
    """``appproc.py`` in a child process: its callback URLs, stopped or killed at the end."""

    def __init__(self, sim: Simulator, store: str, lease_ttl: float = 2.0) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "appproc.py"), sim.url, sim.token, store,
             str(lease_ttl)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.errors: list[str] = []
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_err, daemon=True).start()
        threading.Thread(target=lambda: lines.put(self.popen.stdout.readline()),  # type: ignore
                         daemon=True).start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"the app process did not start:\n{self.stderr()}") from None
        assert first, f"the app process ended early:\n{self.stderr()}"
        self.urls: dict[str, str] = json.loads(first)
        self.base = self.urls["on-call-enter"].rsplit("/", 2)[0]

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.errors.append(line.rstrip("\n"))

    def stderr(self) -> str:
        return "\n".join(self.errors)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(WAIT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            try:
                self.popen.stdin.close()
                self.popen.wait(WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(speed=1, default_media_seconds=0.01) as s:
        yield s


@pytest.fixture
def start_apps(sim: Simulator) -> Iterator[Callable[..., list[AppProcess]]]:
    started: list[AppProcess] = []

    def start(count: int, store: str, lease_ttl: float = 2.0) -> list[AppProcess]:
        apps = [AppProcess(sim, store, lease_ttl) for _ in range(count)]
        started.extend(apps)
        return apps

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def balancer() -> Iterator[Callable[[list[AppProcess]], RoundRobin]]:
    made: list[RoundRobin] = []

    def make(apps: list[AppProcess]) -> RoundRobin:
        lb = RoundRobin([a.base for a in apps]).start()
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.stop()


@pytest.fixture
def redis_store() -> Iterator[str]:
    """A Redis store URL with a fresh prefix, deleted after the test."""
    with redis_store_url() as url:
        yield url


def commands(sim: Simulator, session_id: str) -> list[tuple[str, str]]:
    """The commands the platform carried out for a call, in order (one it refused, as a 409
    sent before the platform had the app's 204, is not one)."""
    out = []
    with sim._lock:
        records = list(sim.requests_log)
    for record in records:
        if record.session_id != session_id or record.method != "POST" or \
                not 200 <= record.status < 300:
            continue
        verb = record.path.rsplit("/", 1)[-1]
        body = record.json or {}
        if verb == "play":
            detail = body["resources"][0]["uri"]
        elif verb == "collect":
            detail = ",".join(body["patterns"])
        else:
            detail = str(body.get("extensionNumber", ""))
        out.append((verb, detail))
    return out


def ring(sim: Simulator, urls: Any, count: int) -> list[Any]:
    """Place ``count`` calls and wait until each listens for the PIN."""
    phones = [sim.call(urls, caller=f"+1555020{i:04d}") for i in range(count)]
    for phone in phones:
        phone.wait_until_listening(WAIT)
    return phones


def finish(phones: list[Any]) -> None:
    for phone in phones:
        phone.press("1234", wait=True, timeout=WAIT)
    for phone in phones:
        phone.wait_until_ended(WAIT)


def check(sim: Simulator, phones: list[Any], *, in_flight: bool = False) -> int:
    """Every call forwarded with exactly the expected commands; with ``in_flight``, one
    command of a call may come twice in a row (the request in flight when its process died:
    the one the platform's lack of idempotency keys lets through). Returns how many did."""
    repeated = 0
    for phone in phones:
        assert phone.end_reason == "forwarded", (phone.session_id, phone.error)
        sent = commands(sim, phone.session_id)
        if in_flight and sent != EXPECTED:
            twice = [i for i in range(1, len(sent)) if sent[i] == sent[i - 1]]
            if len(twice) == 1:
                del sent[twice[0]]
                repeated += 1
        assert sent == EXPECTED, (phone.session_id, commands(sim, phone.session_id))
    return repeated


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_two_processes_behind_a_balancer_complete_50_calls(
        kind: str, sim: Simulator, start_apps: Any, tmp_path: Any,
        request: pytest.FixtureRequest) -> None:
    """Two app processes on one store (Redis; SQLite on one host) behind the simulator's load
    balancer (``sim.call([a, b])``: each callback of a call goes to the next app in turn): 50
    concurrent calls all complete with exactly their command sequences."""
    store = (request.getfixturevalue("redis_store") if kind == "redis"
             else f"sqlite:///{tmp_path}/calls.db")
    apps = start_apps(2, store)
    phones = ring(sim, [apps[0].urls, apps[1].urls], 50)
    finish(phones)
    check(sim, phones)


def test_a_killed_process_calls_finish_on_the_other(
        sim: Simulator, start_apps: Any, balancer: Any, redis_store: str) -> None:
    """SIGKILL one of two processes while its calls wait for keys: the keys' callbacks reach
    the other, which takes each call once the dead one's lease lapses, rebuilds it from the
    log and finishes it; no command is sent twice but the one in flight at the kill."""
    lease_ttl = 2.0
    apps = start_apps(2, redis_store, lease_ttl)
    lb = balancer(apps)
    try:
        phones = ring(sim, lb.rewrite(apps[0].urls), 10)
    except IvrError as error:
        raise AssertionError(f"{error}\n" + "\n---\n".join(a.stderr() for a in apps)) from None
    apps[0].kill()
    killed = time.monotonic()
    finish(phones)
    took = time.monotonic() - killed
    repeated = check(sim, phones, in_flight=True)
    print(f"\n10 calls finished {took:.2f} s after the kill (lease {lease_ttl:g} s); "
          f"{repeated} sent their in-flight command again")
    assert "Traceback" not in apps[1].stderr(), apps[1].stderr()


def test_redis_restarted_mid_call_calls_complete(
        sim: Simulator, start_apps: Any, balancer: Any, tmp_path: Any) -> None:
    """Redis (append-only file on) stops while calls wait for keys and starts again: the
    processes reconnect, and every call completes with exactly its command sequence."""
    with own_redis_server("--appendonly", "yes", "--appendfsync", "always", "--dir",
                          str(tmp_path)) as server:
        apps = start_apps(2, server.url + "?prefix=restart:", 2.0)
        lb = balancer(apps)
        phones = ring(sim, lb.rewrite(apps[0].urls), 10)
        # Stop Redis only once every callback before the keys is stored (the welcome's and
        # the prompt's updates): this simulator does not deliver a refused update again.
        store = RedisStore.from_url(server.url + "?prefix=restart:")
        try:
            for phone in phones:
                wait_for(lambda p=phone: [e.kind for e in store.load(p.session_id)]
                         .count("callback") >= 2, "the prompt's update to be stored")
        finally:
            store.close()
        server.stop()
        # Both processes notice (their lease renewals and event reads fail) ...
        deadline = time.monotonic() + WAIT
        while not all("unreachable" in a.stderr() or "interrupted" in a.stderr()
                      for a in apps):
            assert time.monotonic() < deadline, [a.stderr() for a in apps]
            time.sleep(0.05)
        server.start()
        try:
            finish(phones)
            check(sim, phones)
        except (AssertionError, IvrError) as error:
            raise AssertionError(f"{error}\n" + "\n---\n".join(a.stderr() for a in apps)
                                 ) from None
