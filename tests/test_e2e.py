"""App + Simulator over real loopback HTTP: the examples and the contract's scenarios."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
import requests

import ivrscript as ivr
from ivrscript.loader import PromptWarning

from .conftest import example


def call_of(app, phone):
    for call in app.calls:
        if call.session_id == phone.session_id:
            return call
    raise AssertionError(f"the app has no call {phone.session_id}")


def finish(app, phone, timeout=10):
    phone.wait_until_ended(timeout)
    call = call_of(app, phone)
    call.wait_until_ended(timeout)
    return call


# -- the examples ----------------------------------------------------------------------------


def test_greeting_example(sim, make_app):
    """The greeting plays two local WAVs served by the app, then the app hangs up."""
    app = make_app(example("greeting.py"))
    phone = sim.call(app)
    call = finish(app, phone)
    assert [u.rsplit("/", 1)[-1] for u in phone.heard] == ["welcome.wav", "goodbye.wav"]
    assert phone.end_reason == "hangup" and call.end_reason == "hangup"
    assert call.transcript.kinds() == ["enter", "play", "result", "play", "result", "hangup",
                                       "exit"]


def test_pin_example_right_pin(sim, make_app):
    """PIN example: the right PIN is accepted."""
    app = make_app(example("pin.py"))
    phone = sim.call(app)
    phone.press("1234")
    call = finish(app, phone)
    names = [u.rsplit("/", 1)[-1] for u in phone.heard]
    assert "pin-accepted.wav" in names and "wrong-pin.wav" not in names
    assert "'1234' Completed" in str(call.transcript)


def test_pin_example_wrong_then_right(sim, make_app):
    """PIN example: a wrong PIN, then the right one."""
    app = make_app(example("pin.py"))
    phone = sim.call(app)
    phone.press("9999")
    phone.press("1234")
    call = finish(app, phone)
    names = [u.rsplit("/", 1)[-1] for u in phone.heard]
    assert names.count("wrong-pin.wav") == 1 and "pin-accepted.wav" in names
    assert call.data["failed_attempts"] == 1


def test_pin_example_silence_three_times(sim, make_app):
    """PIN example: no input three times ends with 'too many tries'."""
    app = make_app(example("pin.py"))
    phone = sim.call(app)
    call = finish(app, phone, timeout=20)
    names = [u.rsplit("/", 1)[-1] for u in phone.heard]
    assert names.count("no-input.wav") == 3 and "too-many-tries.wav" in names
    assert str(call.transcript).count("Timeout") == 3


def test_support_menu_wrong_key_then_forward(sim, make_app):
    """Support menu: a wrong key plays 'invalid', then 2 forwards to extension 102."""
    app = make_app(example("support_menu.py"))
    phone = sim.call(app)
    phone.press("7")
    phone.press("2")
    call = finish(app, phone)
    assert phone.forwarded_to == "102" and phone.end_reason == "forwarded"
    assert call.end_reason == "forwarded" and call.data == {"team": "102", "done": True}
    assert "invalid-choice.wav" in [u.rsplit("/", 1)[-1] for u in phone.heard]


# -- the contract's scenarios ----------------------------------------------------------------


def test_contract_scenario(sim, make_app):
    """Menu wrong-then-right, collect timeout, 'Not Found' after #, sub-flow return value."""
    got = {}

    def ask(call):
        d = yield ivr.collect(["12", "123"], timeout=2, inter_digit_timeout=1)
        return f"sub:{d}:{d.status}"

    def main(call):
        got["menu"] = yield ivr.menu("https://media.example/menu.wav", ["1", "2"],
                                     invalid="https://media.example/bad.wav")
        got["timeout"] = yield ivr.collect("xxxx", timeout=1)
        got["notfound"] = yield ivr.collect("xxxx", timeout=5)
        got["sub"] = yield ask(call)

    app = make_app(main)
    phone = sim.call(app)
    phone.press("9")
    phone.press("2")
    phone.wait_until_listening()
    phone.wait_for(lambda: not phone.listening, timeout=5)  # the timeout collect
    phone.press("12#")
    phone.press("123")
    call = finish(app, phone)
    assert got["menu"] == "2"
    assert got["timeout"] == "" and got["timeout"].status == "Timeout"
    assert got["notfound"].status == "Not Found"
    assert got["sub"] == "sub:123:Completed"
    assert call.end_reason == "hangup"


