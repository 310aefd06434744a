"""Callback delivery (a fixed pool of threads, each call's callbacks in order), the event
dispatcher for listeners, and the one pooled HTTP client (requests) the simulator uses."""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .common import _join

if TYPE_CHECKING:
    from .phone import Phone, PhoneEvent

_log = logging.getLogger("ivrscript.simulator")

_CALLBACK_TIMEOUT = 3.0
_MEDIA_TIMEOUT = 3.0
_MEDIA_MAX_BYTES = 1 << 20  # enough for any WAV header
_DELIVERY_WORKERS = 8


def _readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets with bytes to read (or closed by the peer), waiting up to ``timeout``.
    poll where there is one: select() cannot watch descriptors past FD_SETSIZE."""
    if not socks:
        return []
    if not hasattr(select, "poll"):
        return select.select(socks, [], [], timeout)[0]
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        fd = sock.fileno()
        if fd >= 0:
            by_fd[fd] = sock
            poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000.0) if fd in by_fd]


@dataclass(eq=False)
class _Outgoing:
    kind: str
    url: str
    body: dict[str, Any]
    attempts: int = 0  # deliveries tried so far
    failing_since: float | None = None  # time.monotonic() of the first failed attempt


class _Courier:
    """Delivers callbacks on a fixed pool of threads, each call's callbacks in order.

    A call is in the ready queue at most once; the worker that takes it delivers one callback
    and puts it back at the end if it has more, so calls share the workers fairly. ``deliver``
    returns None when the callback is done with, or the seconds after which to try it again:
    then it goes back to the front of the call's outbox and the call stays claimed (its later
    callbacks wait behind it) until ``call_later`` gives it back, holding no thread meanwhile.
    """

    def __init__(self, deliver: Callable[[Phone, _Outgoing], float | None], workers: int,
                 call_later: Callable[[float, Callable[[], None]], Any]) -> None:
        self._deliver = deliver
        self._call_later = call_later
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
            retry_in: float | None = None
            try:
                if item is not None:
                    retry_in = self._deliver(phone, item)
            except Exception:
                _log.exception("simulator callback delivery failed")
            if retry_in is None or item is None:
                self.release(phone)
                continue
            with self._cond:
                if self._stopped:
                    continue
                phone._outbox.appendleft(item)
            self._call_later(retry_in, lambda phone=phone: self.release(phone))

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


class _Http:
    """One pooled ``requests`` session: callbacks POSTed out, media fetched for its length."""

    def __init__(self) -> None:
        self._session: requests.Session | None = None

    def open(self) -> None:
        http = requests.Session()
        http.trust_env = False  # loopback: no proxies, no .netrc
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=_DELIVERY_WORKERS + 8,
                              max_retries=0)
        http.mount("http://", adapter)
        http.mount("https://", adapter)
        self._session = http

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def post(self, url: str, body: dict[str, Any]) -> tuple[int | None, str | None]:
        """POST a callback: (status, None) on a 2xx, else (status or None, what went wrong)."""
        http = self._session
        if http is None:
            return None, "the simulator is not running"
        try:
            response = http.post(url, json=body, timeout=_CALLBACK_TIMEOUT)
        except requests.RequestException as exc:
            return None, f"no answer ({type(exc).__name__})"
        response.close()
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"answered {response.status_code}"

    def post_watched(self, url: str, body: dict[str, Any], *,
                     connected: Callable[[socket.socket], None],
                     arrived: Callable[[], None]) -> tuple[int | None, str | None]:
        """POST on a connection of its own (``http.client``), telling the caller when its socket
        is connected (before anything is sent) and when the answer's first bytes have arrived
        (before any is read): so a request that came in meanwhile can be told to have come
        before or after the answer was sent. Same result as :meth:`post`."""
        if self._session is None:
            return None, "the simulator is not running"
        parts = urlsplit(url)
        factory = (http.client.HTTPSConnection if parts.scheme == "https"
                   else http.client.HTTPConnection)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + _CALLBACK_TIMEOUT
        connection = factory(parts.hostname or "", parts.port, timeout=_CALLBACK_TIMEOUT)
        try:
            connection.connect()
            sock = connection.sock
            if sock is None:
                raise OSError("not connected")
            connected(sock)
            connection.request("POST", path, body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
            if not _readable([sock], max(0.0, deadline - time.monotonic())):
                raise TimeoutError("no answer within the timeout")
            arrived()
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return None, f"no answer ({type(exc).__name__})"
        finally:
            arrived()
            connection.close()
        if 200 <= response.status < 300:
            return response.status, None
        return response.status, f"answered {response.status}"

    def media_head(self, uri: str) -> bytes | None:
        """The start of a media file (enough for a WAV header); None on any failure."""
        http = self._session
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
        return b"".join(chunks)
