"""Recorder: App(record=DIR) writes one vcrpy cassette per finished call, safely."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading

import pytest
import yaml

import ivrscript as ivr
from ivrscript import recorder
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


def test_recording_patches_nothing_on_the_platform_client(sim, make_app, tmp_path):
    """Cassettes are written from the call's log: the platform client's transport is the
    same with and without record=, and a call still gets its cassette."""
    plain = make_app(example("greeting.py"))
    recorded = make_app(example("greeting.py"), record=str(tmp_path))
    assert dict(recorded.client._session.adapters).keys() == \
        dict(plain.client._session.adapters).keys()
    call = finish(recorded, sim.call(recorded))
    recorded.stop()
    assert os.path.basename(cassette_of(tmp_path, call)).startswith("main-")


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


# -- corrupted cassettes ------------------------------------------------------------------------

GREETING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "recordings", "greeting.yaml")


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _greeting():
    with open(GREETING, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _set(data, path, value):
    """Set (or with value=DELETE, remove) the key at a dotted path like 'a.b[0].c'."""
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "")
            .split(".")]
    for key in keys[:-1]:
        data = data[key]
    if value is DELETE:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


DELETE = object()

# (the key path to change, the new value, what the error must name)
SHAPE_VARIANTS = [
    ("version", DELETE, "version is missing"),
    ("version", 2, "version is 2"),
    ("version", "1", "version is '1'"),
    ("version", True, "version is True"),
    ("ivrscript", DELETE, "not an ivrscript recording"),
    ("ivrscript", ["x"], "not an ivrscript recording"),
    ("ivrscript.callbacks", "many", "ivrscript.callbacks must be a list"),
    ("ivrscript.callbacks", [], "ivrscript.callbacks is empty"),
    ("ivrscript.callbacks[0]", 7, "ivrscript.callbacks[0] must be a mapping"),
    ("ivrscript.callbacks[0].kind", "on-call-begin", "ivrscript.callbacks[0].kind is"),
    ("ivrscript.callbacks[0].kind", "on-call-exit", "starts with on-call-enter"),
    ("ivrscript.callbacks[1].after", -1, "ivrscript.callbacks[1].after must be 0 or more"),
    ("ivrscript.callbacks[1].after", "two", "ivrscript.callbacks[1].after must be a whole"),
    ("ivrscript.callbacks[1].after", True, "ivrscript.callbacks[1].after must be a whole"),
    ("ivrscript.callbacks[1].body", DELETE, "ivrscript.callbacks[1].body is missing"),
    ("ivrscript.callbacks[0].body.sessionId", 12, "callbacks[0].body.sessionId must be a str"),
    ("ivrscript.callbacks[0].body.inParty", DELETE, "callbacks[0].body.inParty is missing"),
    ("ivrscript.callbacks[0].body.inParty.id", None, "body.inParty.id must be a string"),
    ("ivrscript.callbacks[0].body.inParty.from", "me", "inParty.from must be a mapping"),
    ("ivrscript.callbacks[1].body.status", DELETE, "callbacks[1].body.status is missing"),
    ("ivrscript.callbacks[1].body.parameters", [1], "body.parameters must be a mapping"),
    ("ivrscript.transcript", "enter", "ivrscript.transcript must be a list"),
    ("ivrscript.transcript[0]", {"a": 1}, "ivrscript.transcript[0] must be a string"),
    ("ivrscript.numbers_masked", "no", "ivrscript.numbers_masked must be true or false"),
    ("ivrscript.commands", {"a": 1}, "ivrscript.commands must be a list"),
    ("ivrscript.commands[0].line", "x", "ivrscript.commands[0].line must be a whole"),
    ("interactions", DELETE, "interactions is missing"),
    ("interactions", {"a": 1}, "interactions must be a list"),
    ("interactions[0]", "GET /", "interactions[0] must be a mapping"),
    ("interactions[0].request", DELETE, "interactions[0].request is missing"),
    ("interactions[0].request.method", 5, "interactions[0].request.method must be an HTTP"),
    ("interactions[0].request.uri", "/no/host", "interactions[0].request.uri must be a URL"),
    ("interactions[0].request.headers", "h", "interactions[0].request.headers must be a map"),
    ("interactions[0].request.body", DELETE, "interactions[0].request.body is missing"),
    ("interactions[1].response.status.code", "ok", "response.status.code must be an HTTP"),
    ("interactions[1].response.status.code", 999, "response.status.code must be an HTTP"),
    ("interactions[1].response.status", DELETE, "interactions[1].response.status is missing"),
    ("interactions[1].response.body", DELETE, "interactions[1].response.body is missing"),
    ("interactions[1].response.body.string", 5, "response.body.string must be a string"),
    ("interactions[1].response.headers.Content-Type", {"x": 1},
     "response.headers.Content-Type must be a string"),
]


@pytest.mark.parametrize(("key", "value", "named"), SHAPE_VARIANTS,
                         ids=[f"{k}={v!r}"[:50] for k, v, _ in SHAPE_VARIANTS])
def test_a_cassette_of_the_wrong_shape_is_a_config_error_naming_the_key(tmp_path, key, value,
                                                                       named):
    """Each wrong or missing key of a cassette gives one ConfigError naming the file and the
    key, from load_recording and from replay, never a KeyError or TypeError."""
    data = _greeting()
    _set(data, key, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.dump(data, Dumper=_NoAliases), encoding="utf-8")
    for load in (load_recording, lambda p: replay(p, example("greeting.py"))):
        with pytest.raises(ivr.ConfigError) as caught:
            load(path)
        assert str(path) in str(caught.value) and named in str(caught.value)


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 9)}]\n"
    for n in range(9))


@pytest.mark.parametrize(("name", "content"), [
    ("empty", b""),
    ("not-yaml", b"ivrscript: [unclosed\n"),
    ("a-list", b"- 1\n- 2\n"),
    ("a-string", b"just text\n"),
    ("non-utf8", b"ivrscript:\n  script: \xff\xfe\n"),
    ("latin-1", "version: 1\nivrscript: {callbacks: [], x: 'caf\u00e9'}\n".encode("latin-1")),
    ("python-tag", b"version: !!python/object/apply:os.getcwd []\n"),
    ("billion-laughs", BILLION_LAUGHS.encode()),
    ("an-anchor-only", b"version: &v 1\n"),
])
def test_a_cassette_that_is_not_one_is_a_config_error(tmp_path, name, content):
    """Files that are not cassettes at all (empty, not YAML, not UTF-8, a Python tag, YAML
    anchors and aliases, a billion-laughs bomb) give a ConfigError naming the file; aliases
    are refused before anything is expanded."""
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    with pytest.raises(ivr.ConfigError) as caught:
        load_recording(path)
    assert str(path) in str(caught.value)
    if "laughs" in name or "anchor" in name:
        assert "aliases" in str(caught.value)
    if "utf8" in name or "latin" in name:
        assert "not UTF-8" in str(caught.value)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_a_truncated_cassette_is_a_config_error(tmp_path, fraction):
    """A cassette cut short anywhere (a disk full, a copy interrupted) is a ConfigError."""
    with open(GREETING, "rb") as f:
        content = f.read()
    path = tmp_path / "cut.yaml"
    path.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(ivr.ConfigError, match="cut.yaml"):
        load_recording(path)


def test_a_cassette_changed_on_disk_is_read_again(tmp_path):
    """A loaded cassette is kept while its file is unchanged; a new version is read anew."""
    path = tmp_path / "greeting.yaml"
    with open(GREETING, "rb") as f:
        path.write_bytes(f.read())
    first = load_recording(path)
    assert load_recording(path) is first
    data = _greeting()
    data["ivrscript"]["end_reason"] = "changed-on-disk"
    path.write_text(yaml.dump(data, Dumper=_NoAliases), encoding="utf-8")
    assert load_recording(path).meta["end_reason"] == "changed-on-disk"


def test_cli_replay_of_a_corrupted_cassette_is_one_sentence(tmp_path):
    """`python -m ivrscript SCRIPT --replay BAD` exits 2 with one line, no traceback."""
    data = _greeting()
    data["interactions"][1]["response"]["status"]["code"] = "oops"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.dump(data, Dumper=_NoAliases), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "ivrscript", os.path.join(
        os.path.dirname(GREETING), "..", "examples", "greeting.py"), "--replay", str(path)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert "interactions[1].response.status.code" in done.stderr


# -- what forged calls can write ------------------------------------------------------------------

FORGED_IDS = ["../../escaped", "a/b\\c", "..", ".", "/etc/passwd", "s-\x1b]52;c;x\x07",
              "x" * 600, "ok-id", "ok_id", "ok id"]


def test_cassette_names_stay_in_the_folder_and_never_collide():
    """Any session id gives a plain file name (no separator, no leading dot, bounded length),
    and ids that differ give names that differ."""
    names = [recorder.cassette_name(ivr.Call(sid)) for sid in FORGED_IDS]
    for name in names:
        assert os.path.basename(name) == name and "/" not in name and "\\" not in name
        assert not name.startswith(".") and len(name) <= 200 and name.endswith(".yaml")
        assert name.isprintable()
    assert len(set(names)) == len(names)
    assert recorder.cassette_name(ivr.Call("s-abc123")) == "call-s-abc123.yaml"


def forged_enter(session_id):
    return {"sessionId": session_id, "partyId": "p-app",
            "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"}}}


def test_forged_session_ids_cannot_write_outside_the_folder(sim, tmp_path):
    """Forged on-call-enter callbacks (the secret known) with path separators in the session
    id: each recorded cassette is a plain file inside the folder; nothing is written
    elsewhere."""
    import requests

    folder = tmp_path / "calls"
    app = ivr.App(example("greeting.py"), platform=sim, record=str(folder)).start()
    try:
        for sid in ("../../escaped", "sub/dir/x", ".."):
            answer = requests.post(app.callback_urls["on-call-enter"], json=forged_enter(sid),
                                   timeout=10)
            assert answer.status_code in (200, 204), answer.text
        for sid in ("../../escaped", "sub/dir/x", ".."):
            call = next(c for c in app.calls if c.session_id == sid)
            call.wait_until_ended(10)  # the platform knows no such call: it ends
    finally:
        app.stop()  # every finished call's cassette is written by then
    written = sorted(p.name for p in folder.iterdir())
    assert len(written) == 3 and all(name.endswith(".yaml") for name in written), written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls"]
    assert not any(p.is_dir() for p in folder.iterdir())


def test_recorder_caps_calls_in_progress_and_entries_per_call(sim, tmp_path, caplog):
    """With max_calls=2 a third call in progress is not recorded (a warning says so); with
    max_entries, a call flooded with updates is not written at all."""
    app = ivr.App(example("greeting.py"), platform=sim).start()
    try:
        rec = recorder.Recorder(app, tmp_path, max_calls=2, max_entries=10)
        calls = [ivr.Call(f"s-{n}", party_id="p", caller_party_id="c") for n in range(3)]
        for call in calls:
            body = forged_enter(call.session_id)
            app.store.append(call.session_id, "enter", {"body": body, "script": {}},
                             key="enter")
            rec.callback("on-call-enter", body)
        assert any("not recorded" in r.getMessage() for r in caplog.records)
        for n in range(50):
            app.store.append("s-0", "callback", {
                "kind": "on-command-update", "command": "Play", "status": "Completed",
                "commandId": str(n), "digits": None}, key=f"u{n}")
        for call in calls:
            call._finish("hangup")
            rec.finished(call)
        rec.close()
    finally:
        app.stop()
    assert sorted(os.listdir(tmp_path)) == ["call-s-1.yaml"]
    assert any("more than 10 callbacks" in r.getMessage() for r in caplog.records)


# -- sensitive keys ------------------------------------------------------------------------------


PIN = "9876"


def pin_check(call):
    pin = yield ivr.collect("xxxx", timeout=100, sensitive=True)  # 5 s real time
    call.data["pin"] = str(pin)
    GOT.append(str(pin))
    if pin == PIN:
        yield ivr.play("https://media.example/accepted.wav")
    else:
        yield ivr.play("https://media.example/wrong.wav")


GOT: list[str] = []


def test_sensitive_keys_never_reach_the_cassette_and_replay_is_told_them(sim, make_app,
                                                                          tmp_path):
    """The keys of a sensitive collect are stored as '****' (callbacks and transcript);
    replay(digits=[...]) gives the script the real value and the call replays to the
    recorded transcript; without digits the script gets a stand-in fitting the pattern
    ('0000'), which here takes the other branch: a ReplayMismatch."""
    app = make_app(pin_check, record=str(tmp_path))
    phone = sim.call(app)
    phone.press(PIN)
    call = finish(app, phone)
    app.stop()
    assert call.data["pin"] == PIN, "the script itself got the real keys"
    path = cassette_of(tmp_path, call)
    text = read(path)
    assert PIN not in text
    recording = load_recording(path)
    masked = [cb for cb in recording.callbacks if cb.get("masked")]
    assert [cb["body"]["parameters"]["digits"] for cb in masked] == ["****"]
    assert "  -> '****' Completed" in recording.transcript
    GOT.clear()
    transcript = replay(path, pin_check, digits=[PIN])
    assert GOT == [PIN]
    assert "play    https://media.example/accepted.wav" in transcript.lines()
    with pytest.raises(ivr.ReplayMismatch, match="wrong.wav"):
        replay(path, pin_check)
    assert GOT[-1] == "0000", "the stand-in fits the pattern xxxx"
    with pytest.raises(ivr.ConfigError, match="digits="):
        replay(path, pin_check, digits=[])


def test_a_value_that_does_not_decide_replays_with_the_stand_in(tmp_path):
    """A sensitive collect whose value does not decide the path replays without digits=
    (the script gets '0000'), to the recorded transcript with its keys masked: built from
    the committed pin-right cassette, masked by hand as the recorder masks."""
    data = _greeting_like("pin-right.yaml")
    for callback in data["ivrscript"]["callbacks"]:
        params = callback["body"].get("parameters") or {}
        if params.get("digits") == "1234":
            params["digits"] = "****"
            callback["masked"] = 1
    lines = data["ivrscript"]["transcript"]
    lines[lines.index("  -> '1234' Completed")] = "  -> '****' Completed"
    prompt = "collect xxxx (prompt prompts/enter-pin.wav)"
    lines[lines.index(prompt)] = prompt + " (sensitive)"
    got = []

    def main(call):
        yield ivr.play("prompts/welcome.wav")
        pin = yield ivr.collect("xxxx", timeout=8, prompt="prompts/enter-pin.wav",
                                sensitive=True)
        got.append(str(pin))
        yield ivr.play("prompts/pin-accepted.wav")
        yield ivr.play("prompts/goodbye.wav")

    main.__code__ = main.__code__.replace(co_filename=os.path.join(
        os.path.dirname(GREETING), "..", "examples", "pin.py"))
    path = tmp_path / "masked.yaml"
    path.write_text(yaml.dump(data, Dumper=_NoAliases), encoding="utf-8")
    transcript = replay(path, main)
    assert got == ["0000"]
    assert "  -> '****' Completed" in recorder.masked_lines(transcript)


def _greeting_like(name):
    with open(os.path.join(os.path.dirname(GREETING), name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_commands_are_stored_with_their_arguments_spoken_prompts_included():
    """A cassette stores each yielded command's arguments as plain data; a spoken prompt
    keeps its text, voice and rate (not only the URL its audio is served at)."""
    play = ivr.play("prompts/a.wav", ivr.speech("Welcome", voice="en-us", rate=1.2))
    data = recorder._command_data(play)
    assert data == {"verb": "play", "interrupt_by_dtmf": False, "repeat": 1,
                    "media": ["prompts/a.wav", 'say "Welcome" (voice en-us, rate 1.2)']}
    assert type(data["media"][1]) is str
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_a_cassette_written_while_the_app_stops_still_hides_the_media_address(sim, tmp_path):
    """The last call's cassette is often written while stop() drains the workers (the app
    no longer runs): the media address to rewrite is the one seen while it ran."""
    app = ivr.App(example("greeting.py"), platform=sim).start()
    rec = recorder.Recorder(app, tmp_path)
    base = f"{app.public_url}/{app.secret}"
    app.stop()
    try:
        assert not app.running
        assert rec._media_base() == base
    finally:
        rec.close()


def test_the_documented_limit_applies_to_app_record(sim, make_app, tmp_path, monkeypatch,
                                                     caplog):
    """README: setting ivrscript.recorder.MAX_RECORDING_CALLS before start changes the limit
    App(record=...) uses; at 0 a call is not recorded and a warning says so."""
    monkeypatch.setattr(recorder, "MAX_RECORDING_CALLS", 0)
    app = make_app(example("greeting.py"), record=str(tmp_path))
    phone = sim.call(app)
    finish(app, phone)
    app.stop()
    assert os.listdir(tmp_path) == []
    assert any("not recorded" in r.getMessage() for r in caplog.records)


def test_sensitive_keys_are_found_though_the_transcript_shows_stars():
    """The transcript shows a sensitive collect's keys as ****: the recorder pairs each
    collect result with its Collect update (duplicates and a shown collect before it
    included), and when it cannot, treats every Collect update's keys as secret."""
    from ivrscript.call import TranscriptEvent

    shown = ivr.collect("xx", timeout=5)
    secret = ivr.collect("xxxx", timeout=5, sensitive=True)
    events = [TranscriptEvent("enter", ""),
              TranscriptEvent("collect", "xx", data={"command": shown}),
              TranscriptEvent("result", "'12' Completed", data={"digits": "12",
                                                                "status": "Completed"}),
              TranscriptEvent("collect", "xxxx", data={"command": secret}),
              TranscriptEvent("result", "'****' Completed", data={"digits": "****",
                                                                  "status": "Completed"})]

    def update(digits, status="Completed"):
        return {"kind": "on-command-update", "after": 1, "body": {
            "sessionId": "s", "command": "Collect", "status": status,
            "parameters": {"digits": digits}}}

    callbacks = [update("12"), update("12"), update("4321")]
    assert recorder._sensitive_digits(events, callbacks) == ["4321"]
    masked = [recorder._mask_callback(cb, ["4321"]) for cb in callbacks]
    assert [cb["body"]["parameters"]["digits"] for cb in masked] == ["12", "12", "****"]
    assert masked[2]["masked"] == 1
    # No update with the sensitive result's status: fail closed, every key is secret.
    assert recorder._sensitive_digits(events, [update("12"), update("4321", "Timeout")]) == \
        ["12", "4321"]
