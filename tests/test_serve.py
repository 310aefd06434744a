"""Production serving: ``ivrscript.wsgi`` for any WSGI server, the health check, and
``python -m ivrscript serve`` under gunicorn (real processes, real signals, the simulator as
the platform over loopback HTTP)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.test import Client

import ivrscript as ivr
from ivrscript import ConfigError, Simulator
from ivrscript.listener import CallbackListener
from ivrscript.stores import StoreUnavailable

from .redis_helpers import own_redis_server, redis_store_url
from .scaleout.test_scaleout import EXPECTED, commands
from .test_cli import WAIT, Proc, clean_env, kill_all

SECRET = "serve-test-secret-0123456789abcdef"
FLOW = '''
import ivrscript as ivr


def main(call):
    yield ivr.play("https://media.example/welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=30, prompt="https://media.example/pin.wav")
    yield ivr.forward(extension="101" if pin == "1234" else "102")
'''


def flow(call: ivr.Call) -> Iterator[Any]:
    yield ivr.play("https://media.example/welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=30, prompt="https://media.example/pin.wav")
    yield ivr.forward(extension="101" if pin == "1234" else "102")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    kill_all(started)


@pytest.fixture
def platform() -> Iterator[Simulator]:
    """The simulator as the platform a served app's RingCentral client talks to."""
    with Simulator(speed=1, default_media_seconds=0.01) as sim:
        yield sim


# -- the health route and the 503 for an unstorable callback (no sockets) --------------------

def test_health_answers_200_with_counts_and_503_when_unhealthy() -> None:
    """GET /{secret}/health: the app's counts as JSON, 200 when healthy, 503 when not; behind
    the secret like everything else."""
    state = {"healthy": True}
    listener = CallbackListener(lambda *a: None, secret=SECRET,
                                health=lambda: (state["healthy"], {"calls": 3,
                                                                   "store_reachable":
                                                                   state["healthy"]}))
    client = Client(listener.wsgi)
    answer = client.get(f"/{SECRET}/health")
    assert answer.status_code == 200
    assert json.loads(answer.get_data()) == {"calls": 3, "store_reachable": True}
    state["healthy"] = False
    answer = client.get(f"/{SECRET}/health")
    assert answer.status_code == 503
    assert json.loads(answer.get_data())["store_reachable"] is False
    assert client.get("/wrong-secret-0123456789abcdef/health").status_code == 404


def test_a_callback_the_store_cannot_take_is_answered_503() -> None:
    """A handler that cannot store the callback (StoreUnavailable) makes the listener answer
    503, so the platform sends it again."""
    def handler(kind: str, body: dict[str, Any], received: float) -> None:
        raise StoreUnavailable("Redis at redis://x is unreachable")

    client = Client(CallbackListener(handler, secret=SECRET).wsgi)
    answer = client.post(f"/{SECRET}/on-command-update",
                         json={"sessionId": "s-1", "command": "Play", "status": "Completed"})
    assert answer.status_code == 503


def test_wsgi_needs_a_public_url(platform: Simulator) -> None:
    """Behind another server the app cannot guess where the platform reaches it."""
    with pytest.raises(ConfigError, match="public_url"):
        ivr.wsgi(flow, platform=platform, public_url="")


def test_wsgi_app_serves_health_and_callbacks(platform: Simulator) -> None:
    """ivrscript.wsgi() returns a running App's WSGI callable: health answers through it,
    and close() stops the app."""
    application = ivr.wsgi(flow, platform=platform, public_url="http://127.0.0.1:9",
                           secret=SECRET)
    try:
        assert application.app.running
        answer = Client(application).get(application.health_path)
        assert answer.status_code == 200
        assert json.loads(answer.get_data()) == {"calls": 0, "store_reachable": True}
    finally:
        application.close()
        application.close()
    assert not application.app.running


# -- python -m ivrscript serve (gunicorn) ----------------------------------------------------

def start_serve(tmp_path: Any, procs: list[Proc], platform: Simulator, *args: str) -> Proc:
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    env = clean_env(tmp_path, RINGCENTRAL_SERVER_URL=platform.url,
                    RINGCENTRAL_TOKEN=platform.token, IVRSCRIPT_SECRET=SECRET)
    proc = Proc(["-m", "ivrscript", "serve", str(script), "--bind", "127.0.0.1:0", *args], env)
    procs.append(proc)
    return proc


def callback_urls(proc: Proc) -> dict[str, str]:
    urls = {}
    for kind in ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error"):
        urls[kind] = proc.expect(rf"^  {kind}\s+(\S+)$").group(1)
    return urls


