"""Recording calls as vcrpy cassettes, and replaying them: the one module that imports vcrpy
and yaml.

A cassette is vcrpy's YAML file: the call's REST interactions, captured by vcrpy's own
connection stubs, plus a top-level ``ivrscript`` key with the script's name, when it was
recorded, the inbound callbacks in arrival order (each with ``after``: how many of the call's
REST interactions had completed when it arrived) and the transcript as the app saw it.

Why vcrpy is not used as a process-wide patch here: ``use_cassette`` swaps urllib3's connection
classes for every thread and briefly swaps them back around each real request, so with many
calls in flight (and the simulator's own requests in the same process) requests would slip past
it. Instead vcrpy's connection stubs are mounted on ONE ``requests.Session``: the app's platform
client while recording (only requests to the platform's URL pass through them, so the app's
own listener, media fetches and anything else are never recorded), a replay's own client while
playing back. Nothing global is patched, so any number of calls, apps and replays can run at
once. Interactions are split per call by the session id in their path.

What never reaches a file: Authorization headers, the token endpoint's exchanges, token-like
fields in bodies, the listener's secret (local media URLs are rewritten to
``https://app.ivrscript.invalid/media/NAME``), and, with ``numbers=False``, phone numbers.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests.adapters
import urllib3.connectionpool
import yaml
from vcr.cassette import Cassette
from vcr.filters import remove_headers
from vcr.persisters.filesystem import CassetteNotFoundError, FilesystemPersister
from vcr.record_mode import RecordMode
from vcr.request import Request as VcrRequest
from vcr.serialize import serialize
from vcr.serializers import yamlserializer
from vcr.stubs.urllib3_stubs import VCRRequestsHTTPConnection, VCRRequestsHTTPSConnection

from .call import Call, Transcript, mask_number
from .engine import CallEngine, Finished, Media, Request, Wait
from .errors import ConfigError, ReplayMismatch
from .loader import check_script, script_dir
from .media import MediaLibrary

__all__ = ["Recorder", "replay", "load_recording", "Recording", "APP_MEDIA"]

log = logging.getLogger("ivrscript.recorder")

APP_MEDIA = "https://app.ivrscript.invalid/media"  # what local media URLs become in a cassette
_REPLAY_SERVER = "http://platform.replay.invalid"  # replay's client; never resolved or reached
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C ones when libyaml is there
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SESSION_IN_PATH = re.compile(r"/telephony/sessions/([^/?#]+)")
_CANCEL_PATH = re.compile(r"/play/[^/]+$")
_SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token", "assertion", "jwt",
                          "client_secret", "password", "token"})
_SENSITIVE_HEADERS = ("Authorization", "authorization", "Cookie", "cookie", "Set-Cookie",
                      "set-cookie", "WWW-Authenticate", "www-authenticate")


# -- vcrpy's connection stubs on one requests.Session -----------------------------------------


def _mount(session: requests.Session, prefix: str, cassette: Cassette, *,
           single_connection: bool, pool_size: int = 32) -> requests.adapters.HTTPAdapter:
    """Route ``session``'s requests under ``prefix`` through vcrpy's stubs bound to
    ``cassette`` (the per-cassette subclass is what ``use_cassette`` builds, minus the global
    patch). ``single_connection``: one stub reused by one thread (playback)."""
    http_stub = type("IvrVCRHTTPConnection", (VCRRequestsHTTPConnection,),
                     {"cassette": cassette})
    https_stub = type("IvrVCRHTTPSConnection", (VCRRequestsHTTPSConnection,),
                      {"cassette": cassette})

    def get_conn(self: Any, timeout: float | None = None) -> Any:
        conn, self._ivr_idle = getattr(self, "_ivr_idle", None), None
        return conn if conn is not None else self._new_conn()

    def put_conn(self: Any, conn: Any) -> None:
        self._ivr_idle = conn

    def pool(base: type, stub: type) -> type:
        attrs: dict[str, Any] = {"ConnectionCls": stub}
        if single_connection:
            # Playback has no socket whose liveness urllib3 could check: keep one stub.
            attrs["_get_conn"] = get_conn
            attrs["_put_conn"] = put_conn
        return type(f"Ivr{base.__name__}", (base,), attrs)

    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size,
                                            max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": pool(urllib3.connectionpool.HTTPConnectionPool, http_stub),
        "https": pool(urllib3.connectionpool.HTTPSConnectionPool, https_stub),
    }
    session.mount(prefix, adapter)
    return adapter


def _platform_session(client: Any) -> requests.Session:
    session = getattr(client, "_session", None)  # RingCentral's one pooled session
    if not isinstance(session, requests.Session):
        raise ConfigError(f"cannot record calls made through {client!r}: recording needs "
                          "ivrscript's RingCentral client (or the Simulator)")
    return session


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


class _NoFile:
    """A vcrpy persister for the recording cassette: interactions are filed per call instead."""

    @staticmethod
    def load_cassette(cassette_path: Any, serializer: Any) -> Any:
        raise CassetteNotFoundError()

    @staticmethod
    def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
        return None


class _RecordingCassette(Cassette):
    """vcrpy's stubs hand every exchange to ``append``; it goes to the call it belongs to."""

    recorder: Recorder

    def can_play_response_for(self, request: Any) -> bool:
        return False  # recording only: every request goes to the platform

    def append(self, request: Any, response: Any) -> None:
        self.recorder._record(request, response)


