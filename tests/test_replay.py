"""Replay: a recorded call re-runs the script from its cassette, with no network and no
sleeping, and any drift from the recording fails with a ReplayMismatch that explains it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

import ivrscript as ivr
from ivrscript.loader import load_script_file
from ivrscript.recorder import load_recording
from ivrscript.testing import replay

from .conftest import EXAMPLES, ROOT, example

RECORDINGS = os.path.join(ROOT, "recordings")


class NoAliases(yaml.SafeDumper):
    """Writes shared objects out in full: cassettes refuse YAML aliases."""

    def ignore_aliases(self, data):
        return True


def write_cassette(path, data):
    path.write_text(yaml.dump(data, Dumper=NoAliases), encoding="utf-8")
    return path


def record_one(sim, make_app, tmp_path, script, drive, **app_options):
    """Run one call with App(record=tmp_path); returns (cassette path, the app's call)."""
    app = make_app(script, record=str(tmp_path), **app_options)
    phone = sim.call(app)
    drive(phone)
    phone.wait_until_ended(10)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(10)
    app.stop()  # every finished call's cassette is written by then
    (path,) = glob.glob(os.path.join(tmp_path, f"*-{call.session_id}.yaml"))
    return path, call


def test_recorded_call_replays_to_the_same_transcript(sim, make_app, tmp_path):
    """A call recorded with record= replays to exactly the transcript the app had."""
    pin = example("pin.py")

    def drive(phone):
        phone.press("1111")
        phone.press("1234")

    path, call = record_one(sim, make_app, tmp_path, pin, drive)
    transcript = replay(path, pin)
    assert transcript.lines() == call.transcript.lines()
    assert "'1111' Completed" in str(transcript) and "pin-accepted.wav" in str(transcript)


def test_changing_one_prompt_fails_with_both_prompts_shown():
    """Changing one prompt makes the replay fail: the message names the step, shows the
    recorded and the issued request side by side, and the transcript up to there."""
    def main(call):  # examples/greeting.py with the second prompt changed
        yield ivr.play("prompts/welcome.wav")
        yield ivr.play("prompts/pin-accepted.wav")

    main.__code__ = main.__code__.replace(co_filename=os.path.join(EXAMPLES, "greeting.py"))
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(os.path.join(RECORDINGS, "greeting.yaml"), main)
    message = str(caught.value)
    assert "step 2 of 3" in message
    assert "goodbye.wav" in message and "pin-accepted.wav" in message
    changed = [line for line in message.splitlines() if line.startswith("  * ")]
    assert len(changed) == 1 and "body.resources[0].uri" in changed[0]
    assert changed[0].index("goodbye.wav") < changed[0].index("pin-accepted.wav"), \
        "recorded on the left, issued on the right"
    assert "transcript up to there" in message and "play    prompts/welcome.wav" in message


def test_a_request_the_recording_lacks_fails():
    """A script that issues one command more than the recording has raises ReplayMismatch."""
    greeting = example("greeting.py")

    def main(call):
        yield from greeting(call)
        yield ivr.play("prompts/goodbye.wav")

    main.__code__ = main.__code__.replace(co_filename=os.path.join(EXAMPLES, "greeting.py"))
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(os.path.join(RECORDINGS, "greeting.yaml"), main)
    changed = [line.split() for line in str(caught.value).splitlines()
               if line.startswith("  * ")]
    assert ["*", "method", "DELETE", "POST"] in changed, "the recording hung up there"


def test_a_request_after_the_recording_ends_fails(tmp_path):
    """A request beyond the last recorded one raises ReplayMismatch saying so."""
    source = os.path.join(RECORDINGS, "greeting.yaml")
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    del data["interactions"][-1]  # as if the recording stopped before the app hung up
    target = tmp_path / "short.yaml"
    target.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ivr.ReplayMismatch, match="a request the recording does not have"):
        replay(target, example("greeting.py"))


def test_a_script_that_stops_early_fails():
    """A script that returns before the recording's end differs at the first request it does
    not issue: there the app hung up instead."""
    def main(call):
        yield ivr.play("prompts/welcome.wav")

    main.__code__ = main.__code__.replace(co_filename=os.path.join(EXAMPLES, "greeting.py"))
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(os.path.join(RECORDINGS, "greeting.yaml"), main)
    message = str(caught.value)
    assert "step 2 of 3" in message and "goodbye.wav" in message
    assert "hangup  (script returned)" in message


def test_a_request_the_script_never_issues_fails(tmp_path):
    """When the recording had a request before a callback and the replayed script issued
    none (here: it ignores an update that belongs to another command), the mismatch names
    that callback and the missing request."""
    source = os.path.join(RECORDINGS, "greeting.yaml")
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["ivrscript"]["callbacks"][1]["body"]["commandId"] = "999"  # not the play's id
    target = tmp_path / "other-id.yaml"
    target.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(target, example("greeting.py"))
    message = str(caught.value)
    assert "before callback 3" in message and "the script issued none" in message
    assert "goodbye.wav" in message and "(none)" in message


