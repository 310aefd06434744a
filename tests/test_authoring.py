"""Authoring safety end to end (App + Simulator over loopback HTTP, real processes for the CLI):
secret keys stay secret, notes reach the transcript and replay, tracebacks speak in script
terms, the menu's terminator, and the CLI's exit statuses for CI."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import textwrap

import pytest

import ivrscript as ivr
from ivrscript.errors import ReplayMismatch
from ivrscript.testing import check_transcript, replay

from .conftest import ROOT

PROMPTS = os.path.join(ROOT, "examples", "prompts")


def finish(app, phone, timeout=10):
    phone.wait_until_ended(timeout)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(timeout)
    return call


# -- DTMF masking ----------------------------------------------------------------------------


def test_sensitive_keys_reach_the_script_but_not_transcript_logs_or_tracebacks(
        sim, make_app, caplog):
    """collect(sensitive=True): the script gets '9876'; the transcript, the ERROR log of the
    script's KeyError and repr() show ****."""
    got = []

    def main(call):
        pin = yield ivr.collect("xxxx", timeout=100, sensitive=True)
        got.append((str(pin), repr(pin)))
        raise KeyError(pin)  # a lookup that failed, with the PIN as the key

    app = make_app(main)
    phone = sim.call(app)
    with caplog.at_level(logging.DEBUG, logger="ivrscript"):
        phone.press("9876")
        call = finish(app, phone)
    assert got == [("9876", "Digits('****', status='Completed', sensitive=True)")]
    text = str(call.transcript)
    assert "collect xxxx (sensitive)" in text and "  -> '****' Completed" in text
    assert "KeyError: Digits('****', status='Completed', sensitive=True)" in text
    assert "9876" not in text
    assert "9876" not in caplog.text and "KeyError: Digits('****'" in caplog.text


def test_sensitive_menu_masks_the_choice(sim, make_app):
    """menu(..., sensitive=True) returns the choice; the transcript shows ****."""
    got = []

    def main(call):
        got.append((yield ivr.menu("https://media.example/m.wav", ["7", "8"], timeout=100,
                                   sensitive=True)))

    app = make_app(main)
    phone = sim.call(app)
    phone.press("7")
    call = finish(app, phone)
    assert got == ["7"] and "  -> '****' Completed" in str(call.transcript)


def test_empty_sensitive_keys_show_as_empty():
    """No keys (a timeout) is shown as '' (nothing to hide); the value is unchanged."""
    d = ivr.Digits("", "Timeout", sensitive=True)
    assert d.shown() == "" and d.transcript_line() == "'' Timeout"
    import pickle

    back = pickle.loads(pickle.dumps(ivr.Digits("12", sensitive=True)))
    assert back == "12" and back.sensitive and "12" not in repr(back)


# -- notes -----------------------------------------------------------------------------------


def test_note_is_a_transcript_line_that_replay_compares(sim, make_app, tmp_path):
    """call.note(text) is a `note    text` line; a replay whose script takes another branch
    (a different note, same commands) fails the transcript check."""
    def main(call):
        call.note("balance read: 42")
        yield ivr.play("https://media.example/balance.wav")

    def changed(call):
        call.note("balance read: 0")
        yield ivr.play("https://media.example/balance.wav")

    app = make_app(main, record=str(tmp_path))
    call = finish(app, sim.call(app))
    app.stop()
    assert call.transcript.lines()[1] == "note    balance read: 42"
    (cassette,) = glob.glob(str(tmp_path / "*.yaml"))
    check_transcript(cassette, replay(cassette, main))
    with pytest.raises(ReplayMismatch, match="balance read: 0"):
        check_transcript(cassette, replay(cassette, changed))


# -- tracebacks ------------------------------------------------------------------------------