@dataclass
class _Session:
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[tuple[Any, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class Recorder:
    """Writes one cassette per finished call into ``directory`` (``App(record=...)``).

    ``numbers=False`` masks phone numbers (callbacks, REST bodies, transcript). ``paths`` maps
    each written call's session id to its file.
    """

    def __init__(self, app: Any, directory: str | os.PathLike[str], *,
                 numbers: bool = True) -> None:
        self.app = app
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot record calls into {self.directory!r}: "
                              f"{error.strerror or error}") from None
        self.numbers = numbers
        # The latest cassettes by session id (bounded: an app may run for months).
        self.paths: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._saved = threading.Condition(self._lock)
        self._media_base: Callable[[], str] = lambda: getattr(app._media, "base_url", "")
        client = app.client
        self._session = _platform_session(client)
        self._prefix = client.server_url.rstrip("/") + "/"
        self._previous = self._session.adapters.get(self._prefix)
        self._cassette = _RecordingCassette(f"<recording {self.directory}>", persister=_NoFile,
                                            record_mode=RecordMode.ALL)
        self._cassette.recorder = self
        self._adapter = _mount(self._session, self._prefix, self._cassette,
                               single_connection=False)
        self._closed = False

    # -- observer hooks (App) -----------------------------------------------------------------

    def callback(self, kind: str, body: dict[str, Any]) -> None:
        """A callback the app accepted (listener thread, before dispatch)."""
        session_id = body.get("sessionId")
        if not isinstance(session_id, str):
            return
        with self._lock:
            if kind == "on-call-enter" and session_id not in self._sessions:
                self._sessions[session_id] = _Session()
            entry = self._sessions.get(session_id)
            if entry is None:
                return
            entry.callbacks.append({
                "kind": kind,
                "after": len(entry.interactions),
                "at": round(time.monotonic() - entry.started, 3),
                "body": body,
            })

    def finished(self, call: Call) -> None:
        """The call is over (worker thread): write its cassette."""
        with self._lock:
            entry = self._sessions.pop(call.session_id, None)
        if entry is None:
            return
        path = os.path.join(self.directory, f"{_file_stem(call)}-{call.session_id}.yaml")
        try:
            self._write(path, call, entry)
        except Exception:
            log.exception("could not write the cassette of call %s to %s", call.session_id,
                          path)
            return
        with self._saved:
            self.paths[call.session_id] = path
            while len(self.paths) > 10_000:
                self.paths.popitem(last=False)
            self._saved.notify_all()
        log.info("call %s recorded in %s", call.session_id, path)

    def close(self) -> None:
        """Stop recording: the platform client talks to the network directly again."""
        if self._closed:
            return
        self._closed = True
        if self._session.adapters.get(self._prefix) is self._adapter:
            if self._previous is not None:
                self._session.adapters[self._prefix] = self._previous
            else:
                del self._session.adapters[self._prefix]
        self._adapter.close()
        with self._lock:
            unfinished = list(self._sessions)
            self._sessions.clear()
        if unfinished:
            log.info("not recorded (still in progress at stop): %s", ", ".join(unfinished))

    def wait_for(self, session_id: str, timeout: float = 10.0) -> str:
        """The cassette path of a call, once written (waits up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._saved:
            while session_id not in self.paths:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no cassette for call {session_id} after {timeout} s "
                                       "(has the call ended?)")
                self._saved.wait(left)
            return self.paths[session_id]

    # -- vcrpy's stubs call this (worker threads) ---------------------------------------------

    def _record(self, request: VcrRequest, response: dict[str, Any]) -> None:
        match = _SESSION_IN_PATH.search(request.path)
        if match is None:  # the token endpoint, RingOut: not part of a call
            return
        if response.get("status", {}).get("code") == 401:
            return  # an expired token, renewed and retried by the client: not the call's story
        with self._lock:
            entry = self._sessions.get(match.group(1))
            if entry is None:
                return
            entry.interactions.append((request, response))

    @staticmethod
    def _clean_request(scrub: _Scrubber, request: VcrRequest) -> VcrRequest:
        # Content-Length would describe the body before scrubbing.
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

    def _write(self, path: str, call: Call, entry: _Session) -> None:
        # One scrubber per call: with masking it learns this call's numbers as it goes.
        scrub = _Scrubber(self._media_base, self.app.secret, mask_numbers=not self.numbers)
        if scrub.mask_numbers:
            for cb in entry.callbacks:
                scrub.numbers.update(_phone_numbers(cb["body"]))
        with self._lock:
            interactions = [(self._clean_request(scrub, req), self._clean_response(scrub, resp))
                            for req, resp in entry.interactions]
            callbacks = [{**cb, "body": scrub.data(cb["body"])} for cb in entry.callbacks]
        lines = [scrub.text(line) for line in call.transcript.lines()]
        script = self.app.script
        meta = {
            "script": {"name": call.script_name or getattr(script, "__qualname__", "?"),
                       "file": _script_file(script)},
            "recorded_at": datetime.fromtimestamp(call.started, UTC).isoformat(
                timespec="seconds"),
            "platform": "simulator" if hasattr(self.app.platform, "call") else "ringcentral",
            "numbers_masked": not self.numbers,
            "end_reason": call.end_reason,
            "callbacks": callbacks,
            "transcript": lines,
        }
        cassette_dict = {"requests": [r for r, _ in interactions],
                         "responses": [r for _, r in interactions]}
        text = (yaml.dump({"ivrscript": meta}, Dumper=_YAML_DUMPER, sort_keys=False,
                          allow_unicode=True, width=100)
                + serialize(cassette_dict, yamlserializer))
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _script_file(script: Any) -> str | None:
    from .notebook import source_file  # the notebook's name, not ipykernel's cell file

    code = getattr(script, "__code__", None)
    return source_file(code.co_filename) if code is not None else None


def _file_stem(call: Call) -> str:
    name = call.script_name or "call"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("<locals>.", ""))


# -- loading a cassette -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """A loaded cassette: the ``ivrscript`` metadata and vcrpy's interactions."""

    path: str
    meta: dict[str, Any]
    requests: list[Any]
    responses: list[Any]

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        return list(self.meta.get("callbacks") or [])

    @property
    def transcript(self) -> list[str]:
        """The transcript the app had when the call was recorded."""
        return list(self.meta.get("transcript") or [])


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a cassette written by :class:`Recorder`; a clear error if it is not one."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise ConfigError(f"no such recording: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not a YAML cassette: {error}") from None
    meta = data.get("ivrscript") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("callbacks"), list):
        raise ConfigError(f"{path} is not an ivrscript recording (no 'ivrscript' key with the "
                          "call's callbacks): record calls with App(record=DIR)")
    found = FilesystemPersister.load_cassette(path, serializer=yamlserializer)
    return Recording(path, meta, list(found[0]), list(found[1]))


