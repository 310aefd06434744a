"""Length of a WAV file from its header (standard library only)."""

from __future__ import annotations

import io
import os
import wave

__all__ = ["wav_seconds"]


def wav_seconds(source: str | os.PathLike[str] | bytes) -> float | None:
    """Return the duration in seconds of a RIFF/WAVE file or its bytes; None if not a WAV."""
    try:
        if isinstance(source, bytes):
            handle = wave.open(io.BytesIO(source), "rb")
        else:
            handle = wave.open(os.fspath(source), "rb")
        with handle as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, EOFError, OSError):
        return None
