"""Recording calls as vcrpy cassettes, and replaying them: the one module that imports vcrpy
and yaml.

A cassette is vcrpy's YAML file: the call's REST interactions, plus a top-level ``ivrscript``
key with the script's name, when it was recorded, the inbound callbacks in arrival order (each
with ``after``: how many of the call's REST interactions had completed when it arrived), the
transcript as the app saw it, the arguments of each command the script yielded and the result
of each ``ivr.effect`` (its value, or its exception's type and message).

A cassette is written from the call's log (``ivrscript.durable``: a call is its log), when the
call ends, by the process that ends it: the enter, each callback, each request the script
issued with its outcome, each effect's result. So a call that crossed a restart, or moved to
another process on a shared store, gets one cassette with the whole call, and nothing is
captured beside the log. Each REST request is rebuilt by the real client's command methods
from the logged arguments, and its answer from the logged outcome (the command id, or the
status, error code, message and Retry-After of an error); vcrpy serialises them.

Replay needs no HTTP stack: the cassette is parsed once (and kept while the file is
unchanged), and a :class:`RingCentral` whose ``request`` answers from the recording plays it
back, so the request bodies and the errors are the real client's; an effect gets its recorded
result and its function is never called.

What never reaches a file: Authorization headers, the token endpoint's exchanges (they are not
in a call's log), token-like fields in bodies, the listener's secret (local media URLs are
rewritten to ``https://app.ivrscript.invalid/media/NAME``), the keys of a
``collect(..., sensitive=True)`` and, with ``numbers=False``, phone numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import hashlib
import http
import json
import linecache
import logging
import os
import re
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from vcr.filters import remove_headers
from vcr.request import Request as VcrRequest
from vcr.serialize import deserialize, serialize
from vcr.serializers import yamlserializer

from . import commands as _commands
from .call import RESULT, Call, Transcript, TranscriptEvent, mask_number
from .dispatch import call_from_enter, callback_event, send_with
from .durable import _rebuild_error
from .engine import CallEngine, EffectDone, Finished, Media, Request, Wait
from .errors import ConfigError, IvrError, ReplayMismatch
from .listener import CALLBACKS
from .loader import check_script, script_dir
from .media import MediaLibrary
from .ringcentral import RingCentral, error_for
from .text import shown

__all__ = ["Recorder", "replay", "load_recording", "Recording", "APP_MEDIA"]

log = logging.getLogger("ivrscript.recorder")

APP_MEDIA = "https://app.ivrscript.invalid/media"  # what local media URLs become in a cassette
_REPLAY_SERVER = "http://platform.replay.invalid"  # replay's client; never resolved or reached
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C ones when libyaml is there
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_CANCEL_PATH = re.compile(r"/play/[^/]+$")
_SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token", "assertion", "jwt",
                          "client_secret", "password", "token"})
_SENSITIVE_HEADERS = ("Authorization", "authorization", "Cookie", "cookie", "Set-Cookie",
                      "set-cookie", "WWW-Authenticate", "www-authenticate")


# -- scrubbing --------------------------------------------------------------------------------


def _body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, bytes | bytearray):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(body)


def _scrub_json(value: Any, mask_numbers: bool) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _SECRET_KEYS and isinstance(item, str):
                out[key] = "<filtered>"
            elif key == "phoneNumber" and mask_numbers and isinstance(item, str):
                out[key] = mask_number(item)
            else:
                out[key] = _scrub_json(item, mask_numbers)
        return out
    if isinstance(value, list):
        return [_scrub_json(item, mask_numbers) for item in value]
    return value


def _phone_numbers(value: Any) -> list[str]:
    """Every ``phoneNumber`` value in JSON data (so the transcript can be masked too)."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "phoneNumber" and isinstance(v, str)
                 and len(v) > 2]
        return found + [n for v in value.values() for n in _phone_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _phone_numbers(v)]
    return []


def mask_numbers_in(line: str) -> str:
    """Mask what looks like a phone number (7+ digits, optional +) in a line of text."""
    return re.sub(r"\+?\d{7,}", lambda m: mask_number(m.group(0)), line)


@dataclass
class _Scrubber:
    """Rewrites what a cassette must not hold: the listener's secret, tokens, numbers."""

    media_base: Callable[[], str]  # the app's current {public_url}/{secret}
    secret: str
    mask_numbers: bool
    numbers: set[str] = field(default_factory=set)

    def text(self, text: str) -> str:
        base = self.media_base()
        if base:
            text = re.sub(re.escape(base) + r"/media/[^/\"'\s]+/", APP_MEDIA + "/", text)
        text = text.replace(self.secret, "<secret>")
        if self.mask_numbers:
            for number in sorted(self.numbers, key=len, reverse=True):
                text = text.replace(number, mask_number(number))
        return text

    def body(self, body: Any) -> Any:
        text = _body_text(body)
        if text is None:
            return body
        try:
            parsed = json.loads(text)
        except ValueError:
            scrubbed = self.text(text)
        else:
            if self.mask_numbers:
                self.numbers.update(_phone_numbers(parsed))
            scrubbed = self.text(json.dumps(_scrub_json(parsed, self.mask_numbers)))
        return scrubbed.encode("utf-8") if isinstance(body, bytes | bytearray) else scrubbed

    def data(self, value: Any) -> Any:
        """A callback body (JSON data): scrubbed the same way."""
        return json.loads(self.text(json.dumps(_scrub_json(value, self.mask_numbers))))

# -- recording --------------------------------------------------------------------------------


MAX_RECORDING_CALLS = 1_000  # calls recorded at once; more are not recorded (logged)
MAX_RECORDING_ENTRIES = 5_000  # callbacks + REST exchanges kept per call; past it: not written
SENSITIVE = "****"  # what a cassette holds instead of the keys of a sensitive collect


