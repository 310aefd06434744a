"""Seeded fault injection: REST commands refused, callbacks duplicated or held back.

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

import random
from dataclasses import dataclass, field

_LATE_MAX = 0.2


@dataclass(frozen=True)
class Fault:
    """A REST answer injected instead of executing the command."""

    name: str  # "rate_limited" or "unavailable"
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def call_streams(seed: int | str, number: int) -> tuple[random.Random, random.Random]:
    """The call's two random streams: (REST faults, callback faults)."""
    base = random.Random(f"{seed}:{number}")
    return random.Random(base.getrandbits(64)), random.Random(base.getrandbits(64))


def rest_fault(rng: random.Random, rate_limited: float, unavailable: float) -> Fault | None:
    """The fault for one session command, if any (one draw when either share is set)."""
    if not (rate_limited or unavailable):
        return None
    draw = rng.random()
    if draw < rate_limited:
        return Fault("rate_limited", 429, "CMN-301", "Request rate exceeded (simulated)",
                     {"Retry-After": "1", "X-Rate-Limit-Group": "light",
                      "X-Rate-Limit-Limit": "50", "X-Rate-Limit-Remaining": "0",
                      "X-Rate-Limit-Window": "60"})
    if draw < rate_limited + unavailable:
        return Fault("unavailable", 503, "CMN-211", "Service temporarily unavailable "
                     "(simulated)", {"Retry-After": "1"})
    return None


def callback_fault(rng: random.Random, duplicate: float, late: float,
                   may_duplicate: bool) -> tuple[int, float]:
    """(copies, delay in seconds) for one callback; ``may_duplicate`` False for a Collect
    update without collect ids (a duplicate could not be told from a genuine one)."""
    copies, delay = 1, 0.0
    if duplicate > 0 and rng.random() < duplicate:
        if may_duplicate:
            copies = 2
    if late > 0 and rng.random() < late:
        delay = rng.uniform(0.0, _LATE_MAX)
    return copies, delay
