"""The simulated caller: :class:`Phone`, and what it sees (:class:`PhoneEvent`,
:class:`PhoneTranscript`)."""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import IvrError
from .common import ACCOUNT_ID, KEYS, _origin
from .faults import call_streams

if TYPE_CHECKING:
    from .collect import _CollectState
    from .core import Simulator
    from .courier import _Outgoing
    from .play import _PlayState

_BUFFER_KEYS = 64


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


class Phone:
    """The simulated caller of one call: press keys, hang up, see what was played.

    Attributes are the platform's view, updated as the call goes: ``listening``,
    ``collect_patterns``, ``playing``, ``heard``, ``ended``, ``end_reason``
    (``"forwarded"``, ``"hangup"`` when the app dropped the call, ``"caller-hangup"``),
    ``forwarded_to``, ``error`` (why the call ended, when it failed) and ``transcript``.
    """

    def __init__(self, sim: Simulator, *, number: int, session_id: str, caller_party_id: str,
                 app_party_id: str, caller: str, called: str, extension_id: str,
                 urls: list[dict[str, str]], apps: Sequence[Any] = ()) -> None:
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
        self._targets = urls  # the callback URLs of each app process, taken in turn
        self._turn = 0  # the next callback goes to _targets[_turn % len(_targets)]
        self._apps = list(apps)  # the app objects (not plain URLs), to wait on their side
        self._started = time.monotonic()
        self._rest_rng, self._callback_rng = call_streams(sim.seed, number)
        self._play: _PlayState | None = None
        self._play_ids: set[str] = set()
        self._collect: _CollectState | None = None
        self._buffer: deque[str] = deque(maxlen=_BUFFER_KEYS)
        self._enter_done = False  # on-call-enter's answer was read (2xx or not)
        self._entered = False  # ... and it was a 2xx: the app took the call
        # the count of its answer's arrival (first bytes, or no answer); None: not yet
        self._enter_arrival: int | None = None
        self._enter_sock: socket.socket | None = None  # while its answer is awaited
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
        """Wait for the call to end; return ``end_reason``.

        When the call rang an app object (``sim.call(app)``, not a dict of URLs), also wait
        for that app's side: its :class:`~ivrscript.Call` finished (the transcript complete)
        and, if the app records, the call's cassette written. All within ``timeout``."""
        deadline = time.monotonic() + timeout
        # ended, and the request that ended it (a forward, a drop) is in requests_log
        self.wait_for(lambda: self.ended and self.session_id not in self._sim._rest_open,
                      timeout,
                      f"call {self.session_id} did not end within {timeout} s "
                      f"(still {'listening' if self.listening else 'in progress'})")
        for app in self._apps:
            calls = getattr(app, "calls", None)
            call = next((c for c in list(calls or ())
                         if getattr(c, "session_id", None) == self.session_id), None)
            if call is None or not getattr(app, "running", True):
                continue  # never took the call, or stopped (a durable store hands calls on)
            call.wait_until_ended(max(0.0, deadline - time.monotonic()))
            recorder = getattr(app, "_recorder", None)
            records = getattr(recorder, "records", None)
            if recorder is not None and (records is None or records(self.session_id)):
                try:
                    recorder.wait_for(self.session_id, max(0.0, deadline - time.monotonic()))
                except TimeoutError as error:
                    raise IvrError(str(error)) from None
        return str(self.end_reason)

    def _url(self, kind: str) -> str | None:
        """The URL for the call's next callback of ``kind``: the apps take turns (under the
        simulator's lock)."""
        target = self._targets[self._turn % len(self._targets)]
        self._turn += 1
        return target.get(kind)

    @property
    def _origins(self) -> set[tuple[str, int] | None]:
        return {_origin(url) for target in self._targets for url in target.values()}

    def wait_until_listening(self, timeout: float = 30.0) -> None:
        """Wait until a collect is active; ``IvrError`` if the call ends or time runs out."""
        self.wait_for(lambda: self.ended or self.listening, timeout,
                      f"call {self.session_id}: the app did not start a collect within "
                      f"{timeout} s")
        if not self.listening:
            why = f": {self.error}" if self.error else ""
            raise IvrError(f"call {self.session_id} ended ({self.end_reason}) before the app "
                           f"listened for keys{why}")

    def __repr__(self) -> str:
        state = f"ended {self.end_reason}" if self.ended else (
            "listening" if self.listening else "in progress")
        return f"<Phone {self.session_id} {state}>"
