"""Nothing secret is written down: logs and cassettes carry no token, no ``Bearer``, no client
secret or JWT, and (at INFO, and in cassettes with masking on) no caller number."""

from __future__ import annotations

import logging
import os
import threading
import warnings

import ivrscript as ivr
from ivrscript import RingCentral, Simulator

from ..conftest import EXAMPLES
from .conftest import FIGURES, REMOTE, count_call, count_faults, finish

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


def _first_starts(folder: str, count: int) -> list[str]:
    """``count`` forked processes released together (one byte each down a pipe), each
    loading the kept secret of ``folder`` for the first time; what each read."""
    from ivrscript.config import load_secret

    go_read, go_write = os.pipe()
    children = []
    with warnings.catch_warnings():  # the child only makes os calls: no lock to inherit
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(count):
            out_read, out_write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                os.close(out_read)
                os.read(go_read, 1)
                try:
                    answer = load_secret({"XDG_CONFIG_HOME": folder})
                except Exception as error:
                    answer = f"error: {error}"
                os.write(out_write, answer.encode())
                os._exit(0)
            os.close(out_write)
            children.append((pid, out_read))
    os.write(go_write, b"x" * count)
    seen = []
    for pid, out_read in children:
        with os.fdopen(out_read, "rb") as handle:
            seen.append(handle.read().decode())
        os.waitpid(pid, 0)
    os.close(go_read)
    os.close(go_write)
    return seen


def test_concurrent_first_starts_all_read_the_same_secret(tmp_path):
    """200 first starts at once, as threads, then 10 rounds of 20 processes released
    together, each round in a fresh config folder: every one reads the same valid secret (a
    half-written file used to be read as a bad secret by a second process), and no
    temporary file is left behind."""
    from ivrscript.config import load_secret, secret_path

    folder = str(tmp_path / "threads")
    barrier = threading.Barrier(200)
    got: list[str] = []

    def start() -> None:
        barrier.wait(30)
        try:
            got.append(load_secret({"XDG_CONFIG_HOME": folder}))
        except Exception as error:
            got.append(f"error: {error}")

    threads = [threading.Thread(target=start) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == 200 and len(set(got)) == 1, sorted(set(got))[:3]
    with open(secret_path({"XDG_CONFIG_HOME": folder})) as handle:
        assert handle.read().strip() == got[0]

    for round_ in range(10):
        folder = str(tmp_path / f"processes-{round_}")
        seen = _first_starts(folder, 20)
        assert len(set(seen)) == 1 and not seen[0].startswith("error"), sorted(set(seen))
        assert os.listdir(os.path.join(folder, "ivrscript")) == ["secret"]
        got.extend(seen)
    FIGURES["concurrent first starts, all the same secret"] += len(got)