class Recorder:
    """Writes one cassette per finished call into ``directory`` (``App(record=...)``).

    The cassette is built when the call ends, by the process that ends it, from the call's log
    in the app's store (``ivrscript.durable``): the enter, every callback, every request with
    its outcome, every effect's result. So a call that crossed a restart (or moved between
    processes sharing a store) gets one cassette with the whole call; nothing is captured on
    the side.

    ``numbers=False`` masks phone numbers (callbacks, REST bodies, transcript). ``paths`` maps
    each written call's session id to its file. What a flood of calls can write is bounded:
    ``max_calls`` calls are recorded at once (later ones are not recorded, with a warning) and
    a call with more than ``max_entries`` callbacks and REST exchanges is not written
    (defaults: :data:`MAX_RECORDING_CALLS`, :data:`MAX_RECORDING_ENTRIES`).
    """

    def __init__(self, app: Any, directory: str | os.PathLike[str], *,
                 numbers: bool = True, max_calls: int | None = None,
                 max_entries: int | None = None) -> None:
        self.app = app
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot record calls into {self.directory!r}: "
                              f"{error.strerror or error}") from None
        self.numbers = numbers
        self.max_calls = MAX_RECORDING_CALLS if max_calls is None else max_calls
        self.max_entries = MAX_RECORDING_ENTRIES if max_entries is None else max_entries
        # The latest cassettes by session id (bounded: an app may run for months).
        self.paths: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._sessions: dict[str, None] = {}  # calls that entered here and are in progress
        self._refused = 0  # calls not recorded because max_calls were in progress
        self._skipped: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._saved = threading.Condition(self._lock)
        self._server = str(getattr(app.client, "server_url", "") or _REPLAY_SERVER).rstrip("/")
        self._closed = False
        self._base = ""
        self._media_base()

    def _media_base(self) -> str:
        """The app's ``{public_url}/{secret}``, which local media URLs start with (the last
        one seen while it ran: a call's cassette may be written while the app stops)."""
        if self.app.running:
            try:
                self._base = f"{self.app.public_url}/{self.app.secret}"
            except IvrError:  # stopped in between
                pass
        return self._base

    # -- observer hooks (App) -----------------------------------------------------------------

    def callback(self, kind: str, body: dict[str, Any]) -> None:
        """A callback the app accepted (listener thread): an enter counts against
        ``max_calls`` (the callbacks themselves are in the call's log)."""
        session_id = body.get("sessionId")
        if kind != "on-call-enter" or not isinstance(session_id, str):
            return
        self._media_base()  # the app runs: remember where its media are
        with self._lock:
            if session_id in self._sessions or session_id in self._skipped:
                return
            if len(self._sessions) >= self.max_calls:
                self._skip(session_id)
                self._refused += 1
                if self._refused in (1, 10, 100) or self._refused % 1000 == 0:
                    log.warning("%d calls not recorded: %d calls are being recorded "
                                "already (the recorder's limit)", self._refused,
                                self.max_calls)
                return
            self._sessions[session_id] = None

    def finished(self, call: Call) -> None:
        """The call is over (worker thread): write its cassette from its log."""
        with self._lock:
            self._sessions.pop(call.session_id, None)
            if call.session_id in self._skipped:
                return
        try:
            entries = self.app.store.load(call.session_id)
        except Exception as error:  # noqa: BLE001 - a store failure loses the cassette only
            log.warning("call %s not recorded: its log could not be read (%s)",
                        shown(call.session_id), error)
            with self._lock:
                self._skip(call.session_id)
            return
        if sum(1 for e in entries if e.kind in ("callback", "outcome")) > self.max_entries:
            log.warning("call %s not recorded: more than %d callbacks and requests",
                        shown(call.session_id), self.max_entries)
            with self._lock:
                self._skip(call.session_id)
            return
        path = os.path.join(self.directory, cassette_name(call))
        try:
            story = _story(entries, self._server)
            if story is None:
                log.info("call %s not recorded: its log has no enter", shown(call.session_id))
                with self._lock:
                    self._skip(call.session_id)
                return
            self._write(path, call, story)
        except Exception:
            log.exception("could not write the cassette of call %s to %s",
                          shown(call.session_id), path)
            with self._lock:
                self._skip(call.session_id)
            return
        with self._saved:
            self.paths[call.session_id] = path
            while len(self.paths) > 10_000:
                self.paths.popitem(last=False)
            self._saved.notify_all()
        log.info("call %s recorded in %s", shown(call.session_id), path)

    def close(self) -> None:
        """Stop recording (calls still in progress get no cassette from this recorder)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            unfinished = list(self._sessions)
            self._sessions.clear()
        if unfinished:
            log.info("not recorded here (still in progress at stop): %s",
                     ", ".join(shown(s) for s in unfinished[:20]))

    def _skip(self, session_id: str) -> None:
        """Remember (under the lock, bounded) that this call gets no cassette, and wake
        whoever waits for one."""
        self._skipped[session_id] = None
        while len(self._skipped) > 10_000:
            self._skipped.popitem(last=False)
        self._saved.notify_all()

    def records(self, session_id: str) -> bool:
        """False if this call will get no cassette (over a limit, or its write failed)."""
        with self._lock:
            return session_id not in self._skipped

    def wait_for(self, session_id: str, timeout: float = 10.0) -> str:
        """The cassette path of a call, once written (waits up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._saved:
            while session_id not in self.paths:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no cassette for call {shown(session_id)} after "
                                       f"{timeout} s (has the call ended?)")
                self._saved.wait(left)
            return self.paths[session_id]

    @staticmethod
    def _clean_request(scrub: _Scrubber, request: VcrRequest) -> VcrRequest:
        request = remove_headers(request, (*_SENSITIVE_HEADERS, "Content-Length"))
        request.uri = scrub.text(request.uri)
        request.body = scrub.body(request.body_bytes)
        return request

    @staticmethod
    def _clean_response(scrub: _Scrubber, response: dict[str, Any]) -> dict[str, Any]:
        body = dict(response.get("body") or {})
        body["string"] = scrub.body(body.get("string"))
        headers = {key: value for key, value in (response.get("headers") or {}).items()
                   if key not in _SENSITIVE_HEADERS}
        for key in headers:
            if key.lower() == "content-length" and isinstance(body["string"], bytes | str):
                headers[key] = [str(len(_as_bytes(body["string"])))]
        return {**response, "headers": headers, "body": body}

    def _write(self, path: str, call: Call, story: _Story) -> None:
        # One scrubber per call: with masking it learns this call's numbers as it goes.
        scrub = _Scrubber(self._media_base, self.app.secret, mask_numbers=not self.numbers)
        if scrub.mask_numbers:
            for cb in story.callbacks:
                scrub.numbers.update(_phone_numbers(cb["body"]))
        events = list(call.transcript)
        secrets_ = _sensitive_digits(events, story.callbacks)
        interactions = [(self._clean_request(scrub, req), self._clean_response(scrub, resp))
                        for req, resp in story.interactions]
        callbacks = [_mask_callback({**cb, "body": scrub.data(cb["body"])}, secrets_)
                     for cb in story.callbacks]
        lines = [scrub.text(line) for line in masked_lines(events)]
        script = self.app.script
        meta: dict[str, Any] = {
            "script": {"name": call.script_name or getattr(script, "__qualname__", "?"),
                       "file": _script_file(script)},
            "recorded_at": datetime.fromtimestamp(story.started or call.started, UTC).isoformat(
                timespec="seconds"),
            "platform": "simulator" if hasattr(self.app.platform, "call") else "ringcentral",
            "numbers_masked": not self.numbers,
            "end_reason": call.end_reason,
            "callbacks": callbacks,
            "transcript": lines,
            "commands": [{"line": index, **scrub.data(_command_data(e.data["command"]))}
                         for index, e in enumerate(events) if _is_command(e)],
        }
        if story.effects:
            meta["effects"] = [scrub.data(effect) for effect in story.effects]
        cassette_dict = {"requests": [r for r, _ in interactions],
                         "responses": [r for _, r in interactions]}
        text = (yaml.dump({"ivrscript": meta}, Dumper=_YAML_DUMPER, sort_keys=False,
                          allow_unicode=True, width=100)
                + serialize(cassette_dict, yamlserializer))
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)


# -- a call's log as a cassette's parts --------------------------------------------------------


@dataclass
class _Story:
    """What a cassette holds of a call, read from its log: callbacks in arrival order (each
    with ``after``: REST exchanges completed by then), the exchanges in completion order, the
    effects' results in the order they were yielded."""

    started: float = 0.0
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[tuple[VcrRequest, dict[str, Any]]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)


class _Captured(BaseException):
    """Carries the request a client method built out of it (no HTTP)."""

    def __init__(self, method: str, path: str, body: Any) -> None:
        super().__init__(method, path)
        self.method, self.path, self.body = method, path, body


class _Builder(RingCentral):
    """A platform client whose :meth:`request` only captures the request its command methods
    build: the cassette's requests are the real client's, rebuilt from the logged arguments."""

    def __init__(self) -> None:
        super().__init__(server_url=_REPLAY_SERVER, token="record")

    def request(self, method: str, path: str, *, json: Any = None,  # noqa: A002 - same name
                retry: bool = True, within: float | None = None) -> Any:
        raise _Captured(method.upper(), path, json)


_METHODS = {"play": "play", "collect": "collect", "cancel": "cancel_play",
            "forward": "forward", "drop": "drop"}
_builders = threading.local()


class _Quiet(logging.Filter):
    """Drops the client's own log lines (``forwarding session ...``) while a request is being
    rebuilt: that was logged when the call did it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_builders, "quiet", False)


logging.getLogger("ivrscript.ringcentral").addFilter(_Quiet())


def _rest_request(op: str, args: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(method, path, JSON body) of the request the client sends for one logged request."""
    name = _METHODS.get(op)
    if name is None or not isinstance(args, dict):
        return None
    builder = getattr(_builders, "builder", None)
    if builder is None:
        builder = _builders.builder = _Builder()
    _builders.quiet = True
    try:
        getattr(builder, name)(**args, retry=False)
    except _Captured as captured:
        return captured.method, captured.path, captured.body
    except (TypeError, ValueError):  # arguments this version's client does not take
        return None
    finally:
        _builders.quiet = False
    return None


