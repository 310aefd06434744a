"""Checking scripts before any call."""

from __future__ import annotations

import os
import sys
import warnings
import wave
from typing import Any

import pytest

import ivrscript as ivr
from ivrscript.loader import (
    NotYieldedWarning,
    ScriptLoadError,
    TimeUnitWarning,
    check_script,
    load_script_file,
)


def write_wav(path: Any, *, rate: int = 8000, channels: int = 1, seconds: float = 0.1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * channels * int(rate * seconds))


def test_not_a_generator_function_is_rejected():
    """A script without yield is a TypeError naming it."""
    def main(call):
        return ivr.play("x.wav")

    with pytest.raises(TypeError, match="not a generator function"):
        check_script(main)


def test_built_but_not_yielded_warns_with_file_and_line():
    """`ivr.play(...)` alone on a line is reported with file and line."""
    def main(call):
        ivr.play("https://media.example/forgot.wav")
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
        yield ivr.play("https://media.example/a.wav")
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


# -- the whole script: sub-flows, modules beside it, literal prompts and times ---------------

BANK = '''\
import ivrscript as ivr


def ask_pin(call):
    pin = yield ivr.collect("xxxx", timeout=8, prompt="https://media.example/pin.wav")
    return pin == "1234"


def main(call):
    ok = ask_pin(call)
    if ok:
        yield ivr.play("https://media.example/balance.wav")
    ask_pin(call)
    yield ivr.hangup()
'''


def _messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def _load(path: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_script_file(str(path))
    return _messages(caught)


def test_subflow_called_without_yield_is_the_security_hole_warned(tmp_path):
    """`ok = ask_pin(call)` then `if ok:` (always true) and a bare `ask_pin(call)` are each a
    warning with file:line: the sub-flow never runs."""
    script = tmp_path / "bank.py"
    script.write_text(BANK)
    messages = _load(script)
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"{script}:10: ask_pin(...) is a sub-flow")
    assert "'ok' is a generator object, always true" in messages[0]
    assert "write 'ok = yield ask_pin(...)'" in messages[0]
    assert messages[1].startswith(f"{script}:13: ask_pin(...) is a sub-flow")
    assert "write 'yield ask_pin(...)'" in messages[1]


@pytest.mark.parametrize("body", [
    "    ok = yield ask_pin(call)\n    if ok:\n        yield ivr.hangup()\n",
    "    x = ask_pin(call)\n    result = yield x\n",
    "    yield from ask_pin(call)\n",
    "    if (yield ask_pin(call)):\n        yield ivr.hangup()\n",
    "    flows = [ask_pin(call)]\n    yield flows[0]\n",
    "    yield run(ask_pin(call))\n",
    "    return (yield ask_pin(call))\n",
])
def test_subflow_yielded_or_passed_on_is_fine(tmp_path, body):
    """Yielded, `yield from`-ed, passed as an argument, returned or stored: no warning."""
    script = tmp_path / "fine.py"
    script.write_text(BANK.split("def main")[0]
                      + "def run(flow):\n    return flow\n\n\n"
                      + "def main(call):\n" + body)
    assert _load(script) == []


def test_returning_a_subflow_is_passing_it_on(tmp_path):
    """A function that returns a sub-flow for its caller to yield is fine."""
    script = tmp_path / "ret.py"
    script.write_text(BANK.split("def main")[0] + "def pick(call):\n    return ask_pin(call)\n\n\n"
                      "def main(call):\n    yield pick(call)\n")
    assert _load(script) == []


