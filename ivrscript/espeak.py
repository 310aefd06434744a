"""eSpeak NG, the default local text-to-speech engine: in process through the
``espeakng-loader`` wheel (which ships ``libespeak-ng`` and its voice data), else the
``espeak-ng`` program on PATH.

This is the one module that loads ``espeakng_loader`` and calls the library through ctypes.
An engine is called as ``engine(text, voice, rate)`` and returns WAV bytes at eSpeak's own
sample rate (22,050 Hz); :mod:`ivrscript.speech` turns them into what the platform plays.
"""

from __future__ import annotations

import atexit
import ctypes
import io
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Callable

__all__ = ["DEFAULT_VOICE", "ESpeakLibrary", "ESpeakProgram", "find_engine", "words_per_minute"]

DEFAULT_VOICE = "en-us"
NORMAL_WPM = 175  # eSpeak's default speaking rate, words per minute: rate=1.0

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_RATE = 1
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


def words_per_minute(rate: float | None) -> int:
    """eSpeak's words per minute for a rate relative to normal speech (1.0)."""
    return max(80, min(450, round(NORMAL_WPM * (rate or 1.0))))


def _wav(samples: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples)
    return out.getvalue()


_ALIASES = {"en-gb": "en"}  # eSpeak names British English plain "en"


def _unknown_voice(voice: str, known: list[str]) -> ValueError:
    few = [v for v in ("en-us", "en", "en-gb-x-rp", "es", "fr", "de") if v in known] or known[:6]
    return ValueError(f"unknown voice {voice!r} for eSpeak NG; voices include "
                      f"{', '.join(few)} ({len(known)} in all)")


_LIBRARY_LOCK = threading.Lock()


class ESpeakLibrary:
    """libespeak-ng from the ``espeakng-loader`` wheel, called in this process.

    The library keeps global state, so calls are serialised with a lock; it is loaded on the
    first call.
    """

    name = "espeak-ng-wheel"  # keys the cache: its audio differs from the program's

    def __init__(self, library_path: str, data_path: str) -> None:
        self.library_path = library_path
        self.data_path = data_path  # the espeak-ng-data folder
        self._lib: ctypes.CDLL | None = None
        self._rate = 22050
        self._lock = _LIBRARY_LOCK  # the library's state is process-wide, so is its lock
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive as long as the engine
        self._files: dict[str, str] | None = None
        self._steady: dict[str, str] = {}  # voice file -> the same without flutter
        self._folder: str | None = None

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    def _load(self) -> ctypes.CDLL:
        if self._lib is None:
            lib = ctypes.CDLL(self.library_path)
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                              ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
            lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                         ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                         ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
            lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
            parent = os.path.dirname(self.data_path.rstrip(os.sep)).encode()
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, parent,
                                         _INITIALIZE_DONT_EXIT)
            if rate <= 0:
                raise RuntimeError(f"eSpeak NG could not start (voice data in {self.data_path})")
            lib.espeak_SetSynthCallback(self._callback)
            self._rate = rate
            self._lib = lib
        return self._lib

    def voices(self) -> list[str]:
        """The voice names this engine knows (``en-us``, ``en-gb``, ``fr``, ...)."""
        with self._lock:
            return list(self._voice_names())

    def _voice_names(self) -> list[str]:
        return sorted(self._voice_files())

    def _voice_files(self) -> dict[str, str]:
        """Voice name (file name and first language, lower case) -> its voice file."""
        if self._files is None:
            found = self._load().espeak_ListVoices(None)
            files: dict[str, str] = {}
            i = 0
            while found[i]:
                voice = found[i].contents
                i += 1
                if not voice.identifier or voice.identifier.startswith(b"mb/"):
                    continue  # MBROLA voices need a separate program
                identifier = voice.identifier.decode()
                path = next((p for p in (os.path.join(self.data_path, sub, identifier)
                                         for sub in ("voices", "lang")) if os.path.isfile(p)),
                            None)
                if path is None:
                    continue
                names = [os.path.basename(identifier).lower()]
                if voice.languages and len(voice.languages) > 1:  # a priority byte first
                    names.append(voice.languages[1:].decode(errors="replace").lower())
                for name in names:
                    files.setdefault(name, path)
            self._files = files
        return self._files

    def check_voice(self, voice: str) -> None:
        """``ValueError`` naming a few voices that exist if ``voice`` is not one."""
        with self._lock:
            self._voice_file(voice)

    def _voice_file(self, voice: str | None) -> str:
        """The voice's file with its pitch flutter off, written once to a temporary folder.

        Flutter (a small pitch wobble) runs on a phase the library never resets, so the same
        text would come out a few samples longer or shorter from one call to the next; without
        it a prompt's length, and so a recorded collect's timeout, is the same every time.
        """
        name = (voice or DEFAULT_VOICE).lower()
        source = self._voice_files().get(_ALIASES.get(name, name))
        if source is None:
            raise _unknown_voice(voice or name, self._voice_names())
        if source not in self._steady:
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="ivrscript-espeak-")
                atexit.register(shutil.rmtree, self._folder, True)
            with open(source, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
            target = os.path.join(self._folder, f"voice-{len(self._steady)}")
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text.rstrip("\n") + "\nflutter 0\n")
            self._steady[source] = target
        return self._steady[source]

    def __call__(self, text: str, voice: str | None, rate: float | None) -> bytes:
        with self._lock:
            lib = self._load()
            if lib.espeak_SetVoiceByFile(self._voice_file(voice).encode()) != _EE_OK:
                raise RuntimeError(f"eSpeak NG could not load the voice {voice!r}")
            lib.espeak_SetSynthCallback(self._callback)  # ours, even if another engine set its
            lib.espeak_SetParameter(_RATE, words_per_minute(rate), 0)
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            error = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                     _CHARS_UTF8 | _ENDPAUSE, None, None)
            if error != _EE_OK:
                raise RuntimeError(f"eSpeak NG could not synthesise the text (error {error})")
            samples, self._chunks = b"".join(self._chunks), []
            return _wav(samples, self._rate)


