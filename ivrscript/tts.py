"""Spoken text prompts: ``ivr.speech(text)`` and ``ivr.say(text)``, the engine protocol and the
on-disk cache of synthesised prompts.

A :class:`Speech` item is a media item like a file path or a URL: ``play(...)``,
``collect(prompt=...)`` and ``menu(...)`` take it, mixed with files and URLs. The app turns it
into an 8 kHz mono 16-bit PCM WAV (what the platform plays), cached on disk by a hash of
(engine, voice, rate, text), served by its listener like a local prompt, its length known.
The cache is bounded (200 MB by default, ``$IVRSCRIPT_SPEECH_CACHE_MB``): the least recently
used prompts are evicted past it.

An engine is any callable ``engine(text, voice, rate) -> bytes`` returning audio (WAV, MP3,
FLAC or Ogg; anything not 8 kHz mono WAV is converted). The default is eSpeak NG, local and
offline (:mod:`ivrscript.espeak`). This module (``ivrscript.tts``: ``ivrscript.speech`` is the
function) imports only the standard library.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import inspect
import io
import json
import os
import re
import tempfile
import textwrap
import threading
import time
import wave
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from urllib.parse import unquote

from .commands import Play, play
from .errors import ConfigError
from .text import clean

__all__ = ["DEFAULT_CACHE_MB", "MAX_TEXT", "SAY_AS", "Speech", "SpeechEngine", "Synthesizer", "heard", "say",
           "speech", "speech_for_app", "spoken_in", "uses_speech"]

MAX_TEXT = 2000  # characters; cloud engines cap a request at a few thousand
SAY_AS = ("digits", "number", "money", "date", "time")
_INSTALL = 'pip install "ivrscript[speech]" (eSpeak NG and miniaudio wheels, no system package)'


class SpeechEngine(Protocol):
    """Turns text into audio bytes (WAV, MP3, FLAC or Ogg). ``voice`` and ``rate`` are None for
    the engine's defaults; ``rate`` is relative to normal speech (1.0). An unknown voice is a
    ``ValueError`` naming a few that exist. An optional ``name`` attribute keys the cache; an
    optional ``check_voice(voice)`` method (raising that ``ValueError``) lets the App check
    the voices written in a script before any call."""

    def __call__(self, text: str, voice: str | None, rate: float | None) -> bytes: ...


class Speech(str):
    """Text to speak, as a media item. Its string value is how transcripts show it:
    ``say "Welcome to Acme"`` (with the voice and rate when given)."""

    text: str
    voice: str | None
    rate: float | None

    def __new__(cls, text: str, voice: str | None = None, rate: float | None = None) -> Speech:
        # Quoted, with control characters escaped: text may come from outside (a name read
        # from a CRM) and transcripts are printed on terminals.
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        shown = f'say "{clean(quoted, limit=len(quoted) + 1)}"'
        extra = [f"voice {voice}"] if voice else []
        if rate is not None:
            extra.append(f"rate {rate:g}")
        if extra:
            shown += f" ({', '.join(extra)})"
        obj = super().__new__(cls, shown)
        obj.text, obj.voice, obj.rate = text, voice, rate
        return obj

    def __repr__(self) -> str:
        return f"speech({self.text!r}, voice={self.voice!r}, rate={self.rate!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Speech, (self.text, self.voice, self.rate))

    def file_name(self) -> str:
        """The name the listener serves it under: readable in cassettes and in logs."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.text).strip("-")[:60].rstrip("-")
        return f"say-{slug or 'speech'}.wav"


def heard(uri: str, call: Any = None) -> str:
    """What a media URL the platform plays is, for a person: a spoken prompt's words as
    transcripts show them (``say "Welcome ..."``, found among the media of ``call``'s commands
    by the name it is served under), else the last segment of the URL, unquoted
    (``menu#2.wav``, not ``menu%232.wav``)."""
    name = unquote(uri.rstrip("/").rsplit("/", 1)[-1]) or uri
    events = list(call.transcript) if call is not None else []
    for event in reversed(events):
        command = event.data.get("command")
        media = getattr(command, "media", None) or getattr(command, "prompt", None)
        for item in media or ():
            if isinstance(item, Speech) and item.file_name() == name:
                return str(item)
    return name


