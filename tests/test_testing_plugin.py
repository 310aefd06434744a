"""The pytest plugin's fixtures, used as a project's tests would use them."""

from __future__ import annotations

import ivrscript as ivr


def test_ivr_call_fixture_runs_a_simulated_call(ivr_call):
    """ivr_call(main) returns the phone and the app's call; keys reach the script."""
    def main(call):
        pin = yield ivr.collect("xx", timeout=5)
        yield ivr.play(f"https://media.example/{pin}.wav")

    phone, call = ivr_call(main)
    phone.press("42")
    assert phone.wait_until_ended() == "hangup"
    assert call.wait_until_ended() == "hangup"
    assert phone.heard == ["https://media.example/42.wav"]
    assert "'42' Completed" in str(call.transcript)
