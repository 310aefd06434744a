"""``App(on_unknown=ivr.forward(...))`` for a callback of a session the app does not know:
the forward goes to the session's APP party (Forward targets it, PLATFORM.md), though the
callback that arrives for a call in progress (on-command-update) names the CALLER's party.
On the simulator over real HTTP."""

from __future__ import annotations

from typing import Any

import requests

import ivrscript as ivr

from .test_durable import wait_for

WAIT = 20.0


def waiting(call: Any) -> Any:
    yield ivr.play("https://example.com/welcome.wav")
    yield ivr.collect("x", timeout=300)


def test_an_unknown_call_in_progress_is_forwarded_from_the_app_party(sim: Any,
                                                                     make_app: Any) -> None:
    """Two processes without a shared store behind a balancer: the call enters the first;
    its first update (naming the caller's party) reaches the second, which does not know
    the session and forwards it as on_unknown says: on the app party, so the caller is
    forwarded, not hung up."""
    first = make_app(waiting)
    second = make_app(waiting, on_unknown=ivr.forward(extension="0"))
    phone = sim.call([first, second])  # each callback goes to the next app in turn
    assert phone.wait_until_ended(WAIT) == "forwarded", (phone.end_reason, sim.requests_log)
    assert phone.forwarded_to == "0"
    forwards = [r for r in sim.requests_log if r.path.endswith("/forward")]
    assert len(forwards) == 1, sim.requests_log
    assert f"/parties/{phone.app_party_id}/forward" in forwards[0].path
    assert forwards[0].status == 200
    assert not any(r.method == "DELETE" for r in sim.requests_log)


def test_an_unknown_session_the_platform_does_not_know_is_hung_up(sim: Any,
                                                                   make_app: Any) -> None:
    """A forged or long-gone session: the platform knows no party to forward, so the app
    hangs it up (never a forward to the caller's party, which the platform refuses)."""
    app = make_app(waiting, on_unknown=ivr.forward(extension="0"))
    body = {"sessionId": "s-gone", "partyId": "p-caller", "command": "Play",
            "commandId": "7", "status": "Completed"}
    assert requests.post(app.callback_urls["on-command-update"], json=body,
                         timeout=5).status_code == 200
    wait_for(lambda: any(r.method == "DELETE" for r in sim.requests_log), "the hang-up")
    assert not any(r.path.endswith("/forward") for r in sim.requests_log), sim.requests_log