def test_script_traceback_shows_the_scripts_frames_only(sim, make_app, caplog):
    """A script raising inside a sub-flow under a menu: the transcript's traceback has the
    script's frames and no ivrscript frame; the full one is logged at DEBUG."""
    def lookup(call):
        yield ivr.play("https://media.example/wait.wav")
        return {}["account"]

    def main(call):
        yield ivr.menu("https://media.example/m.wav", ["1"], timeout=100)
        yield lookup(call)

    app = make_app(main)
    phone = sim.call(app)
    with caplog.at_level(logging.DEBUG, logger="ivrscript.engine"):
        phone.press("1")
        call = finish(app, phone)
    error = next(e for e in call.transcript if e.kind == "error").details
    assert error.startswith("Traceback (most recent call last):")
    assert "in main" in error and "in lookup" in error and "KeyError: 'account'" in error
    assert f"{os.sep}ivrscript{os.sep}" not in error, error
    assert f"ivrscript{os.sep}engine.py" in caplog.text  # the full one, at DEBUG


def test_missing_prompt_mid_call_is_one_sentence(sim, make_app):
    """A prompt path built at run time that is missing: the error is one line naming the
    script's line, the path and each folder once."""
    def main(call):
        name = "nope"
        yield ivr.play(f"prompts/{name}.wav")

    app = make_app(main)
    call = finish(app, sim.call(app))
    error = next(e for e in call.transcript if e.kind == "error").details
    here = os.path.dirname(os.path.abspath(__file__))
    folders = list(dict.fromkeys([here, os.getcwd()]))
    assert error == (f"{__file__}:{main.__code__.co_firstlineno + 2}: prompt file not found: "
                     f"'prompts/nope.wav' (looked in {', '.join(folders)})")


def test_unplayable_prompt_is_logged_when_first_resolved(sim, make_app, tmp_path, caplog):
    """A prompt resolved at run time that is a text file named .wav is a WARNING naming it and
    the fix, once."""
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all\n")

    def main(call):
        for _ in range(2):
            yield ivr.play(str(bad))

    app = make_app(main)
    with caplog.at_level(logging.WARNING, logger="ivrscript.media"):
        finish(app, sim.call(app))
    warned = [r.getMessage() for r in caplog.records if r.name == "ivrscript.media"]
    assert len(warned) == 1 and f"prompt {bad} is a text file" in warned[0]
    assert "python -m ivrscript prompts convert" in warned[0]


def test_a_prompt_warned_at_load_is_not_logged_again_when_played(sim, make_app, tmp_path,
                                                                  caplog):
    """A literal prompt found unplayable before any call is said once: not again at its first
    play."""
    script = tmp_path / "literal_bad.py"
    (tmp_path / "hold.wav").write_text("just text\n")
    script.write_text("import ivrscript as ivr\n\n\ndef main(call):\n"
                      "    yield ivr.play('hold.wav')\n")
    from ivrscript.loader import PromptWarning, load_script_file

    with pytest.warns(PromptWarning, match="is a text file"):
        main, _ = load_script_file(str(script))
        app = make_app(main)
    with caplog.at_level(logging.WARNING, logger="ivrscript.media"):
        finish(app, sim.call(app))
    assert [r for r in caplog.records if r.name == "ivrscript.media"] == []


# -- terminators -----------------------------------------------------------------------------


def _collect_bodies(sim):
    return [r.json for r in sim.requests_log if r.path.endswith("/collect")]


def test_menu_sends_a_terminator_not_among_its_choices(sim, make_app):
    """A menu's collect carries '#', or '*' when '#' is a choice; collect(terminator=None)
    sends none."""
    def main(call):
        yield ivr.menu("https://media.example/m.wav", ["1", "2"], timeout=100)
        yield ivr.menu("https://media.example/m.wav", ["1", "#"], timeout=100)
        yield ivr.collect("x", timeout=100, terminator=None)

    app = make_app(main)
    phone = sim.call(app)
    phone.press("1")
    phone.press("#")
    phone.press("5")
    finish(app, phone)
    bodies = _collect_bodies(sim)
    assert [b.get("terminator", "absent") for b in bodies] == ["#", "*", "absent"]


def test_menu_choices_with_both_hash_and_star_are_a_value_error():
    """Choices using both '#' and '*' leave no terminator: ValueError when built."""
    with pytest.raises(ValueError, match="both '#' and '\\*'"):
        ivr.menu("m.wav", ["1#", "*"])


# -- the command line, as CI runs it ---------------------------------------------------------


