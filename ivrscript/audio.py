"""Decoding and resampling audio to what the platform plays: 8 kHz mono 16-bit PCM WAV.

This is the one module that imports ``miniaudio`` (WAV, MP3, FLAC and Ogg Vorbis, decoded and
resampled in process: no ffmpeg). Install it with ``pip install "ivrscript[speech]"``.
"""

from __future__ import annotations

import io
import os
import wave
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["PLATFORM_RATE", "AudioInfo", "convert", "probe", "to_platform_wav"]

PLATFORM_RATE = 8000  # Hz: telephone audio; mono, 16-bit PCM


def _miniaudio() -> Any:
    try:
        import miniaudio
    except ImportError:
        raise ConfigError('decoding audio needs miniaudio: pip install "ivrscript[speech]"') \
            from None
    return miniaudio


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file is: its format, sample rate, channels, sample format and length."""

    path: str
    format: str  # wav, mp3, flac, ogg
    sample_rate: int
    channels: int
    sample_format: str  # e.g. "16-bit Signed Integer"
    seconds: float
    pcm16: bool  # 16-bit integer PCM samples

    def problems(self) -> list[str]:
        """What is wrong with it for the platform (empty when it is a WAV the platform plays)."""
        found = []
        if self.format != "wav":
            found.append(f"{self.format.upper()}, not WAV")
        if self.sample_rate != PLATFORM_RATE:
            found.append(f"{self.sample_rate} Hz, not {PLATFORM_RATE}")
        if self.channels != 1:
            found.append(f"{self.channels} channels, not mono")
        if not self.pcm16:
            found.append(f"{self.sample_format}, not 16-bit PCM")
        return found


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read an audio file's header; ``ValueError`` (one line) if it is not audio we can read."""
    ma = _miniaudio()
    path = os.fspath(path)
    try:
        info = ma.get_file_info(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    except Exception:  # miniaudio.DecodeError and friends: not a format it knows
        raise ValueError(f"{path}: not a WAV, MP3, FLAC or Ogg Vorbis file") from None
    names = {1: "wav", 2: "flac", 3: "mp3", 4: "ogg"}
    fmt = names.get(int(info.file_format.value), "unknown")
    pcm16 = info.sample_format == ma.SampleFormat.SIGNED16
    if fmt == "wav":  # miniaudio reports float or A-law WAVs as 16-bit too: read the header
        pcm16 = pcm16 and _is_pcm16_wav(path)
    return AudioInfo(path, fmt, int(info.sample_rate), int(info.nchannels),
                     str(info.sample_format_name), float(info.duration), pcm16)


def _is_pcm16_wav(path: str) -> bool:
    try:
        with wave.open(path, "rb") as w:
            return w.getsampwidth() == 2 and w.getcomptype() == "NONE"
    except (wave.Error, EOFError, OSError):
        return False


def to_platform_wav(data: bytes) -> bytes:
    """Any WAV/MP3/FLAC/Ogg bytes as an 8 kHz mono 16-bit PCM WAV; ``ValueError`` if they
    are not audio."""
    ma = _miniaudio()
    try:
        decoded = ma.decode(data, output_format=ma.SampleFormat.SIGNED16,
                            nchannels=1, sample_rate=PLATFORM_RATE)
    except Exception:  # miniaudio.DecodeError: not a format it knows
        raise ValueError("not WAV, MP3, FLAC or Ogg Vorbis audio") from None
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(PLATFORM_RATE)
        w.writeframes(decoded.samples.tobytes())
    return out.getvalue()


def convert(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> float:
    """Write ``source`` (WAV/MP3/FLAC/Ogg) to ``target`` as an 8 kHz mono PCM WAV; returns its
    length in seconds. ``ValueError`` (one line naming the file) if it cannot be read."""
    source = os.fspath(source)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ValueError(f"{source}: cannot be read ({error.strerror or error})") from None
    try:
        wav = to_platform_wav(data)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    tmp = f"{os.fspath(target)}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(wav)
    os.replace(tmp, target)
    with wave.open(io.BytesIO(wav), "rb") as w:
        return w.getnframes() / PLATFORM_RATE