def speech(text: Any, *, voice: str | None = None, rate: float | None = None,
           as_: str | None = None) -> Speech:
    """Text spoken to the caller: a media item for ``play``, ``collect(prompt=...)``, ``menu``.

    ``voice`` is an engine voice (eSpeak NG: ``"en-us"`` by default, ``"en-gb"``, ``"fr"``, ...),
    ``rate`` the speed relative to normal (1.0; 0.25 to 4). ``as_`` reads a value in English:
    ``"digits"`` one by one (``"1 2 3 4"``), ``"number"``, ``"money"`` (dollars and cents),
    ``"date"`` or ``"time"`` (``datetime`` values or ISO strings). Empty text or text over
    2,000 characters is a ``ValueError``.
    """
    if as_ is not None:
        text = say_as(text, as_)
    if not isinstance(text, str):
        raise TypeError(f"speech() needs text (a str), got {text!r}; use as_= for numbers, "
                        "money, dates and times")
    if not text.strip():
        raise ValueError("speech() needs some text to speak, got an empty string")
    if len(text) > MAX_TEXT:
        raise ValueError(f"speech() text is {len(text)} characters, over {MAX_TEXT}: split it "
                         "into several prompts")
    if voice is not None and (not isinstance(voice, str) or not voice.strip()):
        raise ValueError(f"voice must be a voice name such as 'en-us', got {voice!r}")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.25 <= rate <= 4:
            raise ValueError(f"rate is relative to normal speech (1.0), from 0.25 to 4; "
                             f"got {rate!r}")
        rate = float(rate)
    return Speech(text, voice, rate)


def say(text: Any, *, voice: str | None = None, rate: float | None = None,
        interrupt_by_dtmf: bool = False, as_: str | None = None) -> Play:
    """Speak ``text`` to the caller: ``play(speech(text, ...))``. Resumes with a PlayResult."""
    return play(speech(text, voice=voice, rate=rate, as_=as_), interrupt_by_dtmf=interrupt_by_dtmf)


# -- say-as: English words for digits, numbers, money, dates and times ------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_KEYS = {"*": "star", "#": "pound"}


