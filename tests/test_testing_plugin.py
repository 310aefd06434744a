"""The pytest plugin's fixtures and helpers, used as a project's tests would use them, and the
README's pytest and coverage examples run verbatim."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import ivrscript as ivr
from ivrscript.testing import cassettes

from .conftest import EXAMPLES, ROOT


def test_ivr_call_fixture_runs_a_simulated_call(ivr_call):
    """ivr_call(main) returns the phone and the app's call; keys reach the script."""
    def main(call):
        pin = yield ivr.collect("xx", timeout=5)
        yield ivr.play(f"https://media.example/{pin}.wav")

    phone, call = ivr_call(main)
    phone.press("42")
    assert phone.wait_until_ended() == "hangup"
    assert call.wait_until_ended() == "hangup"
    assert phone.heard == ["https://media.example/42.wav"]
    assert "'42' Completed" in str(call.transcript)


def test_cassettes_refuses_a_missing_or_empty_folder(tmp_path):
    """cassettes() of a folder that does not exist, or holds no cassette, is a ConfigError
    (a typo must not give a green run of zero replays); allow_empty=True accepts an empty
    one."""
    with pytest.raises(ivr.ConfigError, match="no such folder"):
        cassettes(tmp_path / "missing" / "folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a cassette", encoding="utf-8")
    with pytest.raises(ivr.ConfigError, match="holds no"):
        cassettes(tmp_path / "empty")
    assert cassettes(tmp_path / "empty", allow_empty=True) == []
    found = cassettes(os.path.join(ROOT, "recordings"))
    assert found == sorted(found) and len(found) >= 12


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def block_after(text: str, marker: str, language: str) -> str:
    start = text.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COVERAGE_FILE": os.path.join(cwd, ".coverage")})


def test_readme_pytest_and_coverage_examples_run_verbatim(tmp_path):
    """The README's pytest file, in a project laid out as it says (run from another working
    directory), passes: one replay per pin recording and the simulated call; then the README's
    two coverage commands report the script's lines."""
    text = readme()
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project / "examples")
    shutil.copytree(os.path.join(ROOT, "recordings"), project / "recordings",
                    ignore=shutil.ignore_patterns("*.py"))
    (project / "tests").mkdir()
    (project / "tests" / "test_pin_calls.py").write_text(
        block_after(text, "tests/test_pin_calls.py`:", "python"), encoding="utf-8")
    pins = len([n for n in os.listdir(project / "recordings") if n.startswith("pin-")])
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                str(project / "tests")], cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{pins + 1} passed" in done.stdout
    commands = block_after(text, "Which script lines no recording reaches", "bash")
    lines = [shlex.split(line) for line in commands.strip().splitlines()]
    assert [words[0] for words in lines] == ["coverage", "coverage"]
    for words in lines:
        done = run([sys.executable, "-m", *words, *(["-p", "no:cacheprovider"]
                                                    if "pytest" in words else [])],
                   cwd=str(project))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"examples/pin\.py\s+\d+\s+\d+\s+\d+%", done.stdout), done.stdout


def test_readme_links_nothing_outside_the_repository():
    """The README stands alone: no link or path that leaves the repository."""
    text = readme()
    outside = re.compile(r"(?<![.\w])\.\./")
    assert not outside.search(text), [line for line in text.splitlines() if outside.search(line)]
    assert "/work/" not in text and "shared/DESIGN" not in text


def test_fixtures_are_documented_in_pytest_fixtures(tmp_path):
    """`pytest --fixtures` shows each fixture's description, ivr_call's and ivr_replay's
    keyword arguments included."""
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n",
                                              encoding="utf-8")
    done = run([sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider",
                str(tmp_path)], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    section = out[out.index("ivr_call"):]
    for words in ("caller=", "called=", "record=", "**app_options", "wait_until_ended"):
        assert words in section, words
    replay_doc = out[out.index("ivr_replay"):]
    for words in ("digits=", "same_transcript=", "ReplayMismatch", "--replay"):
        assert words in replay_doc, words
    assert "speed=20" in out[out.index("ivr_simulator"):]