class ESpeakProgram:
    """The ``espeak-ng`` program on PATH, run once per text."""

    name = "espeak-ng-program"

    def __init__(self, program: str) -> None:
        self.program = program
        self._voices: list[str] | None = None

    def voices(self) -> list[str]:
        if self._voices is None:
            out = subprocess.run([self.program, "--voices"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
            rows = [line.split() for line in out.splitlines()[1:]]  # Pty Language Age Name File
            self._voices = sorted({row[1].lower() for row in rows if len(row) > 4} |
                                  {os.path.basename(row[4]).lower() for row in rows
                                   if len(row) > 4})
        return list(self._voices)

    def check_voice(self, voice: str | None) -> str:
        """The program's name for ``voice``; ``ValueError`` naming a few that exist if it has
        none."""
        name = _ALIASES.get((voice or DEFAULT_VOICE).lower(), (voice or DEFAULT_VOICE).lower())
        if name not in self.voices():
            raise _unknown_voice(voice or name, self.voices())
        return name

    def __call__(self, text: str, voice: str | None, rate: float | None) -> bytes:
        name = self.check_voice(voice)
        done = subprocess.run([self.program, "-v", name, "-s", str(words_per_minute(rate)),
                               "--stdout", "--", text], capture_output=True, timeout=60,
                              check=False)
        if done.returncode != 0 or not done.stdout:
            raise RuntimeError(f"{self.program} failed: "
                               f"{done.stderr.decode(errors='replace').strip()[:200]}")
        return _rewrap(done.stdout)


def _rewrap(streamed: bytes) -> bytes:
    """``espeak-ng --stdout`` streams, so its WAV header claims a huge length: rebuild it from
    the sample rate in the header and the samples after the data chunk's header."""
    data = streamed.find(b"data")
    if not streamed.startswith(b"RIFF") or data < 0 or len(streamed) < 28:
        raise RuntimeError("espeak-ng --stdout did not write a WAV")
    rate = int.from_bytes(streamed[24:28], "little")
    samples = streamed[data + 8:]
    return _wav(samples[: len(samples) // 2 * 2], rate)


_found: ESpeakLibrary | ESpeakProgram | None = None
_found_lock = threading.Lock()


def find_engine() -> Callable[[str, str | None, float | None], bytes] | None:
    """The local eSpeak NG engine: the wheel's library if installed, else the program on PATH,
    else None."""
    global _found
    with _found_lock:
        if _found is None:
            try:
                import espeakng_loader
            except ImportError:
                program = shutil.which("espeak-ng")
                if program:
                    _found = ESpeakProgram(program)
            else:
                _found = ESpeakLibrary(espeakng_loader.get_library_path(),
                                       espeakng_loader.get_data_path())
        return _found
