"""Recorder: App(record=DIR) writes one vcrpy cassette per finished call, safely."""

from __future__ import annotations

import glob
import os
import threading

import yaml

import ivrscript as ivr
from ivrscript.recorder import load_recording
from ivrscript.testing import replay

from .conftest import example


def finish(app, phone, timeout=10):
    phone.wait_until_ended(timeout)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(timeout)
    return call


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def cassette_of(folder, call):
    paths = glob.glob(os.path.join(folder, f"*-{call.session_id}.yaml"))
    assert len(paths) == 1, f"expected one cassette for {call.session_id}, found {paths}"
    return paths[0]


def test_cassette_is_vcrpy_yaml_with_callbacks_and_metadata(sim, make_app, tmp_path):
    """A cassette is vcrpy's YAML (version, interactions) plus an ivrscript key: the script's
    name, when it was recorded, the callbacks in arrival order, the transcript."""
    app = make_app(example("pin.py"), record=str(tmp_path))
    phone = sim.call(app)
    phone.press("1234")
    call = finish(app, phone)
    app.stop()  # every finished call's cassette is written by then
    with open(cassette_of(tmp_path, call), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert data["version"] == 1
    meta = data["ivrscript"]
    assert meta["script"] == {"name": "main", "file": "pin.py"}
    assert meta["recorded_at"].startswith("20")
    kinds = [cb["kind"] for cb in meta["callbacks"]]
    assert kinds[0] == "on-call-enter" and "on-command-update" in kinds
    afters = [cb["after"] for cb in meta["callbacks"]]
    assert afters == sorted(afters), "callbacks are in arrival order, counts never go back"
    assert meta["transcript"] == call.transcript.lines()
    methods = [(i["request"]["method"], i["request"]["uri"].rsplit("/", 1)[-1])
               for i in data["interactions"]]
    assert methods[:3] == [("POST", "play"), ("POST", "play"), ("POST", "collect")]
    assert methods[-1][0] == "DELETE", "the app's hang-up is the last interaction"


def test_only_platform_requests_of_that_call_are_recorded(sim, make_app, tmp_path):
    """Requests to the app's own listener (media fetches, callbacks) and to other hosts are
    not recorded; every interaction is a REST call of that call's session."""
    app = make_app(example("greeting.py"), record=str(tmp_path))
    phone = sim.call(app)
    call = finish(app, phone)
    app.stop()
    recording = load_recording(cassette_of(tmp_path, call))
    assert len(recording.requests) == 3  # play, play, drop
    for request in recording.requests:
        assert request.uri.startswith(sim.url + "/restapi/v1.0/"), request.uri
        assert call.session_id in request.uri
    text = read(recording.path)
    assert app.secret not in text, "the listener's secret path must not leak into cassettes"
    assert "/media/welcome.wav" in text  # local media by name, without the app's address


TARGET = "+15559876543"


def forward_to_a_number(call):
    yield ivr.play("https://media.example/hello.wav")
    yield ivr.forward(phone_number=TARGET)


def test_no_token_no_bearer_and_masked_numbers(sim, make_app, tmp_path):
    """With record_numbers=False a cassette holds no token, no 'Bearer' and no phone number
    of the caller, though the call forwarded to a number and the caller's number came in."""
    caller = "+15557654321"
    app = make_app(forward_to_a_number, record=str(tmp_path), record_numbers=False)
    phone = sim.call(app, caller=caller)
    call = finish(app, phone)
    app.stop()
    assert call.end_reason == "forwarded" and phone.forwarded_to == TARGET
    text = read(cassette_of(tmp_path, call))
    assert sim.token not in text
    assert "bearer" not in text.lower()
    assert "authorization" not in text.lower()
    assert caller not in text and caller[2:] not in text
    assert TARGET not in text and TARGET[2:] not in text
    assert "*******21" in text, "the masked caller keeps its last two digits"


def test_jwt_token_exchange_never_reaches_the_file(sim, tmp_path):
    """With the JWT grant the token endpoint's exchange (JWT, client secret, access token)
    is not recorded; the cassette has neither the tokens nor a Basic or Bearer header."""
    client = ivr.RingCentral(server_url=sim.url, client_id="app-id",
                             client_secret="very-secret-client-secret",
                             jwt="eyJhbGciOiJSUzI1NiJ9.payload-of-the-jwt.signature")
    app = ivr.App(example("greeting.py"), platform=client, record=str(tmp_path)).start()
    try:
        phone = sim.call(app)
        call = finish(app, phone)
    finally:
        app.stop()
        client.close()
    text = read(cassette_of(tmp_path, call))
    access_token = client._current.value
    for secret in (access_token, "very-secret-client-secret", "payload-of-the-jwt"):
        assert secret not in text
    assert "bearer" not in text.lower() and "basic" not in text.lower()
    assert "/restapi/oauth/token" not in text
    assert len(load_recording(cassette_of(tmp_path, call)).requests) == 3


def test_twenty_concurrent_calls_each_get_their_own_correct_cassette(sim, make_app, tmp_path):
    """20 calls in flight at once on one recording app: 20 cassettes, each with only its own
    session's interactions and callbacks, each replaying to its live transcript."""
    def main(call):
        keys = yield ivr.collect("xx", timeout=600)  # 30 s at speed 20: never under load
        yield ivr.play(f"https://media.example/{keys}.wav")

    app = make_app(main, record=str(tmp_path))
    phones = [sim.call(app, caller=f"+1555010{n:02d}") for n in range(20)]
    errors: list[BaseException] = []

    def press(phone, keys):
        try:
            phone.press(keys)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=press, args=(phone, f"{n:02d}"))
               for n, phone in enumerate(phones)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    calls = [finish(app, phone) for phone in phones]
    app.stop()
    assert len(glob.glob(os.path.join(tmp_path, "*.yaml"))) == 20
    for n, call in enumerate(calls):
        recording = load_recording(cassette_of(tmp_path, call))
        assert all(call.session_id in r.uri for r in recording.requests)
        assert all(cb["body"]["sessionId"] == call.session_id for cb in recording.callbacks)
        assert f"https://media.example/{n:02d}.wav" in read(recording.path)
        assert replay(recording.path, main).lines() == call.transcript.lines()


def test_stopping_the_app_stops_recording(sim, make_app, tmp_path):
    """After stop() the platform client no longer goes through vcrpy's stubs."""
    app = make_app(example("greeting.py"), record=str(tmp_path))
    session = app.client._session
    prefix = app.client.server_url + "/"
    assert prefix in session.adapters
    app.stop()
    assert prefix not in session.adapters
    assert glob.glob(os.path.join(tmp_path, "*.yaml")) == []  # no call, no cassette


def test_a_folder_that_cannot_be_created_is_a_clear_error(sim, tmp_path):
    """record= naming something that is not a folder fails at start() with one sentence,
    and leaves no app running."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    app = ivr.App(example("greeting.py"), platform=sim, record=str(blocker / "calls"))
    try:
        app.start()
    except ivr.ConfigError as error:
        assert "cannot record calls into" in str(error)
    else:
        app.stop()
        raise AssertionError("start() should have refused the folder")
    assert not app.running
