"""eSpeak NG, the default engine: in process from the wheel (no program needed), else the
espeak-ng program on PATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave

import pytest

import ivrscript as ivr
import ivrscript.espeak as espeak
from ivrscript.tts import Synthesizer

from .conftest import ROOT


def test_the_wheel_speaks_in_process_without_any_program_on_path(tmp_path):
    """With PATH empty (no espeak-ng program), a prompt is still synthesised in process."""
    target = tmp_path / "hi.wav"
    done = subprocess.run([sys.executable, "-c",
                           "import ivrscript.espeak as e, sys; "
                           "engine = e.find_engine(); print(type(engine).__name__); "
                           "sys.exit(__import__('ivrscript.cli').cli.main("
                           f"['prompts', 'say', 'Hello there.', '-o', {str(target)!r}]))"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "", "HOME": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ESpeakLibrary")
    with wave.open(str(target), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() > 4000


def test_rate_changes_the_length():
    """rate is relative to normal speech: 2.0 is about half as long."""
    engine = espeak.find_engine()
    assert engine is not None

    def seconds(rate):
        data = engine("Please enter your four digit PIN now.", None, rate)
        return (len(data) - 44) / 2 / 22050

    assert seconds(2.0) < 0.7 * seconds(1.0)
    assert espeak.words_per_minute(None) == 175 and espeak.words_per_minute(10) == 450


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng program on PATH")
def test_without_the_wheel_the_program_on_path_is_used(monkeypatch, tmp_path):
    """No espeakng_loader: find_engine falls back to the espeak-ng program, same results."""
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(espeak, "_found", None)
    engine = espeak.find_engine()
    assert isinstance(engine, espeak.ESpeakProgram)
    path, seconds = Synthesizer(cache_dir=str(tmp_path)).render(
        ivr.speech("Welcome to Acme.", voice="en-gb"))
    with wave.open(path, "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert 0.5 < seconds < 3
    with pytest.raises(ValueError, match="unknown voice 'xx-nowhere'.*voices include en-us"):
        engine("hi", "xx-nowhere", None)


def test_the_same_text_gives_the_same_audio_whatever_came_before():
    """In process, a text's audio (so its length, so a recorded collect's timeout) does not
    depend on what the library synthesised before: pitch flutter, whose phase the library
    never resets, is off."""
    engine = espeak.find_engine()
    text = "For your account balance, press 1."
    first = engine(text, None, None)
    engine("Something else of another length entirely, to move any phase along.", None, 1.3)
    engine("And one more.", "en-gb", None)
    assert engine(text, None, None) == first