def test_replay_works_with_all_network_access_blocked(monkeypatch):
    """Replay opens no socket: with connect() and DNS failing it still replays a call."""
    def no_network(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    path = os.path.join(RECORDINGS, "pin-wrong-then-right.yaml")
    transcript = replay(path, example("pin.py"))
    assert transcript.lines() == load_recording(path).transcript


def test_retries_replay_without_sleeping(tmp_path, monkeypatch):
    """A call recorded while the platform answered 429 (Retry-After: 1) replays at once:
    the retry waits are fed back immediately (time.sleep fails during the replay)."""
    greeting = example("greeting.py")
    with ivr.Simulator(speed=50, rate_limited=0.5, seed=7) as limited:
        app = ivr.App(greeting, platform=limited, record=str(tmp_path)).start()
        try:
            phone = limited.call(app)
            phone.wait_until_ended(30)
            call = app.calls[0]
            call.wait_until_ended(30)
        finally:
            app.stop()
    (path,) = glob.glob(os.path.join(tmp_path, "*.yaml"))
    statuses = [r["status"]["code"] for r in load_recording(path).responses]
    assert 429 in statuses, "the seed gives at least one rate-limited answer"

    def no_sleep(seconds):
        raise AssertionError(f"replay slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    transcript = replay(path, greeting)
    monkeypatch.undo()
    assert transcript.lines() == call.transcript.lines()


def test_media_compared_by_name_so_replay_works_elsewhere(tmp_path):
    """Local media URLs hold the app's address and secret; they are compared by file name,
    so a copy of the example in another folder replays the recording."""
    shutil.copytree(os.path.join(EXAMPLES, "prompts"), tmp_path / "prompts")
    shutil.copy(os.path.join(EXAMPLES, "pin.py"), tmp_path / "pin.py")
    script, _ = load_script_file(str(tmp_path / "pin.py"))
    path = os.path.join(RECORDINGS, "pin-right.yaml")
    assert replay(path, script).lines() == load_recording(path).transcript


def test_barge_in_cancels_are_not_compared(tmp_path):
    """A DELETE of a prompt (barge-in cancel) depends on timing: one in the recording that the
    replay never issues is not a mismatch."""
    source = os.path.join(RECORDINGS, "pin-right.yaml")
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    play = data["interactions"][1]
    cancel = {"request": {**play["request"], "method": "DELETE", "body": None,
                          "uri": play["request"]["uri"] + "/171888866234845408"},
              "response": {**play["response"], "status": {"code": 204, "message": "NO CONTENT"},
                           "body": {"string": ""}}}
    data["interactions"].append(cancel)
    target = write_cassette(tmp_path / "with-cancel.yaml", data)
    assert replay(target, example("pin.py")).lines() == load_recording(source).transcript


def test_not_a_recording_is_a_clear_error(tmp_path):
    """A file that is not an ivrscript cassette gives one clear sentence, no traceback soup."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("interactions: []\nversion: 1\n", encoding="utf-8")
    with pytest.raises(ivr.ConfigError, match="not an ivrscript recording"):
        replay(plain, example("greeting.py"))
    with pytest.raises(ivr.ConfigError, match="no such recording"):
        replay(tmp_path / "missing.yaml", example("greeting.py"))


def test_ivr_replay_fixture_checks_the_transcript(ivr_replay):
    """The ivr_replay fixture replays and also compares with the recorded transcript."""
    path = os.path.join(RECORDINGS, "menu-support.yaml")
    transcript = ivr_replay(path, example("support_menu.py"))
    assert "forward extension 102" in transcript.lines()


def copy_example(tmp_path, name, old, new):
    """A copy of an example (with its prompts) where ``old`` is replaced by ``new``."""
    shutil.copytree(os.path.join(EXAMPLES, "prompts"), tmp_path / "prompts")
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
        source = f.read()
    assert old in source
    (tmp_path / name).write_text(source.replace(old, new), encoding="utf-8")
    script, _ = load_script_file(str(tmp_path / name))
    line = source[: source.index(old)].count("\n") + 1
    return script, line


def test_a_changed_timeout_is_shown_in_script_terms_with_the_script_line(tmp_path):
    """A collect's timeout changed from 8 to 6 s: the mismatch shows both commands as
    transcript lines and as the script's arguments (timeout=8s vs timeout=6s, not
    milliseconds with the prompt included), names the script's file:line of the yield (the
    sub-flow's, not ivrscript's), and keeps the REST detail below."""
    script, line = copy_example(tmp_path, "pin.py", "timeout=8,", "timeout=6,")
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(os.path.join(RECORDINGS, "pin-right.yaml"), script)
    message = str(caught.value)
    lines = message.splitlines()
    assert f"pin.py:{line}: pin = yield ivr.collect(\"xxxx\", timeout=6" in message
    recorded = next(x for x in lines if x.startswith("  as yielded, recorded:"))
    replayed = next(x for x in lines if x.startswith("  as yielded, replayed:"))
    assert recorded.endswith("collect xxxx timeout=8s prompt=prompts/enter-pin.wav")
    assert replayed.endswith("collect xxxx timeout=6s prompt=prompts/enter-pin.wav")
    assert "  recorded: collect xxxx (prompt prompts/enter-pin.wav)" in lines
    assert "  replayed: collect xxxx (prompt prompts/enter-pin.wav)" in lines
    assert message.index("as yielded") < message.index("REST detail") \
        < message.index("body.timeout")
    assert not any(len(x) > 160 for x in lines), "no row of 130 characters of ids"


def test_a_mismatch_in_a_menu_names_the_script_line_not_ivrscripts(tmp_path):
    """A menu's prompt changed: the line named is the script's ``yield ivr.menu(...)``,
    not the menu's own generator inside ivrscript."""
    script, line = copy_example(tmp_path, "support_menu.py", '"prompts/support-menu.wav"',
                                '"prompts/no-input.wav"')
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(os.path.join(RECORDINGS, "menu-sales.yaml"), script)
    assert f"support_menu.py:{line}" in str(caught.value)
    assert "commands.py" not in str(caught.value)