def test_caller_hangup_mid_collect_raises_call_ended(sim, make_app):
    """The caller hanging up mid-collect raises CallEnded('caller-hangup') at the yield."""
    seen = []

    def main(call):
        try:
            yield ivr.collect("xxxx", timeout=30)
        except ivr.CallEnded as e:
            seen.append(e.reason)
            raise

    app = make_app(main)
    phone = sim.call(app)
    phone.wait_until_listening()
    phone.hang_up()
    call = finish(app, phone)
    assert seen == ["caller-hangup"] and call.end_reason == "caller-hangup"


def test_script_exception_runs_on_error_and_next_call_works(sim, make_app):
    """A script that raises: on_error forwards, traceback in the transcript; next call fine."""
    def main(call):
        yield ivr.play("https://media.example/a.wav")
        if call.caller == "+15550001":
            raise KeyError("no such customer")

    app = make_app(main, on_error=ivr.forward(extension="0"))
    bad = sim.call(app, caller="+15550001")
    call = finish(app, bad)
    assert bad.forwarded_to == "0" and "KeyError: 'no such customer'" in str(call.transcript)
    good = sim.call(app, caller="+15550002")
    assert finish(app, good).end_reason == "hangup"


def test_missing_media_is_command_failed_naming_path(sim, make_app):
    """A missing local file raises CommandFailed at the yield, naming the path."""
    seen = []

    def main(call):
        try:
            yield ivr.play("prompts/nope.wav")
        except ivr.CommandFailed as e:
            seen.append(str(e))

    with pytest.warns(PromptWarning, match="prompt file not found: 'prompts/nope.wav'"):
        app = make_app(main)  # warned before any call, as a literal path
    finish(app, sim.call(app))
    assert "prompts/nope.wav" in seen[0]


def test_script_is_assignable(sim, make_app):
    """app.script = new: the next call runs the new script."""
    def one(call):
        yield ivr.play("https://media.example/one.wav")

    def two(call):
        yield ivr.play("https://media.example/two.wav")

    app = make_app(one)
    p1 = sim.call(app)
    finish(app, p1)
    app.script = two
    p2 = sim.call(app)
    finish(app, p2)
    assert p1.heard == ["https://media.example/one.wav"]
    assert p2.heard == ["https://media.example/two.wav"]


def test_fifty_concurrent_calls(sim, make_app):
    """50 calls at once each end with their own right result."""
    results = {}

    def main(call):
        pin = yield ivr.collect("xxxx", timeout=20)
        results[call.caller] = str(pin)
        yield ivr.forward(extension=str(pin)[-2:])

    app = make_app(main)

    def one(i):
        phone = sim.call(app, caller=f"+1555{i:07d}")
        phone.press(f"{i:04d}")
        phone.wait_until_ended(30)
        return phone

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        phones = list(pool.map(one, range(50)))
    for i, phone in enumerate(phones):
        assert phone.end_reason == "forwarded" and phone.forwarded_to == f"{i:04d}"[-2:]
        assert call_of(app, phone).wait_until_ended(10) == "forwarded"
    assert results == {f"+1555{i:07d}": f"{i:04d}" for i in range(50)}


# -- bad input over real HTTP ----------------------------------------------------------------