def _words(n: int) -> str:
    if n < 0:
        return "minus " + _words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{_ONES[n // 100]} hundred" + (f" {_words(n % 100)}" if n % 100 else "")
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return f"{_words(n // scale)} {name}" + (f" {_words(rest)}" if rest else "")
    raise AssertionError(n)


def _ordinal(n: int) -> str:
    words = _words(n)
    head, sep, last = words.rpartition("-" if "-" in words.split()[-1] else " ")
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def _year(y: int) -> str:
    if 2000 <= y <= 2009 or y % 100 == 0 and y % 1000 == 0:
        return _words(y)
    if y % 100 == 0:
        return f"{_words(y // 100)} hundred"
    head = _words(y // 100)
    tail = y % 100
    return f"{head} {_words(tail) if tail >= 10 else 'oh ' + _words(tail)}"


def _decimal(value: Any, kind: str) -> Decimal:
    text = str(value).strip().replace(",", "")
    if kind == "money":
        text = text.lstrip("$")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"speech(as_={kind!r}) needs a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"speech(as_={kind!r}) needs a finite number, got {value!r}")
    return number


def _number(value: Any) -> str:
    number = _decimal(value, "number")
    sign = "minus " if number < 0 else ""
    whole, _, fraction = f"{abs(number):f}".partition(".")
    text = sign + _words(int(whole))
    if fraction.rstrip("0"):
        text += " point " + " ".join(_ONES[int(d)] for d in fraction.rstrip("0"))
    return text


def _money(value: Any) -> str:
    amount = _decimal(value, "money").quantize(Decimal("0.01"))
    sign = "minus " if amount < 0 else ""
    cents_total = int(abs(amount) * 100)
    dollars, cents = divmod(cents_total, 100)
    text = f"{sign}{_words(dollars)} dollar{'' if dollars == 1 else 's'}"
    if cents:
        text += f" and {_words(cents)} cent{'' if cents == 1 else 's'}"
    return text


def _date(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"speech(as_='date') needs a date or an ISO date such as "
                             f"'2026-12-01', got {value!r}") from None
    if not isinstance(value, dt.date):
        raise ValueError(f"speech(as_='date') needs a date, got {value!r}")
    return f"{value:%A}, {value:%B} {_ordinal(value.day)}, {_year(value.year)}"


def _time(value: Any) -> str:
    if isinstance(value, dt.datetime):
        value = value.time()
    if isinstance(value, str):
        try:
            value = dt.time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"speech(as_='time') needs a time or an ISO time such as '14:05', "
                             f"got {value!r}") from None
    if not isinstance(value, dt.time):
        raise ValueError(f"speech(as_='time') needs a time, got {value!r}")
    hour = value.hour % 12 or 12
    if value.minute == 0:
        minutes = ""
    elif value.minute < 10:
        minutes = f" oh {_words(value.minute)}"
    else:
        minutes = f" {_words(value.minute)}"
    return f"{_words(hour)}{minutes} {'AM' if value.hour < 12 else 'PM'}"


def _digits(value: Any) -> str:
    chars = [c for c in str(value) if not c.isspace() and c not in "-().+"]
    if not chars:
        raise ValueError(f"speech(as_='digits') needs some digits, got {value!r}")
    return " ".join(_KEYS.get(c, c) for c in chars)


def say_as(value: Any, kind: str) -> str:
    """The English words ``speech(value, as_=kind)`` speaks."""
    readers: dict[str, Callable[[Any], str]] = {"digits": _digits, "number": _number,
                                                "money": _money, "date": _date, "time": _time}
    reader = readers.get(kind)
    if reader is None:
        raise ValueError(f"as_ must be one of {', '.join(SAY_AS)}, got {kind!r}")
    return reader(value)


# -- synthesis and the cache ------------------------------------------------------------------


def default_cache_dir() -> str:
    """``$IVRSCRIPT_SPEECH_CACHE``, else ``$XDG_CACHE_HOME/ivrscript/speech`` (``~/.cache``)."""
    given = os.environ.get("IVRSCRIPT_SPEECH_CACHE")
    if given:
        return os.path.expanduser(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ivrscript", "speech")


DEFAULT_CACHE_MB = 200  # the speech cache's default bound on disk: some 3.5 hours of audio
CACHE_SIZE_ENV = "IVRSCRIPT_SPEECH_CACHE_MB"


def default_cache_bytes() -> int:
    """``$IVRSCRIPT_SPEECH_CACHE_MB`` megabytes (10**6 bytes), else 200 MB."""
    given = os.environ.get(CACHE_SIZE_ENV, "").strip()
    if not given:
        return DEFAULT_CACHE_MB * 10**6
    try:
        megabytes = float(given)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise ConfigError(f"{CACHE_SIZE_ENV} must be a number of megabytes above 0 (such as "
                          f"{DEFAULT_CACHE_MB}), got {clean(given, 40)!r}")
    return int(megabytes * 10**6)


def _engine_name(engine: Any) -> str:
    name = getattr(engine, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(engine, "__qualname__", type(engine).__qualname__)
    return f"{getattr(engine, '__module__', '?')}.{qualname}"


def _is_platform_wav(data: bytes) -> bool:
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == \
                (8000, 1, 2, "NONE")
    except (wave.Error, EOFError):
        return False


def _wav_length(path: str) -> float:
    with wave.open(path, "rb") as w:
        return w.getnframes() / w.getframerate()


class Synthesizer:
    """An engine and its on-disk cache: ``render(item)`` gives the WAV's path and length.

    ``engine`` defaults to the local eSpeak NG; ``cache_dir`` to :func:`default_cache_dir`.
    A prompt already in the cache is not synthesised again (``synthesised`` counts the
    engine calls) while it stays there: the cache holds at most ``max_bytes`` of prompts
    (default :func:`default_cache_bytes`, 200 MB). Past that, the least recently used ones
    go first (a prompt's file time is when it was last used; ``evicted`` counts them), down
    to 90% of the bound, but never one used in the last ``keep_recent`` seconds (a prompt
    the platform may still be fetching), so the folder can be over its bound for a while
    when more than that is spoken within a minute.
    """

    keep_recent = 60.0  # seconds: a prompt used this recently is never evicted
    low_water = 0.9  # eviction goes down to this share of max_bytes

    def __init__(self, engine: SpeechEngine | None = None, cache_dir: str | None = None,
                 max_bytes: int | None = None) -> None:
        self._engine = engine
        self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        if max_bytes is None:
            max_bytes = default_cache_bytes()
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a whole number of bytes >= 1, got "
                             f"{max_bytes!r}")
        self.max_bytes = max_bytes
        self.synthesised = 0
        self.evicted = 0
        self._size: int | None = None  # bytes in the folder, as last scanned plus our writes
        self._lock = threading.Lock()
        # Two calls asking for one new prompt synthesise it once; striped, so prompts with
        # dynamic text (a PIN read back) leave no lock behind each.
        self._stripes = [threading.Lock() for _ in range(32)]

    @property
    def engine(self) -> SpeechEngine:
        """The engine; ``ConfigError`` saying what to install when there is none."""
        if self._engine is None:
            from .espeak import find_engine

            found = find_engine()
            if found is None:
                raise ConfigError(f"spoken prompts need a text-to-speech engine: {_INSTALL}, "
                                  "or pass one as App(speech=...)")
            self._engine = found
        return self._engine

    def check(self) -> None:
        """Fail now, not mid-call: ``ConfigError`` if there is no engine or the cache folder
        cannot be written."""
        _ = self.engine
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.cache_dir, prefix=".probe-"):
                pass
        except OSError as error:
            raise ConfigError(f"the speech cache folder {self.cache_dir} is not writable "
                              f"({error.strerror or error}); set IVRSCRIPT_SPEECH_CACHE or "
                              "pass Synthesizer(cache_dir=...) as App(speech=...)") from None

    def key(self, item: Speech) -> str:
        raw = json.dumps([_engine_name(self.engine), item.voice, item.rate, item.text])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def render(self, item: Speech) -> tuple[str, float]:
        """(path, seconds) of ``item`` as an 8 kHz mono WAV, synthesising it on a cache miss.
        The engine's own errors (an unknown voice, a cloud service down) propagate."""
        key = self.key(item)
        path = os.path.join(self.cache_dir, f"{key}.wav")
        with self._stripes[int(key[:8], 16) % len(self._stripes)]:
            if os.path.isfile(path):
                try:
                    seconds = _wav_length(path)
                except (wave.Error, EOFError, ZeroDivisionError):
                    pass  # a damaged entry (a full disk, a hand edit): synthesise it again
                except OSError:
                    pass  # evicted meanwhile (by another process sharing the folder)
                else:
                    try:
                        os.utime(path)  # used now: the file's time orders eviction
                    except OSError:
                        pass
                    return path, seconds
            data = self.engine(item.text, item.voice, item.rate)
            with self._lock:
                self.synthesised += 1
            if not isinstance(data, bytes | bytearray) or not data:
                raise TypeError(f"the speech engine returned {type(data).__name__}, not audio "
                                "bytes")
            if not _is_platform_wav(bytes(data)):
                from .audio import to_platform_wav

                data = to_platform_wav(bytes(data))
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)  # readers never see half a file
            seconds = _wav_length(path)
        self._added(len(data), path)
        return path, seconds

    def _added(self, size: int, path: str) -> None:
        """Count a new entry; over the bound, evict (least recently used first)."""
        with self._lock:
            if self._size is None:
                self._size = self._scan()[0]  # the first write of this process: one scan
            else:
                self._size += size
            if self._size <= self.max_bytes:
                return
            self._evict(keep=path)

    def _scan(self) -> tuple[int, list[tuple[float, int, str]]]:
        """(total bytes, [(mtime, size, path)] of the cached prompts); stale temporary files
        of writers that died are removed on the way."""
        entries: list[tuple[float, int, str]] = []
        total = 0
        now = time.time()
        try:
            listing = list(os.scandir(self.cache_dir))
        except OSError:
            return 0, []
        for entry in listing:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.name.endswith(".tmp") and now - info.st_mtime > 3600:
                _remove(entry.path)
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(".wav"):
                entries.append((info.st_mtime, info.st_size, entry.path))
                total += info.st_size
        return total, entries

    def _evict(self, keep: str) -> None:
        total, entries = self._scan()  # the truth: other processes may share the folder
        target = int(self.max_bytes * self.low_water)
        recent = time.time() - self.keep_recent
        for mtime, size, path in sorted(entries):
            if total <= target or mtime >= recent:
                break  # oldest first: the rest are newer
            if path == keep:
                continue
            if _remove(path):
                self.evicted += 1
            total -= size
        self._size = total


def _remove(path: str) -> bool:
    try:
        os.remove(path)
    except OSError:  # another process removed it first, say
        return False
    return True


def synthesizer_for(speech: Any) -> Synthesizer:
    """What ``App(speech=...)`` takes: None (eSpeak NG), an engine (any callable) or a
    :class:`Synthesizer`."""
    if speech is None or isinstance(speech, Synthesizer):
        return speech if speech is not None else Synthesizer()
    if not callable(speech):
        raise ValueError(f"speech must be an engine (a function text, voice, rate -> WAV bytes) "
                         f"or a Synthesizer, got {speech!r}")
    return Synthesizer(speech)


def speech_for_app(speech: Any, script: Callable[..., Any]) -> Synthesizer:
    """The synthesizer for ``App(speech=..., ...)``, checked now when the script uses spoken
    prompts or one was given: ``ConfigError`` for no engine or a cache folder that cannot be
    written, ``ValueError`` for a voice the engine does not have, written as a literal
    ``voice="..."`` in the script (with its file and line)."""
    synthesizer = synthesizer_for(speech)
    uses, voices = spoken_in(script)
    if speech is not None or uses:
        synthesizer.check()
    check_voice = getattr(synthesizer.engine, "check_voice", None) if uses else None
    for voice, where in voices:
        if callable(check_voice):
            try:
                check_voice(voice)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
    return synthesizer


_USES = re.compile(r"\b(say|speech)\s*\(")


def uses_speech(script: Callable[..., Any]) -> bool:
    """Whether the module that defines ``script`` calls ``say(`` or ``speech(`` (found in its
    source; a helper sub-flow elsewhere in the module counts)."""
    try:
        source = inspect.getsource(inspect.getmodule(script) or script)
    except (OSError, TypeError):  # a notebook cell: only the function's own source
        return bool(_calls(script)[0])
    if not _USES.search(source):
        return False
    tree = _parse(source)
    return tree is None or bool(_calls_in(tree))  # None: cannot tell, so check the engine


def spoken_in(script: Callable[..., Any]) -> tuple[bool, list[tuple[str, str]]]:
    """Whether ``script``'s module speaks (:func:`uses_speech`), and the literal
    ``voice="..."`` values of the ``say``/``speech`` calls in ``script`` itself, each with its
    ``file:line`` (other scripts of the module may use other engines)."""
    return uses_speech(script), _calls(script)[1]


def _parse(source: str) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None


def _calls_in(tree: ast.AST) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("say", "speech"):
                found.append(node)
    return found


def _calls(script: Callable[..., Any]) -> tuple[int, list[tuple[str, str]]]:
    """(how many say/speech calls ``script``'s own source has, its literal voices)."""
    try:
        lines, first = inspect.getsourcelines(script)
        filename = inspect.getsourcefile(script) or "<script>"
    except (OSError, TypeError):
        return 0, []
    tree = _parse("".join(lines))
    if tree is None:
        return 0, []
    calls = _calls_in(tree)
    voices = []
    for node in calls:
        for keyword in node.keywords:
            value = keyword.value
            if keyword.arg == "voice" and isinstance(value, ast.Constant) and \
                    isinstance(value.value, str):
                voices.append((value.value, f"{filename}:{node.lineno + first - 1}"))
    return len(calls), voices
