"""Effects in cassettes: a recorded call's ``ivr.effect`` results are in its cassette, and
``ivrscript.testing.replay`` feeds them back at the yield without calling the function."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

import ivrscript as ivr
from ivrscript import ReplayMismatch
from ivrscript.recorder import load_recording
from ivrscript.testing import replay

COUNTER = {"path": ""}  # the counter file of the running test (the effect bumps it)


def bump(step):
    """An effect with a visible trace: each run adds one to a counter file."""
    path = COUNTER["path"]
    n = count() + 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(str(n))
    return {"n": n, "step": step}


def refuse(account):
    raise LookupError(f"no account {account}")


def counted(call):
    got = yield ivr.effect(bump, "lookup")
    keys = yield ivr.collect("x", timeout=100)
    yield ivr.play(f"https://media.example/{got['n']}-{got['step']}-{keys}.wav")


def failing(call):
    try:
        yield ivr.effect(refuse, "A-17")
    except LookupError as error:
        yield ivr.play(f"https://media.example/refused-{len(str(error))}.wav")
    else:
        yield ivr.play("https://media.example/found.wav")


def count() -> int:
    if not os.path.exists(COUNTER["path"]):
        return 0
    with open(COUNTER["path"], encoding="utf-8") as handle:
        return int(handle.read())


@pytest.fixture
def counter(tmp_path):
    COUNTER["path"] = str(tmp_path / "bump.count")
    yield COUNTER["path"]
    COUNTER["path"] = ""


def record(sim, make_app, folder, script, keys=None):
    app = make_app(script, record=str(folder))
    phone = sim.call(app)
    if keys:
        phone.press(keys)
    phone.wait_until_ended(10)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(10)
    path = app._recorder.wait_for(call.session_id, 10)
    app.stop()
    return call, path


def test_an_effect_runs_once_live_and_never_in_replay(sim, make_app, tmp_path, counter):
    call, path = record(sim, make_app, tmp_path / "rec", counted, keys="7")
    assert count() == 1, "the effect ran once while recording"
    with open(path, encoding="utf-8") as f:
        meta = yaml.safe_load(f)["ivrscript"]
    assert meta["effects"] == [{"fn": "tests.test_cassette_effects.bump", "args": ["lookup"],
                                "kwargs": {}, "command": "effect bump", "after": 0,
                                "value": {"n": 1, "step": "lookup"}}]
    assert any("https://media.example/1-lookup-7.wav" in x for x in call.transcript.lines())
    transcript = replay(path, counted)
    assert count() == 1, "replay fed the logged result back: bump was not called"
    assert transcript.lines() == call.transcript.lines()
    replay(path, counted)
    assert count() == 1


def test_an_effect_that_raised_raises_again_in_replay(sim, make_app, tmp_path):
    call, path = record(sim, make_app, tmp_path / "rec", failing)
    effects = load_recording(path).meta["effects"]
    assert effects[0]["error"] == {"type": "builtins.LookupError",
                                   "message": "no account A-17"}
    assert "value" not in effects[0]
    lines = replay(path, failing).lines()
    assert lines == call.transcript.lines()
    assert "  -> raised LookupError: no account A-17" in lines
    assert any("refused-" in line for line in lines)


def test_a_different_effect_is_a_mismatch_in_script_terms(sim, make_app, tmp_path, counter):
    _, path = record(sim, make_app, tmp_path / "rec", counted, keys="7")

    def other_argument(call):
        got = yield ivr.effect(bump, "billing")
        keys = yield ivr.collect("x", timeout=100)
        yield ivr.play(f"https://media.example/{got['n']}-{got['step']}-{keys}.wav")

    with pytest.raises(ReplayMismatch) as caught:
        replay(path, other_argument)
    text = str(caught.value)
    assert "the script yielded a different effect" in text
    assert "test_cassette_effects.py" in text and "ivr.effect(bump, \"billing\")" in text
    assert '"lookup"' in text and '"billing"' in text
    assert count() == 1


def test_no_effect_where_the_recording_has_one_is_a_mismatch(sim, make_app, tmp_path,
                                                             counter):
    _, path = record(sim, make_app, tmp_path / "rec", counted, keys="7")

    def without(call):
        keys = yield ivr.collect("x", timeout=100)
        yield ivr.play(f"https://media.example/1-lookup-{keys}.wav")

    with pytest.raises(ReplayMismatch) as caught:
        replay(path, without)
    text = str(caught.value)
    assert "the recording has effect tests.test_cassette_effects.bump here, but the script " \
           "issued a request" in text
    assert "test_cassette_effects.py" in text


def test_an_effect_an_old_cassette_lacks_is_a_mismatch(sim, make_app, tmp_path, counter):
    """A cassette with no effects (an older recording, or a script that had none) still
    loads and replays its own script; a script that now yields an effect is told so."""
    def plain(call):
        keys = yield ivr.collect("x", timeout=100)
        yield ivr.play(f"https://media.example/1-lookup-{keys}.wav")

    call, path = record(sim, make_app, tmp_path / "rec", plain, keys="7")
    assert "effects" not in load_recording(path).meta
    assert replay(path, plain).lines() == call.transcript.lines()
    with pytest.raises(ReplayMismatch) as caught:
        replay(path, counted)
    assert "the script yielded an effect the recording does not have" in str(caught.value)
    assert count() == 0


def test_a_malformed_effect_is_a_config_error_naming_the_key(sim, make_app, tmp_path,
                                                             counter):
    _, path = record(sim, make_app, tmp_path / "rec", counted, keys="7")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    del data["ivrscript"]["effects"][0]["value"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ivr.ConfigError, match=r"ivrscript\.effects\[0\]\.value is missing"):
        load_recording(str(bad))
    assert len(glob.glob(str(tmp_path / "rec" / "*.yaml"))) == 1
