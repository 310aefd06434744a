"""Durable calls: the driver logs every engine input before the engine sees it, and a fresh
engine rebuilds a call from its log (DESIGN.md "Durable calls and scale-out").

The first part drives :class:`ivrscript.durable.Driver` by hand on a MemoryStore (no sockets,
no threads): the replay path itself. The second part restarts an App in-process on the same
MemoryStore object (a new App on the same store exercises replay-on-miss exactly) against the
simulator over real HTTP.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import ivrscript as ivr
from ivrscript.app import call_from_enter
from ivrscript.call import Call
from ivrscript.durable import CallRunner, Driver
from ivrscript.engine import CallEngine, Request, Sent, Update
from ivrscript.stores import MemoryStore

WAIT = 20.0
SECRET = "durable-test-secret-0123456789abcdef"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- the replay path, by hand ----------------------------------------------------------------


class Crash(BaseException):
    """A process dying in the middle of a send (nothing after it runs)."""


class Host:
    """What the driver needs from an App, hand-cranked: requests are accepted (play ids
    counted), effects run when the test says so, nothing is threaded."""

    def __init__(self, store: MemoryStore, script: Any, *, crash_on: str | None = None) -> None:
        self.store = store
        self.script = script
        self.sent: list[Request] = []
        self.effects: list[tuple[CallRunner, Request, int]] = []
        self.calls: list[Call] = []
        self.finished: list[Call] = []
        self.crash_on = crash_on
        self._ids = 100
        self.driver = Driver(store, self, owner=f"host-{id(self)}", cache_size=10,
                             lease_ttl=30.0)
        # Each Host plays a process; the one before it is gone (its lease lapsed).
        for info in store.calls():
            holder = store.holder(info.session_id)
            if holder is not None:
                store.release(info.session_id, holder)

    def new_engine(self, body: dict[str, Any]) -> tuple[CallEngine, Call]:
        call = call_from_enter(body)
        return CallEngine(self.script, call), call

    def send(self, request: Request) -> Sent:
        if request.op == self.crash_on:
            raise Crash(request.op)
        self.sent.append(request)
        if request.op == "play":
            self._ids += 1
            return Sent(request.token, str(self._ids))
        return Sent(request.token, None)

    def run_effect(self, runner: CallRunner, request: Request, seq: int) -> None:
        self.effects.append((runner, request, seq))

    def complete_effects(self, at: float) -> None:
        while self.effects:
            runner, request, seq = self.effects.pop(0)
            effect = request.effect
            assert effect is not None
            value = effect.fn(*effect.args, **dict(effect.kwargs))
            self.store.append(runner.session_id, "effect", {"req": seq, "value": value},
                              key=f"effect:{seq}", at=at)
            self.drain()

    def call_entered(self, call: Call, *, observed: bool) -> None:
        self.calls.append(call)

    def call_finished(self, runner: CallRunner, call: Call) -> None:
        self.finished.append(call)

    def timer_set(self, delay: float) -> None:
        pass

    def hang_up_unknown(self, session_id: str, party_id: str | None) -> None:
        self.sent.append(Request(0, "drop", {"session_id": session_id}))

    # -- the platform side -------------------------------------------------------------------

    def drain(self, session_id: str = "s-1") -> None:
        runner = self.driver.runner(session_id)
        assert runner is not None
        self.driver.drain(runner)

    def enter(self, at: float) -> None:
        self.store.append("s-1", "enter", {"body": ENTER, "script": {}}, key="enter", at=at)
        self.drain()

    def update(self, command: str, status: str, at: float, command_id: str | None = None,
               digits: str | None = None) -> None:
        self.store.append("s-1", "callback", {"kind": "on-command-update", "command": command,
                                              "status": status, "commandId": command_id,
                                              "digits": digits}, at=at)
        self.drain()

    @property
    def call(self) -> Call:
        return self.calls[-1]


ENTER = {"sessionId": "s-1", "partyId": "p-app",
         "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"},
                     "to": {"phoneNumber": "+15550199"}}}
counted: collections.Counter[str] = collections.Counter()


def lookup(name: str) -> dict[str, Any]:
    counted[name] += 1
    return {"name": name, "tier": "gold"}


def pin_script(call: Call) -> Any:
    account = yield ivr.effect(lookup, "ann")
    call.data["tier"] = account["tier"]
    pin = yield ivr.collect("xxxx", timeout=8)
    yield ivr.play("https://example.com/ok.wav" if pin == "1234" else
                   "https://example.com/no.wav")


def drifted_script(call: Call) -> Any:
    account = yield ivr.effect(lookup, "ann")
    call.data["tier"] = account["tier"]
    pin = yield ivr.collect("xxxxx", timeout=8)  # the changed line
    yield ivr.play("https://example.com/ok.wav" if pin == "12345" else
                   "https://example.com/no.wav")


def live_until_play(store: MemoryStore) -> Host:
    """A live call: effect, collect (an early forged Timeout rejected on time), PIN, play."""
    host = Host(store, pin_script)
    t0 = 1_000_000.0
    host.enter(t0)
    host.complete_effects(t0)
    assert [r.op for r in host.sent] == ["collect"]
    host.update("Collect", "Timeout", t0 + 1)  # 1 s into an 8 s collect: not its result
    host.update("Collect", "Completed", t0 + 5, digits="1234")
    assert [r.op for r in host.sent] == ["collect", "play"]
    return host


def test_replay_rebuilds_the_call_and_sends_nothing_again() -> None:
    """A fresh driver on the same log rebuilds the call: same transcript, same call.data,
    the early Timeout rejected again (the engine's clock is the logged time, not now), the
    effect not run again, nothing sent; then it goes on live."""
    counted.clear()
    store = MemoryStore()
    live = live_until_play(store)
    assert counted["ann"] == 1
    again = Host(store, pin_script)
    again.drain()
    assert again.sent == [] and counted["ann"] == 1
    assert again.call.transcript.lines() == live.call.transcript.lines()
    assert "Timeout" not in str(again.call.transcript)
    assert again.call.data == {"tier": "gold"}
    again.update("Play", "Completed", 1_000_010.0, command_id="101")
    assert [r.op for r in again.sent] == ["drop"]
    assert again.finished and again.finished[0].end_reason == "hangup"
    kinds = [e.kind for e in store.load("s-1")]
    assert kinds[0] == "enter" and kinds[-1] == "end"
    assert kinds.count("request") == 4 and kinds.count("outcome") == 3  # effect: no outcome


def test_only_the_request_in_flight_is_sent_again() -> None:
    """A crash between logging a request and logging its outcome: the replay sends exactly
    that request again, and nothing before it."""
    store = MemoryStore()
    host = Host(store, pin_script, crash_on="play")
    host.enter(1_000_000.0)
    host.complete_effects(1_000_000.0)
    with pytest.raises(Crash):
        host.update("Collect", "Completed", 1_000_005.0, digits="1234")
    assert [e.kind for e in store.load("s-1")][-1] == "request"
    again = Host(store, pin_script)
    again.drain()
    assert [(r.op, r.args["uris"]) for r in again.sent] == [
        ("play", ["https://example.com/ok.wav"])]


def test_a_resent_collect_the_platform_already_has_counts_as_sent() -> None:
    """The collect in flight at the crash did reach the platform: sent again, it is answered
    409 (a Collect is already active); that is the first one, and the call goes on."""
    from ivrscript.engine import SendFailed
    from ivrscript.errors import PlatformError

    store = MemoryStore()
    host = Host(store, pin_script, crash_on="collect")
    host.enter(1_000_000.0)
    with pytest.raises(Crash):
        host.complete_effects(1_000_000.0)

    class Busy(Host):
        def send(self, request: Request) -> Any:
            if self.sent:
                return super().send(request)
            self.sent.append(request)
            return SendFailed(request.token, PlatformError(409, "TAS-409", "already active"))

    again = Busy(store, pin_script)
    again.drain()
    assert [r.op for r in again.sent] == ["collect"] and again.call.error is None
    again.update("Collect", "Completed", time.time() + 60, digits="1234")
    assert [r.op for r in again.sent] == ["collect", "play"]


def test_a_changed_script_raises_script_changed_at_the_step() -> None:
    """Replayed with a script that now issues another command: ScriptChanged names the step,
    the logged command and the new one with the script's file:line; on_error hangs up."""
    store = MemoryStore()
    live_until_play(store)
    drifted = Host(store, drifted_script, crash_on="drop")
    with pytest.raises(Crash):  # the process dies hanging up
        drifted.drain()
    error = drifted.call.error
    assert isinstance(error, ivr.ScriptChanged)
    text = str(error)
    assert "step 2" in text and "collect xxxx" in text and "collect xxxxx" in text, text
    assert f"{__file__}:" in text
    assert 'patterns: ["xxxx"]' in text and 'patterns: ["xxxxx"]' in text, text
    # The next replay with the same changed script takes the same decisions; only the hang-up
    # that was in flight is sent again.
    third = Host(store, drifted_script)
    third.drain()
    assert [r.op for r in third.sent] == ["drop"]
    assert isinstance(third.call.error, ivr.ScriptChanged)
    assert [e.kind for e in store.load("s-1")].count("abort") == 1


def test_a_different_source_alone_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.append("s-1", "enter", {"body": ENTER, "script": {"hash": "0" * 16}}, key="enter")
    host = Host(store, pin_script)
    caplog.set_level(logging.WARNING, logger="ivrscript")
    host.drain()
    assert any("changed since the call entered" in r.getMessage() for r in caplog.records)
    assert host.call.error is None


def test_a_corrupt_log_entry_ends_the_call_through_on_error(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    store = MemoryStore()
    host = live_until_play(store)
    store.append("s-1", "callback", {"kind": "on-command-update", "status": "Completed"})
    caplog.set_level(logging.ERROR, logger="ivrscript")
    host.drain()
    assert any("log entry" in r.getMessage() and "is corrupt" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert [r.op for r in host.sent][-1] == "drop"
    assert host.finished


def test_an_overdue_update_ends_the_call() -> None:
    """The collect's update never comes: its durable timer (natural end + margin) fires and
    the call ends through on_error, with the reason."""
    store = MemoryStore()
    host = Host(store, pin_script)
    t0 = time.time()
    host.enter(t0)
    host.complete_effects(t0)
    due = store.claim_due("test", now=t0 + 8 + 3 * 4 + 29)
    assert due == []  # not yet: 8 s timeout + 4 keys x 3 s + 30 s margin
    due = store.claim_due("test", now=time.time() + 8 + 3 * 4 + 31)
    assert [t.data["event"] for t in due] == ["overdue"]
    store.append("s-1", "timer", due[0].data, key="timer:" + due[0].key)
    host.drain()
    assert "no update came for the collect" in str(host.call.error)
    assert [r.op for r in host.sent] == ["collect", "drop"]


def test_forged_updates_do_not_grow_a_call() -> None:
    """2,000 forged 60 KB updates to one call add kilobytes to its engine and log, not MBs
    (issue 12 item 4)."""
    from ivrscript.durable import callback_entry

    def script(call: Call) -> Any:
        yield ivr.collect("x", timeout=8)

    call = Call("s-f", caller_party_id="p")
    engine = CallEngine(script, call)
    engine.start()
    store = MemoryStore()
    tracemalloc.start()
    digits = "1" * 60_000
    before = tracemalloc.get_traced_memory()[0]
    for n in range(2000):
        engine.handle(Update("Play", "Completed", f"forged-{n}", digits))
    engine_grown = tracemalloc.get_traced_memory()[0] - before
    for n in range(2000):
        body = {"sessionId": "s-f", "command": "Play", "status": "Completed",
                "commandId": f"forged-{n}", "parameters": {"digits": digits}}
        data, key = callback_entry("on-command-update", body)
        store.append("s-f", "callback", data, key=key)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert engine_grown < 100_000, f"the engine grew {engine_grown} bytes"
    assert grown < 3_000_000, f"{grown} bytes for 2,000 forged updates (was 119 MB)"


# -- in-process restart on one MemoryStore, against the simulator ----------------------------


def pin_flow(call: Call) -> Any:
    yield ivr.play("https://example.com/welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=300)
    yield ivr.play("https://example.com/ok.wav" if pin == "1234" else
                   "https://example.com/no.wav")


def sent(sim: Any) -> list[tuple[str, str]]:
    """The session commands the platform received: (method, last path part)."""
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in sim.requests_log
            if r.session_id is not None]


def restart(old: Any, script: Any, sim: Any, store: Any, apps: list[Any], **kw: Any) -> Any:
    port = old.port
    old.stop()
    new = ivr.App(script, platform=sim, store=store, port=port, secret=SECRET, **kw).start()
    apps.append(new)
    return new


@pytest.fixture
def apps() -> Any:
    started: list[Any] = []
    yield started
    for app in started:
        app.stop()


def test_a_restarted_app_resumes_a_parked_call(sim: Any, apps: list[Any]) -> None:
    """Stopped mid-collect, a new App on the same store takes the call up (replay), the keys
    complete it, and the platform saw every command exactly once."""
    store = MemoryStore()
    app = ivr.App(pin_flow, platform=sim, store=store, secret=SECRET).start()
    apps.append(app)
    phone = sim.call(app)
    phone.wait_until_listening(WAIT)
    app2 = restart(app, pin_flow, sim, store, apps)
    wait_for(lambda: app2.calls, "the new app to take the call up")
    phone.press("1234")
    assert phone.wait_until_ended(WAIT) == "hangup"
    assert phone.heard == ["https://example.com/welcome.wav", "https://example.com/ok.wav"]
    assert sent(sim) == [("POST", "play"), ("POST", "collect"), ("POST", "play"),
                         ("DELETE", phone.session_id)]
    resumed = app2.calls[0]
    assert resumed.wait_until_ended(WAIT) == "hangup"
    assert "'1234' Completed" in str(resumed.transcript)


def test_a_retry_after_wait_survives_a_restart(sim: Any, apps: list[Any]) -> None:
    """A 429's Retry-After wait is a durable timer: the app stops during it, the new one
    fires it and sends the command once more."""
    store = MemoryStore()
    sim.rate_limited = 1.0
    app = ivr.App(pin_flow, platform=sim, store=store, secret=SECRET).start()
    apps.append(app)
    phone = sim.call(app)
    wait_for(lambda: any(r.status == 429 for r in sim.requests_log), "a 429")
    app2 = restart(app, pin_flow, sim, store, apps)
    sim.rate_limited = 0.0
    phone.wait_until_listening(WAIT)
    phone.press("1234")
    assert phone.wait_until_ended(WAIT) == "hangup"
    plays = [r.status for r in sim.requests_log if r.path.endswith("/play")]
    assert plays == [429, 201, 201], plays  # the retried play once, then the last play
    assert app2.calls and app2.calls[0].wait_until_ended(WAIT) == "hangup"


def test_an_effect_runs_once_across_a_restart(sim: Any, apps: list[Any], tmp_path: Any) -> None:
    """The effect's result is in the log: the resumed call gets it back without running it
    (a counter file proves it), and decides on it as before."""
    counter = tmp_path / "count"

    def bump() -> int:
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        return n

    def script(call: Call) -> Any:
        n = yield ivr.effect(bump)
        call.data["n"] = n
        yield ivr.collect("x", timeout=300)
        yield ivr.play(f"https://example.com/{n}.wav")

    store = MemoryStore()
    app = ivr.App(script, platform=sim, store=store, secret=SECRET).start()
    apps.append(app)
    phone = sim.call(app)
    phone.wait_until_listening(WAIT)
    app2 = restart(app, script, sim, store, apps)
    wait_for(lambda: app2.calls, "the new app to take the call up")
    phone.press("5")
    assert phone.wait_until_ended(WAIT) == "hangup"
    assert counter.read_text() == "1"
    assert phone.heard == ["https://example.com/1.wav"]
    assert app2.calls[0].data == {"n": 1}


def test_effects_results_errors_and_timeouts(sim: Any, make_app: Any) -> None:
    """An effect's JSON result resumes the yield; its exception, a non-JSON result and a
    timeout are raised there; the call worker is never the one running it."""
    release = threading.Event()
    threads: list[str] = []

    def ok(x: int, *, y: int) -> list[int]:
        threads.append(threading.current_thread().name)
        return [x, y]

    def fails() -> None:
        raise KeyError("nobody")

    def not_json() -> object:
        return object()

    def slow() -> None:
        release.wait(10)

    seen: list[Any] = []

    def script(call: Call) -> Any:
        seen.append((yield ivr.effect(ok, 1, y=2)))
        for fn, kw in ((fails, {}), (not_json, {}), (slow, {"timeout": 0.2})):
            try:
                yield ivr.effect(fn, **kw)
            except Exception as error:  # noqa: BLE001 - what the test looks at
                seen.append((type(error).__name__, str(error)))
        release.set()

    app = make_app(script)
    phone = sim.call(app)
    assert phone.wait_until_ended(WAIT) == "hangup"
    assert seen[0] == [1, 2]
    assert seen[1] == ("KeyError", "'nobody'")
    assert seen[2][0] == "TypeError" and "not JSON-serialisable" in seen[2][1]
    assert seen[3][0] == "TimeoutError" and "timeout of 0.2 s" in seen[3][1]
    assert threads and all(name.startswith("ivrscript-effect") for name in threads)
    assert "effect  ok" in str(app.calls[0].transcript)


SCRIPT = """
import ivrscript as ivr

def main(call):
    yield ivr.play("https://example.com/welcome.wav")
    pin = yield ivr.collect("PATTERN", timeout=300)
    yield ivr.play("https://example.com/ok.wav")
"""


def test_a_changed_script_ends_the_resumed_call_through_on_error(sim: Any, apps: list[Any],
                                                                 tmp_path: Any) -> None:
    """The script file is edited while a call is parked; the restarted app replays the call
    with the new source: ScriptChanged at the collect, named, and on_error ends the call."""
    from ivrscript.loader import load_script_file

    path = tmp_path / "flow.py"
    path.write_text(SCRIPT.replace("PATTERN", "xxxx"))
    script, _ = load_script_file(str(path))
    store = MemoryStore()
    app = ivr.App(script, platform=sim, store=store, secret=SECRET).start()
    apps.append(app)
    phone = sim.call(app)
    phone.wait_until_listening(WAIT)
    path.write_text(SCRIPT.replace("PATTERN", "xxxxxx"))
    changed, _ = load_script_file(str(path))
    app2 = restart(app, changed, sim, store, apps, on_error=ivr.forward(extension="0"))
    assert phone.wait_until_ended(WAIT) == "forwarded"
    call = app2.calls[0]
    call.wait_until_ended(WAIT)
    assert isinstance(call.error, ivr.ScriptChanged)
    text = str(call.error)
    assert "step 2" in text and "collect xxxxxx" in text and f"{path}:6" in text, text


def test_a_second_app_with_another_script_on_one_store_is_refused() -> None:
    store = MemoryStore()

    def other(call: Call) -> Any:
        yield ivr.hangup()

    ivr.App(pin_flow, platform=_NoPlatform(), store=store)
    with pytest.raises(ivr.ConfigError, match="belongs to .*pin_flow.*give this script its "
                                              "own store"):
        ivr.App(other, platform=_NoPlatform(), store=store)


class _NoPlatform:
    """A started simulator's shape (url, token): enough to build an App that never runs."""

    url = "http://127.0.0.1:9"
    token = "t" * 30


def test_ended_sessions_are_known_for_the_retention_time(sim: Any, make_app: Any) -> None:
    """A replayed on-call-enter never runs the script again while the store keeps the call
    (the store's retention, time-based: issue 12 item 5); after it, the call is forgotten."""
    import requests

    runs: list[str] = []

    def script(call: Call) -> Any:
        runs.append(call.session_id)
        yield ivr.hangup()

    app = make_app(script, retention=1.0)
    phone = sim.call(app)
    phone.wait_until_ended(WAIT)
    app.calls[0].wait_until_ended(WAIT)
    body = {"sessionId": phone.session_id, "partyId": "p-x", "inParty": {"id": "p-y"}}
    assert requests.post(app.callback_urls["on-call-enter"], json=body, timeout=5).status_code \
        == 204
    assert runs == [phone.session_id]
    wait_for(lambda: not app.store.load(phone.session_id), "the store to expire the call", 5)


def test_callbacks_to_another_process_reach_the_holder(sim: Any, apps: list[Any]) -> None:
    """Two apps on one store (scale-out): the call's updates go to the app that does not hold
    it; that one appends and answers, and the holder, woken by the store, drives the call."""
    store = MemoryStore()
    holder = ivr.App(pin_flow, platform=sim, store=store).start()
    other = ivr.App(pin_flow, platform=sim, store=store).start()
    apps.extend([holder, other])
    urls = dict(holder.callback_urls)
    urls["on-command-update"] = other.callback_urls["on-command-update"]
    phone = sim.call(urls)
    phone.wait_until_listening(WAIT)
    phone.press("1234")
    assert phone.wait_until_ended(WAIT) == "hangup"
    assert phone.heard == ["https://example.com/welcome.wav", "https://example.com/ok.wav"]
    assert holder.calls and holder.calls[0].wait_until_ended(WAIT) == "hangup"
    assert other.calls == []
    assert len(sent(sim)) == 4


class _FlakyStore(MemoryStore):
    """A memory store that can be made unreachable (a Redis down, a SQLite file locked)."""

    down = False

    def append(self, *args: Any, **kwargs: Any) -> int | None:
        if self.down:
            from ivrscript.stores import StoreUnavailable

            raise StoreUnavailable("the store is down (test)")
        return super().append(*args, **kwargs)


def test_an_unreachable_store_answers_503_so_the_platform_retries(sim: Any, make_app: Any
                                                                  ) -> None:
    import requests

    store = _FlakyStore()
    app = make_app(pin_flow, store=store)
    phone = sim.call(app)
    phone.wait_until_listening(WAIT)
    store.down = True
    body = {"sessionId": phone.session_id, "command": "Collect", "status": "Completed",
            "parameters": {"digits": "1234"}}
    answer = requests.post(app.callback_urls["on-command-update"], json=body, timeout=5)
    assert answer.status_code == 503
    store.down = False
    assert requests.post(app.callback_urls["on-command-update"], json=body,
                         timeout=5).status_code == 200
    assert app.calls[0].wait_until_ended(WAIT) == "hangup"
    assert "'1234' Completed" in str(app.calls[0].transcript)


def test_on_unknown_tries_its_command_then_hangs_up(sim: Any, make_app: Any) -> None:
    """on_unknown=forward(...): the app asks the platform for the unknown session's app party
    to forward (the callback names the caller's); here the platform knows no such session, so
    it is hung up (tests/test_unknown_forward.py forwards a real one)."""
    import requests

    app = make_app(pin_flow, on_unknown=ivr.forward(extension="0"))
    body = {"sessionId": "s-gone", "partyId": "p-caller", "command": "Play",
            "commandId": "7", "status": "Completed"}
    assert requests.post(app.callback_urls["on-command-update"], json=body,
                         timeout=5).status_code == 200
    wait_for(lambda: any(r.method == "DELETE" for r in sim.requests_log), "the hang-up")
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sim.requests_log] == [
        ("GET", "s-gone"), ("DELETE", "s-gone")]


def test_a_lost_update_ends_the_call_once_overdue(sim: Any, make_app: Any, caplog: Any
                                                  ) -> None:
    """The platform's updates go nowhere (a port nobody listens on): the collect's update
    never comes, and once it is overdue past the collect's natural end the call ends through
    on_error, logged with the reason; the caller is not left in silence."""
    import socket

    with socket.socket() as probe:  # a port that was free: nobody listens there
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]

    def short(call: Call) -> Any:
        yield ivr.collect("x", timeout=1)

    app = make_app(short, overdue_margin=0.5)
    urls = dict(app.callback_urls)
    urls["on-command-update"] = f"http://127.0.0.1:{dead}/lost/on-command-update"
    caplog.set_level(logging.ERROR, logger="ivrscript")
    phone = sim.call(urls)
    assert phone.wait_until_ended(WAIT) == "hangup"
    call = app.calls[0]
    call.wait_until_ended(WAIT)
    assert "no update came for the collect" in str(call.error)
    assert any("no update came for the collect" in r.getMessage() for r in caplog.records)


# -- a reassigned script: calls in progress keep theirs, also when rebuilt -------------------


def old_flow(call: Call) -> Any:
    yield ivr.play("https://example.com/old-welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=300)
    yield ivr.play(f"https://example.com/old-{pin}.wav")


def new_flow(call: Call) -> Any:
    yield ivr.play("https://example.com/new-welcome.wav")
    pin = yield ivr.collect("xx", timeout=300)
    yield ivr.play(f"https://example.com/new-{pin}.wav")


def test_an_evicted_call_replays_the_script_it_began_with(sim: Any, make_app: Any,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """A call parked, app.script reassigned, a second call evicts the first from a cache of
    one: the first is rebuilt from its log with the old script (no ScriptChanged, no warning
    about a changed source) and finishes with the old flow; the second runs the new one."""
    app = make_app(old_flow, cache_size=1)
    first = sim.call(app)
    first.wait_until_listening(WAIT)
    app.script = new_flow
    second = sim.call(app)
    second.wait_until_listening(WAIT)
    assert app._driver.runner(first.session_id, create=False) is None, "not evicted"
    with caplog.at_level(logging.WARNING, logger="ivrscript.durable"):
        first.press("1234")
        assert first.wait_until_ended(WAIT) == "hangup"
    assert first.heard == ["https://example.com/old-welcome.wav",
                           "https://example.com/old-1234.wav"]
    rebuilt = next(c for c in app.calls if c.session_id == first.session_id)
    assert rebuilt.wait_until_ended(WAIT) == "hangup"
    assert rebuilt.error is None, rebuilt.error
    assert rebuilt.script_name == "old_flow"
    assert "changed since the call entered" not in caplog.text
    second.press("12")
    assert second.wait_until_ended(WAIT) == "hangup"
    assert second.heard == ["https://example.com/new-welcome.wav",
                            "https://example.com/new-12.wav"]
    # With no call of the old script left, the next assignment lets it go.
    app.script = new_flow
    assert list(app._scripts.values()) == [new_flow]


def test_a_script_no_app_kept_replays_with_the_current_one(sim: Any, make_app: Any) -> None:
    """A call whose script the App no longer has (a call that began before a restart, here:
    the App let the old script go) is rebuilt with the current script, and a different flow
    there is ScriptChanged, as before."""
    app = make_app(old_flow, cache_size=1, on_error=ivr.forward(extension="0"))
    first = sim.call(app)
    first.wait_until_listening(WAIT)
    app.script = new_flow
    app._scripts.clear()  # as if the old script were gone (another process, a restart)
    second = sim.call(app)
    second.wait_until_listening(WAIT)
    first.press("1234")
    assert first.wait_until_ended(WAIT) == "forwarded"
    rebuilt = next(c for c in app.calls if c.session_id == first.session_id)
    rebuilt.wait_until_ended(WAIT)
    assert isinstance(rebuilt.error, ivr.ScriptChanged), rebuilt.error
    second.hang_up()


def test_a_parked_live_call_keeps_no_replay_state() -> None:
    """After each drain a live call holds no replay state, no pending inputs and no sets of
    its own seqs (a parked call should cost little); a replayed call drops its replay state
    once it has matched the log."""
    store = MemoryStore()
    host = live_until_play(store)
    runner = host.driver.runner("s-1", create=False)
    assert runner is not None
    assert (runner._replay, runner._pending, runner._tokens) == (None, None, None)
    # only what it appended since it last loaded the log (skipped when loaded back)
    assert runner._own is None or all(seq > runner.loaded for seq in runner._own)
    again = Host(store, pin_script)
    again.drain()
    runner = again.driver.runner("s-1", create=False)
    assert runner is not None and not runner.replaying
    assert (runner._replay, runner._pending) == (None, None)
