"""Values from outside are escaped exactly once where they are shown: in log lines (over real
HTTP) and on the terminal (the CLI in a real subprocess)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import ivrscript as ivr
from ivrscript.text import clean, shown, terminal

from .test_cli import Proc, kill_all


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Subprocesses started by the test, all killed at its end."""
    started: list[Proc] = []
    yield started
    kill_all(started)


@pytest.mark.parametrize("raw, expected", [
    ("s-x\nFAKE LINE", r"'s-x\nFAKE LINE'"),
    ("a\r\nb", r"'a\r\nb'"),
    ("\x1b]52;c;AAAA\x07", r"'\x1b]52;c;AAAA\x07'"),
    ("tab\there", r"'tab\there'"),
    ("bidi\u202eevil", r"'bidi\u202eevil'"),
    ("\x9b2J", r"'\x9b2J'"),
    ("plain text, 1-2-3 (ok) é ü 漢", "'plain text, 1-2-3 (ok) é ü 漢'"),
    (r"C:\prompts\x.wav", r"'C:\prompts\x.wav'"),  # a backslash is ordinary text
    ("it's", '"it\'s"'),
    (42, "'42'"),
    (None, "None"),
])
def test_shown_escapes_each_unsafe_character_once(raw: Any, expected: str) -> None:
    assert shown(raw) == expected


def test_escaping_twice_changes_nothing() -> None:
    for raw in ("a\nb", "\x1b[2J", "x\u2028y", "\x00\x7f"):
        once = clean(raw)
        assert clean(once) == once and terminal(once) == once
        assert "\\\\" not in once and shown(once) == shown(raw)


def test_clean_cuts_long_values_and_terminal_keeps_line_feeds() -> None:
    assert clean("x" * 500, 10) == "xxxxxxx..."
    assert shown("y" * 500) == "'" + "y" * 77 + "...'"
    assert terminal("line one\n  \x1b[31mred\x1b[0m\r") == "line one\n  \\x1b[31mred\\x1b[0m\\r"


def test_a_forged_session_id_in_a_log_line_is_escaped_once(sim: Any, make_app: Any,
                                                            caplog: Any) -> None:
    """Over real HTTP: an unknown session id with CR/LF is one log line, shown with ``\\n``
    (one backslash), as a person would type it, not ``\\\\n``."""

    def main(call: Any) -> Any:
        yield ivr.hangup()

    caplog.set_level(logging.INFO, logger="ivrscript")
    app = make_app(main)
    body = {"sessionId": "s-x\r\nFAKE LINE", "command": "Play", "status": "Completed"}
    answer = requests.post(app.callback_urls["on-command-update"], json=body, timeout=5)
    assert answer.status_code == 200
    lines = [r.getMessage() for r in caplog.records if "unknown session" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    assert "'s-x\\r\\nFAKE LINE'" in lines[0], lines[0]
    assert "\\\\" not in lines[0] and "\n" not in lines[0]


def test_live_mode_prints_a_forged_caller_escaped_once(tmp_path: Any,
                                                       procs: list[Proc]) -> None:
    """The CLI in live mode (a real subprocess) prints the caller number of an on-call-enter
    that carries escape sequences and a line break with each escaped once: no escape sequence
    reaches the terminal, no forged line is printed, and the transcript line says the same."""
    from .test_live import free_port, start_app, start_simulator, stop_app

    _sim, url, token = start_simulator(tmp_path, procs)
    port = free_port()
    app = start_app(tmp_path, procs, url, token, port)
    enter = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
    app.expect(r"Waiting for calls")
    caller = "+1555\x1b]0;PWNED\x07\nFAKE LINE"
    body = {"sessionId": "s-forged\x1b[2J", "partyId": "p-1", "accountId": "1",
            "inParty": {"id": "p-1", "from": {"phoneNumber": caller},
                        "to": {"phoneNumber": "201"}}}
    answer = requests.post(enter, json=body, timeout=10)
    assert answer.status_code == 204, answer.text
    header = app.expect(r"^\[1\] call ").string
    assert header == ("[1] call s-forged\\x1b[2J from "
                               "+1555\\x1b]0;PWNED\\x07\\nFAKE LINE"), header
    app.expect(r"^\[1\] enter   from \+1555\\x1b\]0;PWNED\\x07\\nFAKE LINE to 201$")
    out = stop_app(app)
    assert "\x1b" not in out and "\x07" not in out, out
    assert not any(text.startswith("FAKE LINE") for text in app.out), out
