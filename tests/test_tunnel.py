"""The ngrok tunnel: a missing token or no network is a clear error in seconds, never a hang.

These use the real ngrok SDK with a fake token; the test machine has no route to ngrok, and
with one a fake token is refused, so both ways the answer is an error sentence.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ivrscript.errors import ConfigError
from ivrscript.tunnel import open_tunnel

from .test_cli import run_cli

BOUND = 20.0  # the promise: a clear message within 20 seconds


def test_missing_token_is_said_at_once() -> None:
    """No NGROK_AUTHTOKEN: ConfigError naming it, before the SDK is touched."""
    with pytest.raises(ConfigError, match="NGROK_AUTHTOKEN"):
        open_tunnel("ngrok", "http://127.0.0.1:9", environ={})


def test_fake_token_without_network_is_an_error_not_a_hang() -> None:
    """A token but no way to reach ngrok: a ConfigError from the worker thread, well within
    20 seconds (the open itself is bounded by its timeout)."""
    pytest.importorskip("ngrok")
    outcome: dict[str, BaseException] = {}

    def open_it() -> None:
        try:
            open_tunnel("ngrok", "http://127.0.0.1:9", environ={"NGROK_AUTHTOKEN": "fake_123"},
                        timeout=15.0)
        except BaseException as error:  # noqa: BLE001 - inspected below
            outcome["error"] = error

    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(BOUND)
    assert not worker.is_alive(), f"open_tunnel still running after {BOUND} s"
    error = outcome.get("error")
    assert isinstance(error, ConfigError), repr(error)
    assert "ngrok" in str(error) and "--public-url" in str(error)


def test_cli_live_with_a_fake_ngrok_token(tmp_path: Any, sim: Any) -> None:
    """`--live` with credentials and a fake NGROK_AUTHTOKEN: one sentence, exit status 2.
    (The simulator stands in for the platform: live mode checks the credentials first.)"""
    pytest.importorskip("ngrok")
    done = run_cli(tmp_path, "examples/pin.py", "--live", RINGCENTRAL_SERVER_URL=sim.url,
                   RINGCENTRAL_TOKEN=sim.token, NGROK_AUTHTOKEN="fake_123")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ivrscript: ngrok"), done.stderr
    assert "Opening the ngrok tunnel" in done.stdout
