"""Checking scripts before any call."""

from __future__ import annotations

import warnings

import pytest

import ivrscript as ivr
from ivrscript.loader import NotYieldedWarning, ScriptLoadError, check_script, load_script_file


def test_not_a_generator_function_is_rejected():
    """A script without yield is a TypeError naming it."""
    def main(call):
        return ivr.play("x.wav")

    with pytest.raises(TypeError, match="not a generator function"):
        check_script(main)


def test_built_but_not_yielded_warns_with_file_and_line():
    """`ivr.play(...)` alone on a line is reported with file and line."""
    def main(call):
        ivr.play("forgot.wav")
        yield ivr.hangup()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slips = check_script(main)
    assert len(slips) == 1 and slips[0].name == "play"
    assert slips[0].filename == __file__
    import inspect

    assert slips[0].line == inspect.getsourcelines(main)[1] + 1
    assert any(issubclass(w.category, NotYieldedWarning) and "not yielded" in str(w.message)
               for w in caught)


def test_yielded_commands_do_not_warn():
    """Yielded and assigned commands are fine."""
    def main(call):
        yield ivr.play("a.wav")
        x = ivr.collect("1")
        yield x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_script(main) == []


def test_load_script_file_errors(tmp_path):
    """Each user mistake in a script file is one sentence."""
    with pytest.raises(ScriptLoadError, match="no such script file"):
        load_script_file(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def main(call):\n    yield (\n")
    with pytest.raises(ScriptLoadError, match=r"syntax error in .*bad.py, line \d"):
        load_script_file(str(bad))
    ok = tmp_path / "ok.py"
    ok.write_text("import ivrscript as ivr\ndef main(call):\n    yield ivr.hangup()\n"
                  "def plain(call):\n    return 1\n")
    with pytest.raises(ScriptLoadError, match="no function 'other'"):
        load_script_file(f"{ok}:other")
    with pytest.raises(ScriptLoadError, match="not a generator function"):
        load_script_file(f"{ok}:plain")
    script, _ = load_script_file(str(ok))
    assert script.__name__ == "main"