def test_bad_callbacks_over_http_touch_no_call(sim, make_app):
    """Wrong secret 404, malformed 400, over 64 KiB 413, unknown session 200; call unharmed."""
    def main(call):
        d = yield ivr.collect("x", timeout=30)
        yield ivr.play(f"https://media.example/{d}.wav")

    app = make_app(main)
    phone = sim.call(app)
    phone.wait_until_listening()
    urls = app.callback_urls
    upd = urls["on-command-update"]
    wrong = upd.replace(app.secret, "x" * len(app.secret))
    body = {"sessionId": phone.session_id, "command": "Collect", "status": "Completed",
            "parameters": {"digits": "5"}}
    assert requests.post(wrong, json=body, timeout=5).status_code == 404
    assert requests.post(upd, data="{oops", headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 400
    big = json.dumps({**body, "pad": "x" * 70_000})
    assert requests.post(upd, data=big, headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 413
    other = {**body, "sessionId": "s-unknown"}
    assert requests.post(upd, json=other, timeout=5).status_code == 200
    assert phone.listening and not call_of(app, phone).ended
    phone.press("1")
    finish(app, phone)
    assert phone.heard == ["https://media.example/1.wav"]


def test_duplicate_and_after_exit_callbacks_change_nothing(sim, make_app):
    """A replayed Play update and callbacks after exit change nothing and get 200."""
    def main(call):
        yield ivr.play("https://media.example/a.wav")
        yield ivr.play("https://media.example/b.wav")

    app = make_app(main)
    phone = sim.call(app)
    call = finish(app, phone)
    first_play = [r for r in sim.requests_log if r.path.endswith("/play")][0]
    assert first_play is not None
    before = str(call.transcript)
    upd = {"sessionId": phone.session_id, "command": "Play", "status": "Completed",
           "commandId": "1", "partyId": phone.caller_party_id}
    assert requests.post(app.callback_urls["on-command-update"], json=upd,
                         timeout=5).status_code == 200
    assert requests.post(app.callback_urls["on-call-exit"], json={"sessionId": phone.session_id},
                         timeout=5).status_code == 200
    assert str(call.transcript) == before


def test_taken_port_gives_clear_error(sim, make_app):
    """An App on a port another process-level listener holds: ConfigError, not SystemExit."""
    import socket

    def main(call):
        yield ivr.hangup()

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        with pytest.raises(ivr.ConfigError, match="already in use"):
            ivr.App(main, platform=sim, port=blocker.getsockname()[1]).start()
    finally:
        blocker.close()


def test_new_app_on_same_port_stops_the_old_one(sim, make_app):
    """Re-running a notebook cell: a new App on the port an older App holds replaces it."""
    def main(call):
        yield ivr.hangup()

    old = make_app(main)
    new = make_app(main, port=old.port)
    assert not old.running and new.running and new.port == old.port


def test_callback_urls_carry_a_secret(sim, make_app):
    """The four callback URLs include a secret segment of at least 128 bits."""
    def main(call):
        yield ivr.hangup()

    app = make_app(main)
    urls = app.callback_urls
    assert set(urls) == {"on-call-enter", "on-command-update", "on-call-exit",
                         "on-command-error"}
    for kind, url in urls.items():
        assert url == f"{app.url}/{app.secret}/{kind}"
    assert len(app.secret) >= 22


def test_script_raising_keyboard_interrupt_still_ends_the_call(sim, make_app):
    """A script that raises KeyboardInterrupt by hand is a script failure: on_error hangs up,
    the caller is not left in silence and the app serves the next call."""
    def main(call):
        yield ivr.play("https://media.example/a.wav")
        if call.caller == "+15550001":
            raise KeyboardInterrupt

    app = make_app(main)
    bad = sim.call(app, caller="+15550001")
    call = finish(app, bad)
    assert bad.end_reason == "hangup" and call.end_reason == "hangup"
    assert "KeyboardInterrupt" in str(call.transcript)
    assert finish(app, sim.call(app, caller="+15550002")).end_reason == "hangup"


def test_forged_session_ids_are_quoted_in_logs(sim, make_app, caplog):
    """An unknown session id with a line break is logged quoted: no forged log lines."""
    import logging

    def main(call):
        yield ivr.hangup()

    caplog.set_level(logging.INFO, logger="ivrscript")
    app = make_app(main)
    body = {"sessionId": "s-x\nFAKE LINE", "command": "Play", "status": "Completed"}
    r = requests.post(app.callback_urls["on-command-update"], json=body, timeout=5)
    assert r.status_code == 200
    lines = [rec.getMessage() for rec in caplog.records if "unknown session" in rec.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    from ivrscript.text import shown

    assert shown("s-x\nFAKE LINE") in lines[0]  # quoted and escaped by the one helper
