"""The app: listener + dispatcher + media + (optionally) tunnel and recorder, around the engine.

Callbacks are answered at once and queued per call; a bounded worker pool drains each call's
queue one event at a time (so one call's events are handled in order, calls in parallel) and
sends the requests the engine asks for. Nothing here costs a thread per call.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .call import Call, mask_number
from .commands import Forward, Hangup, Play
from .engine import (
    Abort,
    CallEngine,
    CommandError,
    Exited,
    Finished,
    Request,
    SendFailed,
    Sent,
    Update,
    Wait,
)
from .errors import ConfigError, IvrError, PlatformError, RetryLater
from .listener import CALLBACKS, CallbackListener
from .loader import check_script, script_dir
from .media import MediaLibrary
from .ringcentral import RingCentral
from .scheduler import Scheduler
from .tts import speech_for_app

__all__ = ["App"]

log = logging.getLogger("ivrscript.app")

_START = object()  # the first event of every call
_running: dict[tuple[str, int], App] = {}  # apps of this process by (host, port)
_running_lock = threading.Lock()


class _Runner:
    """One call: its engine and its queue of events."""

    __slots__ = ("engine", "call", "mailbox", "scheduled", "lock")

    def __init__(self, engine: CallEngine, call: Call) -> None:
        self.engine = engine
        self.call = call
        self.mailbox: collections.deque[Any] = collections.deque()
        self.scheduled = False
        self.lock = threading.Lock()


class App:
    """Runs ``script`` for every call the platform sends to its callback URLs.

    ``platform`` is a :class:`RingCentral` client or a :class:`Simulator`. ``start()`` serves in
    the background and returns at once; ``with App(...) as app:`` starts and stops it.
    """

    def __init__(self, script: Callable[[Call], Any], *, platform: Any, host: str = "127.0.0.1",
                 port: int = 0, public_url: str | None = None, tunnel: Any = None,
                 record: Any = None, on_error: Play | Forward | Hangup | None = None,
                 secret: str | None = None, workers: int = 16,
                 record_numbers: bool = True, speech: Any = None) -> None:
        check_script(script)
        if on_error is not None and not isinstance(on_error, Play | Forward | Hangup):
            raise ValueError("on_error must be a command: ivr.hangup(), ivr.forward(...) or "
                             f"ivr.play(...), got {on_error!r}")
        self._script = script
        self.platform = platform
        self.client, self.time_scale = _client_for(platform)
        self.host = host
        self.port = port
        self._public_url = public_url.rstrip("/") if public_url else None
        self.tunnel = tunnel
        self.record = record
        self.record_numbers = record_numbers  # False: cassettes mask phone numbers
        self.on_error = on_error
        self.secret = secret or secrets.token_urlsafe(24)
        if len(self.secret) < 22:
            raise ValueError("the secret path segment needs at least 22 URL-safe characters "
                             "(128 bits)")
        self.workers = workers
        self.calls: list[Call] = []
        self._runners: dict[str, _Runner] = {}
        self._ended_sessions: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._entered = threading.Condition(self._lock)
        self._media = MediaLibrary([script_dir(script)])
        self._media.speech = speech_for_app(speech, script)  # ConfigError now, not mid-call
        self._listener: CallbackListener | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._timers: Scheduler | None = None
        self._tunnel_handle: Any = None
        self._recorder: Any = None
        self._observers: list[Any] = []
        self._stopped = threading.Event()

    # -- the script --------------------------------------------------------------------------

    @property
    def script(self) -> Callable[[Call], Any]:
        """The script new calls run; assign a new function to change it (calls in progress
        keep the one they started with)."""
        return self._script

    @script.setter
    def script(self, script: Callable[[Call], Any]) -> None:
        check_script(script)
        self._script = script
        folder = script_dir(script)
        if folder and folder not in self._media.search_dirs:
            self._media.search_dirs.insert(0, folder)

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> App:
        """Start serving in the background; returns the app. Fast."""
        if self._listener is not None:
            raise IvrError(f"this app is already running at {self.url}; call stop() first")
        self._release_port_held_by_older_app()
        listener = CallbackListener(self._on_callback, secret=self.secret,
                                    media=self._media.lookup, host=self.host, port=self.port)
        listener.start()
        self._listener = listener
        self.port = listener.port
        self._stopped.clear()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ivrscript-worker")
        self._timers = Scheduler().start()
        try:
            if self.tunnel:
                from .tunnel import open_tunnel

                self._tunnel_handle = open_tunnel(self.tunnel, listener.url)
                self._public_url = self._tunnel_handle.url.rstrip("/")
            self._media.base_url = f"{self.public_url}/{self.secret}"
            if self.record:
                from .recorder import Recorder

                self._recorder = Recorder(self, self.record, numbers=self.record_numbers)
                self._observers.append(self._recorder)
            connect = getattr(self.platform, "connect", None)
            if callable(connect):  # the simulator: RingOut needs to know where we are
                connect(self)
        except BaseException:
            self.stop()
            raise
        if self.port:
            with _running_lock:
                _running[(self.host, self.port)] = self
        log.info("ivrscript app listening on %s", self.url)
        return self

    def _release_port_held_by_older_app(self) -> None:
        if not self.port:
            return
        with _running_lock:
            older = _running.get((self.host, self.port))
        if older is not None and older is not self and older.running:
            log.warning("an earlier App of this process holds %s:%s; stopping it", self.host,
                        self.port)
            print(f"ivrscript: stopped the earlier App on {self.host}:{self.port} "
                  "to start this one")
            older.stop()

    def stop(self) -> None:
        """End the calls in progress through ``on_error`` (the caller is not left in silence),
        then stop listening and tell the observers (widgets show "stopped"). Idempotent."""
        was_running = self._listener is not None
        if was_running and self._pool is not None:  # phone: stopping must not strand callers
            self.end_calls("the app was stopped")
        self._stopped.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            with _running_lock:
                if _running.get((self.host, listener.port)) is self:
                    del _running[(self.host, listener.port)]
        if self._tunnel_handle is not None:
            try:
                self._tunnel_handle.close()
            finally:
                self._tunnel_handle = None
        if self._timers is not None:
            self._timers.stop()
            self._timers = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._recorder is not None:
            self._recorder.close()
            self._observers.remove(self._recorder)
            self._recorder = None
        if was_running:  # phone: an optional observer hook, e.g. a dashboard says "stopped"
            for observer in list(self._observers):
                stopped = getattr(observer, "stopped", None)
                if stopped is not None:
                    try:
                        stopped(self)
                    except Exception:
                        log.exception("observer %r failed on stop", observer)

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` or Ctrl-C."""
        if not self.running:
            self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> App:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._listener is not None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The local base URL of the listener."""
        if self._listener is None:
            raise IvrError("the app is not running: call start() first")
        return self._listener.url

    @property
    def public_url(self) -> str:
        """The base URL the platform reaches (the tunnel's, the one given, or the local one)."""
        return self._public_url or self.url

    @public_url.setter
    def public_url(self, value: str | None) -> None:
        self._public_url = value.rstrip("/") if value else None
        if self.running:
            self._media.base_url = f"{self.public_url}/{self.secret}"

    @property
    def callback_urls(self) -> dict[str, str]:
        """The four callback URLs to configure on the platform (they include the secret)."""
        base = f"{self.public_url}/{self.secret}"
        return {kind: f"{base}/{kind}" for kind in CALLBACKS}

    # -- outbound ----------------------------------------------------------------------------

    def dial(self, number: str, *, timeout: float = 60.0) -> Call:
        """Place an outbound call to ``number`` (RingOut); returns the Call once it enters."""
        if not self.running:
            raise IvrError("start the app before dialing out")
        with self._lock:
            seen = len(self.calls)
        self.client.ring_out(number)
        deadline = time.monotonic() + timeout
        with self._entered:
            while True:
                for call in self.calls[seen:]:
                    if call.caller == number:
                        return call
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IvrError(f"the call to {mask_number(number)} did not reach the app within "
                                   f"{timeout} s (is on-call-enter configured to "
                                   f"{self.callback_urls['on-call-enter']}?)")
                self._entered.wait(left)

    def end_calls(self, reason: str = "the app was interrupted", *,
                  timeout: float = 5.0) -> list[Call]:
        """End every call in progress through ``on_error`` (default: hang up), as if each
        script had raised ``IvrError(reason)``: its ``finally`` runs and the caller is not left
        in silence. Waits up to ``timeout`` seconds in all; returns the calls it ended."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            self._deliver(runner.call.session_id, Abort(IvrError(reason)))
        deadline = time.monotonic() + timeout
        for runner in runners:
            try:
                runner.call.wait_until_ended(max(0.0, deadline - time.monotonic()))
            except IvrError:
                log.warning("call %s did not end within %s s", runner.call.session_id, timeout)
        return [runner.call for runner in runners]

    # -- callbacks (listener threads: be quick) ----------------------------------------------

    def _on_callback(self, kind: str, body: dict[str, Any], received: float
                     ) -> Callable[[], None] | None:
        session_id = body["sessionId"]
        for observer in self._observers:
            try:
                observer.callback(kind, body)
            except Exception:  # a broken recorder or viewer must not lose the call's event
                log.exception("observer %r failed on %s for call %s", observer, kind, session_id)
        if kind == "on-call-enter":
            return self._on_enter(body)  # the listener starts the call once its 204 is sent
        event = callback_event(kind, body, received)
        if not self._deliver(session_id, event):
            if session_id in self._ended_sessions:
                log.debug("%s for ended session %s ignored", kind, _shown(session_id))
            else:
                log.info("%s for unknown session %s ignored", kind, _shown(session_id))

    def _on_enter(self, body: dict[str, Any]) -> Callable[[], None] | None:
        session_id = body["sessionId"]
        call = call_from_enter(body)
        script = self._script
        call.script_name = getattr(script, "__qualname__", repr(script))
        engine = CallEngine(script, call, resolve_media=self._media.resolve,
                            on_error=self.on_error, time_scale=self.time_scale)
        with self._lock:
            if session_id in self._runners or session_id in self._ended_sessions:
                log.info("duplicate on-call-enter for %s ignored", _shown(session_id))
                return None
            self._runners[session_id] = _Runner(engine, call)
            self.calls.append(call)
            self._entered.notify_all()
        log.info("call %s entered from %s", _shown(session_id), mask_number(call.caller))
        for observer in list(self._observers):  # optional hook: e.g. a dashboard shows the call
            entered = getattr(observer, "entered", None)
            if entered is not None:
                try:
                    entered(call)
                except Exception:
                    log.exception("observer %r failed for call %s", observer, session_id)
        return lambda: self._deliver(session_id, _START)

    def _deliver(self, session_id: str, event: Any) -> bool:
        with self._lock:
            runner = self._runners.get(session_id)
        if runner is None:
            return False
        with runner.lock:
            runner.mailbox.append(event)
            if runner.scheduled:
                return True
            runner.scheduled = True
        pool = self._pool
        if pool is None:
            return True
        try:
            pool.submit(self._drain, runner)
        except RuntimeError:  # shutting down
            pass
        return True

    # -- workers -----------------------------------------------------------------------------

    def _drain(self, runner: _Runner) -> None:
        while True:
            with runner.lock:
                if not runner.mailbox:
                    runner.scheduled = False
                    return
                event = runner.mailbox.popleft()
            try:
                if event is _START:
                    actions = runner.engine.start()
                else:
                    actions = runner.engine.handle(event)
                self._run(runner, actions)
            except KeyboardInterrupt:
                # Only a script raising it by hand gets here (signals go to the main thread):
                # it is that script's failure, and on_error must still end the call.
                abort = Abort(IvrError("the script raised KeyboardInterrupt"))
                self._run(runner, runner.engine.handle(abort))
            except Exception:  # an engine bug must not lose the worker or the call
                # the event's type only: its fields can hold digits (personal data)
                log.exception("call %s: internal error handling %s", runner.call.session_id,
                              type(event).__name__)

    def _run(self, runner: _Runner, actions: list[Any]) -> None:
        queue = collections.deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Request):
                outcome = self._send(action)
                if action.op != "cancel":
                    queue.extend(runner.engine.handle(outcome))
            elif isinstance(action, Wait):
                timers = self._timers
                if timers is not None:
                    session_id, event = runner.call.session_id, action.event
                    timers.call_later(action.seconds,
                                      lambda s=session_id, e=event: self._deliver(s, e))
            elif isinstance(action, Finished):
                self._finished(runner)

    def _send(self, request: Request) -> Sent | SendFailed:
        return self.send_with(self.client, request)

    @staticmethod
    def send_with(client: Any, request: Request) -> Sent | SendFailed:
        """Send one engine request through ``client``; the outcome to feed back (replay too)."""
        args = request.args
        try:
            if request.op == "play":
                return Sent(request.token, client.play(**args, retry=False))
            if request.op == "collect":
                return Sent(request.token, client.collect(**args, retry=False))
            if request.op == "cancel":
                client.cancel_play(**args, retry=False)
            elif request.op == "forward":
                client.forward(**args, retry=False)
            elif request.op == "drop":
                client.drop(**args, retry=False)
            else:
                raise ValueError(f"unknown request {request.op}")
            return Sent(request.token)
        except RetryLater as error:
            log.warning("%s answered %s; retrying in %.1f s", request.op, error.status,
                        error.retry_after)
            return SendFailed(request.token, error, retry_after=error.retry_after)
        except PlatformError as error:
            level = logging.DEBUG if request.op == "cancel" else logging.WARNING
            if error.status == 404:  # the session is gone (the caller hung up): not a warning
                level = min(level, logging.INFO)
            log.log(level, "%s failed: %s", request.op, error)
            return SendFailed(request.token, error)
        except Exception as error:
            log.exception("%s failed", request.op)
            return SendFailed(request.token, error)

    def _finished(self, runner: _Runner) -> None:
        call = runner.call
        with self._lock:
            self._runners.pop(call.session_id, None)
            self._ended_sessions[call.session_id] = None
            while len(self._ended_sessions) > 10_000:
                self._ended_sessions.popitem(last=False)
        log.info("call %s ended: %s", call.session_id, call.end_reason)
        for observer in self._observers:
            try:
                observer.finished(call)
            except Exception:
                log.exception("observer %r failed for call %s", observer, call.session_id)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a notebook an App shows as a live :class:`ivrscript.widgets.Dashboard`; without
        ipywidgets, as its text."""
        try:
            from .widgets import Dashboard
        except ImportError:
            return {"text/plain": repr(self)}
        return Dashboard(self)._repr_mimebundle_(include=include, exclude=exclude)

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<App {getattr(self._script, '__name__', '?')} {where}, {len(self.calls)} calls>"


def call_from_enter(body: dict[str, Any]) -> Call:
    """The :class:`Call` an on-call-enter body describes (the app and replay use it)."""
    party = body["inParty"]
    return Call(body["sessionId"], party_id=body["partyId"], caller_party_id=party["id"],
                caller=(party.get("from") or {}).get("phoneNumber"),
                called=(party.get("to") or {}).get("phoneNumber"),
                account_id=_opt_str(body.get("accountId")),
                extension_id=_opt_str(body.get("extensionId")))


def callback_event(kind: str, body: dict[str, Any], received: float | None) -> Any:
    """The engine event for a callback other than on-call-enter."""
    if kind == "on-command-update":
        params = body.get("parameters") or {}
        return Update(body["command"], body["status"], body.get("commandId"),
                      params.get("digits"), received)
    if kind == "on-call-exit":
        return Exited(received)
    return CommandError(body)


def _shown(value: str) -> str:
    """An id from a callback as it may appear in a log line: quoted (no forged line breaks)
    and short."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _client_for(platform: Any) -> tuple[Any, float]:
    """The REST client for ``platform`` and the platform's clock relative to real time."""
    if isinstance(platform, RingCentral):
        return platform, 1.0
    try:
        url = getattr(platform, "url", None)
        token = getattr(platform, "token", None)
    except RuntimeError as error:  # a simulator that was not started says so
        raise ConfigError(str(error)) from None
    if url and token:  # the simulator (or anything that plays it)
        speed = float(getattr(platform, "speed", 1.0) or 1.0)
        # "201": the extension Simulator.connect() registers an app under, for dial().
        return RingCentral(server_url=url, token=token, extension_number="201"), 1.0 / speed
    if platform is None:
        raise ConfigError("App needs platform=: a RingCentral client (RingCentral.from_env()) "
                          "or a Simulator()")
    raise ConfigError(f"platform must be a RingCentral client or a started Simulator, got "
                      f"{platform!r} (did you forget sim.start()?)")
