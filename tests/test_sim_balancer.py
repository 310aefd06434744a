"""The simulator as a load balancer: ``sim.call([app1, app2, ...])`` sends each callback of
the call to the next app's URLs in turn."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

import ivrscript as ivr
from ivrscript.simulator import Simulator

from .test_simulator import Api, Receiver


@pytest.fixture
def two() -> Iterator[tuple[Receiver, Receiver]]:
    first, second = Receiver().start(), Receiver().start()
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def sim_api() -> Iterator[tuple[Simulator, Api]]:
    with Simulator(speed=20) as sim:
        api = Api(sim)
        yield sim, api
        api.close()


def _kinds(receiver: Receiver, session_id: str) -> list[str]:
    return receiver.kinds(session_id)


def test_each_callback_goes_to_the_next_app_in_turn(
        sim_api: tuple[Simulator, Api], two: tuple[Receiver, Receiver]) -> None:
    """on-call-enter to the first, then update, update, exit alternating between the two."""
    sim, api = sim_api
    first, second = two
    phone = sim.call([first, second])
    assert api.collect(phone, "x").status_code == 204
    phone.press("1")  # update 1 -> second
    second.wait(phone.session_id, 1, command="Collect")
    assert api.collect(phone, "x").status_code == 204
    phone.press("2")  # update 2 -> first
    first.wait(phone.session_id, 1, command="Collect")
    phone.hang_up()  # exit -> second
    second.wait(phone.session_id, 1, kind="on-call-exit")
    assert _kinds(first, phone.session_id) == ["on-call-enter", "Collect Completed"]
    assert _kinds(second, phone.session_id) == ["Collect Completed", "on-call-exit"]
    assert [b["parameters"]["digits"] for b in second.of(phone.session_id, command="Collect")
            ] == ["1"]
    assert [b["parameters"]["digits"] for b in first.of(phone.session_id, command="Collect")
            ] == ["2"]


def test_three_dicts_of_urls_take_turns_and_each_call_starts_at_the_first(
        sim_api: tuple[Simulator, Api], two: tuple[Receiver, Receiver]) -> None:
    """Dicts of callback URLs work as apps do: [first, second, first] gives enter, update,
    update, update, exit to first, second, first, first, second; a second call the same."""
    sim, api = sim_api
    first, second = two
    targets = [first.callback_urls, second.callback_urls, first.callback_urls]
    for _ in range(2):
        phone = sim.call(targets)
        for digit in "123":
            assert api.collect(phone, "x").status_code == 204
            phone.press(digit)
        phone.hang_up()
        second.wait(phone.session_id, 1, kind="on-call-exit")
        first.wait(phone.session_id, 2, command="Collect")
        assert _kinds(first, phone.session_id) == ["on-call-enter", "Collect Completed",
                                                   "Collect Completed"]
        assert _kinds(second, phone.session_id) == ["Collect Completed", "on-call-exit"]
        digits = [b["parameters"]["digits"] for b in first.of(phone.session_id,
                                                               command="Collect")]
        assert digits == ["2", "3"]


def test_a_retried_callback_goes_to_the_next_app(
        two: tuple[Receiver, Receiver]) -> None:
    """The app that should get a callback is down: the retry goes to the next one, as a load
    balancer routes around a dead process."""
    first, second = two
    with Simulator(speed=20, callback_retry=10.0) as sim:
        api = Api(sim)
        try:
            phone = sim.call([first, second])
            assert api.collect(phone, "x").status_code == 204
            second.status = 503  # the second process is failing
            phone.press("4")  # to second (503), then retried on first
            first.wait(phone.session_id, 1, command="Collect")
            assert [b["parameters"]["digits"] for b in first.of(phone.session_id,
                                                                command="Collect")] == ["4"]
            assert len(second.of(phone.session_id, command="Collect")) == 1
        finally:
            api.close()


def test_a_list_of_one_app_is_the_app(sim_api: tuple[Simulator, Api]) -> None:
    """sim.call([app]) with a real App: the call runs as with sim.call(app)."""
    sim, _ = sim_api

    def main(call: ivr.Call) -> Any:
        digits = yield ivr.collect("xx", timeout=10)
        yield ivr.forward(extension=str(digits))

    with ivr.App(main, platform=sim) as app:
        phone = sim.call([app])
        phone.press("42")
        assert phone.wait_until_ended() == "forwarded" and phone.forwarded_to == "42"
        (call,) = app.calls
        assert call.ended and call.transcript.kinds()[-1] == "exit"


def test_an_empty_list_is_a_clear_error(sim_api: tuple[Simulator, Api]) -> None:
    sim, _ = sim_api
    with pytest.raises(ValueError, match="non-empty list"):
        sim.call([])


def test_the_standalone_process_takes_several_urls(two: tuple[Receiver, Receiver]) -> None:
    """``call URL1 URL2`` in the standalone simulator's terminal balances one call's
    callbacks; ``--connect URL1 URL2`` parses as one extension of two processes."""
    from ivrscript.simserver import build_parser, main

    first, second = two
    args = build_parser().parse_args(["--connect", "http://a/x", "http://b/x",
                                      "--connect", "http://c/x"])
    assert args.connect == [["http://a/x", "http://b/x"], ["http://c/x"]]

    def lines() -> Iterator[str]:
        yield (f"call {first.callback_urls['on-call-enter']} "
               f"{second.callback_urls['on-call-enter']} +15550123\n")
        yield "h\n"
        with second.cond:  # the exit (the call's second callback) reaches the second app
            assert second.cond.wait_for(lambda: any(k == "on-call-exit"
                                                    for k, _ in second.posts), 10)
        yield "q\n"

    out, err = io.StringIO(), io.StringIO()
    status = main(["--speed", "20"], stdin=lines(),  # type: ignore[arg-type]
                  stdout=out, stderr=err)
    assert status == 0
    assert err.getvalue() == ""
    assert [k for k, _ in first.posts] == ["on-call-enter"]
    assert first.posts[0][1]["inParty"]["from"]["phoneNumber"] == "+15550123"
    assert [k for k, _ in second.posts] == ["on-call-exit"]


def test_the_standalone_console_says_what_call_expects(two: tuple[Receiver, Receiver]) -> None:
    from ivrscript.simserver import main

    out, err = io.StringIO(), io.StringIO()
    assert main([], stdin=io.StringIO("call +1555 http://x/y\nq\n"), stdout=out,
                stderr=err) == 0
    assert "usage: call URL [URL ...] [CALLER]" in err.getvalue()

