"""Local prompts: how a path is found, and which files the platform cannot play well."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from ivrscript.media import MediaLibrary, PromptNotFound, find_media, prompt_problem

FIX = "python -m ivrscript prompts convert"


def wav(path: Path, *, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * (channels * rate // 10))
    return path


def float_wav(path: Path) -> Path:
    """A 32-bit float WAV (format 3): a WAV, but not PCM."""
    data = b"\x00" * 800 * 4
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 8000 * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_an_8khz_mono_pcm_wav_is_fine(tmp_path):
    """The platform's own format: no problem."""
    assert prompt_problem(str(wav(tmp_path / "ok.wav"))) is None


@pytest.mark.parametrize(("make", "what"), [
    (lambda p: wav(p / "cd.wav", rate=44100, channels=2), "is a 44.1 kHz stereo WAV"),
    (lambda p: wav(p / "wide.wav", rate=16000), "is a 16 kHz mono WAV"),
    (lambda p: (p / "song.mp3").write_bytes(b"ID3\x04" + b"\x00" * 60) and p / "song.mp3",
     "is an MP3, not an 8 kHz mono PCM WAV"),
    (lambda p: (p / "renamed.wav").write_bytes(b"\xff\xfb\x90\x00" + b"\x00" * 60)
     and p / "renamed.wav", "is an MP3 renamed .wav"),
    (lambda p: (p / "notes.wav").write_text("TODO record this\n") and p / "notes.wav",
     "is a text file"),
    (lambda p: float_wav(p / "float.wav"), "is a WAV file the platform may not play"),
    (lambda p: (p / "empty.wav").write_bytes(b"") or p / "empty.wav", "is an empty file"),
])
def test_prompts_the_platform_cannot_play_well_say_what_and_the_fix(tmp_path, make, what):
    """Each problem names the file, what it is, and the conversion command."""
    path = make(tmp_path)
    problem = prompt_problem(str(path))
    assert problem is not None and problem.startswith(f"prompt {path} {what}"), problem
    assert f"{FIX} {path}" in problem


def test_a_file_of_unknown_length_says_the_timeout_includes_it(tmp_path):
    """Not a WAV: its length is unknown, so a collect's timeout would include the prompt."""
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x04" + b"\x00" * 60)
    assert "collect's timeout would include the time it plays" in prompt_problem(str(path))


def test_an_unreadable_prompt_says_so(tmp_path):
    """A path that cannot be read (here a folder) is a problem naming it."""
    problem = prompt_problem(str(tmp_path))
    assert problem is not None and problem.startswith(f"prompt {tmp_path} cannot be read")


def test_find_looks_beside_the_script_then_in_the_working_directory(tmp_path, monkeypatch):
    """A relative path: the search folders first, then the working directory."""
    script_dir, cwd = tmp_path / "s", tmp_path / "c"
    script_dir.mkdir()
    cwd.mkdir()
    wav(script_dir / "a.wav")
    wav(cwd / "a.wav")
    wav(cwd / "b.wav")
    monkeypatch.chdir(cwd)
    assert find_media("a.wav", [str(script_dir)]) == str(script_dir / "a.wav")
    assert find_media("b.wav", [str(script_dir)]) == str(cwd / "b.wav")
    assert find_media("c.wav", [str(script_dir)]) is None


def test_a_missing_prompt_names_each_folder_once(tmp_path, monkeypatch):
    """Script folder == working directory: listed once, in one sentence."""
    monkeypatch.chdir(tmp_path)
    library = MediaLibrary([str(tmp_path)])
    with pytest.raises(PromptNotFound) as caught:
        library.resolve("nope.wav")
    assert str(caught.value) == f"prompt file not found: 'nope.wav' (looked in {tmp_path})"
