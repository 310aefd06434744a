"""Callbacks that repeat, come late, come for the wrong command or session, or are forged:
none of them advances a call twice or touches a call it should not."""

from __future__ import annotations

import logging
import secrets
import time

import pytest
import requests

import ivrscript as ivr
from ivrscript import Simulator

from .conftest import (
    FIGURES,
    REMOTE,
    KeyPresser,
    Spy,
    call_of,
    count_call,
    count_faults,
    enter_body,
    finish,
    post,
    successful_requests,
)


def test_every_update_delivered_twice_advances_the_script_once(make_app):
    """The same update delivered twice advances the script once (every callback duplicated)."""
    with Simulator(speed=20, duplicate_callbacks=1.0, collect_ids=True, seed=1) as sim:
        KeyPresser(sim, "12")
        got = []

        def main(call):
            yield ivr.play(REMOTE + "a.wav")
            got.append((yield ivr.collect("xx", timeout=30)))
            yield ivr.play(REMOTE + "b.wav")

        app = make_app(main, platform=sim)
        spy = Spy()
        app._observers.append(spy)
        phone = sim.call(app)
        call = finish(app, phone)
        assert got == ["12"]
        assert call.transcript.kinds() == ["enter", "play", "result", "collect", "result",
                                           "play", "result", "hangup", "exit"]
        assert successful_requests(sim, phone.session_id) == [
            ("POST", "play"), ("POST", "collect"), ("POST", "play"), ("DELETE", "session")]
        # 3 updates and the exit, each delivered twice, reached the app: 1 enter + 8.
        assert sim.faults_injected["duplicate_callbacks"] == 4
        spy.wait_for(9)
        assert spy.seen.count("on-call-exit") == 2
        count_faults(sim)
        count_call(True)


def test_update_for_a_command_no_longer_awaited_is_logged_and_ignored(caplog):
    """An update for a command the script no longer waits on is logged and ignored: a Play
    update for the play that is over, a Collect update with another collect's id, an update
    for an unknown command. The call then goes on with the real result."""
    got = []

    def main(call):
        yield ivr.play(REMOTE + "a.wav")  # the simulator's first id: 171888866234845407
        got.append((yield ivr.collect("xxxx", timeout=60)))

    with Simulator(speed=20, collect_ids=True) as sim, ivr.App(main, platform=sim) as app:
        phone = sim.call(app)
        phone.wait_until_listening(10)
        sid = phone.session_id
        caplog.set_level(logging.INFO, logger="ivrscript")
        stale = [
            {"sessionId": sid, "command": "Play", "commandId": "171888866234845407",
             "status": "Interrupted"},
            {"sessionId": sid, "command": "Collect", "commandId": "999", "status": "Completed",
             "parameters": {"digits": "0000"}},
            {"sessionId": sid, "command": "Record", "commandId": "5", "status": "Completed"},
        ]
        for body in stale:
            assert post(app, "on-command-update", body).status_code == 200
        # The events are handled in order on the call's worker: press only once they are.
        phone.press("1234")
        call = finish(app, phone)
        assert got == ["1234"], "a stale update resumed the script"
        messages = [r.getMessage() for r in caplog.records]
        assert any("stale Play update" in m for m in messages), messages
        assert any("Collect update for another collect ignored" in m for m in messages)
        assert any("unknown command 'Record'" in m for m in messages)
        assert call.transcript.kinds().count("result") == 2
        count_call(True)


def test_callbacks_after_exit_change_nothing(sim, make_app, caplog):
    """Callbacks after on-call-exit (updates, exit, error, a second enter) get 200/204 and
    change nothing: no event in the transcript, no new call, no request to the platform."""
    def main(call):
        yield ivr.play(REMOTE + "a.wav")

    app = make_app(main)
    phone = sim.call(app)
    call = finish(app, phone)
    sid = phone.session_id
    lines, n_calls, n_requests = call.transcript.lines(), len(app.calls), len(sim.requests_log)
    caplog.set_level(logging.INFO, logger="ivrscript")
    answers = [
        post(app, "on-command-update", {"sessionId": sid, "command": "Play",
                                        "commandId": "171888866234845407",
                                        "status": "Completed"}).status_code,
        post(app, "on-command-update", {"sessionId": sid, "command": "Collect",
                                        "status": "Completed",
                                        "parameters": {"digits": "1"}}).status_code,
        post(app, "on-command-error", {"sessionId": sid, "message": "boom"}).status_code,
        post(app, "on-call-exit", {"sessionId": sid}).status_code,
        post(app, "on-call-enter", enter_body(sid)).status_code,
    ]
    assert answers == [200, 200, 200, 200, 204]
    # Callbacks for a session without a runner are decided inside the request: check now.
    assert app._driver.runner(sid, create=False) is None
    assert call.transcript.lines() == lines
    assert len(app.calls) == n_calls
    assert len(sim.requests_log) == n_requests
    assert any("duplicate on-call-enter" in r.getMessage() for r in caplog.records)
    count_call(True)


