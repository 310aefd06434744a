"""A fake RingCentral platform on loopback, for tests, notebooks and the CLI.

``Simulator`` is a real HTTP server (werkzeug, in a background thread) that serves the REST
paths of RingCentral's IVR app API with the same shapes and error bodies, keeps call sessions,
and POSTs the callbacks to an app's URLs (``requests``, one pooled session, 3 s timeout). Any
RingCentral client can drive it: give it ``sim.url`` as the server and ``sim.token`` as a static
Bearer token, or use the JWT flow at ``/restapi/oauth/token``. ``sim.call(app)`` rings an app and
returns a :class:`Phone`, the simulated caller, which presses keys and hangs up.

The rules follow ``PLATFORM.md`` ("The simulator's rules"). Where the platform guide is silent,
the simulator decides, as follows:

Time
  * ``speed`` divides every platform timer (play length, collect ``timeout`` and
    ``interDigitTimeout``); token lifetimes and fault-injection delays are real time.
  * All timers run on ONE scheduler thread; callbacks are delivered by a small fixed pool of
    worker threads, one call's callbacks strictly in order. Threads never grow with calls.

Auth
  * ``/restapi/oauth/token`` needs ``Authorization: Basic base64(id:secret)`` (any id/secret;
    else 401 ``OAU-153``), grants ``jwt-bearer`` (any non-empty assertion) and
    ``refresh_token`` (single use; unknown or used -> 400 ``OAU-211``; other grant types -> 400
    ``OAU-250``; a missing parameter -> 400 ``OAU-251``). OAuth errors also carry ``error`` and
    ``error_description``.
  * ``/restapi/v1.0`` without a Bearer token -> 401 ``OAU-123``; an unknown, expired
    (older than ``token_ttl`` real seconds) or expired-by-:meth:`Simulator.expire_tokens`
    token -> 401 ``OAU-213``. ``expire_tokens`` invalidates access tokens only: refresh tokens
    keep working, so a client can recover by refreshing. The static token never expires.

Validation and errors
  * Unknown session, party, play id, ring-out id or path -> 404 ``CMN-102``; a command on an
    ended session -> 404 ``CMN-102``; Play/Collect on the app party or Forward on the caller
    party -> 404 ``CMN-102`` with a hint naming the right party. A bad body -> 400 ``CMN-101``
    naming the parameter; a wrong method -> 405 ``CMN-405``; a body over 1 MiB -> 413.
  * Order of checks for a session command: token, session exists, fault injection, session
    still in progress, party, body.

Play
  * ``interruptByDtmf`` defaults to true (the 2019 spec), ``repeatCount`` to 1; each
    resource ``uri`` must be an ``http(s)`` URL.
  * Media length: a URI on the host:port of the call's callback URLs (the app serves it) is
    fetched once (cached per URI; failures are not cached) and its WAV header gives the
    length; a non-WAV body counts ``default_media_seconds``; 404, any other non-200 or no
    answer -> the play's update is ``Failed`` when that resource's turn comes (resources
    before it are heard). Other URIs are never fetched: ``default_media_seconds``.
  * A new Play while another plays on the party replaces it: the earlier one ends
    ``Canceled`` (with its update). DELETE of a play that already ended -> 204, nothing else.
  * ``Phone.heard`` gets each resource's URI once per play, as it first starts.

Collect
  * ``patterns``: strings of ``0-9 * # x`` (``X`` taken as ``x``; ``x`` is any digit 0-9).
    ``timeout`` (default 10000 ms) and ``interDigitTimeout`` (default 3000 ms) are
    milliseconds > 0. ``terminator``: ``"#"`` or ``"*"``; ABSENT or null means NO terminator
    (then ``#``/``*`` are ordinary keys). A key equal to the terminator always terminates.
    ``resetInput`` defaults to true.
  * Keys go to the active collect, else to the party's input buffer (the last 64 keys are
    kept). Digits a collect consumed are never put back in the buffer; with
    ``resetInput: false`` a collect starts by consuming the buffered keys, in order.
  * ``interDigitTimeout`` runs only once the input has at least the shortest pattern's length,
    restarting at each key. When ``timeout`` passes with at least that many keys, the input
    ends ``Completed`` if it equals a pattern, else ``Not Found``.
  * One collect at a time per party: a second while one is active -> 409 ``TAS-409``.
  * Answered 204 without a body; with ``collect_ids=True``, 201 ``{"id"}`` and the update
    carries it as ``commandId``.

Calls
  * ``on-call-enter`` that gets no 2xx (or no answer in 3 s) ends the call (``end_reason``
    ``"hangup"``, ``Phone.error`` says why) WITHOUT on-call-exit: the app never took it.
  * Forward, drop and caller hang-up stop the active play and collect without updates, then
    send on-call-exit. The simulator never sends ``on-command-error`` (its payload is
    undocumented); a play whose media fails gets a ``Failed`` update instead.
  * RingOut: the simulated customer phone answers at once; the on-call-enter goes to the
    connected app whose extension number equals ``to.phoneNumber`` (any ``to`` when exactly one
    app is connected). GET reports ``InProgress`` until the app answers on-call-enter, then
    ``Success`` (``GenericError`` if it refused). DELETE of a connected ring-out drops the call
    as the app would (end reason ``"hangup"``). RingOut is never fault-injected.
  * ``stop()`` ends calls in progress quietly (no callbacks): ``end_reason``
    ``"caller-hangup"``, ``Phone.error`` ``"the simulator stopped"``.

Fault injection (shares in [0, 1])
  * Seeded per call: ``random.Random(f"{seed}:{call_number}")`` seeds two streams, one for
    REST faults and one for callback faults, so the same seed and the same requests give the
    same faults. ``seed=None`` picks a random seed, kept in ``sim.seed`` to repeat a run.
  * ``rate_limited`` / ``unavailable``: the share of session commands (play, cancel, collect,
    forward, drop) answered 429 ``CMN-301`` / 503 ``CMN-211``, both with ``Retry-After: 1``;
    such a request is not executed. Each command draws one number.
  * ``duplicate_callbacks``: the share of callbacks delivered twice (never on-call-enter;
    Collect updates only with ``collect_ids=True``). ``late_callbacks``: the share held back a
    random 0-200 ms, so later callbacks can overtake them (never on-call-enter).
  * ``sim.faults_injected`` counts the faults injected so far, by those four names.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .errors import IvrError
from .scheduler import Scheduler, Timer
from .wav import wav_seconds

__all__ = ["Simulator", "Phone", "PhoneEvent", "PhoneTranscript", "RestRecord", "ACCOUNT_ID"]

_log = logging.getLogger(__name__)

ACCOUNT_ID = "400131801008"
KEYS = frozenset("0123456789*#")
ENTER, UPDATE, EXIT = "on-call-enter", "on-command-update", "on-call-exit"
_REQUIRED_URLS = (ENTER, UPDATE, EXIT)
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_CALLBACK_TIMEOUT = 3.0
_MEDIA_TIMEOUT = 3.0
_MEDIA_MAX_BYTES = 1 << 20  # enough for any WAV header
_BODY_MAX_BYTES = 1 << 20
_BUFFER_KEYS = 64
_LATE_MAX = 0.2
_DELIVERY_WORKERS = 8
_REFRESH_TTL = 604800
_PATTERN = re.compile(r"^[0-9*#xX]+$")
_V1 = "/restapi/v1.0/account/<account>"
_SESSION = f"{_V1}/telephony/sessions/<session_id>"
_PARTY = f"{_SESSION}/parties/<party_id>"


class _HasCallbackUrls(Protocol):
    @property
    def callback_urls(self) -> Mapping[str, str]: ...


AppLike = _HasCallbackUrls | Mapping[str, str]


# -- public records --------------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneEvent:
    """One thing that happened on the platform's side of a call.

    ``kind`` is one of ``ring`` (on-call-enter sent), ``answered`` (the app took the call),
    ``play`` (a resource started; details: its URI), ``played`` (a play ended; details: its
    status), ``listen`` (a collect started), ``keys`` (the caller pressed keys), ``collected``
    (a collect ended: digits and status), ``rejected`` (a REST command was refused: status and
    errorCode), ``forward``, ``hangup`` (the app dropped the call), ``caller-hangup``,
    ``error`` (on-call-enter failed, media failed) and ``exit`` (the call ended).
    ``time`` is seconds since the call started.
    """

    kind: str
    details: str
    time: float

    def __str__(self) -> str:
        return f"{self.kind:<13} {self.details}".rstrip()


class PhoneTranscript(list[PhoneEvent]):
    """The platform's side of a call: a list of :class:`PhoneEvent`, one line each in ``str``."""

    def __str__(self) -> str:
        return "\n".join(f"{event.time:7.2f}s  {event}" for event in self)


