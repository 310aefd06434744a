"""Many calls at once: under injected faults every call ends with exactly its command sequence,
and hundreds of parked calls cost no threads."""

from __future__ import annotations

import threading
import time

import pytest

import ivrscript as ivr
from ivrscript import Simulator
from ivrscript.engine import MAX_ATTEMPTS

from .conftest import (
    FIGURES,
    REMOTE,
    KeyPresser,
    call_of,
    count_call,
    count_faults,
    post,
    successful_requests,
)

SEED = 20261124
CALLS = 100
PLAY, COLLECT, FORWARD = ("POST", "play"), ("POST", "collect"), ("POST", "forward")


def _plain(call):
    yield ivr.play(REMOTE + "welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=120)
    call.data["pin"] = str(pin)
    yield ivr.play(REMOTE + "thanks.wav")
    yield ivr.forward(extension="101")


def _prompted(call):
    yield ivr.play(REMOTE + "welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=120, prompt=REMOTE + "enter-pin.wav")
    call.data["pin"] = str(pin)
    yield ivr.play(REMOTE + "thanks.wav")
    yield ivr.forward(extension="101")


FLOWS = {  # script, the commands the platform must carry out (once each), plays heard
    "plain": (_plain, [PLAY, COLLECT, PLAY, FORWARD], 2),
    "barge-in prompt": (_prompted, [PLAY, PLAY, COLLECT, PLAY, FORWARD], 3),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_100_concurrent_calls_under_faults_run_exactly_their_commands(make_app, flow):
    """Under faults (20% duplicate and 20% late callbacks, 5% 429, 5% 503; seeded; collect
    ids on so Collect updates are duplicated too) 100 concurrent calls all end with exactly
    the expected command sequence: each command carried out once, every 429/503 retried after
    its Retry-After. With the retry cap at MAX_ATTEMPTS no call of this seeded run reaches it
    (a capped call would end through on_error and is counted as a failure here). No call is
    lost."""
    script, expected, heard = FLOWS[flow]
    with Simulator(speed=10, duplicate_callbacks=0.2, late_callbacks=0.2, rate_limited=0.05,
                   unavailable=0.05, seed=SEED, collect_ids=True) as sim:
        KeyPresser(sim, "1234")
        app = make_app(script, platform=sim)
        phones = [sim.call(app, caller=f"+1555{i:07d}") for i in range(CALLS)]
        for phone in phones:
            phone.wait_until_ended(60)
        problems = []
        capped = 0
        for phone in phones:
            call = call_of(app, phone.session_id)
            call.wait_until_ended(30)
            verdict = _check(sim, phone, call, expected, heard)
            capped += verdict == "capped"
            count_call(verdict != "wrong")
            if verdict == "wrong":
                shown = [(r.method, r.path.rsplit("/", 1)[-1], r.status)
                         for r in _records(sim, phone)]
                problems.append(f"{phone.session_id}: requests {shown}, end "
                                f"{call.end_reason}\n{call.transcript}")
        faults = dict(sim.faults_injected)
        count_faults(sim)
        assert not problems, f"{len(problems)} of {CALLS} calls went wrong:\n" + \
            "\n".join(problems[:3])
        assert capped == 0, f"{capped} calls hit the retry cap of {MAX_ATTEMPTS} attempts"
        # The faults really happened.
        assert faults["duplicate_callbacks"] > 0 and faults["late_callbacks"] > 0
        assert faults["rate_limited"] > 0 and faults["unavailable"] > 0
        FIGURES["calls under faults: all commands carried out once"] += CALLS - capped


def _records(sim, phone):
    return [r for r in list(sim.requests_log) if r.session_id == phone.session_id]


def _check(sim, phone, call, expected, heard):
    """"ok" if the platform carried out exactly ``expected``; "capped" if one command was
    refused MAX_ATTEMPTS times in a row and the platform carried out ``expected`` up to it,
    then the on_error hang-up (the contract's retry cap); "wrong" otherwise. Either way every
    refusal but a command's last is followed by its retry after Retry-After (1 s).
    Cancels of a barge-in prompt depend on timing: at most one, never retried."""
    records = _records(sim, phone)
    cancels = [r for r in records if r.method == "DELETE" and "/play/" in r.path]
    records = [r for r in records if r not in cancels]
    if len(cancels) > 1 or any(r.status not in (204, 429, 503) for r in cancels):
        return "wrong"
    done = [step for step in successful_requests(sim, phone.session_id)
            if step != ("DELETE", "play-cancel")]
    refused = [r for r in records if r.status in (429, 503)]
    if any(not 200 <= r.status < 300 and r not in refused for r in records):
        return "wrong"
    runs: list[list] = []  # consecutive attempts of one command
    for r in records:
        if runs and (runs[-1][-1].method, runs[-1][-1].path) == (r.method, r.path) \
                and runs[-1][-1].status in (429, 503):
            runs[-1].append(r)
        else:
            runs.append([r])
    for attempts in runs:
        for earlier, later in zip(attempts, attempts[1:], strict=False):
            if later.time - earlier.time < 0.9:
                return "wrong"  # retried before Retry-After
    capped = [attempts for attempts in runs if attempts[-1].status in (429, 503)]
    if any(len(attempts) != MAX_ATTEMPTS for attempts in capped):
        return "wrong"  # given up too early, or retried too often
    kinds = call.transcript.kinds()
    if not capped:
        ok = (done == expected and call.end_reason == "forwarded"
              and phone.forwarded_to == "101" and call.data.get("pin") == "1234"
              and len(phone.heard) == heard
              and kinds == ["enter", "play", "result", "collect", "result", "play", "result",
                            "forward", "exit"])
        return "ok" if ok else "wrong"
    index = len(done) - 1
    first = capped[0][0]
    ok = (len(capped) == 1 and done[-1] == ("DELETE", "session")
          and done[:-1] == expected[:index]
          and (first.method, first.path.rsplit("/", 1)[-1]) == expected[index]
          and call.end_reason == "hangup" and "error" in kinds
          and "CommandFailed" in str(call.transcript))
    return "capped" if ok else "wrong"


def test_300_parked_calls_cost_no_threads_and_a_new_call_is_served(make_app):
    """300 calls parked in collect at once: the thread count stays under a bound that does
    not depend on the number of calls, the listener still answers at once, and a new call
    runs to its end."""
    with Simulator(speed=1) as sim:
        got = []

        def main(call):
            got.append((yield ivr.collect("xxxx", timeout=300)))

        app = make_app(main, platform=sim)
        warm = sim.call(app)  # pools and keep-alive connections exist from here on
        warm.wait_until_listening(10)
        before = threading.active_count()
        phones = [sim.call(app) for _ in range(300)]
        for phone in phones:
            phone.wait_until_listening(30)
        during = threading.active_count()
        # Bounded by the pools (app workers, the client's connections to the platform, the
        # simulator's callback workers), never by the number of calls.
        bound = app.workers + 32 + 16
        assert during - before <= bound, (before, during, bound)
        assert bound < len(phones)
        started = time.monotonic()
        answer = post(app, "on-command-update", {"sessionId": "s-nobody", "command": "Play",
                                                 "status": "Completed"})
        latency = time.monotonic() - started
        assert answer.status_code == 200 and latency < 0.5, latency
        new = sim.call(app)
        new.press("4321")
        call = call_of(app, new.session_id)
        assert call.wait_until_ended(30) == "hangup" and got == ["4321"]
        count_call(True)
        for phone in [warm, *phones]:
            phone.hang_up()
        for phone in [warm, *phones]:
            ended = call_of(app, phone.session_id).wait_until_ended(30)
            count_call(ended == "caller-hangup")
        assert threading.active_count() - before <= bound
        FIGURES["calls parked in collect at once"] += len(phones) + 1
        FIGURES["threads added by 300 parked calls"] += max(0, during - before)