def test_slips_inside_subflows_and_modules_beside_the_script(tmp_path):
    """Every function reachable from the entry function is checked, in the script's module and
    in modules beside it (imported by name or as a module)."""
    (tmp_path / "flows_beside_a.py").write_text(
        "import ivrscript as ivr\n\n\ndef ask_pin(call):\n"
        "    ivr.play('https://media.example/forgot.wav')\n"
        "    pin = yield ivr.collect('xxxx')\n    return pin\n\n\n"
        "def unused(call):\n    ivr.play('https://media.example/never-reached.wav')\n"
        "    yield ivr.hangup()\n")
    (tmp_path / "flows_beside_b.py").write_text(
        "import ivrscript as ivr\n\n\ndef goodbye(call):\n    yield ivr.hangup()\n")
    script = tmp_path / "entry.py"
    script.write_text(
        "import ivrscript as ivr\nimport flows_beside_b\nfrom flows_beside_a import ask_pin\n\n\n"
        "def helper(call):\n    ivr.hangup()\n    yield ivr.play('https://media.example/x.wav')\n"
        "\n\ndef main(call):\n    yield helper(call)\n    ask_pin(call)\n"
        "    flows_beside_b.goodbye(call)\n")
    try:
        messages = _load(script)
    finally:
        sys.modules.pop("flows_beside_a", None)
        sys.modules.pop("flows_beside_b", None)
        sys.path.remove(str(tmp_path))
    beside = tmp_path / "flows_beside_a.py"
    assert sorted(messages) == sorted([
        f"{beside}:5: play(...) is built but not yielded, so it never runs: write "
        "'yield ivr.play(...)'",
        f"{script}:7: hangup(...) is built but not yielded, so it never runs: write "
        "'yield ivr.hangup(...)'",
        f"{script}:13: ask_pin(...) is a sub-flow (a generator function) called without "
        "'yield', so it never runs: write 'yield ask_pin(...)'",
        f"{script}:14: flows_beside_b.goodbye(...) is a sub-flow (a generator function) called "
        "without 'yield', so it never runs: write 'yield flows_beside_b.goodbye(...)'",
    ]), messages


def test_closures_are_checked_too():
    """Sub-flows defined inside a test (closures) are found as well."""
    def ask(call):
        yield ivr.collect("x")

    def main(call):
        ask(call)
        yield ivr.hangup()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slips = check_script(main)
    assert [s.name for s in slips] == ["ask"] and "sub-flow" in _messages(caught)[0]


def test_command_assigned_but_never_yielded_warns():
    """`pin = ivr.collect(...)` then `if pin == ...` never asks: warned."""
    def main(call):
        pin = ivr.collect("xxxx")
        if pin == "1234":
            yield ivr.hangup()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_script(main)
    assert "assigned to 'pin' but never yielded" in _messages(caught)[0]


def test_missing_literal_prompt_is_warned_before_any_call(tmp_path, monkeypatch):
    """A literal prompt that is neither beside the script nor in the working directory is
    warned with file:line; found ones (either place) are not."""
    (tmp_path / "prompts").mkdir()
    write_wav(tmp_path / "prompts" / "here.wav")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    write_wav(elsewhere / "in-cwd.wav")
    monkeypatch.chdir(elsewhere)
    script = tmp_path / "prompts_script.py"
    script.write_text(
        "import ivrscript as ivr\n\n\ndef main(call):\n"
        "    yield ivr.play('prompts/here.wav', 'in-cwd.wav')\n"
        "    yield ivr.collect('x', prompt='prompts/nope.wav')\n"
        "    yield ivr.menu('prompts/here.wav', ['1'], invalid=['prompts/sorry.wav'],\n"
        "                   no_input='https://media.example/remote.wav')\n")
    messages = _load(script)
    assert messages == [
        f"{script}:6: prompt file not found: 'prompts/nope.wav' (looked in {tmp_path}, "
        f"{elsewhere})",
        f"{script}:7: prompt file not found: 'prompts/sorry.wav' (looked in {tmp_path}, "
        f"{elsewhere})",
    ]


