"""Nothing secret is written down: logs and cassettes carry no token, no ``Bearer``, no client
secret or JWT, and (at INFO, and in cassettes with masking on) no caller number."""

from __future__ import annotations

import logging
import os

import ivrscript as ivr
from ivrscript import RingCentral, Simulator

from ..conftest import EXAMPLES
from .conftest import REMOTE, count_call, count_faults, finish

CALLER = "+15557654321"
CLIENT_SECRET = "client-secret-Zq8xW2"
JWT = "eyJhbGciOiJSUzI1NiJ9.jwt-body-Kq3.signature-Lm4"
PROMPT = os.path.join(EXAMPLES, "prompts", "enter-pin.wav")  # local: served under the secret


def _text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(record)  # exc_info and stack included


def test_logs_and_cassettes_hold_no_token_and_mask_numbers(tmp_path, caplog):
    """A call with everything that logs (JWT grant, a token refresh after expiry, 429/503
    retries, local media under the secret path, a recorder with masking on): no log record
    at any level holds a token, a client secret, the JWT or "Bearer"; INFO and above hold
    neither the caller's number nor the listener's secret; the cassette holds none of them."""
    caplog.set_level(logging.DEBUG)
    with Simulator(speed=20, rate_limited=0.2, unavailable=0.1, seed=3) as sim:
        client = RingCentral(server_url=sim.url, client_id="client-id",
                             client_secret=CLIENT_SECRET, jwt=JWT)
        tokens = []

        def main(call):
            yield ivr.play(REMOTE + "hello.wav")
            pin = yield ivr.collect("xxxx", timeout=60, prompt=PROMPT)
            tokens.append(client._current.value)
            call.data["pin"] = str(pin)
            yield ivr.forward(phone_number="+15559876543")

        with ivr.App(main, platform=client, record=tmp_path, record_numbers=False) as app:
            phone = sim.call(app, caller=CALLER)
            phone.wait_until_listening(20)
            tokens.append(client._current.value)
            sim.expire_tokens()  # the next command meets 401 and refreshes
            phone.press("1234")
            call = finish(app, phone)
            cassette = app._recorder.wait_for(phone.session_id)
            tokens.append(client._current.value)
            tokens.append(client._refresh_token)
            secret = app.secret
        count_faults(sim)
    assert call.end_reason == "forwarded" and call.data["pin"] == "1234"
    assert sim.token_grants >= 2, "the refresh did not happen"
    assert len({t for t in tokens if t}) >= 2
    count_call(True)

    never = [t for t in tokens if t] + [sim.token, CLIENT_SECRET, JWT, "Bearer"]
    records = list(caplog.records)
    assert records, "nothing was logged"
    for record in records:
        text = _text(record)
        for item in never:
            assert item not in text, f"{item[:8]}... in a log line: {text[:300]}"
        if record.levelno >= logging.INFO:
            assert CALLER not in text and "+15559876543" not in text, text[:300]
            assert secret not in text, text[:300]
    with open(cassette, encoding="utf-8") as handle:
        recorded = handle.read()
    for item in [*never, CALLER, "+15559876543", secret, "authorization", "Authorization"]:
        assert item not in recorded, f"{item[:8]}... in the cassette {cassette}"
    assert "hello.wav" in recorded and "enter-pin.wav" in recorded, "not the call's cassette"
