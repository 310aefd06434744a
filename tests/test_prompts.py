"""Prompt audio tools: `python -m ivrscript prompts check|convert|say`, and local prompt files
whose names need quoting in a URL."""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import subprocess
import sys
import wave

import pytest

import ivrscript as ivr
from ivrscript.cli import main as cli_main

from .conftest import EXAMPLES, ROOT

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["prompts", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def stereo_44k(path, seconds=0.5):
    """A 44.1 kHz stereo 16-bit WAV: a 440 Hz tone."""
    frames = b"".join(struct.pack("<hh", v, v) for v in (
        int(8000 * math.sin(2 * math.pi * 440 * i / 44100)) for i in range(int(44100 * seconds))))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(frames)


def wav_format(path):
    with wave.open(str(path), "rb") as w:
        return (w.getframerate(), w.getnchannels(), w.getsampwidth(),
                w.getnframes() / w.getframerate())


@pytest.fixture
def incoming(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(os.path.join(FIXTURES, "hello.mp3"), folder / "hello.mp3")
    stereo_44k(folder / "tone.wav")
    return folder


def test_check_flags_an_mp3_and_a_44k_stereo_wav(incoming):
    """check lists format, rate, channels and length, and what is wrong; exit 1."""
    code, out, _ = run("check", str(incoming))
    assert code == 1
    lines = out.splitlines()
    mp3 = next(line for line in lines if "hello.mp3" in line)
    assert "MP3 22050 Hz mono" in mp3 and "MP3, not WAV" in mp3 and "22050 Hz, not 8000" in mp3
    tone = next(line for line in lines if "tone.wav" in line)
    assert "WAV 44100 Hz 2 channels" in tone and "0.50 s" in tone
    assert "44100 Hz, not 8000; 2 channels, not mono" in tone
    assert "2 of 2 files need converting" in out


def test_convert_writes_8khz_mono_wavs_that_check_passes(incoming, tmp_path):
    """convert turns the MP3 and the 44.1 kHz stereo WAV into 8 kHz mono 16-bit PCM WAVs."""
    out_dir = tmp_path / "out"
    code, out, err = run("convert", str(incoming / "hello.mp3"), str(incoming / "tone.wav"),
                         "--out", str(out_dir))
    assert (code, err) == (0, "")
    assert sorted(os.listdir(out_dir)) == ["hello.wav", "tone.wav"]
    rate, channels, width, seconds = wav_format(out_dir / "tone.wav")
    assert (rate, channels, width) == (8000, 1, 2) and seconds == pytest.approx(0.5, abs=0.01)
    rate, channels, width, seconds = wav_format(out_dir / "hello.wav")
    assert (rate, channels, width) == (8000, 1, 2) and 1.5 < seconds < 2.5
    code, out, _ = run("check", str(out_dir))
    assert code == 0 and out.count(": ok") == 2


def test_convert_reports_an_unreadable_file_in_one_line_and_converts_the_others(
        incoming, tmp_path):
    """A file that is not audio and a missing one: one line each, the rest converted, exit 1."""
    (incoming / "notes.mp3").write_text("not audio at all")
    out_dir = tmp_path / "out"
    code, out, err = run("convert", str(incoming / "notes.mp3"), str(incoming / "gone.wav"),
                         str(incoming / "tone.wav"), "--out", str(out_dir))
    assert code == 1
    assert err.splitlines() == [
        f"{incoming / 'notes.mp3'}: not WAV, MP3, FLAC or Ogg Vorbis audio",
        f"{incoming / 'gone.wav'}: cannot be read (No such file or directory)"]
    assert os.listdir(out_dir) == ["tone.wav"] and "tone.wav: 8000 Hz mono" in out
    code, out, _ = run("check", str(incoming / "notes.mp3"))
    assert code == 1 and "notes.mp3: not a WAV, MP3, FLAC or Ogg Vorbis file" in out


def test_say_writes_a_spoken_prompt_from_a_real_process(tmp_path):
    """`python -m ivrscript prompts say TEXT -o FILE` writes an 8 kHz mono WAV; a bad voice is
    one line and exit 1."""
    target = tmp_path / "welcome.wav"
    done = subprocess.run([sys.executable, "-m", "ivrscript", "prompts", "say",
                           "Welcome to Acme.", "-o", str(target)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    rate, channels, width, seconds = wav_format(target)
    assert (rate, channels, width) == (8000, 1, 2) and 0.5 < seconds < 3
    assert f"{target}: {seconds:.2f} s" in done.stdout
    code, _, err = run("say", "hi", "--voice", "xx-nowhere", "-o", str(tmp_path / "x.wav"))
    assert code == 1 and err.count("\n") == 1 and "unknown voice 'xx-nowhere'" in err
    assert not (tmp_path / "x.wav").exists()


def test_the_shipped_example_prompts_are_what_the_platform_plays():
    """examples/prompts/ passes its own check."""
    code, out, _ = run("check", os.path.join(EXAMPLES, "prompts"))
    assert code == 0, out


@pytest.mark.parametrize("name", ["menu#2.wav", "q?.wav", "100%41.wav", "two words.wav"])
def test_prompt_names_that_need_quoting_play_on_the_simulator(sim, make_app, tmp_path, name):
    """A local prompt whose name has #, ?, % or a space is quoted in its URL and plays."""
    path = tmp_path / name
    stereo_44k(tmp_path / "raw.wav", seconds=0.2)
    assert run("convert", str(tmp_path / "raw.wav"), "--out", str(tmp_path / "c"))[0] == 0
    shutil.copy(tmp_path / "c" / "raw.wav", path)

    def main(call):
        call.data["played"] = (yield ivr.play(str(path))).status

    app = make_app(main)
    phone = sim.call(app)
    phone.wait_until_ended(10)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(10)
    assert call.data["played"] == "Completed"
    assert "Failed" not in str(call.transcript) and len(phone.heard) == 1
    assert sim._media_cache[phone.heard[0]] == pytest.approx(0.2)


def test_convert_without_out_writes_beside_each_file_and_fixes_what_the_loader_names(
        incoming):
    """`prompts convert FILE` (the fix the loader's prompt warning names) writes NAME.wav
    beside each file; a WAV is replaced in place, after which it has no problem."""
    from ivrscript.media import prompt_problem

    tone = str(incoming / "tone.wav")
    assert "prompts convert" in prompt_problem(tone)
    code, out, err = run("convert", tone, str(incoming / "hello.mp3"))
    assert (code, err) == (0, "")
    assert f"{tone}: 8000 Hz mono 16-bit PCM, 0.50 s (replaced)" in out
    assert prompt_problem(tone) is None and prompt_problem(str(incoming / "hello.wav")) is None
    assert sorted(os.listdir(incoming)) == ["hello.mp3", "hello.wav", "tone.wav"]