def test_literal_prompt_the_platform_cannot_play_is_warned(tmp_path):
    """A literal prompt that is an MP3 or a 44.1 kHz stereo WAV is warned at load."""
    (tmp_path / "song.mp3").write_bytes(b"ID3\x03\x00\x00\x00" + b"\x00" * 100)
    write_wav(tmp_path / "cd.wav", rate=44100, channels=2)
    script = tmp_path / "fmt.py"
    script.write_text("import ivrscript as ivr\n\n\ndef main(call):\n"
                      "    yield ivr.collect('x', prompt='song.mp3')\n"
                      "    yield ivr.play('cd.wav')\n")
    messages = _load(script)
    assert len(messages) == 2
    assert messages[0].startswith(f"{script}:5: prompt {tmp_path / 'song.mp3'} is an MP3")
    assert "cannot tell its length, so a collect's timeout would include" in messages[0]
    assert "python -m ivrscript prompts convert" in messages[0]
    assert f"{script}:6: prompt {tmp_path / 'cd.wav'} is a 44.1 kHz stereo WAV" in messages[1]


def test_literal_times_in_milliseconds_are_warned():
    """timeout=3000 / inter_digit_timeout=2000 in the source are warned at load."""
    def main(call):
        if call.data:
            yield ivr.collect("x", timeout=3000, inter_digit_timeout=2000)
        yield ivr.menu("https://media.example/m.wav", ["1"], timeout=900)
        yield ivr.collect("x", timeout=600, inter_digit_timeout=60)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slips = check_script(main)
    messages = _messages(caught)
    assert [s.category for s in slips] == [TimeUnitWarning] * 3
    assert "timeout=3000 is in SECONDS, so it means 50 minutes" in messages[0]
    assert "did you pass milliseconds?" in messages[0]
    assert "inter_digit_timeout=2000" in messages[1] and "menu(): timeout=900" in messages[2]


def test_slips_fail_a_test_under_filterwarnings_error(tmp_path):
    """With warnings as errors (pytest's setting here), a slip is an error at load."""
    script = tmp_path / "bank_err.py"
    script.write_text(BANK)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NotYieldedWarning, match="always true"):
            load_script_file(str(script))


def test_decorated_generators_and_plain_iteration_are_not_subflows(tmp_path):
    """A @contextmanager function in `with`, a generator helper passed to list() or iterated
    in a for loop: no warning."""
    script = tmp_path / "helpers_ok.py"
    script.write_text(
        "import contextlib\nimport ivrscript as ivr\n\n\n@contextlib.contextmanager\n"
        "def timer(call):\n    yield\n\n\ndef keys(text):\n    yield from text\n\n\n"
        "def main(call):\n    with timer(call):\n        yield ivr.hangup()\n"
        "    call.data['k'] = list(keys('12'))\n    for key in keys('34'):\n"
        "        call.data[key] = 1\n")
    assert _load(script) == []


def test_cells_of_a_notebook_are_one_script(tmp_path):
    """Functions defined in other cells of a notebook (files that do not exist, in one folder,
    their source in linecache as IPython keeps it) are checked as the script's own."""
    import linecache

    namespace: dict[str, Any] = {"ivr": ivr}
    cells = {str(tmp_path / "ipykernel_1" / "101.py"):
             "def ask(call):\n    ivr.play('https://media.example/x.wav')\n"
             "    yield ivr.collect('x')\n",
             str(tmp_path / "ipykernel_1" / "102.py"):
             "def main(call):\n    ask(call)\n    yield ivr.hangup()\n"}
    try:
        for name, source in cells.items():
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
            exec(compile(source, name, "exec"), namespace)
        slips = check_script(namespace["main"], warn=False)
    finally:
        for name in cells:
            linecache.cache.pop(name, None)
    assert [(os.path.basename(s.filename), s.line, s.name) for s in slips] == [
        ("101.py", 2, "play"), ("102.py", 2, "ask")]


def test_a_builder_imported_under_another_name_is_still_a_command():
    """`from ivrscript import hangup as bye`, then `bye()` alone on a line: warned."""
    from ivrscript import hangup as bye

    def main(call):
        bye()
        yield ivr.play("https://media.example/x.wav")

    assert [s.name for s in check_script(main, warn=False)] == ["hangup"]
