"""The app: listener + dispatcher + media + (optionally) tunnel and recorder, around the engine.

Every call is durable, whatever the store (:mod:`ivrscript.durable`): a callback is appended to
the call's log in the store and answered at once; a bounded worker pool drains each call's log
one entry at a time (so one call's events are handled in order, calls in parallel) through the
driver, which sends the requests the engine asks for. Nothing here costs a thread per call.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .call import Call, mask_number
from .commands import Forward, Hangup, Play
from .dispatch import call_from_enter, send_with
from .durable import CallRunner, Driver, callback_entry, script_identity
from .engine import (
    OVERDUE_MARGIN,
    CallEngine,
    Request,
    SendFailed,
    Sent,
)
from .errors import ConfigError, IvrError
from .listener import CALLBACKS, CallbackListener
from .loader import check_script, script_dir
from .media import MediaLibrary
from .ringcentral import RingCentral
from .scheduler import Scheduler
from .stores import CallStore, LogEntry, StoreError, open_store
from .stores.base import LeaseLost, write
from .text import shown
from .tts import speech_for_app

__all__ = ["App"]

log = logging.getLogger("ivrscript.app")

# A call whose on-call-enter arrived this recently is left to the process that received it
# (it starts the call once its 204 is sent); only older calls nobody holds are taken up.
ANSWER_GRACE = 2.0

_running: dict[tuple[str, int], App] = {}  # apps of this process by (host, port)
_running_lock = threading.Lock()
EXPIRE_EVERY = 60.0  # seconds between sweeps of calls past their retention
STORE_RETRY = 1.0  # seconds before a call whose store failed is driven again


class App:
    """Runs ``script`` for every call the platform sends to its callback URLs.

    ``platform`` is a :class:`RingCentral` client or a :class:`Simulator`. ``start()`` serves in
    the background and returns at once; ``with App(...) as app:`` starts and stops it.
    """

    def __init__(self, script: Callable[[Call], Any], *, platform: Any, host: str = "127.0.0.1",
                 port: int = 0, public_url: str | None = None, tunnel: Any = None,
                 record: Any = None, on_error: Play | Forward | Hangup | None = None,
                 secret: str | None = None, workers: int = 16,
                 record_numbers: bool = True, speech: Any = None,
                 store: CallStore | str | None = None,
                 on_unknown: Forward | Hangup | None = None, cache_size: int = 1000,
                 lease_ttl: float = 5.0, retention: float = 3600.0,
                 overdue_margin: float | None = OVERDUE_MARGIN,
                 keep_calls: int | None = None) -> None:
        check_script(script)
        if on_error is not None and not isinstance(on_error, Play | Forward | Hangup):
            raise ValueError("on_error must be a command: ivr.hangup(), ivr.forward(...) or "
                             f"ivr.play(...), got {on_error!r}")
        if on_unknown is not None and not isinstance(on_unknown, Forward | Hangup):
            raise ValueError("on_unknown must be ivr.hangup() or ivr.forward(...), got "
                             f"{on_unknown!r}")
        for name, value in (("lease_ttl", lease_ttl), ("retention", retention)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be a whole number >= 1, got {cache_size!r}")
        if keep_calls is not None and (isinstance(keep_calls, bool) or
                                       not isinstance(keep_calls, int) or keep_calls < 0):
            raise ValueError(f"keep_calls must be None (keep every call) or a whole number "
                             f">= 0, got {keep_calls!r}")
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
        self.on_unknown = on_unknown
        self.cache_size = cache_size
        self.lease_ttl = float(lease_ttl)
        self.retention = float(retention)
        self.overdue_margin = overdue_margin
        self.calls: list[Call] = []
        self.keep_calls = keep_calls  # ended calls app.calls keeps (None: all of them)
        self._live: dict[str, Call] = {}  # session -> its Call in app.calls, not yet ended
        self._appended = 0  # calls ever appended to app.calls (dial counts from it)
        self._owns_store = store is None or isinstance(store, str)
        self._store_spec = store
        self._store_closed = False
        try:
            self.store = open_store(store)
        except StoreError as error:
            raise ConfigError(f"cannot open the call store {store!r}: {error}") from None
        self._identity = script_identity(script)
        # Every script this App ran, by identity, while calls that began with it may still
        # be in progress: a call rebuilt from its log (evicted from the cache, its store
        # failed) replays the script it began with, not one assigned since (see script).
        self._script_key = _script_key(self._identity)
        self._scripts: dict[tuple[str, str, str], Callable[[Call], Any]] = {
            self._script_key: script}
        self._claim_script(self._identity)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._driver = Driver(self.store, self, owner=self.owner, cache_size=cache_size,
                              lease_ttl=self.lease_ttl)
        self._driver.hands_entries = True  # see _wake and _append_and_wake
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._superseded: dict[str, Call] = {}  # session -> its Call before a rebuild
        self._unsubscribe: Callable[[], None] | None = None
        self._housekeeper: threading.Thread | None = None
        self._effects: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._entered = threading.Condition(self._lock)
        self._unanswered: set[str] = set()  # entered calls whose 204 is not yet sent
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
        keep the one they started with, also when one is rebuilt from its log: the App keeps
        an earlier script while calls that began with it are in progress)."""
        return self._script

    @script.setter
    def script(self, script: Callable[[Call], Any]) -> None:
        check_script(script)
        identity = script_identity(script)
        with self._lock:
            # Scripts no call in progress began with are let go (a call started elsewhere
            # with an older script replays with this one, as after a restart).
            running = {call._script_key for call in self.calls if not call.ended}
            kept = {key: fn for key, fn in self._scripts.items() if key in running}
            key = _script_key(identity)
            kept[key] = script
            self._scripts = kept
            self._identity, self._script_key, self._script = identity, key, script
        folder = script_dir(script)
        if folder and folder not in self._media.search_dirs:
            self._media.search_dirs.insert(0, folder)

    @property
    def _private_store(self) -> bool:
        """A memory store this App made itself: no other process or App can see its calls."""
        return self._owns_store and getattr(self.store, "url", "") == "memory:"

    def _claim_script(self, identity: dict[str, str]) -> None:
        """One store serves one script: a second App with another script is refused."""
        mine = json.dumps({"file": identity["file"], "function": identity["function"]},
                          sort_keys=True)
        try:
            stored = self.store.setdefault_meta("script", mine)
        except StoreError as error:
            raise ConfigError(f"cannot use the call store {_store_name(self.store)}: "
                              f"{error}") from None
        if stored != mine:
            try:
                other = json.loads(stored)
                what = f"{other.get('function')} in {other.get('file')}"
            except (ValueError, AttributeError):
                what = "another script"
            raise ConfigError(f"the call store {_store_name(self.store)} belongs to {what}, "
                              f"not {identity['function']} in {identity['file']}: give this "
                              "script its own store (--store URL)")

    # -- life cycle --------------------------------------------------------------------------

    def start(self, *, listen: bool = True) -> App:
        """Start serving in the background; returns the app. Fast. ``listen=False``: no HTTP
        server of its own, another WSGI server serves :attr:`wsgi_app` (``ivrscript.wsgi``)."""
        if self._listener is not None:
            raise IvrError(f"this app is already running at {self.url}; call stop() first")
        self._release_port_held_by_older_app()
        listener = CallbackListener(self._on_callback, secret=self.secret,
                                    media=self._media.lookup, host=self.host, port=self.port,
                                    health=self.health)
        if listen:
            listener.start()
        self._listener = listener
        self.port = listener.port
        self._stopped.clear()
        if self._store_closed:  # started again after stop(): reopen the store it closed
            self.store = self._driver.store = open_store(self._store_spec)
            self._store_closed = False
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ivrscript-worker")
        self._effects = ThreadPoolExecutor(self.workers, thread_name_prefix="ivrscript-effect")
        self._timers = Scheduler().start()
        self._unsubscribe = self.store.subscribe(self._on_store_news)
        self._housekeeper = threading.Thread(target=self._housekeep, daemon=True,
                                             name="ivrscript-durable")
        self._housekeeper.start()
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
        # Stopping must not strand callers: with the App's own memory store nobody can take
        # its calls up, so they end here; a durable or shared store keeps them for the next
        # process (or App) on it, which resumes them (their leases are released below).
        if was_running and self._pool is not None and self._private_store:
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
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._housekeeper is not None:
            self._housekeeper.join(5.0)
            self._housekeeper = None
        if self._timers is not None:
            self._timers.stop()
            self._timers = None
        if self._effects is not None:
            self._effects.shutdown(wait=False, cancel_futures=True)
            self._effects = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._driver.release_all()  # another process (or App) may take the calls at once
        if self._owns_store and not self._store_closed:
            self.store.close()
            self._store_closed = True
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

    @property
    def wsgi_app(self) -> Callable[..., Any]:
        """The listener's WSGI application (callbacks, media, health) of the running app."""
        if self._listener is None:
            raise IvrError("the app is not running: call start() first")
        return self._listener.wsgi

    def health(self) -> tuple[bool, dict[str, Any]]:
        """For ``GET /{secret}/health``: healthy unless the store is unreachable, and counts."""
        with self._driver.lock:
            held = len(self._driver.leases)
        reachable = bool(self.store.ping())
        return reachable, {"calls": held, "store_reachable": reachable}

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
            seen = self._appended
        deadline = time.monotonic() + timeout
        self.client.ring_out(number, within=timeout)  # a Retry-After does not outlast timeout
        with self._entered:
            while True:
                newer = self._appended - seen  # the last `newer` calls of app.calls
                for call in (self.calls[-newer:] if newer else []):
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
            calls = [call for call in self.calls if not call.ended]
        for call in calls:
            data = {"type": "IvrError", "message": reason}
            try:
                self._append_and_wake(call.session_id, "abort", data, key=f"abort:{reason}")
            except StoreError as error:
                log.error("call %s: could not log its end (%s)", shown(call.session_id), error)
        deadline = time.monotonic() + timeout
        for call in calls:
            try:
                call.wait_until_ended(max(0.0, deadline - time.monotonic()))
            except IvrError:
                log.warning("call %s did not end within %s s", shown(call.session_id), timeout)
        return calls

    # -- callbacks (listener threads: be quick) ----------------------------------------------

    def _on_callback(self, kind: str, body: dict[str, Any], received: float
                     ) -> Callable[[], None] | None:
        """Append the callback to its call's log (StoreUnavailable: the listener answers
        503 so the platform delivers it again), then wake whoever drives the call. For
        on-call-enter the wake-up is returned, for the listener to run once its 204 has been
        sent: the guide says commands come after that answer."""
        session_id = body["sessionId"]
        for observer in self._observers:
            try:
                observer.callback(kind, body)
            except Exception:  # a broken recorder or viewer must not lose the call's event
                log.exception("observer %r failed on %s for call %s", observer, kind,
                              shown(session_id))
        at = time.time() - max(time.monotonic() - received, 0.0)  # wall clock: logs outlive us
        if kind == "on-call-enter":
            # Logged with this process taking the call's lease (one round trip): its receiver
            # drives it. A lease held elsewhere means another process has the call already.
            data = {"body": body, "script": dict(self._identity)}
            with self._driver.local():
                seqs = write(self.store, session_id, [("enter", data, "enter", at)],
                             owner=self.owner, ttl=self.lease_ttl, quiet_for=self.owner)
            if not seqs or seqs[0] is None:
                log.info("duplicate on-call-enter for %s ignored", shown(session_id))
                return None
            runner = self._driver.runner(session_id)
            self._driver.taken(session_id, runner)
            self._driver.offer(session_id, LogEntry(seqs[0], "enter", data, at))
            if runner is not None and runner.engine is None:
                # The Call is known at once (app.calls, dial(), dashboards), as before.
                runner.engine, runner.call = self.new_engine(body)
                runner.observed = True
                self.call_entered(runner.call, observed=True)
            with self._lock:
                self._unanswered.add(session_id)
            return lambda: self._answered(session_id)
        if session_id in self._ended:
            log.debug("%s for ended session %s ignored", kind, shown(session_id))
            return
        data, key = callback_entry(kind, body)
        seq = self._append_local(session_id, "callback", data, key, at)
        if seq is None:
            log.debug("duplicate %s for %s ignored", kind, shown(session_id))
            return
        if seq == 1:  # the store never heard of this call (a restart, an expired call)
            self._unknown(session_id, kind, body)
            return
        self._wake(session_id, LogEntry(seq, "callback", data, at))

    def _unknown(self, session_id: str, kind: str, body: dict[str, Any]) -> None:
        """A callback for a session no store knows: never left in silence (logged once: the
        call is marked ended, so its later callbacks are deduped as after-exit ones)."""
        self._forget_session(session_id)
        try:
            self.store.append(session_id, "end", {"reason": "unknown"}, key="end")
            self.store.finish(session_id, "unknown")
        except StoreError as error:
            log.warning("call %s: could not mark it unknown (%s)", shown(session_id), error)
        if kind == "on-call-exit":
            log.info("on-call-exit for unknown session %s ignored", shown(session_id))
            return
        what = "hanging it up" if self.on_unknown is None or isinstance(self.on_unknown, Hangup) \
            else f"running on_unknown ({self.on_unknown.describe()})"
        log.warning("%s for unknown session %s (no store knows it): %s", kind,
                    shown(session_id), what)
        party = body.get("partyId") if isinstance(body.get("partyId"), str) else None
        extension = body.get("extensionId")
        extension = str(extension) if isinstance(extension, str | int) else None
        pool = self._pool
        if pool is not None:
            try:
                pool.submit(self.hang_up_unknown, session_id, party, extension)
            except RuntimeError:  # shutting down
                pass

    def hang_up_unknown(self, session_id: str, party_id: str | None,
                        extension_id: str | None = None) -> None:
        """End a call the app cannot drive: ``on_unknown`` if it is a forward, else hang up.

        Forward targets the session's APP party, but the callbacks of a call in progress
        (on-command-update) name the CALLER's party (PLATFORM.md): the app party is asked of
        the platform (the session's parties; the one the app's extension owns). When the
        platform names none (a session it does not know), the call is hung up."""
        command = self.on_unknown
        if isinstance(command, Forward):
            app_party = self._app_party(session_id, party_id, extension_id)
            if app_party is not None:
                outcome = self._send(Request(0, "forward", dict(
                    session_id=session_id, app_party_id=app_party,
                    extension=command.extension, phone_number=command.phone_number)))
                if isinstance(outcome, Sent):
                    return
        self._send(Request(0, "drop", dict(session_id=session_id)))

    def _app_party(self, session_id: str, named: str | None,
                   extension_id: str | None) -> str | None:
        """The id of the session's party the app's extension owns (GET the session), or
        None; ``named`` (the callback's party: the caller's, for an update) only when the
        platform says it is the app's."""
        from urllib.parse import quote

        path = f"/restapi/v1.0/account/~/telephony/sessions/{quote(session_id, safe='')}"
        try:
            parties = self.client.request("GET", path, retry=False).json().get("parties")
        except Exception as error:  # PlatformError (a 404: gone), a body that is not JSON
            log.info("on_unknown: no party of session %s to forward (%s): hanging it up",
                     shown(session_id), shown(error, 200))
            return None
        owned = [p for p in parties if isinstance(p, dict) and isinstance(p.get("id"), str)
                 and isinstance(p.get("owner"), dict)] if isinstance(parties, list) else []
        for party in owned:
            if extension_id is not None and str(party["owner"].get("extensionId")) == \
                    extension_id:
                return party["id"]
        if extension_id is None:  # the callback did not say which extension is the app's
            others = [p["id"] for p in owned if p["id"] != named]
            if len(others) == 1:
                return others[0]
        log.info("on_unknown: the platform names no app party in session %s: hanging it up",
                 shown(session_id))
        return None

    def _on_store_news(self, session_id: str) -> None:
        """A store subscriber: some process appended to the call's log (or a timer is due);
        if this process drives the call, drain it."""
        if self._driver.appending():
            return  # this process's own entry: whoever appended it wakes the call with it
        if self._driver.runner(session_id, create=False) is not None \
                or session_id in self._driver.leases:
            self._wake(session_id)

    def _answered(self, session_id: str) -> None:
        """The 204 to on-call-enter has been sent: the call may get its first command."""
        with self._lock:
            self._unanswered.discard(session_id)
        self._wake(session_id, news=False)  # its enter was handed to the runner

    def _append_and_wake(self, session_id: str, kind: str, data: dict[str, Any], *,
                         key: str | None = None) -> int | None:
        """Append an entry of this process's (a timer firing, an effect's result, an abort)
        and wake the call with it (its runner takes it without loading it again)."""
        at = time.time()
        seq = self._append_local(session_id, kind, data, key, at)
        if seq is not None:
            self._wake(session_id, LogEntry(seq, kind, data, at))
        return seq

    def _append_local(self, session_id: str, kind: str, data: dict[str, Any],
                      key: str | None, at: float) -> int | None:
        """Append an entry this process wakes the call for itself: other processes hear of
        it only if one of them holds the call (one round trip either way)."""
        with self._driver.local():
            (seq,) = write(self.store, session_id, [(kind, data, key, at)],
                           quiet_for=self.owner) or [None]
        return seq

    def _wake(self, session_id: str, entry: LogEntry | None = None, *,
              news: bool = True) -> None:
        """Have a worker drain the call's log (one worker per call at a time). ``entry``:
        one this process just appended (handed to the runner); else, with ``news``, the log
        may have grown elsewhere (the drain loads what is new)."""
        if session_id in self._ended:
            return
        runner = self._driver.runner(session_id)
        if runner is None:
            return
        if entry is not None:
            self._driver.offer(session_id, entry)
        elif news:
            self._driver.news(session_id)
        if session_id in self._unanswered:
            return  # driven once its 204 is sent (_answered)
        with runner.lock:
            if runner.scheduled:
                runner.wake_again = True
                return
            runner.scheduled = True
        pool = self._pool
        if pool is None:
            runner.scheduled = False
            return
        try:
            pool.submit(self._drain, runner)
        except RuntimeError:  # shutting down
            runner.scheduled = False

    # -- workers -----------------------------------------------------------------------------

    def _drain(self, runner: CallRunner) -> None:
        while True:
            try:
                self._driver.drain(runner)
            except LeaseLost:
                # Fencing: another process took the call (this one was paused, or cut off
                # from the store, past the lease); it drives the call, this one lets go.
                log.info("call %s: its lease moved to another process; leaving it to it",
                         shown(runner.session_id))
                self._driver.lost(runner)
            except StoreError as error:
                # The log and this engine may now disagree (an entry not written): drop the
                # engine and rebuild the call from the log once the store answers again.
                log.warning("call %s: the call store failed (%s); retrying in %.0f s",
                            shown(runner.session_id), error, STORE_RETRY)
                self._driver.evict(runner)
                timers = self._timers
                if timers is not None:
                    timers.call_later(STORE_RETRY,
                                      lambda sid=runner.session_id: self._wake(sid))
            except Exception:  # a driver bug must not lose the worker
                log.exception("call %s: internal error driving the call",
                              shown(runner.session_id))
            with runner.lock:
                if not runner.wake_again or runner.done:
                    runner.scheduled = False
                    return
                runner.wake_again = False

    # -- the driver's host interface ---------------------------------------------------------

    def new_engine(self, body: dict[str, Any], *, script: dict[str, Any] | None = None
                   ) -> tuple[CallEngine, Call]:
        """A fresh engine for the call an on-call-enter body describes (live or replay).
        ``script``: the identity the call's log has (a replay): the script the call began
        with if this App still has it, else the current one."""
        call = call_from_enter(body)
        fn, key = self._script, self._script_key
        if isinstance(script, dict) and script.get("hash"):
            logged = _script_key(script)
            earlier = self._scripts.get(logged) if logged != key else None
            if earlier is not None:
                fn, key = earlier, logged
        call._script_key = key
        call.script_name = getattr(fn, "__qualname__", repr(fn))
        engine = CallEngine(fn, call, resolve_media=self._media.resolve,
                            on_error=self.on_error, time_scale=self.time_scale,
                            overdue_margin=self.overdue_margin)
        return engine, call

    def call_entered(self, call: Call, *, observed: bool) -> None:
        with self._lock:
            earlier = self._live.get(call.session_id)
            if earlier is not None and not earlier.ended:
                # Rebuilt here (evicted, or its store failed): the new Call stands for it,
                # and the old one ends with it (its waiters are not left waiting).
                self.calls[next(i for i, c in enumerate(self.calls) if c is earlier)] = call
                self._superseded[call.session_id] = earlier
            else:
                self.calls.append(call)
                self._appended += 1
            self._live[call.session_id] = call
            self._entered.notify_all()
        if observed:
            log.info("call %s entered from %s", shown(call.session_id), mask_number(call.caller))
        else:
            log.info("call %s resumed from its log in the store", shown(call.session_id))
        for observer in list(self._observers):  # optional hook: e.g. a dashboard shows the call
            entered = getattr(observer, "entered", None)
            if entered is not None:
                try:
                    entered(call)
                except Exception:
                    log.exception("observer %r failed for call %s", observer,
                                  shown(call.session_id))

    def call_finished(self, runner: CallRunner, call: Call) -> None:
        self._forget_session(call.session_id)
        with self._lock:
            earlier = self._superseded.pop(call.session_id, None)
            if self._live.get(call.session_id) is call:
                del self._live[call.session_id]
            self._trim_calls()
        if earlier is not None:
            earlier.error = earlier.error or call.error
            earlier._finish(call.end_reason or "hangup")
        log.info("call %s ended: %s", shown(call.session_id), call.end_reason)
        for observer in self._observers:
            try:
                observer.finished(call)
            except Exception:
                log.exception("observer %r failed for call %s", observer,
                              shown(call.session_id))

    def _trim_calls(self) -> None:
        """Keep at most ``keep_calls`` ended calls in app.calls (the oldest go first); with
        a little slack so the list is rebuilt once per many calls, not for each."""
        keep = self.keep_calls
        if keep is None or len(self.calls) - len(self._live) <= keep + keep // 8 + 1:
            return
        drop = len(self.calls) - len(self._live) - keep
        kept = []
        for one in self.calls:
            if drop and one.ended and self._live.get(one.session_id) is not one:
                drop -= 1
                continue
            kept.append(one)
        self.calls[:] = kept

    def _forget_session(self, session_id: str) -> None:
        now = time.time()
        with self._lock:
            self._ended[session_id] = now
            self._ended.move_to_end(session_id)
            while self._ended and next(iter(self._ended.values())) < now - self.retention:
                self._ended.popitem(last=False)

    def send(self, request: Request) -> Sent | SendFailed:
        return self._send(request)

    def run_effect(self, runner: CallRunner, request: Request, seq: int) -> None:
        """Run an effect on the effect pool (never a call worker, never the listener); its
        result, or its exception, is appended to the call's log (first of result and timeout
        wins)."""
        effect = request.effect
        session_id = runner.session_id
        name = request.command
        pool, timers = self._effects, self._timers
        if effect is None or pool is None or timers is None:
            self._effect_result(session_id, seq, {"error": {
                "type": "ivrscript.errors.IvrError",
                "message": f"{name} cannot run: the app is stopping"}})
            return

        def job() -> None:
            try:
                value = effect.fn(*effect.args, **dict(effect.kwargs))
            except Exception as error:  # the effect's failure is data: raised at the yield
                runner.live_errors[request.token] = error
                kind = type(error)
                self._effect_result(session_id, seq, {"error": {
                    "type": f"{kind.__module__}.{kind.__qualname__}", "message": str(error)}})
                return
            try:
                data = {"value": json.loads(json.dumps(value))}
            except (TypeError, ValueError) as error:
                data = {"error": {"type": "builtins.TypeError", "message": (
                    f"the effect {effect.describe()} returned a {type(value).__name__}, which "
                    f"is not JSON-serialisable ({error}): return dicts, lists, str, int, "
                    "float, bool or None")}}
            self._effect_result(session_id, seq, data)

        def too_slow() -> None:
            self._effect_result(session_id, seq, {"error": {
                "type": "builtins.TimeoutError",
                "message": f"the effect {effect.describe()} ran past its timeout of "
                           f"{effect.timeout:g} s"}})

        timers.call_later(effect.timeout * 1.0, too_slow)
        try:
            pool.submit(job)
        except RuntimeError:
            too_slow()

    def _effect_result(self, session_id: str, seq: int, data: dict[str, Any]) -> None:
        data["req"] = seq
        try:  # None: the other of result and timeout came first
            self._append_and_wake(session_id, "effect", data, key=f"effect:{seq}")
        except StoreError as error:
            log.error("call %s: could not log an effect's result (%s)", shown(session_id),
                      error)

    def timer_set(self, delay: float) -> None:
        """A durable timer is due in ``delay`` s: claim it then (the housekeeper also claims
        due timers every tick, for other processes' calls and after restarts)."""
        timers = self._timers
        if timers is not None:
            timers.call_later(delay, self._claim_due)

    # -- housekeeping (one thread for all calls) ---------------------------------------------

    def _housekeep(self) -> None:
        tick = min(self.lease_ttl / 3, 0.5)
        last_adopt = last_expire = 0.0
        # A memory store this App made itself: no other process or App can hold its calls,
        # so there is nobody's call to take up.
        private = self._private_store
        while not self._stopped.wait(tick):
            now = time.monotonic()
            try:
                self._driver.renew()
                self._claim_due()
                if not private and now - last_adopt >= min(self.lease_ttl / 2, 1.0):
                    last_adopt = now
                    self._adopt()
                if now - last_expire >= min(EXPIRE_EVERY, self.retention / 2):
                    last_expire = now
                    self.store.expire(self.retention)
            except StoreError as error:
                log.warning("the call store failed during housekeeping: %s", error)
            except Exception:
                log.exception("housekeeping failed")

    def _claim_due(self) -> None:
        """Fire due durable timers: log each firing (deduped), then cancel it."""
        if self._stopped.is_set():
            return
        try:
            due = self.store.claim_due(self.owner)
        except StoreError as error:
            log.warning("claiming due timers failed: %s", error)
            return
        for timer in due:
            data, at = dict(timer.data), time.time()
            try:  # the firing logged and the timer cancelled: one round trip
                with self._driver.local():
                    seqs = write(self.store, timer.session_id,
                                 [("timer", data, f"timer:{timer.key}", at)],
                                 cancel=[timer.key], quiet_for=self.owner)
            except StoreError as error:
                log.warning("call %s: firing timer %s failed: %s", shown(timer.session_id),
                            shown(timer.key), error)
                continue
            if seqs and seqs[0] is not None:
                self._wake(timer.session_id, LogEntry(seqs[0], "timer", data, at))

    def _adopt(self) -> None:
        """Take up calls in progress that no process holds (their holder crashed or
        stopped): replay them here, so a parked call resumes without waiting for a callback."""
        # One query, whatever the number of calls: unfinished calls with no lease or a lapsed
        # one; a call that just entered is left to its receiver (it starts it once answered).
        for session_id in self.store.orphans(ANSWER_GRACE):
            if session_id in self._ended or session_id in self._driver.leases:
                continue
            self._wake(session_id)

    def _send(self, request: Request) -> Sent | SendFailed:
        return self.send_with(self.client, request)

    # One engine request through ``client``; the outcome to feed back (replay uses it too).
    send_with = staticmethod(send_with)

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


def _script_key(identity: dict[str, Any]) -> tuple[str, str, str]:
    return (str(identity.get("file")), str(identity.get("function")), str(identity.get("hash")))


def _store_name(store: Any) -> str:
    return str(getattr(store, "url", None) or type(store).__name__)


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
