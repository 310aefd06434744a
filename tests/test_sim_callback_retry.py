"""A later callback the app does not take (down, 5xx) is tried again for up to
``callback_retry`` seconds, in the call's order; then it is dropped and logged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ivrscript as ivr
from ivrscript.simulator import Simulator

from .test_simulator import Api, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., tuple[Simulator, Api]]]:
    made: list[tuple[Simulator, Api]] = []

    def make(**options: Any) -> tuple[Simulator, Api]:
        sim = Simulator(speed=20, **options).start()
        sim.callback_log = []
        made.append((sim, Api(sim)))
        return made[-1]

    yield make
    for sim, api in made:
        api.close()
        sim.stop()


def _attempts(sim: Simulator, session_id: str, kind: str) -> int:
    assert sim.callback_log is not None
    return sum(1 for sid, k, _ in list(sim.callback_log) if sid == session_id and k == kind)


def _wait(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    """Wait until ``predicate()`` (the simulator's callback log has no condition variable to
    wait on: check it every 20 ms), at most ``timeout`` seconds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        pause.wait(0.02)


def test_an_update_sent_while_the_app_is_down_arrives_once_it_is_back(
        make_sim: Callable[..., tuple[Simulator, Api]]) -> None:
    """The app's port refuses while the caller presses a key and hangs up; once the app is
    back on its port, the Collect update and then the exit arrive, in that order."""
    sim, api = make_sim(callback_retry=10.0)
    first = Receiver().start()
    phone = sim.call(first)
    assert api.collect(phone, "x").status_code == 204
    first.stop()  # the app is down: its port refuses connections
    phone.press("5")
    phone.hang_up()
    _wait(lambda: _attempts(sim, phone.session_id, "on-command-update") >= 3, 5.0,
          "the simulator did not try the update again while the app was down")
    assert _attempts(sim, phone.session_id, "on-call-exit") == 0  # waits behind the update
    again = Receiver(port=first.port).start()  # the app is back, on the same port
    try:
        again.wait(phone.session_id, 1, kind="on-call-exit", timeout=5.0)
        assert again.kinds(phone.session_id) == ["Collect Completed", "on-call-exit"]
        assert again.of(phone.session_id, "on-command-update")[0]["parameters"] == {
            "digits": "5"}
    finally:
        again.stop()


def test_a_5xx_is_tried_again_a_4xx_is_not(make_sim: Callable[..., tuple[Simulator, Api]],
                                            receiver: Receiver) -> None:
    """503 from the app: tried again until a 2xx, and the exit waits behind; 404: once."""
    sim, api = make_sim(callback_retry=10.0)
    phone = sim.call(receiver)
    receiver.status = 503
    assert api.collect(phone, "x").status_code == 204
    phone.press("1")
    phone.hang_up()
    _wait(lambda: _attempts(sim, phone.session_id, "on-command-update") >= 2, 5.0,
          "a 503 was not tried again")
    assert receiver.of(phone.session_id, "on-call-exit") == []
    receiver.status = 204
    receiver.wait(phone.session_id, 1, kind="on-call-exit")
    kinds = receiver.kinds(phone.session_id)
    tries = _attempts(sim, phone.session_id, "on-command-update")
    assert kinds == ["on-call-enter", *["Collect Completed"] * tries, "on-call-exit"]

    other = sim.call(receiver)
    receiver.status = 404
    assert api.collect(other, "x").status_code == 204
    other.press("2")
    other.hang_up()
    receiver.wait(other.session_id, 1, kind="on-call-exit")
    assert _attempts(sim, other.session_id, "on-command-update") == 1


def test_after_callback_retry_seconds_it_is_dropped_and_logged(
        make_sim: Callable[..., tuple[Simulator, Api]], receiver: Receiver,
        caplog: pytest.LogCaptureFixture) -> None:
    """With callback_retry=0.5 an update the app keeps refusing with 500 is dropped after
    about half a second, with a warning; the call's next callback then goes."""
    caplog.set_level(logging.INFO, logger="ivrscript.simulator")
    sim, api = make_sim(callback_retry=0.5)
    phone = sim.call(receiver)
    receiver.status = 500
    assert api.collect(phone, "x").status_code == 204
    phone.press("3")
    phone.hang_up()
    receiver.wait(phone.session_id, 1, kind="on-call-exit", timeout=5.0)
    updates = _attempts(sim, phone.session_id, "on-command-update")
    assert updates >= 3
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
               and "on-command-update" in r.getMessage()]
    assert len(dropped) == 1 and f"dropped after {updates} tries" in dropped[0]
    assert "answered 500" in dropped[0]


def test_callback_retry_zero_never_tries_again(make_sim: Callable[..., tuple[Simulator, Api]],
                                               receiver: Receiver) -> None:
    sim, api = make_sim(callback_retry=0)
    phone = sim.call(receiver)
    receiver.status = 503
    assert api.collect(phone, "x").status_code == 204
    phone.press("4")
    phone.hang_up()
    receiver.wait(phone.session_id, 1, kind="on-call-exit")
    assert _attempts(sim, phone.session_id, "on-command-update") == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_callback_retry_must_be_seconds(bad: float) -> None:
    with pytest.raises(ValueError, match="callback_retry"):
        Simulator(callback_retry=bad)


def test_the_app_whose_listener_was_down_gets_the_key_and_finishes_the_call() -> None:
    """End to end with the real App: its listener is down (the port refuses) while the caller
    presses a key; once it listens again on its port, the update arrives and the script goes
    on with the digit to its end."""
    with Simulator(speed=20, callback_retry=10.0) as sim:
        sim.callback_log = []
        seen: list[str] = []

        def main(call: ivr.Call) -> Any:
            digits = yield ivr.collect("x", timeout=30)
            seen.append(str(digits))
            yield ivr.hangup()

        with ivr.App(main, platform=sim) as app:
            phone = sim.call(app)
            phone.wait_until_listening(10)
            listener = app._listener  # noqa: SLF001 - stop only the app's HTTP side
            assert listener is not None
            listener.stop()
            phone.press("7")
            _wait(lambda: _attempts(sim, phone.session_id, "on-command-update") >= 3, 5.0,
                  "the update was not tried again while the app was down")
            listener.start()  # the same port again
            assert phone.wait_until_ended(10) == "hangup"
            assert seen == ["7"]


def test_the_standalone_simulator_takes_callback_retry() -> None:
    """``python -m ivrscript.simulator --callback-retry S``: a bad value is one sentence."""
    import io

    from ivrscript.simserver import build_parser, main

    assert build_parser().parse_args(["--callback-retry", "2.5"]).callback_retry == 2.5
    assert build_parser().parse_args([]).callback_retry == 10.0
    err = io.StringIO()
    assert main(["--callback-retry", "-1"], stdin=io.StringIO(""), stdout=io.StringIO(),
                stderr=err) == 2
    assert err.getvalue() == "simulator: callback_retry must be >= 0 seconds, got -1.0\n"