# -- replay -----------------------------------------------------------------------------------


def _shape(request: Any, mask_numbers: bool) -> tuple[str, str, Any]:
    """What replay compares: method, path and body (host, port, scheme, headers ignored)."""
    text = _body_text(request.body_bytes if hasattr(request, "body_bytes") else request.body)
    body: Any = text
    if text:
        try:
            body = _scrub_json(json.loads(text), mask_numbers)
        except ValueError:
            body = text
    return request.method.upper(), request.path, body or None


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


def _side_by_side(recorded: tuple[str, str, Any] | None,
                  issued: tuple[str, str, Any] | None) -> str:
    def rows(shape: tuple[str, str, Any] | None) -> dict[str, str]:
        if shape is None:
            return {"request": "(none)"}
        out = {"method": shape[0], "path": shape[1]}
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


class _Playback:
    """The recorded requests in order; checks each issued one against the next."""

    def __init__(self, recording: Recording, transcript: Transcript) -> None:
        self.recording = recording
        self.masked = bool(recording.meta.get("numbers_masked"))
        self.transcript = transcript
        self.expected = [req for req in recording.requests if not _is_cancel(req)]
        self.issued = 0  # recorded requests (cancels excluded) matched so far

    def shape(self, request: Any) -> tuple[str, str, Any]:
        return _shape(request, self.masked)

    def check(self, request: Any) -> None:
        expected = self.expected[self.issued] if self.issued < len(self.expected) else None
        issued = self.shape(request)
        if expected is None:
            raise self.mismatch("the script issued a request the recording does not have",
                                None, issued)
        recorded = self.shape(expected)
        if recorded != issued:
            raise self.mismatch("the script issued a different request", recorded, issued)
        self.issued += 1

    def missing(self, before: str) -> ReplayMismatch:
        recorded = self.shape(self.expected[self.issued])
        return self.mismatch(f"the recording has another request before {before}, but the "
                             "script issued none", recorded, None)

    def mismatch(self, what: str, recorded: Any, issued: Any) -> ReplayMismatch:
        step = self.issued + 1
        doing = [e for e in self.transcript if e.kind != "result"]
        where = f" (at {doing[-1].line().strip()!r})" if doing else ""
        lines = self.transcript.lines()
        shown = "\n".join(f"    {line}" for line in lines) or "    (empty)"
        return ReplayMismatch(
            f"replay of {self.recording.path}: step {step} of {len(self.expected)}{where}: "
            f"{what}.\n{_side_by_side(recorded, issued)}\n  transcript up to there:\n{shown}")