@dataclass(frozen=True)
class RestRecord:
    """One REST request the simulator received and how it answered.

    ``json`` is the parsed JSON body (``None`` when absent or not JSON; token requests are
    never kept), ``time`` is ``time.monotonic()`` when the answer was made.
    """

    method: str
    path: str
    json: Any
    status: int
    session_id: str | None
    time: float


# -- internal state --------------------------------------------------------------------------


def _join(thread: threading.Thread | None, timeout: float) -> None:
    """Join a thread we started, unless it is the caller (stop() from a listener)."""
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)


@dataclass(eq=False)
class _Outgoing:
    kind: str
    url: str
    body: dict[str, Any]


class _Courier:
    """Delivers callbacks on a fixed pool of threads, each call's callbacks in order.

    A call is in the ready queue at most once; the worker that takes it delivers one callback
    and puts it back at the end if it has more, so calls share the workers fairly.
    """

    def __init__(self, deliver: Callable[[Phone, _Outgoing], None], workers: int) -> None:
        self._deliver = deliver
        self._cond = threading.Condition()
        self._ready: deque[Phone] = deque()
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name=f"ivrscript-sim-callbacks-{i}",
                                          daemon=True) for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, phone: Phone, item: _Outgoing) -> None:
        with self._cond:
            if self._stopped:
                return
            phone._outbox.append(item)
            if not phone._claimed:
                phone._claimed = True
                self._ready.append(phone)
                self._cond.notify()

    def release(self, phone: Phone) -> None:
        """Give back a call claimed by a thread that delivered outside the pool."""
        with self._cond:
            if phone._outbox and not self._stopped:
                self._ready.append(phone)
                self._cond.notify()
            else:
                phone._claimed = False

    def discard(self, phone: Phone) -> None:
        with self._cond:
            phone._outbox.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                phone = self._ready.popleft()
                item = phone._outbox.popleft() if phone._outbox else None
            try:
                if item is not None:
                    self._deliver(phone, item)
            except Exception:
                _log.exception("simulator callback delivery failed")
            finally:
                self.release(phone)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._ready.clear()
            self._cond.notify_all()
        for thread in self._threads:
            _join(thread, _CALLBACK_TIMEOUT + 2.0)


class _EventDispatcher:
    """Calls listeners from one thread, in event order, outside the simulator's lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: deque[tuple[Phone, PhoneEvent]] = deque()
        self._listeners: list[Callable[[Phone, PhoneEvent], Any]] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ivrscript-sim-events",
                                        daemon=True)

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def add(self, fn: Callable[[Phone, PhoneEvent], Any]) -> None:
        with self._cond:
            self._listeners = [*self._listeners, fn]

    def start(self) -> None:
        self._thread.start()

    def post(self, phone: Phone, event: PhoneEvent) -> None:
        with self._cond:
            if not self._stopped:
                self._events.append((phone, event))
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._events and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                phone, event = self._events.popleft()
                listeners = self._listeners
            for fn in listeners:
                try:
                    fn(phone, event)
                except Exception:
                    _log.exception("simulator listener %r failed on %s", fn, event.kind)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._events.clear()
            self._cond.notify_all()
        _join(self._thread, 5.0)


@dataclass(eq=False)
class _PlayState:
    command_id: str
    uris: tuple[str, ...]
    seconds: list[float | None]  # media seconds (before speed); None: could not be loaded
    interrupt_by_dtmf: bool
    repeat_count: int
    index: int = 0
    cycle: int = 0
    timer: Timer | None = None


@dataclass(eq=False)
class _CollectState:
    patterns: tuple[str, ...]
    timeout: float  # seconds, before speed
    inter_digit: float  # seconds, before speed
    terminator: str | None
    command_id: str | None
    digits: str = ""
    fed_by_press: bool = False
    timer: Timer | None = None
    digit_timer: Timer | None = None

    @property
    def min_len(self) -> int:
        return min(len(p) for p in self.patterns)

    def cancel_timers(self) -> None:
        for timer in (self.timer, self.digit_timer):
            if timer is not None:
                timer.cancel()


@dataclass(eq=False)
class _RingOut:
    id: str
    phone: Phone


class _ApiError(Exception):
    """An error answer: status, errorCode, message and the parameter it is about."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None, *,
                 headers: Mapping[str, str] | None = None, oauth: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})
        self.oauth = oauth

    def response(self) -> Response:
        error: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.parameter is not None:
            error["parameterName"] = self.parameter
        body: dict[str, Any] = {"errorCode": self.code, "message": self.message,
                                "errors": [error]}
        if self.oauth is not None:
            body["error"] = self.oauth
            body["error_description"] = self.message
        return _json_response(body, self.status, self.headers)


def _json_response(body: Any, status: int, headers: Mapping[str, str] | None = None
                   ) -> Response:
    return Response(json.dumps(body), status=status, headers=dict(headers or {}),
                    mimetype="application/json")


def _bad(parameter: str, message: str) -> _ApiError:
    return _ApiError(400, "CMN-101", f"Parameter [{parameter}] value is invalid: {message}",
                     parameter)


def _not_found(parameter: str, message: str) -> _ApiError:
    return _ApiError(404, "CMN-102", f"Resource for parameter [{parameter}] is not found: "
                     f"{message}", parameter)