def test_pytest_shows_no_ivrscript_frames_for_a_mismatch(tmp_path, ivr_replay):
    """ReplayMismatch through the fixture: pytest's traceback (with __tracebackhide__
    applied) has no frame inside the ivrscript package."""
    script, _ = copy_example(tmp_path, "pin.py", "timeout=8,", "timeout=6,")
    with pytest.raises(ivr.ReplayMismatch) as caught:
        ivr_replay(os.path.join(RECORDINGS, "pin-right.yaml"), script)
    package = os.path.dirname(os.path.abspath(ivr.__file__))
    shown = [str(entry.path) for entry in caught.traceback.filter(caught)]
    assert shown and not any(path.startswith(package) for path in shown), shown


def test_replay_and_cli_compare_the_transcript_too(tmp_path):
    """A transcript that differs while every request matches (here: a recorded result line
    edited) fails replay() itself, so the CLI's --replay and the fixture agree; exit 1."""
    source = os.path.join(RECORDINGS, "greeting.yaml")
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["ivrscript"]["transcript"][2] = "  -> Interrupted"
    target = write_cassette(tmp_path / "edited.yaml", data)
    with pytest.raises(ivr.ReplayMismatch, match="transcript differs") as caught:
        replay(target, example("greeting.py"))
    assert "-  -> Interrupted" in str(caught.value) and "+  -> Completed" in str(caught.value)
    assert replay(target, example("greeting.py"), same_transcript=False).lines()[-1] \
        == "exit    hangup"
    done = subprocess.run([sys.executable, "-m", "ivrscript", os.path.join(
        EXAMPLES, "greeting.py"), "--replay", str(target)], capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 1, done
    assert "transcript differs" in done.stderr


def test_a_cassette_without_commands_still_replays_and_says_what_it_lacks(tmp_path):
    """A cassette from before commands were recorded replays; a mismatch shows the replayed
    command as yielded and says the recorded one is not in the file."""
    with open(os.path.join(RECORDINGS, "greeting.yaml"), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    del data["ivrscript"]["commands"]
    target = write_cassette(tmp_path / "older.yaml", data)
    assert replay(target, example("greeting.py")).lines()[-1] == "exit    hangup"

    def main(call):
        yield ivr.play("prompts/welcome.wav")
        yield ivr.play("prompts/pin-accepted.wav")

    main.__code__ = main.__code__.replace(co_filename=os.path.join(EXAMPLES, "greeting.py"))
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(target, main)
    lines = str(caught.value).splitlines()
    assert "  as yielded, replayed: play prompts/pin-accepted.wav" in lines
    assert any("not in this cassette" in line for line in lines)


def test_recorded_error_answers_replay_to_the_same_failure(tmp_path):
    """A call whose every request the platform answered 503: the retries, the final
    CommandFailed with the platform's message, on_error's failed hang-up; the replay rebuilds
    the same errors from the recorded answers (RetryLater, then PlatformError) and ends with
    the same transcript, word for word."""
    def main(call):
        yield ivr.play("https://media.example/hello.wav")

    with ivr.Simulator(speed=50, unavailable=1.0, seed=3) as down:
        app = ivr.App(main, platform=down, record=str(tmp_path)).start()
        try:
            down.call(app)
            call = app.calls[0] if app.calls else None
            assert call is not None
            call.wait_until_ended(60)
        finally:
            app.stop()
    lines = call.transcript.lines()
    assert any("503" in line and "failed" in line for line in lines), lines
    (path,) = glob.glob(os.path.join(tmp_path, "*.yaml"))
    assert {r["status"]["code"] for r in load_recording(path).responses} == {503}
    replayed = replay(path, main).lines()  # replay compares the transcripts itself

    def last_line(line):  # a traceback's frames differ (another stack ran it): its error not
        return line.splitlines()[-1]

    assert [last_line(x) for x in replayed] == [last_line(x) for x in lines]