def wait_healthy(health: str) -> dict[str, Any]:
    """Wait until a worker answers the health check (the banner comes before the workers)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            answer = requests.get(health, timeout=5)
            if answer.status_code == 200:
                return answer.json()  # type: ignore[no-any-return]
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{health} never answered 200"
        time.sleep(0.1)


def run_calls(platform: Simulator, urls: dict[str, str], count: int) -> list[Any]:
    """``count`` calls at once, each pressing 1234 once listening; returns the phones."""
    phones = [platform.call(urls, caller=f"+1555010{i:04d}") for i in range(count)]
    for phone in phones:
        phone.press("1234", wait=True, timeout=WAIT)
    for phone in phones:
        phone.wait_until_ended(WAIT)
    return phones


def test_serve_refuses_a_memory_store_for_several_workers(tmp_path: Any, procs: list[Proc],
                                                         platform: Simulator) -> None:
    """Several workers cannot share a memory store: one sentence, exit 2, no traceback."""
    proc = start_serve(tmp_path, procs, platform, "--workers", "2", "--store", "memory:")
    assert proc.wait() == 2
    assert "with --workers above 1 use --store sqlite" in proc.output()
    assert "Traceback" not in proc.output()


def test_serve_needs_a_store_and_a_reachable_one(tmp_path: Any, procs: list[Proc],
                                                 platform: Simulator) -> None:
    """No --store, or one that cannot be opened: a sentence before any worker starts."""
    proc = start_serve(tmp_path, procs, platform, "--workers", "1")
    assert proc.wait() == 2 and "serve needs --store" in proc.output()
    blocker = tmp_path / "plain"
    blocker.write_text("a file, not a folder")
    proc = start_serve(tmp_path, procs, platform, "--store", f"sqlite:///{blocker}/calls.db")
    assert proc.wait() == 2 and "cannot use" in proc.output()
    assert "Traceback" not in proc.output()


def test_serve_under_gunicorn_completes_calls_and_stops_on_sigterm(
        tmp_path: Any, procs: list[Proc], platform: Simulator) -> None:
    """One worker on the memory store: the banner gives the callback URLs and the health URL,
    calls complete, health counts are JSON, and SIGTERM stops it with status 0."""
    proc = start_serve(tmp_path, procs, platform, "--workers", "1", "--store", "memory:")
    urls = callback_urls(proc)
    health = proc.expect(r"^Health: (\S+)$").group(1)
    assert re.match(rf"http://127\.0\.0\.1:\d+/{SECRET}/on-call-enter$", urls["on-call-enter"])
    assert wait_healthy(health) == {"calls": 0, "store_reachable": True}
    phones = run_calls(platform, urls, 10)
    assert [p.end_reason for p in phones] == ["forwarded"] * 10
    assert {p.forwarded_to for p in phones} == {"101"}
    answer = requests.get(health, timeout=WAIT)
    assert answer.status_code == 200 and answer.json()["store_reachable"] is True
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_serve_two_workers_on_one_port_complete_50_calls(
        kind: str, tmp_path: Any, procs: list[Proc], platform: Simulator) -> None:
    """``serve --workers 2`` under gunicorn: two workers on one port sharing the store; 50
    concurrent calls complete with exactly their command sequences."""
    if kind == "sqlite":
        fifty_calls_under_serve(tmp_path, procs, platform, f"sqlite:///{tmp_path}/calls.db")
    else:
        with redis_store_url() as store:
            fifty_calls_under_serve(tmp_path, procs, platform, store)


def fifty_calls_under_serve(tmp_path: Any, procs: list[Proc], platform: Simulator,
                            store: str) -> None:
    proc = start_serve(tmp_path, procs, platform, "--workers", "2", "--store", store)
    urls = callback_urls(proc)
    wait_healthy(proc.expect(r"^Health: (\S+)$").group(1))
    phones = run_calls(platform, urls, 50)
    for phone in phones:
        assert phone.end_reason == "forwarded", (phone.session_id, phone.error)
        assert commands(platform, phone.session_id) == EXPECTED, phone.session_id
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()
    assert "Traceback" not in proc.output()


def test_sigterm_hands_held_calls_over(tmp_path: Any, procs: list[Proc],
                                       platform: Simulator) -> None:
    """SIGTERM to a serving process with calls waiting for keys: it exits 0 at once, the
    leases of its calls are released (not left to lapse), and another process started on the
    same store (behind the same balancer address) finishes them."""
    from ivrscript.stores import SQLiteStore

    from .scaleout.balancer import RoundRobin

    store = f"sqlite:///{tmp_path}/calls.db"
    first = start_serve(tmp_path, procs, platform, "--workers", "1", "--store", store)
    urls = callback_urls(first)
    wait_healthy(first.expect(r"^Health: (\S+)$").group(1))
    base = urls["on-call-enter"].rsplit("/", 2)[0]
    lb = RoundRobin([base]).start()
    try:
        phones = [platform.call(lb.rewrite(urls)) for _ in range(5)]
        for phone in phones:
            phone.wait_until_listening(WAIT)
        first.popen.send_signal(signal.SIGTERM)
        assert first.wait() == 0, first.output()
        check = SQLiteStore(str(tmp_path / "calls.db"))
        try:
            assert [check.holder(p.session_id) for p in phones] == [None] * 5
        finally:
            check.close()
        second = start_serve(tmp_path, procs, platform, "--workers", "1", "--store", store)
        second_urls = callback_urls(second)
        wait_healthy(second.expect(r"^Health: (\S+)$").group(1))
        lb.backends = [second_urls["on-call-enter"].rsplit("/", 2)[0]]
        for phone in phones:
            phone.press("1234", wait=True, timeout=WAIT)
        for phone in phones:
            assert phone.wait_until_ended(WAIT) == "forwarded", phone.error
            assert commands(platform, phone.session_id) == EXPECTED
    finally:
        lb.stop()


def test_health_is_503_while_redis_is_down(tmp_path: Any, procs: list[Proc],
                                           platform: Simulator) -> None:
    """A served app on a Redis that stops: its health check answers 503 with
    ``store_reachable: false``, and 200 again once Redis is back."""
    with own_redis_server() as own_redis:
        check_health_across_a_restart(tmp_path, procs, platform, own_redis)


def check_health_across_a_restart(tmp_path: Any, procs: list[Proc], platform: Simulator,
                                  own_redis: Any) -> None:
    proc = start_serve(tmp_path, procs, platform, "--workers", "1", "--store",
                       own_redis.url + "?prefix=health:")
    callback_urls(proc)
    health = proc.expect(r"^Health: (\S+)$").group(1)
    wait_healthy(health)
    own_redis.stop()
    answer = requests.get(health, timeout=WAIT)
    assert answer.status_code == 503
    assert answer.json()["store_reachable"] is False
    own_redis.start()
    assert wait_healthy(health)["store_reachable"] is True
