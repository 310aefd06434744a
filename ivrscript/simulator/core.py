"""The :class:`Simulator`: lifecycle, calls, callbacks out; the rules live beside it.

Time
  * ``speed`` divides every platform timer (play length, collect ``timeout`` and
    ``interDigitTimeout``); token lifetimes and fault-injection delays are real time.
  * All timers run on ONE scheduler thread; callbacks are delivered by a small fixed pool of
    worker threads, one call's callbacks strictly in order. Threads never grow with calls.

Calls
  * ``on-call-enter`` that gets no 2xx (or no answer in 3 s) ends the call (``end_reason``
    ``"hangup"``, ``Phone.error`` says why) WITHOUT on-call-exit: the app never took it.
  * A later callback (update, exit) that fails to connect, times out (3 s) or gets a 5xx is
    tried again after 0.1 s, then 0.2, 0.4 ... up to 1 s between tries (real time, not divided
    by ``speed``), until ``callback_retry`` seconds (default 10; 0: never) have passed since
    it first failed; then it is dropped with a warning. Meanwhile the call's later callbacks
    wait behind it, so its order holds; no thread waits. A 4xx is not tried again.
  * Commands come after the answer: a Play, Collect or Forward whose request line arrived
    before the app's answer to on-call-enter did is answered 409 ``CMN-409``. "Arrived" is
    told at the sockets (the answer's bytes were readable when the command's request line had
    been read), so an app that answers first is never blamed for the simulator's own delay in
    reading the answer; one whose command is sent while its 204 is still being written is.
  * Forward, drop and caller hang-up stop the active play and collect without updates, then
    send on-call-exit. The simulator never sends ``on-command-error`` (its payload is
    undocumented); a play whose media fails gets a ``Failed`` update instead.
  * RingOut: the simulated customer phone answers at once; the on-call-enter goes to the
    connected app whose extension number equals ``to.phoneNumber`` (any ``to`` when exactly one
    app is connected). GET reports ``InProgress`` until the app answers on-call-enter, then
    ``Success`` (``GenericError`` if it refused). DELETE of a connected ring-out drops the call
    as the app would (end reason ``"hangup"``). RingOut is never fault-injected.
  * A list of apps (``sim.call([app1, app2])``, ``sim.connect([...])``) is one app run as
    several processes behind a load balancer: on-call-enter goes to the first, each later
    callback of the call to the next in turn (a duplicate too), and a callback tried again to
    the next. ``Phone.wait_until_ended`` waits for the side of every app object among them.
  * ``stop()`` ends calls in progress quietly (no callbacks): ``end_reason``
    ``"caller-hangup"``, ``Phone.error`` ``"the simulator stopped"``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import IvrError
from ..scheduler import Scheduler
from .collect import CollectRules
from .common import ACCOUNT_ID, ENTER, EXIT, Apps, _join, _targets
from .courier import _DELIVERY_WORKERS, _Courier, _EventDispatcher, _Http, _Outgoing, _readable
from .faults import callback_fault
from .phone import Phone, PhoneEvent
from .play import PlayRules
from .routes import RestApi, RestRecord, _Connections, _make_server, _RingOut, _route_map, _Server

_log = logging.getLogger("ivrscript.simulator")

_RETRY_FIRST = 0.1  # seconds before the first retry of a failed callback; doubles each time
_RETRY_MAX = 1.0  # ... up to this


class Simulator(RestApi, PlayRules, CollectRules):
    """A fake RingCentral platform over real HTTP on loopback. See the module docstring."""

    def __init__(self, *, speed: float = 1.0, host: str = "127.0.0.1", port: int = 0,
                 default_media_seconds: float = 2.0, collect_ids: bool = False,
                 duplicate_callbacks: float = 0.0, late_callbacks: float = 0.0,
                 rate_limited: float = 0.0, unavailable: float = 0.0, seed: int | str | None = None,
                 token: str | None = None, token_ttl: float = 3600.0,
                 callback_retry: float = 10.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be more than 0, got {speed!r}")
        if default_media_seconds < 0:
            raise ValueError(f"default_media_seconds must be >= 0, got {default_media_seconds!r}")
        if token_ttl < 0:
            raise ValueError(f"token_ttl must be >= 0 seconds, got {token_ttl!r}")
        if not 0 <= callback_retry < float("inf"):
            raise ValueError(f"callback_retry must be >= 0 seconds, got {callback_retry!r}")
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
        self.callback_retry = float(callback_retry)
        self.phones: list[Phone] = []
        self.requests_log: list[RestRecord] = []
        self._rest_open: dict[str, int] = {}  # session -> its REST requests not yet logged
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
        # extension number -> (the callback URLs of each of its processes, the app objects)
        self._apps: dict[str, tuple[list[dict[str, str]], list[Any]]] = {}
        self._extension_ids: dict[str, str] = {}
        self._access_tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._refresh_tokens: dict[str, float] = {}
        self._ring_outs: dict[str, _RingOut] = {}
        self._media_cache: dict[str, float] = {}
        self._ids = itertools.count(171888866234845407)
        self._call_numbers = itertools.count(1)
        # on-call-enter answers: those awaited, and a count of those arrived (see routes.py)
        self._entering: dict[str, Phone] = {}
        self._arrivals = 0
        self._scheduler = Scheduler("ivrscript-sim-timers")
        self._courier = _Courier(self._deliver, _DELIVERY_WORKERS, self._scheduler.call_later)
        self._events = _EventDispatcher()
        self._http = _Http()
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self._url: str | None = None
        self._connections = _Connections()
        self._state = "new"  # -> "running" -> "stopped"
        self._routes = _route_map()

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
            server = _make_server(self.host, self.port, self._wsgi, self._connections,
                                  self._answers_arrived)
        except OSError as exc:
            with self._lock:
                self._state = "new"
            raise IvrError(f"the simulator cannot listen on {self.host}:{self.port}: {exc} "
                           "(use port=0 for a free port)") from exc
        self._server = server
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self._url = f"http://{host}:{server.server_port}"
        self._http.open()
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
        self._http.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Simulator {self._url or 'not started'} {self._state}, {len(self.phones)} calls>"

    # -- apps, calls, tokens -----------------------------------------------------------------

    def connect(self, app_or_urls: Apps, extension_number: str = "201") -> None:
        """Register an app as the account's IVR app extension ``extension_number``.

        A RingOut whose ``to`` is that number (any ``to``, when only one app is connected)
        rings that app. Connecting the same URLs again is harmless; new URLs on a known
        extension number replace the old ones (a re-run notebook cell). A list of apps (or of
        their callback URLs) is one app run as several processes: the callbacks of each call
        go to them in turn, as behind a load balancer.
        """
        urls, apps = _targets(app_or_urls)
        number = str(extension_number)
        with self._lock:
            for other, (other_urls, _) in list(self._apps.items()):
                if other_urls == urls and other != number:
                    del self._apps[other]
            self._apps[number] = (urls, apps)
            self._extension_id(number)

    def call(self, app_or_urls: Apps, caller: str = "+15550100",
             called: str | None = None) -> Phone:
        """Ring the app; return the :class:`Phone` once on-call-enter has been answered.

        ``called`` defaults to the extension number the app is connected under, else "201".
        An on-call-enter without a 2xx answer ends the call (``phone.ended``, ``end_reason``
        ``"hangup"``, ``phone.error`` says why). A list of apps (or of their callback URLs)
        plays a load balancer in front of several processes of one app: each callback of the
        call goes to the next one in turn (on-call-enter to the first, and a callback tried
        again goes to the next).
        """
        urls, apps = _targets(app_or_urls)
        self._require_running()
        with self._lock:
            number = next((n for n, (u, _) in self._apps.items() if u == urls), None)
            if called is None:
                called = number or "201"
            phone = self._new_phone(urls, apps, caller, called,
                                    self._extension_id(number or "201"), claimed=True)
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

    def _new_phone(self, urls: list[dict[str, str]], apps: list[Any], caller: str,
                   called: str, extension_id: str, *, claimed: bool) -> Phone:
        phone = Phone(self, number=next(self._call_numbers),
                      session_id="s-" + secrets.token_hex(16),
                      caller_party_id="p-" + secrets.token_hex(16),
                      app_party_id="p-" + secrets.token_hex(16),
                      caller=caller, called=called, extension_id=extension_id, urls=urls,
                      apps=apps)
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
        return _Outgoing(ENTER, str(phone._url(ENTER)), body)

    def _answers_arrived(self) -> tuple[int, frozenset[str]]:
        """A snapshot, taken as a REST request arrives: (the last on-call-enter answer
        arrival counted, the sessions whose answer has arrived but is not yet counted)."""
        with self._lock:
            entering = [(sid, p._enter_sock) for sid, p in self._entering.items()
                        if p._enter_sock is not None]
            ready = _readable([sock for _, sock in entering], 0.0) if entering else []
            return self._arrivals, frozenset(sid for sid, sock in entering if sock in ready)

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
        if self._state != "running":
            return
        copies, delay = callback_fault(phone._callback_rng, self.duplicate_callbacks,
                                       self.late_callbacks,
                                       body.get("command") != "Collect" or self.collect_ids)
        with self._lock:
            self.faults_injected["duplicate_callbacks"] += copies - 1
            self.faults_injected["late_callbacks"] += delay > 0

        def submit() -> None:
            for _ in range(copies):  # each copy to the next app, as a load balancer would
                with self._lock:
                    url = phone._url(kind)
                if url is not None:
                    self._courier.submit(phone, _Outgoing(kind, url, body))

        if delay:
            self._scheduler.call_later(delay, submit)
        else:
            submit()

    def _post(self, phone: Phone, item: _Outgoing) -> tuple[int | None, str | None]:
        if not self._http.is_open:
            return None, "the simulator is not running"
        sent_log = self.callback_log
        if sent_log is not None:
            sent_log.append((item.body["sessionId"], item.kind, time.monotonic()))
        if item.kind == ENTER:
            def connected(sock: socket.socket) -> None:
                with self._lock:
                    phone._enter_sock = sock
                    self._entering[phone.session_id] = phone

            def arrived() -> None:
                with self._changed:
                    if phone._enter_arrival is None:
                        self._arrivals += 1
                        phone._enter_arrival = self._arrivals
                    phone._enter_sock = None
                    self._entering.pop(phone.session_id, None)
                    self._changed.notify_all()

            return self._http.post_watched(item.url, item.body, connected=connected,
                                           arrived=arrived)
        return self._http.post(item.url, item.body)

    def _deliver(self, phone: Phone, item: _Outgoing) -> float | None:
        """Send one callback; None when done with it, else the seconds until the next try."""
        status, problem = self._post(phone, item)
        item.attempts += 1
        if item.kind != ENTER:
            return None if problem is None else self._retry_in(phone, item, status, problem)
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
        return None

    def _retry_in(self, phone: Phone, item: _Outgoing, status: int | None,
                  problem: str) -> float | None:
        """A later callback failed: the backoff before its next try, or None to drop it (a 4xx,
        or ``callback_retry`` seconds since its first failure have passed)."""
        now = time.monotonic()
        if item.failing_since is None:
            item.failing_since = now
        left = item.failing_since + self.callback_retry - now
        if (status is None or status >= 500) and left > 0 and self._state == "running":
            delay = min(_RETRY_FIRST * 2 ** (item.attempts - 1), _RETRY_MAX, left)
            if len(phone._targets) > 1:  # a load balancer tries the next process
                with self._lock:
                    item.url = phone._url(item.kind) or item.url
            _log.info("simulator: %s for %s: the app %s; trying again in %.2f s", item.kind,
                      phone.session_id, problem, delay)
            return delay
        tried = (f" (dropped after {item.attempts} tries in {now - item.failing_since:.1f} s)"
                 if item.attempts > 1 else "")
        _log.warning("simulator: %s for %s: the app %s%s", item.kind, phone.session_id,
                     problem, tried)
        return None

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
