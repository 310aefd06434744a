"""Local prompt files: where a relative path is looked up, the URL the app serves it at, and
its length (standard library only)."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .engine import Media
from .errors import CommandFailed
from .wav import wav_seconds

__all__ = ["MediaLibrary", "is_remote"]


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

    def __init__(self, search_dirs: Sequence[str | None] = ()) -> None:
        self.search_dirs = [d for d in search_dirs if d]
        self.base_url = ""
        self._by_id: dict[str, _Entry] = {}
        self._by_path: dict[tuple[str, float], tuple[str, _Entry]] = {}
        self._lock = threading.Lock()

    def find(self, ref: str) -> str | None:
        """The absolute path of a local media reference, or None."""
        ref = os.path.expanduser(ref)
        if os.path.isabs(ref):
            return ref if os.path.isfile(ref) else None
        for folder in [*self.search_dirs, os.getcwd()]:
            candidate = os.path.join(folder, ref)
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        return None

    def resolve(self, ref: str) -> Media:
        """A :class:`Media` for an http(s) URL or a local file; CommandFailed if it is missing."""
        if is_remote(ref):
            return Media(ref, None)
        path = self.find(ref)
        if path is None:
            places = ", ".join([*self.search_dirs, os.getcwd()])
            raise CommandFailed(f"media file not found: {ref!r} (looked in {places})")
        media_id, entry = self._register(path)
        return Media(f"{self.base_url}/media/{media_id}/{entry.name}", entry.seconds)

    def _register(self, path: str) -> tuple[str, _Entry]:
        mtime = os.path.getmtime(path)
        with self._lock:
            known = self._by_path.get((path, mtime))
            if known:
                return known
        seconds = wav_seconds(path)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if path.lower().endswith(".wav"):
            ctype = "audio/wav"
        entry = _Entry(path, os.path.basename(path), seconds, ctype)
        media_id = hashlib.sha256(f"{path}:{mtime}".encode()).hexdigest()[:16]
        with self._lock:
            self._by_id[media_id] = entry
            self._by_path[(path, mtime)] = (media_id, entry)
        return media_id, entry

    def lookup(self, media_id: str, name: str) -> tuple[str, str] | None:
        """(path, content type) of a served file, or None."""
        with self._lock:
            entry = self._by_id.get(media_id)
        if entry is None or entry.name != name or not os.path.isfile(entry.path):
            return None
        return entry.path, entry.content_type
