"""User code with bugs: a script that raises (anything, anywhere) never leaves the caller in
silence, and the listener serves the next call."""

from __future__ import annotations

import pytest

import ivrscript as ivr

from .conftest import REMOTE, count_call, finish


def _raise_at_once(call):
    raise ValueError("boom before any command")
    yield  # pragma: no cover - makes it a generator


def _raise_after_a_play(call):
    yield ivr.play(REMOTE + "a.wav")
    raise ValueError("boom after a play")


def _sub_flow(call):
    yield ivr.play(REMOTE + "a.wav")
    return {}["missing"]


def _raise_in_a_sub_flow(call):
    yield _sub_flow(call)


def _exit_in_the_script(call):
    yield ivr.play(REMOTE + "a.wav")
    raise SystemExit(3)  # exit() in a script: once a worker swallowed it and the call hung


def _raise_in_finally_after_hangup(call):
    try:
        yield ivr.collect("x", timeout=60)
    finally:
        raise RuntimeError("boom in finally")


@pytest.mark.parametrize("script, error", [
    (_raise_at_once, "ValueError: boom before any command"),
    (_raise_after_a_play, "ValueError: boom after a play"),
    (_raise_in_a_sub_flow, "KeyError: 'missing'"),
    (_exit_in_the_script, "SystemExit: 3"),
])
def test_a_script_that_raises_runs_on_error_and_the_next_call_is_served(sim, make_app, script,
                                                                       error):
    """A script that raises: on_error runs (here: forward to 0), the traceback is in the
    transcript, and the listener serves the next call."""
    app = make_app(script, on_error=ivr.forward(extension="0"))
    phone = sim.call(app)
    call = finish(app, phone)
    text = str(call.transcript)
    assert "Traceback (most recent call last)" in text and error in text, text
    assert call.transcript.kinds()[-2:] == ["forward", "exit"]
    assert phone.forwarded_to == "0" and call.end_reason == "forwarded"
    count_call(True)

    def good(call):
        yield ivr.play(REMOTE + "b.wav")

    app.script = good
    nxt = sim.call(app)
    assert finish(app, nxt).transcript.kinds() == ["enter", "play", "result", "hangup", "exit"]
    count_call(True)


def test_on_error_failing_too_hangs_up(sim, make_app):
    """When the script raises and on_error fails too (a prompt that does not exist), the app
    hangs up: the caller is never left in silence."""
    app = make_app(_raise_after_a_play, on_error=ivr.play("no-such-prompt.wav"))
    phone = sim.call(app)
    call = finish(app, phone)
    assert phone.end_reason == "hangup" and call.end_reason == "hangup"
    assert "no-such-prompt.wav" in str(call.transcript)
    count_call(True)


def test_a_script_raising_while_the_caller_hangs_up_ends_quietly(sim, make_app):
    """A script whose finally raises when the caller hangs up: logged in the transcript, no
    command after the exit, the next call is served."""
    app = make_app(_raise_in_finally_after_hangup)
    phone = sim.call(app)
    phone.wait_until_listening(10)
    requests_before_hangup = len(sim.requests_log)
    phone.hang_up()
    call = finish(app, phone)
    assert call.end_reason == "caller-hangup"
    assert "RuntimeError: boom in finally" in str(call.transcript)
    assert len(sim.requests_log) == requests_before_hangup
    count_call(True)