def _cli(tmp_path, source, *args, stdin="1234\n"):
    """Run the CLI in a process of its own at speed 20 (a 100 s timeout is 5 s: enough on a
    busy machine for the piped keys to arrive)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("RINGCENTRAL_"):
            del env[name]
    return subprocess.run([sys.executable, "-m", "ivrscript", str(script), "--speed", "20",
                           *args], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path), env=env)


def test_cli_exits_1_when_the_script_raised(tmp_path):
    """`echo 1234 | python -m ivrscript x.py` is a CI smoke test: a script that raised exits 1,
    one that did not exits 0."""
    failing = _cli(tmp_path, """\
        import ivrscript as ivr

        def main(call):
            pin = yield ivr.collect("xxxx", timeout=100)
            raise RuntimeError("no account for " + str(len(pin)))
        """)
    assert failing.returncode == 1, failing.stderr
    assert "RuntimeError: no account for 4" in failing.stdout
    fine = _cli(tmp_path, """\
        import ivrscript as ivr

        def main(call):
            yield ivr.collect("xxxx", timeout=100)
        """)
    assert fine.returncode == 0, fine.stderr


def test_cli_exits_1_when_a_prompt_was_missing_even_if_caught(tmp_path):
    """A missing prompt the script caught (and went on) still fails the smoke test."""
    result = _cli(tmp_path, """\
        import ivrscript as ivr

        def main(call):
            name = "welcome"
            try:
                yield ivr.play(f"prompts/{name}.wav")
            except ivr.CommandFailed:
                yield ivr.play("https://media.example/fallback.wav")
        """)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "-> failed: prompt file not found: 'prompts/welcome.wav'" in result.stdout


def test_cli_strict_makes_a_script_warning_exit_2_before_any_call(tmp_path):
    """--strict: the bank script's `ok = ask_pin(call)` is an error (exit 2), no call made;
    without it the warning is printed and the call runs."""
    bank = """\
        import ivrscript as ivr

        def ask_pin(call):
            pin = yield ivr.collect("xxxx", timeout=100)
            return pin == "1234"

        def main(call):
            ok = ask_pin(call)
            if ok:
                yield ivr.play("https://media.example/balance.wav")
        """
    strict = _cli(tmp_path, bank, "--strict")
    assert strict.returncode == 2 and "Simulator: calling" not in strict.stdout
    assert "script.py:8: ask_pin(...) is a sub-flow" in strict.stderr
    assert "--strict" in strict.stderr.splitlines()[-1]
    lax = _cli(tmp_path, bank)
    assert lax.returncode == 0 and "script.py:8: ask_pin(...)" in lax.stderr


def test_cli_with_a_sensitive_collect_prints_no_keys(tmp_path):
    """The terminal masks a sensitive collect's keys: as pressed, as got, in the transcript."""
    result = _cli(tmp_path, """\
        import ivrscript as ivr

        def main(call):
            yield ivr.collect("xxxx", timeout=100, sensitive=True)
        """, stdin="9876\n")
    assert result.returncode == 0, result.stderr
    assert "9876" not in result.stdout and "9876" not in result.stderr
    assert "presses  ****" in result.stdout and "app got  '****' Completed" in result.stdout
    transcript = result.stdout.split("Transcript:", 1)[1]
    assert "  -> '****' Completed" in transcript


def test_keypad_widget_masks_a_sensitive_collect(sim, make_app):
    """The notebook keypad echoes a sensitive collect's keys as ****, and its transcript
    view shows the masked line."""
    from ivrscript.widgets import Keypad

    def main(call):
        yield ivr.collect("xxxx", timeout=100, sensitive=True)
        yield ivr.collect("x", timeout=100)  # wait here until the caller hangs up

    app = make_app(main)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    phone = keypad.phone
    phone.wait_until_listening(10)
    keypad.press("9876")
    phone.wait_until_listening(10)  # the second collect: the PIN was collected
    status = keypad.status.value
    text = keypad.transcript.children[0].text.value
    keypad.buttons["Hang up"].click()
    phone.wait_until_ended(10)
    assert "keys <code>****</code>" in status and "9876" not in status
    assert "9876" not in text and "&#x27;****&#x27; Completed" in text
