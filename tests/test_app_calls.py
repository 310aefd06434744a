"""``app.calls``: every call seen, oldest first; with ``keep_calls`` only that many ended
ones (beside those in progress), so a server that runs for weeks does not grow without bound."""

from __future__ import annotations

from typing import Any

import pytest

import ivrscript as ivr


def _flow(call: ivr.Call) -> Any:
    pin = yield ivr.collect("x", timeout=30)
    yield ivr.forward(extension="101" if pin == "1" else "102")


def test_keep_calls_bounds_ended_calls_and_keeps_every_call_in_progress(
        sim: Any, make_app: Any) -> None:
    app = make_app(_flow, keep_calls=3)
    parked = sim.call(app, caller="+15550000000")
    parked.wait_until_listening(30)
    for i in range(12):
        phone = sim.call(app, caller=f"+1555000{i + 1:04d}")
        phone.wait_until_listening(30)
        phone.press("1", wait=True, timeout=30)
        phone.wait_until_ended(30)
        assert phone.end_reason == "forwarded"
    ended = [c for c in app.calls if c.ended]
    live = [c for c in app.calls if not c.ended]
    # the slack lets it rebuild the list once per few calls: never more than 3 + 3 // 8 + 1
    assert 3 <= len(ended) <= 4, [c.caller for c in ended]
    assert [c.caller for c in ended][-1] == "+15550000012"  # the newest kept, oldest gone
    assert [c.session_id for c in live] == [parked.session_id]  # in progress: never dropped
    parked.press("1", wait=True, timeout=30)
    parked.wait_until_ended(30)
    assert parked.end_reason == "forwarded"


def test_without_keep_calls_every_call_is_kept(sim: Any, make_app: Any) -> None:
    app = make_app(_flow)
    for i in range(5):
        phone = sim.call(app, caller=f"+1555001{i:04d}")
        phone.wait_until_listening(30)
        phone.press("2", wait=True, timeout=30)
        phone.wait_until_ended(30)
    assert [c.caller for c in app.calls] == [f"+1555001{i:04d}" for i in range(5)]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_keep_calls_must_be_a_whole_number(sim: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match="keep_calls"):
        ivr.App(_flow, platform=sim, keep_calls=bad)