class _Diverged(BaseException):
    """Carries a ReplayMismatch out through requests and the app's send (which turn any
    Exception into a failed command) to the replay loop."""

    def __init__(self, mismatch: ReplayMismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class _PlaybackCassette(Cassette):
    """vcrpy playback (record mode none): plays the recorded response of each request, after
    :class:`_Playback` has checked it is the one the recording has next."""

    playback: _Playback

    def can_play_response_for(self, request: Any) -> bool:
        try:
            self.playback.check(request)
        except ReplayMismatch as mismatch:
            raise _Diverged(mismatch) from None
        return True


def replay(path: str | os.PathLike[str], script: Callable[[Call], Any], *,
           on_error: Any = None) -> Transcript:
    """Re-run ``script`` against a recorded call; returns the replayed transcript.

    No sockets and no sleeping: callbacks come from the cassette, REST answers from vcrpy's
    playback, retries and waits are fed back at once. A script that issues a different request,
    or one the recording lacks, or stops before the recording does, raises
    :class:`ReplayMismatch`. Cancels of a barge-in prompt depend on timing and are not compared.
    """
    from .app import App, call_from_enter, callback_event
    from .ringcentral import RingCentral

    check_script(script)
    recording = load_recording(path)
    callbacks = recording.callbacks
    if not callbacks or callbacks[0].get("kind") != "on-call-enter":
        raise ConfigError(f"{recording.path} has no on-call-enter callback to start from")
    call = call_from_enter(callbacks[0]["body"])
    call.script_name = getattr(script, "__qualname__", repr(script))
    library = MediaLibrary([script_dir(script)])
    library.base_url = APP_MEDIA.rsplit("/media", 1)[0]

    def resolve(ref: str) -> Media:
        media = library.resolve(ref)
        uri = re.sub(re.escape(library.base_url) + r"/media/[^/]+/", APP_MEDIA + "/", media.uri)
        return Media(uri, media.seconds)

    engine = CallEngine(script, call, resolve_media=resolve, on_error=on_error, time_scale=0)
    playback = _Playback(recording, call.transcript)
    cassette = _PlaybackCassette(recording.path, record_mode=RecordMode.NONE,
                                 match_on=(_shape_matcher(playback.masked),))
    for request, response in zip(recording.requests, recording.responses, strict=True):
        cassette.data.append((request, response))
    cassette.rewound = True
    cassette.playback = playback
    client = RingCentral(server_url=_REPLAY_SERVER, token="replay")
    _mount(_platform_session(client), _REPLAY_SERVER + "/", cassette, single_connection=True)
    waits: collections.deque[Any] = collections.deque()

    def run(actions: Iterable[Any]) -> None:
        queue = collections.deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Request):
                if action.op == "cancel":
                    continue  # timing-dependent: neither sent nor compared
                outcome = App.send_with(client, action)
                queue.extend(engine.handle(outcome))
            elif isinstance(action, Wait):
                waits.append(action.event)
            elif isinstance(action, Finished):
                pass

    try:
        run(engine.start())
        cancels_before = _cancels_before(recording.requests)
        for index, callback in enumerate(callbacks[1:], start=2):
            kind = callback.get("kind", "?")
            needed = int(callback.get("after", 0)) - cancels_before(
                int(callback.get("after", 0)))
            while playback.issued < needed and waits:
                run(engine.handle(waits.popleft()))
            if playback.issued < needed:
                raise playback.missing(f"callback {index} ({kind})")
            if kind == "on-call-enter":
                continue  # a duplicate delivery
            run(engine.handle(callback_event(kind, callback.get("body") or {}, None)))
        while waits and not engine.done:
            run(engine.handle(waits.popleft()))
        if playback.issued < len(playback.expected):
            raise playback.missing("the end of the call")
    except _Diverged as diverged:
        raise diverged.mismatch from None
    finally:
        client.close()
    return call.transcript


def _cancels_before(requests_: list[Any]) -> Callable[[int], int]:
    """How many of the first n recorded requests were cancels (not compared in replay)."""
    prefix = [0]
    for request in requests_:
        prefix.append(prefix[-1] + (1 if _is_cancel(request) else 0))
    return lambda n: prefix[min(max(n, 0), len(requests_))]


def _shape_matcher(masked: bool) -> Callable[[Any, Any], None]:
    def same_request(r1: Any, r2: Any) -> None:
        """Same method, path and body; host, port, scheme and headers ignored."""
        a, b = _shape(r1, masked), _shape(r2, masked)
        if a != b:
            raise AssertionError(f"{a} != {b}")

    return same_request