def _rest_response(op: str, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """vcrpy's response dict for a logged outcome (None: no answer came, nothing to replay)."""
    headers: dict[str, list[str]] = {}
    if outcome.get("ok"):
        command_id = outcome.get("command_id")
        if op in ("play", "collect") and command_id is not None:
            code, text = 200, json.dumps({"id": str(command_id)})
        elif op == "forward":
            code, text = 200, "{}"
        else:
            code, text = 204, ""
    elif outcome.get("platform") and 100 <= int(outcome.get("status") or 0) <= 599:
        code = int(outcome["status"])
        error = {"message": outcome.get("message") or ""}
        if outcome.get("error_code"):
            error = {"errorCode": str(outcome["error_code"]), **error}
        text = json.dumps(error)
        if outcome.get("retry_after") is not None:
            headers["Retry-After"] = [f"{float(outcome['retry_after']):g}"]
    else:
        return None  # no answer at all (status 0) or a client-side failure
    if text:
        headers["Content-Type"] = ["application/json"]
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = ""
    return {"status": {"code": code, "message": reason}, "headers": headers,
            "body": {"string": text}}


def _callback_body(session_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """A callback body as the platform sent it, from the parts the log keeps."""
    kind = data.get("kind")
    body: dict[str, Any] = {"sessionId": session_id}
    if kind == "on-command-update":
        body.update(command=data.get("command"), status=data.get("status"))
        if data.get("commandId") is not None:
            body["commandId"] = data["commandId"]
        if data.get("digits") is not None:
            body["parameters"] = {"digits": data["digits"]}
    elif kind != "on-call-exit":
        body.update({k: data[k] for k in ("message", "errorCode") if data.get(k) is not None})
    return body


def _story(entries: Iterable[Any], server: str) -> _Story | None:
    """The cassette's parts from a call's log (``ivrscript.durable``'s entry kinds)."""
    story = _Story()
    session_id = None
    requests_: dict[int, Any] = {}
    answered: set[int] = set()
    effects: dict[int, dict[str, Any]] = {}
    steps = 0  # REST exchanges completed, cancels excluded (what replay counts)
    for entry in sorted(entries, key=lambda e: e.seq):
        data = entry.data
        if entry.kind == "enter":
            if session_id is not None:
                continue
            body = data.get("body") or {}
            session_id = body.get("sessionId")
            story.started = entry.at
            story.callbacks.append({"kind": "on-call-enter", "after": 0, "at": 0.0,
                                    "body": body})
        elif session_id is None:
            continue  # a log that does not begin with its enter: not a call to record
        elif entry.kind == "callback" and data.get("kind") in CALLBACKS:
            story.callbacks.append({"kind": data["kind"], "after": len(story.interactions),
                                    "at": round(max(entry.at - story.started, 0.0), 3),
                                    "body": _callback_body(session_id, data)})
        elif entry.kind == "request":
            requests_[entry.seq] = entry
            if data.get("op") == "effect":
                args = data.get("args") or {}
                effects[entry.seq] = {"fn": str(args.get("fn")), "args": args.get("args"),
                                      "kwargs": args.get("kwargs"),
                                      "command": str(data.get("command") or ""),
                                      "after": steps}
        elif entry.kind == "outcome":
            request = requests_.get(int(data.get("req", -1)))
            if request is None or request.seq in answered:
                continue
            answered.add(request.seq)
            op, args = request.data.get("op"), request.data.get("args") or {}
            built = _rest_request(op, args)
            response = _rest_response(op, data)
            if built is None or response is None:
                continue
            method, path, json_body = built
            vcr_request = VcrRequest(method, server + path,
                                     None if json_body is None else json.dumps(json_body),
                                     {"Content-Type": "application/json"}
                                     if json_body is not None else {})
            story.interactions.append((vcr_request, response))
            if op != "cancel":
                steps += 1
        elif entry.kind == "effect":
            effect = effects.get(int(data.get("req", -1)))
            if effect is None or "value" in effect or "error" in effect:
                continue  # the first of result and timeout is the one the call got
            if data.get("error") is not None:
                error = data["error"]
                effect["error"] = {"type": str(error.get("type")),
                                   "message": str(error.get("message"))}
            else:
                effect["value"] = data.get("value")
    if session_id is None:
        return None
    story.effects = [e for _, e in sorted(effects.items()) if "value" in e or "error" in e]
    return story


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _script_file(script: Any) -> str | None:
    from .notebook import source_file  # the notebook's name, not ipykernel's cell file

    code = getattr(script, "__code__", None)
    return source_file(code.co_filename) if code is not None else None


def _safe_name(text: str, limit: int) -> str:
    """``text`` as a piece of a file name: letters, digits, ``_.-`` only, at most ``limit``
    characters; a short hash of the original is added when anything was changed, so two
    different ids never share a file."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip(".") or "_"
    if name != text or len(name) > limit:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        name = f"{name[:limit - 11]}~{digest}"
    return name


def cassette_name(call: Call) -> str:
    """The file name of a call's cassette: ``<script>-<session id>.yaml``, both made safe
    (a forged session id cannot leave the folder or collide with another call's file)."""
    stem = (call.script_name or "call").replace("<locals>.", "")
    return f"{_safe_name(stem, 60)}-{_safe_name(call.session_id, 120)}.yaml"


# -- commands and sensitive keys in a cassette -------------------------------------------------


def _is_command(event: TranscriptEvent) -> bool:
    return dataclasses.is_dataclass(event.data.get("command"))


def _command_data(command: Any) -> dict[str, Any]:
    """A yielded command as plain data: its verb and its fields (the script's arguments)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, str):
            # A spoken prompt is a str showing its text, voice and rate: kept as that text.
            return str(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if callable(value):  # an effect's function: by name, not by address
            module = getattr(value, "__module__", None) or ""
            name = getattr(value, "__qualname__", None) or repr(value)
            return f"{module}.{name}" if module and module != "__main__" else name
        return str(value)

    return {"verb": type(command).__name__.lower(),
            **{f.name: plain(getattr(command, f.name)) for f in dataclasses.fields(command)}}


def _sensitive_results(events: list[TranscriptEvent]) -> list[int]:
    """Indexes of the result events that answer a ``sensitive=True`` command."""
    return [index for index, sensitive in _collect_results(events) if sensitive]


def _collect_results(events: list[TranscriptEvent]) -> list[tuple[int, bool]]:
    """(index, sensitive) of every result event that answers a collect, in order."""
    found, command = [], None
    for index, event in enumerate(events):
        if _is_command(event):
            command = event.data["command"]
        elif event.kind == RESULT and command is not None:
            if hasattr(command, "patterns") and "digits" in event.data:
                found.append((index, bool(getattr(command, "sensitive", False))))
            command = None
    return found


def _sensitive_digits(events: list[TranscriptEvent],
                      callbacks: list[dict[str, Any]]) -> list[str]:
    """The keys the caller pressed for sensitive collects, in order, each once.

    The transcript shows them as ``****``, so each collect's result is paired with the Collect
    update that gave it (the next one in arrival order with its status, and its keys when
    they are shown). If a sensitive result finds no update, every Collect update's keys are
    taken as secret: a cassette never holds them by mistake."""
    updates = []
    for cb in callbacks:
        body = cb.get("body") or {}
        if cb.get("kind") == "on-command-update" and body.get("command") == "Collect":
            digits = (body.get("parameters") or {}).get("digits")
            updates.append((body.get("status"), digits if isinstance(digits, str) else "",
                            body.get("commandId")))
    found: list[str] = []
    paired: set[tuple[Any, ...]] = set()  # a repeated delivery answers no second collect
    pointer = 0
    for index, sensitive in _collect_results(events):
        data = events[index].data
        for j in range(pointer, len(updates)):
            status, digits, _ = updates[j]
            if updates[j] in paired:
                continue
            if status == data.get("status") and (sensitive or digits == data.get("digits")):
                pointer = j + 1
                paired.add(updates[j])
                if sensitive and digits and digits not in found:
                    found.append(digits)
                break
        else:
            if sensitive:  # fail closed
                return list(dict.fromkeys(d for _, d, _ in updates if d))
    return found


def masked_lines(events: Iterable[TranscriptEvent]) -> list[str]:
    """Transcript lines with the result of every sensitive collect shown as ``'****'`` (the
    engine shows them so already; this keeps a cassette safe whatever made the events)."""
    events = list(events)
    lines = [event.line() for event in events]
    for index in _sensitive_results(events):
        status, digits = events[index].data.get("status"), events[index].data.get("digits")
        if digits:
            lines[index] = f"  -> {SENSITIVE!r} {status}"
    return lines


def _mask_callback(callback: dict[str, Any], secrets_: list[str]) -> dict[str, Any]:
    """A Collect update carrying sensitive keys: ``****`` instead, and which secret it was
    (``masked: n``, the n-th one of the call) so replay can supply a value."""
    body = callback["body"]
    params = body.get("parameters") if isinstance(body, dict) else None
    digits = params.get("digits") if isinstance(params, dict) else None
    if not secrets_ or digits not in secrets_:
        return callback
    body = {**body, "parameters": {**params, "digits": SENSITIVE}}
    return {**callback, "body": body, "masked": secrets_.index(digits) + 1}


# -- loading a cassette -----------------------------------------------------------------------

CASSETTE_VERSION = 1  # vcrpy's cassette format, the only one read
MAX_CASSETTE_BYTES = 32 * 1024 * 1024
# An anchor (&a) or alias (*a) can only start after a space, a line start or a flow indicator;
# a text without one needs no event scan.
_MAYBE_ALIAS = re.compile(r"(?:^|[\s\[\]{},])[&*][^\s]", re.MULTILINE)


@dataclass(frozen=True)
class Recording:
    """A loaded cassette: the ``ivrscript`` metadata and vcrpy's interactions (read-only:
    a loaded cassette is shared while its file is unchanged)."""

    path: str
    meta: dict[str, Any]
    requests: list[Any]
    responses: list[Any]
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        return list(self.meta.get("callbacks") or [])

    @property
    def transcript(self) -> list[str]:
        """The transcript the app had when the call was recorded."""
        return list(self.meta.get("transcript") or [])


class _Bad(Exception):
    """A cassette's shape is wrong: ``where`` (a key path) and ``what``."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where} {what}")
        self.where = where
        self.what = what


def _get(mapping: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
         what: str, *, optional: bool = False) -> Any:
    if key not in mapping:
        if optional:
            return None
        raise _Bad(f"{where}.{key}" if where else key, "is missing")
    value = mapping[key]
    if (optional and value is None) or (isinstance(value, kind)
                                        and not (isinstance(value, bool) and bool not in
                                                 (kind if isinstance(kind, tuple) else (kind,)))):
        return value
    raise _Bad(f"{where}.{key}" if where else key,
               f"must be {what}, not {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_shape(data: Any) -> None:
    """Raise :class:`_Bad` for the first key of ``data`` that is not what replay reads."""
    if not isinstance(data, dict):
        raise _Bad("the document", f"must be a mapping, not {type(data).__name__}")
    version = data.get("version")
    if version is None:
        raise _Bad("version", "is missing")
    if isinstance(version, bool) or version != CASSETTE_VERSION:
        raise _Bad("version", f"is {_short(version)}: this ivrscript reads version "
                              f"{CASSETTE_VERSION} cassettes (record the call again)")
    meta = data.get("ivrscript")
    if not isinstance(meta, dict) or "callbacks" not in meta:
        raise _Bad("ivrscript", "is missing (no 'ivrscript' key with the call's callbacks): "
                                "not an ivrscript recording; record calls with App(record=DIR)")
    callbacks = _get(meta, "callbacks", "ivrscript", list, "a list")
    if not callbacks:
        raise _Bad("ivrscript.callbacks", "is empty (a call starts with on-call-enter)")
    for index, callback in enumerate(callbacks):
        where = f"ivrscript.callbacks[{index}]"
        if not isinstance(callback, dict):
            raise _Bad(where, f"must be a mapping, not {type(callback).__name__}")
        kind = _get(callback, "kind", where, str, "a callback name")
        if kind not in CALLBACKS:
            raise _Bad(f"{where}.kind", f"is {_short(kind)}, not one of {', '.join(CALLBACKS)}")
        after = _get(callback, "after", where, int, "a whole number")
        if after < 0:
            raise _Bad(f"{where}.after", f"must be 0 or more, not {after}")
        _get(callback, "at", where, (int, float), "a number", optional=True)
        _get(callback, "masked", where, int, "a whole number", optional=True)
        body = _get(callback, "body", where, dict, "a mapping")
        where += ".body"
        _get(body, "sessionId", where, str, "a string")
        if kind == "on-call-enter":
            _get(body, "partyId", where, str, "a string")
            party = _get(body, "inParty", where, dict, "a mapping")
            _get(party, "id", f"{where}.inParty", str, "a string")
            for side in ("from", "to"):
                end = _get(party, side, f"{where}.inParty", dict, "a mapping", optional=True)
                if end is not None:
                    _get(end, "phoneNumber", f"{where}.inParty.{side}", str, "a string",
                         optional=True)
            for key in ("accountId", "extensionId"):
                _get(body, key, where, (str, int), "a string", optional=True)
        elif kind == "on-command-update":
            _get(body, "command", where, str, "a string")
            _get(body, "status", where, str, "a string")
            _get(body, "commandId", where, (str, int), "a string", optional=True)
            params = _get(body, "parameters", where, dict, "a mapping", optional=True)
            if params is not None:
                _get(params, "digits", f"{where}.parameters", str, "a string", optional=True)
    if callbacks[0]["kind"] != "on-call-enter":
        raise _Bad("ivrscript.callbacks[0].kind", f"is {callbacks[0]['kind']!r}: a recorded "
                                                  "call starts with on-call-enter")
    lines = _get(meta, "transcript", "ivrscript", list, "a list of lines", optional=True)
    for index, line in enumerate(lines or ()):
        if not isinstance(line, str):
            raise _Bad(f"ivrscript.transcript[{index}]", f"must be a string, not "
                                                         f"{type(line).__name__}")
    _get(meta, "numbers_masked", "ivrscript", bool, "true or false", optional=True)
    _get(meta, "end_reason", "ivrscript", str, "a string", optional=True)
    script = _get(meta, "script", "ivrscript", dict, "a mapping", optional=True)
    if script is not None:
        _get(script, "file", "ivrscript.script", str, "a file name", optional=True)
        _get(script, "name", "ivrscript.script", str, "a name", optional=True)
    for index, command in enumerate(_get(meta, "commands", "ivrscript", list, "a list",
                                         optional=True) or ()):
        where = f"ivrscript.commands[{index}]"
        if not isinstance(command, dict):
            raise _Bad(where, f"must be a mapping, not {type(command).__name__}")
        _get(command, "line", where, int, "a whole number")
        _get(command, "verb", where, str, "a string")
    for index, effect in enumerate(_get(meta, "effects", "ivrscript", list, "a list",
                                        optional=True) or ()):
        where = f"ivrscript.effects[{index}]"
        if not isinstance(effect, dict):
            raise _Bad(where, f"must be a mapping, not {type(effect).__name__}")
        _get(effect, "fn", where, str, "a function name")
        after = _get(effect, "after", where, int, "a whole number")
        if after < 0:
            raise _Bad(f"{where}.after", f"must be 0 or more, not {after}")
        _get(effect, "args", where, (list, str), "a list", optional=True)
        _get(effect, "kwargs", where, (dict, str), "a mapping", optional=True)
        error = _get(effect, "error", where, dict, "a mapping", optional=True)
        if error is not None:
            _get(error, "type", f"{where}.error", str, "an exception type")
            _get(error, "message", f"{where}.error", str, "a string")
        elif "value" not in effect:
            raise _Bad(f"{where}.value", "is missing (an effect has a value or an error)")
    for index, interaction in enumerate(_get(data, "interactions", "", list, "a list")):
        where = f"interactions[{index}]"
        if not isinstance(interaction, dict):
            raise _Bad(where, f"must be a mapping, not {type(interaction).__name__}")
        request = _get(interaction, "request", where, dict, "a mapping")
        _get(request, "method", f"{where}.request", str, "an HTTP method")
        uri = _get(request, "uri", f"{where}.request", str, "a URL")
        if "://" not in uri:
            raise _Bad(f"{where}.request.uri", f"must be a URL, not {_short(uri)}")
        if "body" not in request:
            raise _Bad(f"{where}.request.body", "is missing (null for no body)")
        _get(request, "body", f"{where}.request", (str, bytes), "a string", optional=True)
        _check_headers(_get(request, "headers", f"{where}.request", dict, "a mapping"),
                       f"{where}.request.headers")
        response = _get(interaction, "response", where, dict, "a mapping")
        status = _get(response, "status", f"{where}.response", dict, "a mapping")
        code = _get(status, "code", f"{where}.response.status", int, "an HTTP status")
        if not 100 <= code <= 599:
            raise _Bad(f"{where}.response.status.code", f"must be an HTTP status, not {code}")
        _get(status, "message", f"{where}.response.status", str, "a string", optional=True)
        _check_headers(_get(response, "headers", f"{where}.response", dict, "a mapping",
                            optional=True) or {}, f"{where}.response.headers")
        body = _get(response, "body", f"{where}.response", dict, "a mapping")
        _get(body, "string", f"{where}.response.body", (str, bytes), "a string", optional=True)


def _check_headers(headers: dict[Any, Any], where: str) -> None:
    for key, value in headers.items():
        if not isinstance(key, str):
            raise _Bad(where, f"has a key that is not a string: {_short(key)}")
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) for v in values):
            raise _Bad(f"{where}.{key}", f"must be a string or a list of strings, not "
                                         f"{_short(value)}")


class _Parsed:
    """A vcrpy serializer that hands over a document parsed (and checked) already."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def deserialize(self, _text: str) -> dict[str, Any]:
        return self.data


# -- a fast reader for the YAML this module writes --------------------------------------------


class _NotSimple(Exception):
    """The text uses YAML beyond what :func:`_simple_yaml` reads: the full loader reads it."""


_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                         ("int", "float", "bool", "null", "timestamp"))
_NOT_PLAIN_START = frozenset("?:,[]{}#&*!|>'\"%@`")
_QUOTED_ESCAPES = {"0": "\0", "a": "\x07", "b": "\x08", "t": "\t", "\t": "\t", "n": "\n",
                   "v": "\x0b", "f": "\x0c", "r": "\r", "e": "\x1b", " ": " ", '"': '"',
                   "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028",
                   "P": "\u2029"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_ODD_CHARS = re.compile("[\t\r\x85\u2028\u2029\ufeff]")
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()


class _SimpleYaml:
    """A reader of block-style YAML as ``yaml.dump`` and vcrpy write it: block mappings and
    sequences, one-line plain scalars, single-quoted scalars (folded over lines), one-line
    double-quoted ones, ``{}`` and ``[]``. Plain scalars are resolved by PyYAML's own resolver
    and constructor, so a document it reads gives what ``yaml.safe_load`` gives (a test
    checks that on every committed recording and on generated documents); anything else
    (anchors, aliases, tags, flow collections, block scalars, comments, multi-line plain or
    double-quoted scalars, tabs) raises :class:`_NotSimple`."""

    def __init__(self, text: str) -> None:
        if _ODD_CHARS.search(text):
            raise _NotSimple("tabs, or a line break YAML knows and str.split does not")
        lines = text.split("\n")
        while lines and not lines[-1].strip(" "):
            lines.pop()
        self.lines = lines
        self.indents = [len(line) - len(line.lstrip(" ")) for line in lines]
        self.i = 0
        self.plains: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}  # plain keys seen, resolved

    def document(self) -> Any:
        if not self.lines or self.indents[0] != 0:
            raise _NotSimple("empty, or indented at the start")
        value = self.node(0)
        if self.i != len(self.lines):
            raise _NotSimple(f"line {self.i + 1}")
        return value

    def node(self, indent: int) -> Any:
        content = self.lines[self.i][indent:]
        if content == "-" or content.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def mapping(self, indent: int, first: tuple[Any, str] | None = None) -> dict[Any, Any]:
        """A block mapping at ``indent`` (``first``: its first line's key and rest, split
        already, for a ``- key: value`` item)."""
        lines, indents = self.lines, self.indents
        out: dict[Any, Any] = {}
        while self.i < len(lines) and indents[self.i] == indent:
            if first is not None:
                split, first = first, None
            else:
                split = self.split_key(lines[self.i][indent:])
            if split is None:
                raise _NotSimple(f"line {self.i + 1}: not a key")
            key, rest = split
            if key in out:
                raise _NotSimple(f"line {self.i + 1}: a key twice")
            if rest:
                out[key] = self.inline(rest, indent)
                continue
            self.i += 1
            if self.i < len(lines) and indents[self.i] > indent:
                out[key] = self.node(indents[self.i])
            elif self.i < len(lines) and indents[self.i] == indent and (
                    lines[self.i][indent:] == "-" or lines[self.i][indent:].startswith("- ")):
                out[key] = self.sequence(indent)  # an indentless sequence under its key
            else:
                out[key] = None
        if self.i < len(lines) and indents[self.i] > indent:
            raise _NotSimple(f"line {self.i + 1}: indented under a mapping")
        return out

    def sequence(self, indent: int) -> list[Any]:
        lines, indents = self.lines, self.indents
        out: list[Any] = []
        while self.i < len(lines) and indents[self.i] == indent:
            content = lines[self.i][indent:]
            if content == "-":
                self.i += 1
                out.append(self.node(indents[self.i]) if self.i < len(lines)
                           and indents[self.i] > indent else None)
                continue
            if not content.startswith("- "):
                break  # the mapping the (indentless) sequence is in goes on
            rest = content[2:]
            inner = indent + 2 + len(rest) - len(rest.lstrip(" "))
            rest = rest.lstrip(" ")
            if rest.startswith("-"):
                raise _NotSimple(f"line {self.i + 1}: a sequence in a sequence item")
            split = self.split_key(rest)
            if split is not None:  # "- key: value": a mapping at inner
                indents[self.i] = inner
                out.append(self.mapping(inner, split))
            else:
                out.append(self.inline(rest, indent))
        if self.i < len(lines) and indents[self.i] > indent:
            raise _NotSimple(f"line {self.i + 1}: indented under a sequence")
        return out

    def split_key(self, content: str) -> tuple[Any, str] | None:
        """``(key, the rest of the line)`` if the line is ``key: ...`` or ``key:``."""
        if content[:1] in ("'", '"'):
            end = _quote_end(content, 0)
            if end is None:
                return None
            after = content[end + 1:]
            if after != ":" and not after.startswith(": "):
                return None
            return self.quoted(content[:end + 1]), after[1:].strip(" ")
        at = content.find(": ")
        if at == -1:
            if not content.endswith(":"):
                return None
            key, rest = content[:-1], ""
        else:
            key, rest = content[:at], content[at + 2:].strip(" ")
        found = self.keys.get(key, self)
        if found is self:
            if not key or key[0] in _NOT_PLAIN_START or key != key.strip(" ") \
                    or " #" in key or key.startswith("- "):
                raise _NotSimple(f"a key YAML reads otherwise: {key[:40]!r}")
            found = self.keys[key] = self.plain(key)
        return found, rest

    def inline(self, rest: str, indent: int) -> Any:
        """The scalar starting at ``rest`` on the current line (a quoted one may go on over
        the next lines, each indented more than ``indent``); moves past it."""
        if not rest:
            raise _NotSimple(f"line {self.i + 1}: an empty sequence item")
        first = rest[0]
        if first == "'":
            return self.single_quoted(rest, indent)
        if first == '"':
            end = _quote_end(rest, 0)
            if end is None or rest[end + 1:].strip(" "):
                raise _NotSimple(f"line {self.i + 1}: a double-quoted scalar over lines")
            self.i += 1
            return self.quoted(rest[:end + 1])
        self.i += 1
        rest = rest.rstrip(" ")
        if rest == "{}":
            return {}
        if rest == "[]":
            return []
        if first in _NOT_PLAIN_START or rest == "-" or rest.startswith("- ") \
                or " #" in rest or ": " in rest or rest.endswith(":"):
            raise _NotSimple(f"line {self.i}: {rest[:40]!r}")
        if self.i < len(self.lines) and self.indents[self.i] > indent:
            return self.plain(self.folded_plain(rest, indent))
        return self.plain(rest)

    def folded_plain(self, first: str, indent: int) -> str:
        """A plain scalar the writer folded over lines (each next one indented more than
        ``indent``): its lines joined by spaces."""
        pieces = [first]
        lines, indents = self.lines, self.indents
        while self.i < len(lines) and indents[self.i] > indent:
            piece = lines[self.i].strip(" ")
            if not piece or piece[0] in "#-?:" or ": " in piece or " #" in piece \
                    or piece.endswith(":"):
                raise _NotSimple(f"line {self.i + 1}: a plain scalar YAML reads otherwise")
            pieces.append(piece)
            self.i += 1
        return " ".join(pieces)

    def single_quoted(self, rest: str, indent: int) -> str:
        pieces: list[str] = []
        segment = rest[1:]
        while True:
            end = _quote_end("'" + segment, 0)
            if end is not None:
                pieces.append(segment[:end - 1])
                if segment[end:].strip(" "):
                    raise _NotSimple(f"line {self.i + 1}: text after a quoted scalar")
                self.i += 1
                break
            pieces.append(segment)
            self.i += 1
            if self.i >= len(self.lines) or (self.lines[self.i].strip(" ")
                                             and self.indents[self.i] <= indent):
                raise _NotSimple("an unclosed quoted scalar")
            segment = self.lines[self.i]
        if len(pieces) == 1:
            return pieces[0].replace("''", "'")
        last = len(pieces) - 1
        text = pieces[0].rstrip(" ")
        blank = 0
        for index in range(1, len(pieces)):
            piece = pieces[index].lstrip(" ")
            if index < last:
                piece = piece.rstrip(" ")
                if not piece:
                    blank += 1
                    continue
            text += ("\n" * blank if blank else " ") + piece
            blank = 0
        return text.replace("''", "'")

    def quoted(self, token: str) -> str:
        """A one-line quoted scalar, quotes included."""
        body = token[1:-1]
        if token[0] == "'":
            return body.replace("''", "'")
        if "\\" not in body:
            return body
        out: list[str] = []
        index = 0
        while index < len(body):
            char = body[index]
            if char != "\\":
                out.append(char)
                index += 1
                continue
            code = body[index + 1:index + 2]
            if code in _QUOTED_ESCAPES:
                out.append(_QUOTED_ESCAPES[code])
                index += 2
            elif code in _HEX_ESCAPES:
                width = _HEX_ESCAPES[code]
                digits = body[index + 2:index + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF"
                                                   for c in digits):
                    raise _NotSimple("a bad escape")
                out.append(chr(int(digits, 16)))
                index += 2 + width
            else:
                raise _NotSimple("an escape this reader does not know")
        return "".join(out)

    def plain(self, value: str) -> Any:
        found = self.plains.get(value, self)
        if found is not self:
            return found
        tag = _resolver.resolve(yaml.ScalarNode, value, (True, False))
        if tag == _STR_TAG:
            result: Any = value
        elif tag in _SCALAR_TAGS:
            result = _constructor.yaml_constructors[tag](
                _constructor, yaml.ScalarNode(tag, value))
        else:
            raise _NotSimple(f"a plain scalar of tag {tag}")
        if len(self.plains) < 4096:
            self.plains[value] = result
        return result


def _quote_end(text: str, start: int) -> int | None:
    """The index of the quote closing the quoted scalar opened at ``text[start]`` on this
    line (``''`` in single quotes, ``\\"`` in double quotes are not ends); None if none."""
    quote = text[start]
    index = start + 1
    if quote == "'":
        while True:
            index = text.find("'", index)
            if index == -1:
                return None
            if text[index + 1:index + 2] == "'":
                index += 2
                continue
            return index
    while True:
        index = text.find('"', index)
        if index == -1:
            return None
        slashes = 0
        back = index - 1
        while back > start and text[back] == "\\":
            slashes += 1
            back -= 1
        if slashes % 2 == 0:
            return index
        index += 1


def _simple_yaml(text: str) -> Any:
    """The document in ``text`` if it is YAML as this module writes it (see
    :class:`_SimpleYaml`); :class:`_NotSimple` otherwise."""
    return _SimpleYaml(text).document()


def _parse(path: str, text: str) -> Any:
    """The YAML document, with anchors and aliases refused before anything is expanded."""
    try:
        return _simple_yaml(text)  # no anchors, aliases or tags: nothing to refuse
    except _NotSimple:
        pass
    except (ValueError, IndexError, RecursionError) as error:  # the full loader decides
        log.debug("%s: the fast reader gave up (%s)", path, error)
    try:
        if _MAYBE_ALIAS.search(text):
            for event in yaml.parse(text, Loader=_YAML_LOADER):
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                    raise ConfigError(f"{path}: YAML anchors and aliases (&name, *name) are "
                                      "not allowed in a cassette (line "
                                      f"{event.start_mark.line + 1})")
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not a YAML cassette: {shown(error, 300)}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise ConfigError(f"{path} is not a YAML cassette: {type(error).__name__}") from None


_cache: collections.OrderedDict[tuple[str, int, int, int], Recording] = \
    collections.OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 256  # cassettes kept loaded, and at most this many bytes of their files:
_CACHE_BYTES = 64 * 1024 * 1024


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a cassette written by :class:`Recorder`; a :class:`ConfigError` naming the file
    and the bad key if it is not one. A file is parsed once while it is unchanged."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"no such recording: {path}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the recording {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the recording {path} is not a file")
    if info.st_size > MAX_CASSETTE_BYTES:
        raise ConfigError(f"the recording {path} is {info.st_size} bytes: more than a "
                          f"cassette holds (at most {MAX_CASSETTE_BYTES})")
    key = (os.path.abspath(path), info.st_mtime_ns, info.st_size, info.st_ino)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found if found.path == path else dataclasses.replace(found, path=path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CASSETTE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read the recording {path}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not a cassette: not UTF-8 text (byte {error.start})"
                          ) from None
    data = _parse(path, text)
    try:
        _check_shape(data)
    except _Bad as bad:
        raise ConfigError(f"{path} is not a valid ivrscript recording: {bad}") from None
    try:
        found_ = deserialize(text, _Parsed(data))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is not a valid ivrscript recording: vcrpy could not read "
                          f"its interactions ({type(error).__name__})") from None
    recording = Recording(path, data["ivrscript"], list(found_[0]), list(found_[1]))
    with _cache_lock:
        _cache[key] = recording
        while len(_cache) > _CACHE_SIZE or (
                len(_cache) > 1 and sum(k[2] for k in _cache) > _CACHE_BYTES):
            _cache.popitem(last=False)
    return recording


# -- replay -----------------------------------------------------------------------------------


def _shape(request: Any, mask_numbers: bool) -> tuple[str, str, Any]:
    """What replay compares: method, path and body (host, port, scheme, headers ignored)."""
    return request.method.upper(), request.path, _body_shape(
        _body_text(request.body_bytes if hasattr(request, "body_bytes") else request.body),
        mask_numbers)


def _body_shape(text: str | None, mask_numbers: bool) -> Any:
    if not text:
        return None
    try:
        return _scrub_json(json.loads(text), mask_numbers)
    except ValueError:
        return text


def _is_cancel(request: Any) -> bool:
    return request.method.upper() == "DELETE" and bool(_CANCEL_PATH.search(request.path))


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return rows or [(prefix or "body", "{}")]
    if isinstance(value, list):
        rows = []
        for index, item in enumerate(value):
            rows += _flat(item, f"{prefix}[{index}]")
        return rows or [(prefix or "body", "[]")]
    return [(prefix or "body", json.dumps(value))]


def _short_path(path: str) -> str:
    """A REST path without its fixed prefix, long ids cut: the part a reader compares."""
    path = path.replace("/restapi/v1.0/account/~/telephony/sessions/", "sessions/")
    return "/".join(part if len(part) <= 14 else part[:10] + "..." for part in path.split("/"))


def _side_by_side(recorded: tuple[str, str, Any] | None,
                  issued: tuple[str, str, Any] | None) -> str:
    def rows(shape: tuple[str, str, Any] | None) -> dict[str, str]:
        if shape is None:
            return {"request": "(none)"}
        out = {"method": shape[0], "path": _short_path(shape[1])}
        if shape[2] is not None:
            out.update(_flat(shape[2], "body"))
        return out

    left, right = rows(recorded), rows(issued)
    keys = list(dict.fromkeys([*left, *right]))
    width_key = max(len(k) for k in keys)
    differ = [k for k in keys if left.get(k, "-") != right.get(k, "-")]
    width_left = max([len("recorded"), *(len(left.get(k, "-")) for k in differ)])
    lines = [f"    {'':<{width_key}}  {'recorded':<{width_left}}  issued"]
    for key in keys:
        a, b = left.get(key, "-"), right.get(key, "-")
        if a == b:  # the same on both sides: shown once
            lines.append(f"    {key:<{width_key}}  {a}")
        else:
            lines.append(f"  * {key:<{width_key}}  {a:<{width_left}}  {b}")
    return "\n".join(lines)


_VERBS = {"play": _commands.Play, "collect": _commands.Collect, "forward": _commands.Forward,
          "hangup": _commands.Hangup}
_SECONDS = frozenset({"timeout", "inter_digit_timeout"})


def _value(name: str, value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if name in _SECONDS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}s"
    return repr(value) if isinstance(value, str) else str(value)


def _as_yielded(recorded: dict[str, Any] | None,
                replayed: dict[str, Any] | None) -> tuple[str, str]:
    """Both commands in the script's own terms (``collect xxxx timeout=6s``): the verb, its
    first argument and every argument that is not the default or differs between the two."""
    def defaults(data: dict[str, Any]) -> dict[str, Any]:
        cls = _VERBS.get(str(data.get("verb")))
        if cls is None:
            return {}
        return {f.name: f.default for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}

    sides = [dict(d or {}) for d in (recorded, replayed)]
    for side in sides:
        side.pop("line", None)

    def is_default(side: dict[str, Any], name: str) -> bool:
        default = defaults(side).get(name, dataclasses.MISSING)
        if isinstance(default, tuple):
            default = list(default)
        return side.get(name) == default

    names: list[str] = []
    for side in sides:
        names += [n for n in side if n != "verb" and n not in names]
    both = all(sides)
    shown_ = [name for name in names
              if (both and sides[0].get(name) != sides[1].get(name))
              or any(name in side and not is_default(side, name) for side in sides)]
    out = []
    for side in sides:
        if not side:
            out.append("(nothing)")
            continue
        words = [str(side.get("verb", "?"))]
        for index, name in enumerate(names):
            if name not in side or name not in shown_:
                continue
            if index == 0 and side[name] not in (None, [], ""):
                words.append(_value(name, side[name]))  # the first argument: positional
            else:
                words.append(f"{name}={_value(name, side[name])}")
        out.append(" ".join(words))
    return out[0], out[1]


def _script_line(engine: CallEngine) -> str | None:
    """``file:line: source`` of the script's innermost yield the engine is suspended at (its
    own frames, e.g. a menu's, skipped), from the generators the engine holds (read-only);
    None if this engine does not show them."""
    package = os.path.dirname(os.path.abspath(__file__))
    stack = getattr(engine, "_stack", None)
    if not isinstance(stack, list):
        return None
    for gen in reversed(stack):
        frame = getattr(gen, "gi_frame", None)
        code = getattr(gen, "gi_code", None)
        if frame is None or code is None:
            continue
        filename = os.path.abspath(code.co_filename)
        if os.path.dirname(filename) == package:
            continue
        source = linecache.getline(filename, frame.f_lineno).strip()
        where = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) \
            else filename
        return f"{where}:{frame.f_lineno}" + (f": {source}" if source else "")
    return "(the script had returned)"


class _Answer:
    """A recorded response: as much of ``requests.Response`` as the platform client reads."""

    __slots__ = ("status_code", "reason", "headers", "content")

    def __init__(self, response: dict[str, Any]) -> None:
        status = response.get("status") or {}
        self.status_code = int(status.get("code", 0))
        self.reason = str(status.get("message") or "")
        self.headers = _Headers(response.get("headers") or {})
        body = (response.get("body") or {}).get("string")
        self.content = body if isinstance(body, bytes) else (body or "").encode("utf-8")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Headers(dict[str, str]):
    """vcrpy's recorded headers (lists of values), looked up in any case."""

    def __init__(self, headers: dict[str, Any]) -> None:
        super().__init__({str(k).lower(): ", ".join(str(x) for x in v) if isinstance(v, list)
                          else str(v) for k, v in headers.items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass(frozen=True)
class _Step:
    shape: tuple[str, str, Any]
    answer: _Answer


class _Diverged(BaseException):
    """Carries a ReplayMismatch out through the client and the dispatcher (which turn any
    Exception into a failed command) to the replay loop."""

    def __init__(self, mismatch: ReplayMismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class _Playback:
    """The recorded requests in order; checks each issued one against the next and gives
    its recorded answer."""

    def __init__(self, recording: Recording, call: Call) -> None:
        self.recording = recording
        self.masked = bool(recording.meta.get("numbers_masked"))
        self.call = call
        self.engine: CallEngine | None = None
        steps = recording._derived.get("steps")
        if steps is None:  # the same for every replay of this recording
            steps = recording._derived["steps"] = [
                _Step(_shape(req, self.masked), _Answer(resp))
                for req, resp in zip(recording.requests, recording.responses, strict=True)
                if not _is_cancel(req)]
        self.expected: list[_Step] = steps
        self.issued = 0  # recorded requests (cancels excluded) matched so far
        self.effects: list[dict[str, Any]] = list(recording.meta.get("effects") or ())
        self.effected = 0  # recorded effects matched so far

    def _effect_due(self) -> dict[str, Any] | None:
        """The next recorded effect if the script is to yield it before its next request."""
        if self.effected < len(self.effects):
            effect = self.effects[self.effected]
            if int(effect.get("after") or 0) <= self.issued:
                return effect
        return None

    def effect(self, request: Request) -> EffectDone:
        """The recorded result of the effect the script yielded (its function is not run)."""
        issued = _effect_shape(request.args, self.masked)
        if self.effected >= len(self.effects):
            raise _Diverged(self.mismatch("the script yielded an effect the recording does "
                                          "not have", None, issued))
        recorded = self.effects[self.effected]
        if self._effect_due() is None:
            raise _Diverged(self.mismatch("the script yielded an effect where the recording "
                                          "has another request", self.expected[self.issued].shape,
                                          issued))
        if _effect_shape(recorded, self.masked) != issued:
            raise _Diverged(self.mismatch("the script yielded a different effect",
                                          _effect_shape(recorded, self.masked), issued))
        self.effected += 1
        error = recorded.get("error")
        if error is not None:
            return EffectDone(request.token, error=_rebuild_error(
                str(error.get("type")), str(error.get("message")), None))
        return EffectDone(request.token, recorded.get("value"))

    def missing_effect(self) -> ReplayMismatch:
        recorded = self.effects[self.effected]
        return self.mismatch(f"the recording has effect {recorded.get('fn')} next, but the "
                             "script yielded none", _effect_shape(recorded, self.masked), None)

    def answer(self, method: str, path: str, body: Any) -> _Answer:
        if body is not None:
            body = _scrub_json(json.loads(json.dumps(body)), self.masked)
        issued = (method.upper(), path, body)
        if self.issued >= len(self.expected):
            raise _Diverged(self.mismatch("the script issued a request the recording does "
                                          "not have", None, issued))
        due = self._effect_due()
        if due is not None:
            raise _Diverged(self.mismatch(f"the recording has effect {due.get('fn')} here, but "
                                          "the script issued a request",
                                          _effect_shape(due, self.masked), issued))
        step = self.expected[self.issued]
        if step.shape != issued:
            raise _Diverged(self.mismatch("the script issued a different request",
                                          step.shape, issued))
        self.issued += 1
        return step.answer

    def missing(self, before: str) -> ReplayMismatch:
        return self.mismatch(f"the recording has another request before {before}, but the "
                             "script issued none", self.expected[self.issued].shape, None)

    def mismatch(self, what: str, recorded: Any, issued: Any) -> ReplayMismatch:
        events = list(self.call.transcript)
        doing = [i for i, e in enumerate(events) if e.kind not in (RESULT, "enter", "exit")]
        lines = masked_lines(events)
        parts = [f"replay of {self.recording.path}: step {self.issued + 1} of "
                 f"{len(self.expected)}: {what}."]
        where = _script_line(self.engine) if self.engine is not None else None
        if where is not None:
            parts.append(f"  script:   {where}")
        if doing:
            at = doing[-1]
            recorded_lines = self.recording.transcript
            commands = {c.get("line"): c for c in self.recording.meta.get("commands") or ()
                        if isinstance(c, dict)}
            mine = _command_data(events[at].data["command"]) if _is_command(events[at]) \
                else None
            theirs = commands.get(at)
            was = recorded_lines[at] if at < len(recorded_lines) else "(nothing)"
            parts.append(f"  recorded: {was}")
            parts.append(f"  replayed: {lines[at]}")
            if mine is not None or theirs is not None:
                a, b = _as_yielded(theirs, mine)
                if theirs is None and "commands" not in self.recording.meta:
                    a = "(not in this cassette: recorded by an older ivrscript)"
                if a != b:
                    parts.append(f"  as yielded, recorded: {a}")
                    parts.append(f"  as yielded, replayed: {b}")
        parts.append("  REST detail:")
        parts.append(_side_by_side(recorded, issued))
        parts.append("  transcript up to there:")
        parts.append("\n".join(f"    {line}" for line in lines) or "    (empty)")
        return ReplayMismatch("\n".join(parts))


class _Player(RingCentral):
    """The platform client of a replay: its commands build the real requests, and
    :meth:`request` answers each from the recording (no HTTP at all). One per thread, reused
    (building a client reads the environment's proxy settings: slow)."""

    playback: _Playback

    def __init__(self) -> None:
        super().__init__(server_url=_REPLAY_SERVER, token="replay")

    def request(self, method: str, path: str, *, json: Any = None,  # noqa: A002 - same name
                retry: bool = True) -> Any:
        answer = self.playback.answer(method, path, json)
        if 200 <= answer.status_code < 300:
            return answer
        raise error_for(answer, method.upper(), path, retry=retry)


_players = threading.local()
_checked: weakref.WeakSet[Any] = weakref.WeakSet()  # scripts the loader found no slip in
_libraries: dict[str | None, MediaLibrary] = {}  # by script folder (it caches by file mtime)
_libraries_lock = threading.Lock()


def _player(playback: _Playback) -> _Player:
    player = getattr(_players, "player", None)
    if player is None:
        player = _players.player = _Player()
    player.playback = playback
    return player


def _check(script: Any) -> None:
    try:
        if script in _checked:
            return
    except TypeError:  # not weakly referable: check it every time
        check_script(script)
        return
    if not check_script(script):
        _checked.add(script)


def _library(folder: str | None) -> MediaLibrary:
    with _libraries_lock:
        library = _libraries.get(folder)
        if library is None:
            if len(_libraries) >= 64:
                _libraries.clear()
            library = _libraries[folder] = MediaLibrary([folder])
            library.base_url = APP_MEDIA.rsplit("/media", 1)[0]
        return library


def _stand_in(call: Call) -> str:
    """Keys for a masked collect: its first pattern with every ``x`` a ``0``."""
    for event in reversed(list(call.transcript)):
        command = event.data.get("command")
        patterns = getattr(command, "patterns", None)
        if patterns:
            return str(patterns[0]).replace("x", "0")
    return "0000"


def _unmasked(callback: dict[str, Any], call: Call, digits: list[str] | None,
              path: str) -> dict[str, Any]:
    body = callback.get("body") or {}
    number = callback.get("masked")
    if not number:
        return body
    if digits is None:
        value = _stand_in(call)
    elif number <= len(digits):
        value = digits[number - 1]
    else:
        raise ConfigError(f"{path} has sensitive keys no. {number}, but digits= names "
                          f"{len(digits)}: give one value per masked collect")
    return {**body, "parameters": {**(body.get("parameters") or {}), "digits": value}}


def _comparable(line: str) -> str:
    """A transcript line as replay compares it: a traceback by its last line (the error
    itself), since its frames name files of the machine and the stack that ran it."""
    if line.startswith("error   Traceback"):
        last = [x.strip() for x in line.splitlines() if x.strip()][-1]
        return f"error   {last}"
    return line


def compare_transcript(recording: Recording, transcript: Transcript) -> None:
    """Raise :class:`ReplayMismatch` if ``transcript`` is not the one recorded (a diff)."""
    __tracebackhide__ = True
    recorded = recording.transcript
    replayed = masked_lines(transcript)
    if recording.meta.get("numbers_masked"):
        replayed = [mask_numbers_in(line) for line in replayed]
    if recorded and [_comparable(x) for x in recorded] != [_comparable(x) for x in replayed]:
        diff = "\n".join(difflib.unified_diff(recorded, replayed, "recorded", "replayed",
                                               lineterm=""))
        raise ReplayMismatch(f"replay of {recording.path}: every request matched, but the "
                             f"transcript differs from the recorded one:\n{diff}")


def replay(path: str | os.PathLike[str], script: Callable[[Call], Any], *,
           on_error: Any = None, digits: Iterable[str] | None = None,
           same_transcript: bool = True) -> Transcript:
    """Re-run ``script`` against a recorded call; returns the replayed transcript.

    No sockets and no sleeping: callbacks come from the cassette, REST answers from the
    recording, retries and waits are fed back at once, effects get their recorded results
    (their functions are never called). A script that issues a different request or effect,
    or one the recording lacks, or stops before the recording does, raises
    :class:`ReplayMismatch`; so does a transcript that differs from the recorded one (unless
    ``same_transcript=False``). Cancels of a barge-in prompt depend on timing and are not
    compared. The keys of a sensitive collect are not in the cassette: the script gets
    ``digits`` (one value per masked collect, in order) or a stand-in fitting the pattern.
    """
    __tracebackhide__ = True
    _check(script)
    recording = load_recording(path)
    wanted = None if digits is None else [str(d) for d in digits]
    callbacks = recording.callbacks
    call = call_from_enter(callbacks[0]["body"])
    call.script_name = getattr(script, "__qualname__", repr(script))
    library = _library(script_dir(script))

    def resolve(ref: str) -> Media:
        media = library.resolve(ref)
        uri = re.sub(re.escape(library.base_url) + r"/media/[^/]+/", APP_MEDIA + "/", media.uri)
        return Media(uri, media.seconds)

    engine = CallEngine(script, call, resolve_media=resolve, on_error=on_error, time_scale=0)
    playback = _Playback(recording, call)
    playback.engine = engine
    client = _player(playback)
    waits: collections.deque[Any] = collections.deque()

    def run(actions: Iterable[Any]) -> None:
        queue = collections.deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Request):
                if action.op == "cancel":
                    continue  # timing-dependent: neither sent nor compared
                if action.op == "effect":
                    queue.extend(engine.handle(playback.effect(action)))
                    continue
                queue.extend(engine.handle(send_with(client, action)))
            elif isinstance(action, Wait):
                waits.append(action.event)
            elif isinstance(action, Finished):
                pass

    try:
        run(engine.start())
        cancels_before = _cancels_before(recording.requests)
        for index, callback in enumerate(callbacks[1:], start=2):
            kind = callback["kind"]
            needed = callback["after"] - cancels_before(callback["after"])
            while playback.issued < needed and waits:
                run(engine.handle(waits.popleft()))
            if playback.issued < needed:
                raise playback.missing(f"callback {index} ({kind})")
            if kind == "on-call-enter":
                continue  # a duplicate delivery
            body = _unmasked(callback, call, wanted, recording.path)
            run(engine.handle(callback_event(kind, body, None)))
        while waits and not engine.done:
            run(engine.handle(waits.popleft()))
        if playback.effected < len(playback.effects) and playback._effect_due() is not None:
            raise playback.missing_effect()
        if playback.issued < len(playback.expected):
            raise playback.missing("the end of the call")
        if playback.effected < len(playback.effects):
            raise playback.missing_effect()
    except _Diverged as diverged:
        raise diverged.mismatch from None
    if same_transcript:
        compare_transcript(recording, call.transcript)
    return call.transcript


def _effect_shape(data: dict[str, Any], masked: bool) -> tuple[str, str, Any]:
    """An effect as replay compares it (and shows it beside a request): its function's name
    and its arguments."""
    args = {"args": data.get("args"), "kwargs": data.get("kwargs")}
    return "EFFECT", str(data.get("fn")), _scrub_json(json.loads(json.dumps(args)), masked)


def _cancels_before(requests_: list[Any]) -> Callable[[int], int]:
    """How many of the first n recorded requests were cancels (not compared in replay)."""
    prefix = [0]
    for request in requests_:
        prefix.append(prefix[-1] + (1 if _is_cancel(request) else 0))
    return lambda n: prefix[min(max(n, 0), len(requests_))]