def test_unknown_session_gets_200_and_a_log_line(sim, make_app, caplog):
    """A callback for a session the app never saw gets 200, one log line, and the app hangs
    that session up (never left in silence, DESIGN.md "Durable calls"); later callbacks for it
    change nothing."""
    ran = []

    def main(call):
        ran.append(call)
        yield ivr.hangup()

    app = make_app(main)
    caplog.set_level(logging.INFO, logger="ivrscript")
    for kind, body in [("on-command-update", {"sessionId": "s-nobody", "command": "Play",
                                              "commandId": "1", "status": "Completed"}),
                       ("on-call-exit", {"sessionId": "s-nobody"}),
                       ("on-command-error", {"sessionId": "s-nobody"})]:
        assert post(app, kind, body).status_code == 200
    deadline = time.monotonic() + 10
    while not any(r.method == "DELETE" for r in sim.requests_log):
        assert time.monotonic() < deadline, f"no hang-up of s-nobody: {sim.requests_log}"
        time.sleep(0.02)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("unknown session 's-nobody'" in m for m in logged) == 1, logged
    assert ran == [] and app.calls == []
    assert [(r.method, r.session_id) for r in sim.requests_log] == [("DELETE", "s-nobody")]


def _forged_paths(secret):
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    return [
        "/on-call-enter",
        "/on-call-enter/",
        f"/{secrets.token_urlsafe(24)}/on-call-enter",
        f"/{flipped}/on-call-enter",
        f"/{secret[:-1]}/on-call-enter",
        f"/{secret}x/on-call-enter",
        f"/{secret.swapcase()}/on-call-enter",
        f"/x/{secret}/on-call-enter",
        f"/{secret[:8]}/on-call-enter",
        f"/%20{secret}/on-call-enter",
        "/../on-call-enter",
        f"/{secret}/on-call-enter/extra",
        f"/{secret}/on-call-entry",
        "/" + "a" * 5000 + "/on-call-enter",
    ]


def test_wrong_or_missing_secret_is_404_and_runs_no_handler_code(sim, make_app):
    """A wrong or missing secret segment gets 404, and nothing past the check runs: no
    observer hears it, no call is made, no script runs, no request reaches the platform."""
    ran = []

    def main(call):
        ran.append(call)
        yield ivr.hangup()

    app = make_app(main)
    spy = Spy()
    app._observers.append(spy)
    bodies = {"on-call-enter": enter_body("s-forged")}
    tried = 0
    for path in _forged_paths(app.secret):
        for method in ("POST", "GET", "PUT", "DELETE"):
            answer = requests.request(method, app.url + path, json=bodies["on-call-enter"],
                                      timeout=5)
            tried += 1
            assert answer.status_code == 404, (method, path, answer.status_code)
            assert app.secret not in answer.text
    # media under a wrong secret
    assert requests.get(f"{app.url}/{secrets.token_urlsafe(24)}/media/x/a.wav",
                        timeout=5).status_code == 404
    assert spy.seen == [] and ran == [] and app.calls == [] and sim.requests_log == []
    assert app._listener.stats["callbacks"] == 0
    FIGURES["forged callbacks tried (wrong/missing secret)"] += tried + 1
    # ... and the right secret still works.
    phone = sim.call(app)
    call = finish(app, phone)
    assert spy.seen and call.end_reason == "hangup"
    count_call(True)


def test_a_failing_observer_loses_nothing(sim, make_app):
    """An observer (the recorder, a dashboard) that raises on a callback is logged; the call
    still gets the event and completes."""
    class Broken:
        def callback(self, kind, body):
            raise RuntimeError("observer bug")

        def finished(self, call):
            raise RuntimeError("observer bug")

    def main(call):
        yield ivr.play(REMOTE + "a.wav")

    app = make_app(main)
    app._observers.append(Broken())
    phone = sim.call(app)
    call = finish(app, phone)
    assert call.transcript.kinds() == ["enter", "play", "result", "hangup", "exit"]
    assert call_of(app, phone.session_id) is call
    count_call(True)


@pytest.mark.parametrize("copies", [2, 8])
def test_duplicate_enters_racing_make_one_call(sim, make_app, copies):
    """The same on-call-enter arriving several times at once starts the script once."""
    import concurrent.futures

    ran = []

    def main(call):
        ran.append(call.session_id)
        yield ivr.collect("x", timeout=60)

    app = make_app(main)
    body = enter_body("s-twin")
    with concurrent.futures.ThreadPoolExecutor(copies) as pool:
        answers = list(pool.map(lambda _: post(app, "on-call-enter", body).status_code,
                                range(copies)))
    assert answers == [204] * copies
    assert [c.session_id for c in app.calls] == ["s-twin"]
    post(app, "on-call-exit", {"sessionId": "s-twin"})
    call_of(app, "s-twin").wait_until_ended(10)
    assert ran == ["s-twin"]