def _pattern_allows(pattern: str, digits: str) -> bool:
    """True if ``digits`` is a prefix of what ``pattern`` matches (``x`` = any digit)."""
    if len(digits) > len(pattern):
        return False
    return all(p == d or (p == "x" and d.isdigit()) for p, d in zip(pattern, digits,
                                                                    strict=False))


def _match_state(patterns: Iterable[str], digits: str) -> tuple[bool, bool]:
    """(input equals a pattern, a longer pattern could still match)."""
    exact = longer = False
    for pattern in patterns:
        if _pattern_allows(pattern, digits):
            if len(pattern) == len(digits):
                exact = True
            else:
                longer = True
    return exact, longer


def _origin(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _callback_urls(app_or_urls: AppLike) -> dict[str, str]:
    urls = getattr(app_or_urls, "callback_urls", app_or_urls)
    if not isinstance(urls, Mapping):
        raise TypeError("expected an app with .callback_urls or a dict of callback URLs, "
                        f"got {app_or_urls!r}")
    missing = [key for key in _REQUIRED_URLS if not isinstance(urls.get(key), str)]
    if missing:
        raise ValueError(f"callback URLs lack {', '.join(missing)}; expected the keys "
                         "'on-call-enter', 'on-command-update', 'on-call-exit', "
                         "'on-command-error'")
    return {str(k): str(v) for k, v in urls.items()}


class _Connections:
    """The server's open client connections, so stop() can end keep-alive threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)

    def close_all(self) -> None:
        with self._lock:
            open_now = list(self._open)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's request handler, tracked, without one log line per request on stderr."""

    def setup(self) -> None:
        super().setup()
        connections = getattr(self.server, "ivrscript_connections", None)
        if isinstance(connections, _Connections):
            connections.add(self.connection)

    def finish(self) -> None:
        connections = getattr(self.server, "ivrscript_connections", None)
        if isinstance(connections, _Connections):
            connections.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        _log.debug("http %s: " + message.rstrip(), type, *args)


class _Request(Request):
    max_content_length = _BODY_MAX_BYTES


# -- the phone -------------------------------------------------------------------------------


class Phone:
    """The simulated caller of one call: press keys, hang up, see what was played.

    Attributes are the platform's view, updated as the call goes: ``listening``,
    ``collect_patterns``, ``playing``, ``heard``, ``ended``, ``end_reason``
    (``"forwarded"``, ``"hangup"`` when the app dropped the call, ``"caller-hangup"``),
    ``forwarded_to``, ``error`` (why the call ended, when it failed) and ``transcript``.
    """

    def __init__(self, sim: Simulator, *, number: int, session_id: str, caller_party_id: str,
                 app_party_id: str, caller: str, called: str, extension_id: str,
                 urls: dict[str, str]) -> None:
        self._sim = sim
        self.call_number = number
        self.session_id = session_id
        self.caller_party_id = caller_party_id
        self.app_party_id = app_party_id
        self.caller = caller
        self.called = called
        self.account_id = ACCOUNT_ID
        self.extension_id = extension_id
        self.playing: str | None = None
        self.heard: list[str] = []
        self.ended = False
        self.end_reason: str | None = None
        self.forwarded_to: str | None = None
        self.error: str | None = None
        self.transcript = PhoneTranscript()
        self._urls = urls
        self._started = time.monotonic()
        base = random.Random(f"{sim.seed}:{number}")
        self._rest_rng = random.Random(base.getrandbits(64))
        self._callback_rng = random.Random(base.getrandbits(64))
        self._play: _PlayState | None = None
        self._play_ids: set[str] = set()
        self._collect: _CollectState | None = None
        self._buffer: deque[str] = deque(maxlen=_BUFFER_KEYS)
        self._enter_done = False
        self._entered = False
        # owned by the courier (under its lock)
        self._outbox: deque[_Outgoing] = deque()
        self._claimed = False

    @property
    def listening(self) -> bool:
        """True while a collect is active."""
        return self._collect is not None

    @property
    def collect_patterns(self) -> tuple[str, ...] | None:
        """The patterns of the active collect, else None."""
        collect = self._collect
        return collect.patterns if collect is not None else None

    def press(self, keys: str, wait: bool = True, timeout: float = 30.0) -> None:
        """Press ``keys`` (``0-9 * #``).

        With ``wait`` (the default), first wait for a collect that has not had keys from an
        earlier press; ``IvrError`` if the call ends or ``timeout`` seconds pass first. Without
        it, the keys go now: to the active collect, else to the input buffer (and they stop an
        interruptible play). Keys are handled before ``press`` returns: a collect they complete
        is over, its update queued.
        """
        if not isinstance(keys, str) or not keys:
            raise ValueError(f"press() needs a non-empty string of keys, got {keys!r}")
        bad = sorted(set(keys) - KEYS)
        if bad:
            raise ValueError(f"press({keys!r}): {''.join(bad)!r} is not a phone key; "
                             "use 0-9, '*' and '#'")
        self._sim._press(self, keys, wait, timeout)

    def hang_up(self) -> None:
        """The caller hangs up: active commands stop without updates, then on-call-exit.

        Does nothing once the call has ended."""
        self._sim._caller_hang_up(self)

    def wait_for(self, predicate: Callable[[], bool], timeout: float,
                 message: str | None = None) -> None:
        """Wait until ``predicate()`` is true (checked under the simulator's lock at each
        change); ``IvrError`` with ``message`` if ``timeout`` seconds pass first."""
        with self._sim._changed:
            if not self._sim._changed.wait_for(predicate, timeout):
                raise IvrError(message or f"call {self.session_id}: condition not met within "
                                          f"{timeout} s")

    def wait_until_ended(self, timeout: float = 10.0) -> str:
        """Wait for the call to end; return ``end_reason``."""
        self.wait_for(lambda: self.ended, timeout,
                      f"call {self.session_id} did not end within {timeout} s "
                      f"(still {'listening' if self.listening else 'in progress'})")
        return str(self.end_reason)

    def wait_until_listening(self, timeout: float = 30.0) -> None:
        """Wait until a collect is active; ``IvrError`` if the call ends or time runs out."""
        self.wait_for(lambda: self.ended or self.listening, timeout,
                      f"call {self.session_id}: the app did not start a collect within "
                      f"{timeout} s")
        if not self.listening:
            raise IvrError(f"call {self.session_id} ended ({self.end_reason}) before the app "
                           "listened for keys")

    def __repr__(self) -> str:
        state = f"ended {self.end_reason}" if self.ended else (
            "listening" if self.listening else "in progress")
        return f"<Phone {self.session_id} {state}>"


# -- the simulator ---------------------------------------------------------------------------


class Simulator:
    """A fake RingCentral platform over real HTTP on loopback. See the module docstring."""

    def __init__(self, *, speed: float = 1.0, host: str = "127.0.0.1", port: int = 0,
                 default_media_seconds: float = 2.0, collect_ids: bool = False,
                 duplicate_callbacks: float = 0.0, late_callbacks: float = 0.0,
                 rate_limited: float = 0.0, unavailable: float = 0.0, seed: int | str | None = None,
                 token: str | None = None, token_ttl: float = 3600.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be more than 0, got {speed!r}")
        if default_media_seconds < 0:
            raise ValueError(f"default_media_seconds must be >= 0, got {default_media_seconds!r}")
        if token_ttl < 0:
            raise ValueError(f"token_ttl must be >= 0 seconds, got {token_ttl!r}")
        shares = {"duplicate_callbacks": duplicate_callbacks, "late_callbacks": late_callbacks,
                  "rate_limited": rate_limited, "unavailable": unavailable}
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} is a share between 0 and 1, got {share!r}")
        if rate_limited + unavailable > 1.0:
            raise ValueError("rate_limited + unavailable must not be more than 1")
        self.speed = float(speed)
        self.host = host
        self.port = port
        self.default_media_seconds = float(default_media_seconds)
        self.collect_ids = collect_ids
        self.duplicate_callbacks = duplicate_callbacks
        self.late_callbacks = late_callbacks
        self.rate_limited = rate_limited
        self.unavailable = unavailable
        self.seed: int | str = seed if seed is not None else secrets.randbits(32)
        self.token: str = token or secrets.token_urlsafe(32)
        self.token_ttl = float(token_ttl)
        self.phones: list[Phone] = []
        self.requests_log: list[RestRecord] = []
        # Set to a list to log (sessionId, callback kind, time.monotonic()) as each callback is
        # sent (the benchmarks measure the app's reaction time from it); None: not logged.
        self.callback_log: list[tuple[str, str, float]] | None = None
        self.token_grants = 0
        # How many faults were injected, by kind (the names of the shares above).
        self.faults_injected = dict.fromkeys(("duplicate_callbacks", "late_callbacks",
                                              "rate_limited", "unavailable"), 0)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sessions: dict[str, Phone] = {}
        self._apps: dict[str, dict[str, str]] = {}  # extension number -> callback URLs
        self._extension_ids: dict[str, str] = {}
        self._access_tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._refresh_tokens: dict[str, float] = {}
        self._ring_outs: dict[str, _RingOut] = {}
        self._media_cache: dict[str, float] = {}
        self._ids = itertools.count(171888866234845407)
        self._call_numbers = itertools.count(1)
        self._scheduler = Scheduler("ivrscript-sim-timers")
        self._courier = _Courier(self._deliver, _DELIVERY_WORKERS)
        self._events = _EventDispatcher()
        self._http: requests.Session | None = None
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._url: str | None = None
        self._connections = _Connections()
        self._state = "new"  # -> "running" -> "stopped"
        self._routes = Map([
            Rule("/restapi/oauth/token", endpoint="token", methods=["POST"]),
            Rule(_SESSION, endpoint="session", methods=["GET", "DELETE"]),
            Rule(f"{_PARTY}/play", endpoint="play", methods=["POST"]),
            Rule(f"{_PARTY}/play/<command_id>", endpoint="cancel_play", methods=["DELETE"]),
            Rule(f"{_PARTY}/collect", endpoint="collect", methods=["POST"]),
            Rule(f"{_PARTY}/forward", endpoint="forward", methods=["POST"]),
            Rule(f"{_V1}/extension/<extension>/ring-out", endpoint="ring_out",
                 methods=["POST"]),
            Rule(f"{_V1}/extension/<extension>/ring-out/<ring_out_id>",
                 endpoint="ring_out_item", methods=["GET", "DELETE"]),
        ], strict_slashes=False, merge_slashes=False)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:54321`` (REST under /restapi)."""
        if self._url is None:
            raise RuntimeError("the simulator is not started: call sim.start() or use "
                               "'with Simulator() as sim:'")
        return self._url

    def start(self) -> Simulator:
        """Start serving in background threads; returns the simulator."""
        with self._lock:
            if self._state == "running":
                raise RuntimeError(f"this simulator is already running at {self._url}")
            if self._state == "stopped":
                raise RuntimeError("a stopped simulator cannot be restarted; build a new one")
            self._state = "running"
        try:
            server = make_server(self.host, self.port, self._wsgi, threaded=True,
                                 request_handler=_QuietHandler)
        except OSError as exc:
            with self._lock:
                self._state = "new"
            raise IvrError(f"the simulator cannot listen on {self.host}:{self.port}: {exc} "
                           "(use port=0 for a free port)") from exc
        server.ivrscript_connections = self._connections  # type: ignore[attr-defined]
        self._server = server
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self._url = f"http://{host}:{server.server_port}"
        http = requests.Session()
        http.trust_env = False  # loopback: no proxies, no .netrc
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=_DELIVERY_WORKERS + 8,
                              max_retries=0)
        http.mount("http://", adapter)
        http.mount("https://", adapter)
        self._http = http
        self._scheduler.start()
        self._courier.start()
        self._events.start()
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="ivrscript-sim-http", daemon=True)
        self._server_thread.start()
        _log.info("simulator serving at %s", self._url)
        return self

    def stop(self) -> None:
        """Stop the server, timers and callback workers; end calls in progress quietly."""
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
        if self._server is not None:
            self._server.shutdown()
            _join(self._server_thread, 5.0)
            self._server.server_close()
            self._connections.close_all()  # idle keep-alive connections hold a thread each
        with self._changed:
            for phone in self.phones:
                if not phone.ended:
                    phone.error = "the simulator stopped"
                    self._end(phone, "caller-hangup", send_exit=False)
            self._changed.notify_all()
        self._scheduler.stop()
        self._courier.stop()
        self._events.stop()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Simulator {self._url or 'not started'} {self._state}, {len(self.phones)} calls>"

    # -- apps, calls, tokens -----------------------------------------------------------------

    def connect(self, app_or_urls: AppLike, extension_number: str = "201") -> None:
        """Register an app as the account's IVR app extension ``extension_number``.

        A RingOut whose ``to`` is that number (any ``to``, when only one app is connected)
        rings that app. Connecting the same URLs again is harmless; new URLs on a known
        extension number replace the old ones (a re-run notebook cell).
        """
        urls = _callback_urls(app_or_urls)
        number = str(extension_number)
        with self._lock:
            for other, other_urls in list(self._apps.items()):
                if other_urls == urls and other != number:
                    del self._apps[other]
            self._apps[number] = urls
            self._extension_id(number)

    def call(self, app_or_urls: AppLike, caller: str = "+15550100",
             called: str | None = None) -> Phone:
        """Ring the app; return the :class:`Phone` once on-call-enter has been answered.

        ``called`` defaults to the extension number the app is connected under, else "201".
        An on-call-enter without a 2xx answer ends the call (``phone.ended``, ``end_reason``
        ``"hangup"``, ``phone.error`` says why).
        """
        urls = _callback_urls(app_or_urls)
        self._require_running()
        with self._lock:
            number = next((n for n, u in self._apps.items() if u == urls), None)
            if called is None:
                called = number or "201"
            phone = self._new_phone(urls, caller, called, self._extension_id(number or "201"),
                                    claimed=True)
            item = self._enter_item(phone)
        try:
            self._deliver(phone, item)
        finally:
            self._courier.release(phone)
        return phone

    def phone(self, session_id: str) -> Phone:
        """The phone of a session; ``KeyError`` if the simulator has no such session."""
        with self._lock:
            try:
                return self._sessions[session_id]
            except KeyError:
                raise KeyError(f"no call with session id {session_id!r}") from None

    def expire_tokens(self) -> None:
        """Invalidate every OAuth access token issued so far (not the static token)."""
        with self._lock:
            self._access_tokens.clear()

    def add_listener(self, fn: Callable[[Phone, PhoneEvent], Any]) -> None:
        """Call ``fn(phone, event)`` for every :class:`PhoneEvent` of every call, from one
        background thread; exceptions in ``fn`` are logged and ignored."""
        self._events.add(fn)

    # -- internals: calls --------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._state != "running":
            raise RuntimeError("the simulator is not running: call sim.start() first "
                               "(a stopped simulator cannot be restarted)")

    def _extension_id(self, number: str) -> str:
        with self._lock:
            if number not in self._extension_ids:
                self._extension_ids[number] = str(400137552008 + 1000 * len(self._extension_ids))
            return self._extension_ids[number]

    def _new_phone(self, urls: dict[str, str], caller: str, called: str, extension_id: str, *,
                   claimed: bool) -> Phone:
        phone = Phone(self, number=next(self._call_numbers),
                      session_id="s-" + secrets.token_hex(16),
                      caller_party_id="p-" + secrets.token_hex(16),
                      app_party_id="p-" + secrets.token_hex(16),
                      caller=caller, called=called, extension_id=extension_id, urls=urls)
        phone._claimed = claimed
        self.phones.append(phone)
        self._sessions[phone.session_id] = phone
        self._event(phone, "ring", f"{caller} -> {called}")
        return phone

    def _enter_item(self, phone: Phone) -> _Outgoing:
        body = {
            "accountId": ACCOUNT_ID,
            "extensionId": phone.extension_id,
            "inParty": {"from": {"phoneNumber": phone.caller}, "id": phone.caller_party_id,
                        "to": {"phoneNumber": phone.called}},
            "partyId": phone.app_party_id,
            "sessionId": phone.session_id,
        }
        return _Outgoing(ENTER, phone._urls[ENTER], body)

    def _event(self, phone: Phone, kind: str, details: str = "") -> None:
        event = PhoneEvent(kind, details, round(time.monotonic() - phone._started, 6))
        phone.transcript.append(event)
        if self._events.active:
            self._events.post(phone, event)

    def _body(self, phone: Phone, **fields: Any) -> dict[str, Any]:
        return {"accountId": ACCOUNT_ID, "extensionId": phone.extension_id, **fields,
                "sessionId": phone.session_id}

    def _queue(self, phone: Phone, kind: str, body: dict[str, Any]) -> None:
        """Queue a callback (not on-call-enter) for delivery, with the call's injected faults."""
        url = phone._urls.get(kind)
        if url is None or self._state != "running":
            return
        item = _Outgoing(kind, url, body)
        rng = phone._callback_rng
        copies, delay = 1, 0.0
        if self.duplicate_callbacks > 0 and rng.random() < self.duplicate_callbacks:
            if body.get("command") != "Collect" or self.collect_ids:
                copies = 2
        if self.late_callbacks > 0 and rng.random() < self.late_callbacks:
            delay = rng.uniform(0.0, _LATE_MAX)
        with self._lock:
            self.faults_injected["duplicate_callbacks"] += copies - 1
            self.faults_injected["late_callbacks"] += delay > 0

        def submit() -> None:
            for _ in range(copies):
                self._courier.submit(phone, item)

        if delay:
            self._scheduler.call_later(delay, submit)
        else:
            submit()

    def _post(self, item: _Outgoing) -> tuple[int | None, str | None]:
        http = self._http
        if http is None:
            return None, "the simulator is not running"
        sent_log = self.callback_log
        if sent_log is not None:
            sent_log.append((item.body["sessionId"], item.kind, time.monotonic()))
        try:
            response = http.post(item.url, json=item.body, timeout=_CALLBACK_TIMEOUT)
        except requests.RequestException as exc:
            return None, f"no answer ({type(exc).__name__})"
        response.close()
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"answered {response.status_code}"

    def _deliver(self, phone: Phone, item: _Outgoing) -> None:
        status, problem = self._post(item)
        if item.kind != ENTER:
            if problem:
                _log.warning("simulator: %s for %s: the app %s", item.kind, phone.session_id,
                             problem)
            return
        with self._changed:
            phone._enter_done = True
            if problem is None:
                phone._entered = True
                self._event(phone, "answered", str(status))
            elif not phone.ended:
                _log.warning("simulator: on-call-enter for %s: the app %s; the call ends",
                             phone.session_id, problem)
                phone.error = f"on-call-enter: the app {problem}"
                self._event(phone, "error", phone.error)
                self._end(phone, "hangup", send_exit=False)
                self._courier.discard(phone)
            self._changed.notify_all()

    def _end(self, phone: Phone, reason: str, *, send_exit: bool = True,
             forwarded_to: str | None = None) -> None:
        """End a call (under the lock): stop its commands without updates, then exit."""
        if phone.ended:
            return
        self._stop_commands(phone)
        phone.ended = True
        phone.end_reason = reason
        phone.forwarded_to = forwarded_to
        if send_exit:
            self._queue(phone, EXIT, {"accountId": ACCOUNT_ID, "extensionId": phone.extension_id,
                                      "partyId": phone.app_party_id,
                                      "sessionId": phone.session_id})
        self._event(phone, "exit", reason)
        self._changed.notify_all()

    def _stop_commands(self, phone: Phone) -> None:
        play, collect = phone._play, phone._collect
        if play is not None and play.timer is not None:
            play.timer.cancel()
        if collect is not None:
            collect.cancel_timers()
        phone._play = None
        phone._collect = None
        phone.playing = None

    def _caller_hang_up(self, phone: Phone) -> None:
        with self._changed:
            if phone.ended:
                return
            self._event(phone, "caller-hangup")
            self._end(phone, "caller-hangup")

    # -- internals: play ---------------------------------------------------------------------

    def _media_seconds(self, phone: Phone, uri: str) -> float | None:
        origin = _origin(uri)
        if origin is None or origin not in {_origin(u) for u in phone._urls.values()}:
            return self.default_media_seconds
        cached = self._media_cache.get(uri)
        if cached is not None:
            return cached
        http = self._http
        if http is None:
            return None
        try:
            with http.get(uri, timeout=_MEDIA_TIMEOUT, stream=True) as response:
                if response.status_code != 200:
                    return None
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= _MEDIA_MAX_BYTES:  # the header is at the start
                        break
        except requests.RequestException:
            return None
        seconds = wav_seconds(b"".join(chunks))
        if seconds is None:
            seconds = self.default_media_seconds
        with self._lock:
            self._media_cache[uri] = seconds
        return seconds

    def _start_play(self, phone: Phone, play: _PlayState) -> None:
        if phone._play is not None:
            self._finish_play(phone, phone._play, "Canceled")
        phone._play = play
        phone._play_ids.add(play.command_id)
        self._play_step(phone, play)

    def _play_step(self, phone: Phone, play: _PlayState) -> None:
        uri = play.uris[play.index]
        seconds = play.seconds[play.index]
        if seconds is None:
            self._event(phone, "error", f"media could not be loaded: {uri}")
            self._finish_play(phone, play, "Failed")
            return
        phone.playing = uri
        if play.cycle == 0:
            phone.heard.append(uri)
            self._event(phone, "play", uri)
        play.timer = self._scheduler.call_later(seconds / self.speed,
                                                lambda: self._play_tick(phone, play))
        self._changed.notify_all()

    def _play_tick(self, phone: Phone, play: _PlayState) -> None:
        with self._changed:
            if phone._play is not play:
                return
            play.index += 1
            if play.index == len(play.uris):
                play.index = 0
                play.cycle += 1
                if play.repeat_count and play.cycle >= play.repeat_count:
                    self._finish_play(phone, play, "Completed")
                    return
                if not play.repeat_count and not any(play.seconds):
                    return  # silent media forever: nothing more to schedule
            self._play_step(phone, play)

    def _finish_play(self, phone: Phone, play: _PlayState, status: str) -> None:
        if play.timer is not None:
            play.timer.cancel()
        if phone._play is play:
            phone._play = None
            phone.playing = None
        self._queue(phone, UPDATE, self._body(phone, command="Play", commandId=play.command_id,
                                              partyId=phone.caller_party_id, status=status))
        self._event(phone, "played", status)
        self._changed.notify_all()

    # -- internals: collect and keys ---------------------------------------------------------

    def _start_collect(self, phone: Phone, collect: _CollectState, reset_input: bool) -> None:
        if reset_input:
            phone._buffer.clear()
        phone._collect = collect
        collect.timer = self._scheduler.call_later(
            collect.timeout / self.speed, lambda: self._collect_timeout(phone, collect))
        self._event(phone, "listen", " ".join(collect.patterns))
        pending = list(phone._buffer)
        phone._buffer.clear()
        for index, key in enumerate(pending):
            if phone._collect is not collect:
                phone._buffer.extend(pending[index:])
                break
            self._collect_key(phone, collect, key)
        self._changed.notify_all()

    def _collect_key(self, phone: Phone, collect: _CollectState, key: str) -> None:
        if collect.terminator is not None and key == collect.terminator:
            exact, _ = _match_state(collect.patterns, collect.digits)
            self._finish_collect(phone, collect, "Completed" if exact else "Not Found")
            return
        collect.digits += key
        exact, longer = _match_state(collect.patterns, collect.digits)
        if not exact and not longer:
            self._finish_collect(phone, collect, "Not Found")
        elif exact and not longer:
            self._finish_collect(phone, collect, "Completed")
        elif len(collect.digits) >= collect.min_len:
            if collect.digit_timer is not None:
                collect.digit_timer.cancel()
            collect.digit_timer = self._scheduler.call_later(
                collect.inter_digit / self.speed, lambda: self._collect_settle(phone, collect))

    def _collect_settle(self, phone: Phone, collect: _CollectState) -> None:
        """interDigitTimeout passed: the input is what it is."""
        with self._changed:
            if phone._collect is collect:
                exact, _ = _match_state(collect.patterns, collect.digits)
                self._finish_collect(phone, collect, "Completed" if exact else "Not Found")

    def _collect_timeout(self, phone: Phone, collect: _CollectState) -> None:
        with self._changed:
            if phone._collect is not collect:
                return
            if len(collect.digits) < collect.min_len:
                self._finish_collect(phone, collect, "Timeout")
            else:
                exact, _ = _match_state(collect.patterns, collect.digits)
                self._finish_collect(phone, collect, "Completed" if exact else "Not Found")

    def _finish_collect(self, phone: Phone, collect: _CollectState, status: str) -> None:
        collect.cancel_timers()
        if phone._collect is collect:
            phone._collect = None
        fields: dict[str, Any] = {"command": "Collect"}
        if collect.command_id is not None:
            fields["commandId"] = collect.command_id
        fields.update(partyId=phone.caller_party_id, status=status,
                      parameters={"digits": collect.digits})
        self._queue(phone, UPDATE, self._body(phone, **fields))
        self._event(phone, "collected", f"{collect.digits!r} {status}")
        self._changed.notify_all()

    def _press(self, phone: Phone, keys: str, wait: bool, timeout: float) -> None:
        with self._changed:
            if wait:
                def ready() -> bool:
                    collect = phone._collect
                    return phone.ended or (collect is not None and not collect.fed_by_press)

                if not self._changed.wait_for(ready, timeout):
                    raise IvrError(f"press({keys!r}): the app did not start a new collect on "
                                   f"call {phone.session_id} within {timeout} s")
            if phone.ended:
                raise IvrError(f"press({keys!r}): call {phone.session_id} has ended "
                               f"({phone.end_reason})")
            self._event(phone, "keys", keys)
            for key in keys:
                play = phone._play
                if play is not None and play.interrupt_by_dtmf:
                    self._finish_play(phone, play, "Interrupted")
                collect = phone._collect
                if collect is None:
                    phone._buffer.append(key)
                else:
                    collect.fed_by_press = True
                    self._collect_key(phone, collect, key)
            self._changed.notify_all()

    # -- internals: HTTP ---------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _Request(environ)
        record: dict[str, Any] = {"json": None, "session_id": None}
        try:
            response = self._handle(request, record)
        except _ApiError as exc:
            response = exc.response()
        except HTTPException as exc:  # e.g. a form body over the size limit
            status = exc.code or 500
            response = _ApiError(status, f"CMN-{status}", str(exc.description)).response()
        except Exception:
            _log.exception("simulator: %s %s failed", request.method, request.path)
            response = _ApiError(500, "CMN-500", "internal error in the simulator").response()
        with self._lock:
            self.requests_log.append(RestRecord(request.method, request.path, record["json"],
                                                response.status_code, record["session_id"],
                                                time.monotonic()))
        return response(environ, start_response)

    def _handle(self, request: Request, record: dict[str, Any]) -> Response:
        path = request.path
        if path.startswith("/restapi/v1.0/") or path == "/restapi/v1.0":
            self._check_bearer(request)
        adapter = self._routes.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            raise _ApiError(405, "CMN-405", f"method {request.method} is not allowed for "
                            f"{path}") from None
        except HTTPException:
            raise _not_found("path", f"no such resource {path}") from None
        if endpoint == "token":
            return self._oauth_token(request)
        if args.get("account") not in ("~", ACCOUNT_ID):
            raise _not_found("accountId", f"account {args.get('account')!r}")
        session_id = args.get("session_id")
        if session_id is not None:
            record["session_id"] = session_id
        handler = getattr(self, f"_api_{endpoint}")
        result: Response = handler(request, record, **args)
        return result

    def _check_bearer(self, request: Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(401, "OAU-123", "Authorization header is missing or is not "
                            "'Bearer <token>'", headers=challenge)
        if secrets.compare_digest(token.encode(), self.token.encode()):
            return
        with self._lock:
            expiry = self._access_tokens.get(token)
            if expiry is None:
                raise _ApiError(401, "OAU-213", "Token not found", headers=challenge)
            if time.monotonic() >= expiry:
                del self._access_tokens[token]
                raise _ApiError(401, "OAU-213", "Token expired", headers=challenge)

    def _oauth_token(self, request: Request) -> Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, sep, _secret = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id, sep = "", ""
        if scheme.lower() != "basic" or not sep or not client_id:
            raise _ApiError(401, "OAU-153", "Invalid client: send Authorization: Basic "
                            "base64(clientId:clientSecret)", "client_id", oauth="invalid_client")
        form = request.form
        grant = form.get("grant_type", "")
        if grant == _JWT_GRANT:
            if not form.get("assertion"):
                raise _ApiError(400, "OAU-251", "Required parameter [assertion] is missing",
                                "assertion", oauth="invalid_request")
        elif grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if not refresh:
                raise _ApiError(400, "OAU-251", "Required parameter [refresh_token] is missing",
                                "refresh_token", oauth="invalid_request")
            with self._lock:
                expiry = self._refresh_tokens.pop(refresh, None)
            if expiry is None or time.monotonic() >= expiry:
                raise _ApiError(400, "OAU-211", "Token is revoked (refresh tokens are single "
                                "use)", "refresh_token", oauth="invalid_grant")
        else:
            raise _ApiError(400, "OAU-250", f"Unsupported grant type {grant!r}", "grant_type",
                            oauth="unsupported_grant_type")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._access_tokens[access] = now + self.token_ttl
            self._refresh_tokens[refresh] = now + _REFRESH_TTL
            self.token_grants += 1
            owner = self._extension_id(next(iter(self._apps), "201"))
        return _json_response({
            "access_token": access, "token_type": "bearer", "expires_in": int(self.token_ttl),
            "refresh_token": refresh, "refresh_token_expires_in": _REFRESH_TTL,
            "scope": "CallControl ReadAccounts RingOut", "owner_id": owner,
        }, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    @staticmethod
    def _json_object(request: Request, record: dict[str, Any]) -> dict[str, Any]:
        try:
            data = request.get_data()
        except RequestEntityTooLarge:
            raise _ApiError(413, "CMN-413", "request body is too large") from None
        if not data.strip():
            raise _bad("body", "a JSON object is required")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise _bad("body", "not valid JSON") from None
        record["json"] = body
        if not isinstance(body, dict):
            raise _bad("body", "a JSON object is required")
        return body

    def _command_session(self, session_id: str) -> Phone:
        """The session of a command, after fault injection (raises the fault)."""
        with self._lock:
            phone = self._sessions.get(session_id)
            if phone is None:
                raise _not_found("sessionId", f"no call session {session_id}")
            rng = phone._rest_rng
            if self.rate_limited or self.unavailable:
                draw = rng.random()
                if draw < self.rate_limited:
                    fault = _ApiError(429, "CMN-301", "Request rate exceeded (simulated)",
                                      headers={"Retry-After": "1", "X-Rate-Limit-Group": "light",
                                               "X-Rate-Limit-Limit": "50",
                                               "X-Rate-Limit-Remaining": "0",
                                               "X-Rate-Limit-Window": "60"})
                elif draw < self.rate_limited + self.unavailable:
                    fault = _ApiError(503, "CMN-211", "Service temporarily unavailable "
                                      "(simulated)", headers={"Retry-After": "1"})
                else:
                    fault = None
                if fault is not None:
                    self.faults_injected["rate_limited" if fault.status == 429
                                         else "unavailable"] += 1
                    self._event(phone, "rejected", f"{fault.status} {fault.code} (injected)")
                    raise fault
            return phone

    def _check_live(self, phone: Phone, party_id: str | None, role: str | None) -> None:
        """Under the lock: the session is in progress and ``party_id`` is the ``role`` party."""
        if phone.ended:
            raise _not_found("sessionId", f"call session {phone.session_id} has ended "
                             f"({phone.end_reason})")
        if party_id is None or role is None:
            return
        caller, app = phone.caller_party_id, phone.app_party_id
        want, other = (caller, app) if role == "caller" else (app, caller)
        if party_id == want:
            return
        if party_id == other:
            hint = ("Play and Collect target the caller party (inParty.id of on-call-enter), "
                    "not the app party (partyId)" if role == "caller" else
                    "Forward targets the app party (partyId of on-call-enter), not the caller "
                    "party (inParty.id)")
            raise _not_found("partyId", f"{party_id}: {hint}")
        raise _not_found("partyId", f"no party {party_id} in session {phone.session_id}")

    def _reject(self, phone: Phone, request: Request, exc: _ApiError) -> _ApiError:
        with self._lock:
            self._event(phone, "rejected", f"{request.method} {request.path.rsplit('/', 1)[-1]}"
                                           f" -> {exc.status} {exc.code}: {exc.message}")
        return exc

    def _api_play(self, request: Request, record: dict[str, Any], *, account: str,
                  session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "caller")
            body = self._json_object(request, record)
            resources = body.get("resources")
            if not isinstance(resources, list) or not resources:
                raise _bad("resources", "a non-empty list of {\"uri\": ...} is required")
            uris: list[str] = []
            for index, resource in enumerate(resources):
                uri = resource.get("uri") if isinstance(resource, dict) else None
                if not isinstance(uri, str) or _origin(uri) is None:
                    raise _bad(f"resources[{index}].uri", f"an http(s) URL is required, got "
                               f"{uri!r}")
                uris.append(uri)
            interrupt = body.get("interruptByDtmf", True)
            if not isinstance(interrupt, bool):
                raise _bad("interruptByDtmf", f"true or false, got {interrupt!r}")
            repeat = body.get("repeatCount", 1)
            if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
                raise _bad("repeatCount", f"a whole number >= 0, got {repeat!r}")
            seconds = [self._media_seconds(phone, uri) for uri in uris]  # may fetch: no lock
            with self._changed:
                self._check_live(phone, party_id, "caller")
                play = _PlayState(str(next(self._ids)), tuple(uris), seconds, interrupt, repeat)
                self._start_play(phone, play)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return _json_response({"id": play.command_id, "interruptByDtmf": interrupt,
                               "repeatCount": repeat, "resources": [{"uri": u} for u in uris],
                               "status": "InProgress"}, 201)

    def _api_cancel_play(self, request: Request, record: dict[str, Any], *, account: str,
                         session_id: str, party_id: str, command_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._changed:
                self._check_live(phone, party_id, "caller")
                if command_id not in phone._play_ids:
                    raise _not_found("commandId", f"no play {command_id} in session "
                                     f"{session_id}")
                play = phone._play
                if play is not None and play.command_id == command_id:
                    self._finish_play(phone, play, "Canceled")
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return Response(status=204)

    def _api_collect(self, request: Request, record: dict[str, Any], *, account: str,
                     session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "caller")
            body = self._json_object(request, record)
            patterns = body.get("patterns")
            if not isinstance(patterns, list) or not patterns or not all(
                    isinstance(p, str) and _PATTERN.match(p) for p in patterns):
                raise _bad("patterns", "a non-empty list of strings of 0-9, '*', '#' and 'x' "
                           f"is required, got {patterns!r}")
            times: dict[str, float] = {}
            for name, default in (("timeout", 10000), ("interDigitTimeout", 3000)):
                value = body.get(name, default)
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise _bad(name, f"milliseconds > 0, got {value!r}")
                times[name] = value / 1000.0
            terminator = body.get("terminator")
            if terminator not in (None, "#", "*"):
                raise _bad("terminator", f"'#', '*' or absent, got {terminator!r}")
            reset = body.get("resetInput", True)
            if not isinstance(reset, bool):
                raise _bad("resetInput", f"true or false, got {reset!r}")
            with self._changed:
                self._check_live(phone, party_id, "caller")
                if phone._collect is not None:
                    raise _ApiError(409, "TAS-409", f"a Collect is already active on party "
                                    f"{party_id}; wait for its update before the next one")
                command_id = str(next(self._ids)) if self.collect_ids else None
                collect = _CollectState(tuple(p.lower() for p in patterns), times["timeout"],
                                        times["interDigitTimeout"], terminator, command_id)
                self._start_collect(phone, collect, reset)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        if command_id is not None:
            return _json_response({"id": command_id}, 201)
        return Response(status=204)

    def _api_forward(self, request: Request, record: dict[str, Any], *, account: str,
                     session_id: str, party_id: str) -> Response:
        phone = self._command_session(session_id)
        try:
            with self._lock:
                self._check_live(phone, party_id, "app")
            body = self._json_object(request, record)
            given = {k: body[k] for k in ("extensionNumber", "phoneNumber") if k in body}
            if len(given) != 1:
                raise _bad("extensionNumber", "exactly one of extensionNumber and phoneNumber "
                           f"is required, got {sorted(given) or 'neither'}")
            (name, target), = given.items()
            if not isinstance(target, str) or not target.strip():
                raise _bad(name, f"a non-empty string is required, got {target!r}")
            with self._changed:
                self._check_live(phone, party_id, "app")
                self._event(phone, "forward", target)
                self._end(phone, "forwarded", forwarded_to=target)
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return _json_response({
            "id": phone.app_party_id,
            "status": {"code": "Gone", "reason": "CallForwarded"},
            "direction": "Inbound",
            "from": {"phoneNumber": phone.caller},
            "to": {name: target},
            "missedCall": False, "standAlone": False, "muted": False,
            "owner": {"accountId": ACCOUNT_ID, "extensionId": phone.extension_id},
        }, 200)

    def _api_session(self, request: Request, record: dict[str, Any], *, account: str,
                     session_id: str) -> Response:
        if request.method == "GET":
            with self._lock:
                phone = self._sessions.get(session_id)
                if phone is None:
                    raise _not_found("sessionId", f"no call session {session_id}")
                code = "Disconnected" if phone.ended else "Answered"
                return _json_response({
                    "id": session_id,
                    "origin": {"type": "Call"},
                    "parties": [
                        {"id": phone.caller_party_id, "status": {"code": code},
                         "direction": "Inbound", "from": {"phoneNumber": phone.caller},
                         "to": {"phoneNumber": phone.called}},
                        {"id": phone.app_party_id,
                         "status": {"code": "Gone" if phone.ended else "Answered"},
                         "direction": "Inbound", "from": {"phoneNumber": phone.caller},
                         "to": {"phoneNumber": phone.called},
                         "owner": {"accountId": ACCOUNT_ID,
                                   "extensionId": phone.extension_id}},
                    ],
                }, 200)
        phone = self._command_session(session_id)
        try:
            with self._changed:
                self._check_live(phone, None, None)
                self._event(phone, "hangup", "the app dropped the call")
                self._end(phone, "hangup")
        except _ApiError as exc:
            raise self._reject(phone, request, exc) from None
        return Response(status=204)

    def _ring_out_body(self, ring_out: _RingOut) -> dict[str, Any]:
        phone = ring_out.phone
        if not phone._enter_done:
            status = {"callStatus": "InProgress", "callerStatus": "InProgress",
                      "calleeStatus": "InProgress"}
        elif phone._entered:
            status = {"callStatus": "Success", "callerStatus": "Success",
                      "calleeStatus": "Success"}
        else:
            status = {"callStatus": "GenericError", "callerStatus": "Success",
                      "calleeStatus": "GenericError"}
        uri = (f"{self.url}/restapi/v1.0/account/{ACCOUNT_ID}/extension/"
               f"{phone.extension_id}/ring-out/{ring_out.id}")
        return {"id": ring_out.id, "uri": uri, "status": status}

    def _api_ring_out(self, request: Request, record: dict[str, Any], *, account: str,
                      extension: str) -> Response:
        body = self._json_object(request, record)
        numbers: dict[str, str] = {}
        for side in ("from", "to"):
            value = body.get(side)
            number = value.get("phoneNumber") if isinstance(value, dict) else None
            if not isinstance(number, str) or not number.strip():
                raise _bad(f"{side}.phoneNumber", f"a phone number is required, got {number!r}")
            numbers[side] = number
        with self._lock:
            if not self._apps:
                raise _not_found("to.phoneNumber", "no app is connected to the simulator; "
                                 "call sim.connect(app, extension_number=...) first")
            if numbers["to"] in self._apps:
                number = numbers["to"]
            elif len(self._apps) == 1:
                number = next(iter(self._apps))
            else:
                raise _not_found("to.phoneNumber", f"no connected app has extension number "
                                 f"{numbers['to']}; connected: {', '.join(sorted(self._apps))}")
            phone = self._new_phone(self._apps[number], numbers["from"], numbers["to"],
                                    self._extension_id(number), claimed=False)
            ring_out = _RingOut(str(next(self._ids)), phone)
            self._ring_outs[ring_out.id] = ring_out
            record["session_id"] = phone.session_id
            answer = self._ring_out_body(ring_out)
        self._courier.submit(phone, self._enter_item(phone))
        return _json_response(answer, 200)

    def _api_ring_out_item(self, request: Request, record: dict[str, Any], *, account: str,
                           extension: str, ring_out_id: str) -> Response:
        with self._changed:
            ring_out = self._ring_outs.get(ring_out_id)
            if ring_out is None:
                raise _not_found("ringOutId", f"no ring-out {ring_out_id}")
            record["session_id"] = ring_out.phone.session_id
            if request.method == "GET":
                return _json_response(self._ring_out_body(ring_out), 200)
            del self._ring_outs[ring_out_id]
            phone = ring_out.phone
            if not phone.ended:
                self._event(phone, "hangup", "the ring-out was canceled")
                self._end(phone, "hangup")
        return Response(status=204)


if __name__ == "__main__":  # python -m ivrscript.simulator: the standalone simulator
    import sys

    from .simserver import main as _main

    sys.exit(_main())
