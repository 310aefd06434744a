"""Local prompt files: where a relative path is looked up, the URL the app serves it at, its
length, and whether the platform can play it well (standard library only)."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import threading
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .engine import Media
from .errors import CommandFailed
from .tts import Speech, Synthesizer
from .wav import wav_seconds

__all__ = ["MediaLibrary", "PromptNotFound", "find_media", "is_remote", "prompt_problem"]

log = logging.getLogger("ivrscript.media")


class PromptNotFound(CommandFailed):
    """A local prompt file is in none of the folders searched."""


def find_media(ref: str, search_dirs: Sequence[str | None] = ()) -> str | None:
    """The absolute path of a local media reference: as given if absolute, else looked up in
    each of ``search_dirs``, then the working directory; None if it is in none."""
    ref = os.path.expanduser(ref)
    if os.path.isabs(ref):
        return ref if os.path.isfile(ref) else None
    for folder in [*(d for d in search_dirs if d), os.getcwd()]:
        candidate = os.path.join(folder, ref)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


_reported: set[tuple[str, float]] = set()  # (path, mtime) of problems said once already
_reported_lock = threading.Lock()


def first_report(path: str) -> bool:
    """True the first time a prompt file's problem is reported in this process (the loader's
    check before any call, or the first play): it is said once, not at every call."""
    try:
        key = (os.path.abspath(path), os.path.getmtime(path))
    except OSError:
        return True
    with _reported_lock:
        if key in _reported:
            return False
        _reported.add(key)
        return True


def prompt_problem(path: str) -> str | None:
    """One sentence if the platform cannot play ``path`` well (not an 8 kHz mono PCM WAV,
    unreadable), naming the file, what it is and the fix; None for a good prompt."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        return f"prompt {path} cannot be read ({error.strerror}): check its permissions"
    fix = f"convert it with 'python -m ivrscript prompts convert {path}'"
    unknown = ("; ivrscript cannot tell its length, so a collect's timeout would include the "
               "time it plays")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        try:
            with wave.open(path, "rb") as w:
                rate, channels = w.getframerate(), w.getnchannels()
        except (wave.Error, EOFError) as error:
            return (f"prompt {path} is a WAV file the platform may not play ({error}, not "
                    f"PCM){unknown}: {fix}")
        if rate == 8000 and channels == 1:
            return None
        layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}-channel"
        return (f"prompt {path} is a {rate / 1000:g} kHz {layout} WAV, not the 8 kHz mono the "
                f"platform plays: {fix}")
    if not head:
        what = "an empty file"
    elif head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        what = "an MP3" + (" renamed .wav" if path.lower().endswith(".wav") else "")
    elif _is_text(head):
        what = "a text file"
    else:
        what = "not a WAV file"
    return f"prompt {path} is {what}, not an 8 kHz mono PCM WAV{unknown}: {fix}"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-3].decode("utf-8", "replace") if len(head) > 3 else ""
        if "\ufffd" in text:
            return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


@dataclass(frozen=True)
class _Entry:
    path: str
    name: str
    seconds: float | None
    content_type: str


class MediaLibrary:
    """Maps local media files to URLs under ``base_url`` and serves them back by id.

    A relative path is looked up in each of ``search_dirs`` in order (the script's folder, then
    the working directory). ``base_url`` is set when the app knows its public address.
    """

    speech: Synthesizer | None = None  # spoken prompts' engine and cache (None: eSpeak NG)

    def __init__(self, search_dirs: Sequence[str | None] = ()) -> None:
        self.search_dirs = [d for d in search_dirs if d]
        self.base_url = ""
        self._by_id: dict[str, _Entry] = {}
        self._by_path: dict[tuple[str, float], tuple[str, _Entry]] = {}
        self._lock = threading.Lock()

    def find(self, ref: str) -> str | None:
        """The absolute path of a local media reference, or None."""
        return find_media(ref, self.search_dirs)

    def resolve(self, ref: str) -> Media:
        """A :class:`Media` for an http(s) URL or a local file; :class:`PromptNotFound` (a
        CommandFailed) if it is missing. A file the platform cannot play well is logged as a
        warning when it is first resolved."""
        if isinstance(ref, Speech):
            return self.resolve_speech(ref)
        if is_remote(ref):
            return Media(ref, None)
        path = self.find(ref)
        if path is None:
            places = ", ".join(dict.fromkeys([*self.search_dirs, os.getcwd()]))
            raise PromptNotFound(f"prompt file not found: {ref!r} (looked in {places})")
        media_id, entry = self._register(path)
        return Media(f"{self.base_url}/media/{media_id}/{quote(entry.name)}", entry.seconds)

    def _register(self, path: str) -> tuple[str, _Entry]:
        mtime = os.path.getmtime(path)
        with self._lock:
            known = self._by_path.get((path, mtime))
            if known:
                return known
        seconds = wav_seconds(path)
        problem = prompt_problem(path)
        if problem and first_report(path):
            log.warning("%s", problem)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if path.lower().endswith(".wav"):
            ctype = "audio/wav"
        entry = _Entry(path, os.path.basename(path), seconds, ctype)
        media_id = hashlib.sha256(f"{path}:{mtime}".encode()).hexdigest()[:16]
        with self._lock:
            self._by_id[media_id] = entry
            self._by_path[(path, mtime)] = (media_id, entry)
        return media_id, entry

    def resolve_speech(self, item: Speech) -> Media:
        """A spoken prompt as a cached 8 kHz WAV served like a local file, its length known;
        CommandFailed (at the yield) if the engine fails."""
        if self.speech is None:
            self.speech = Synthesizer()
        try:
            path, seconds = self.speech.render(item)
        except Exception as error:  # a cloud engine down, an unknown voice, no engine at all
            raise CommandFailed(f"{item} could not be spoken: {error}") from error
        media_id = hashlib.sha256(f"speech:{path}".encode()).hexdigest()[:16]
        entry = _Entry(path, item.file_name(), seconds, "audio/wav")
        with self._lock:
            self._by_id[media_id] = entry
        return Media(f"{self.base_url}/media/{media_id}/{quote(entry.name)}", seconds)

    def lookup(self, media_id: str, name: str) -> tuple[str, str] | None:
        """(path, content type) of a served file, or None."""
        with self._lock:
            entry = self._by_id.get(media_id)
        if entry is None or entry.name != name or not os.path.isfile(entry.path):
            return None
        return entry.path, entry.content_type
