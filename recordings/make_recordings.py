"""Regenerate the cassettes in this folder: each example, on the built-in simulator, through
its main paths and its failure paths.

    python recordings/make_recordings.py            # all of them
    python recordings/make_recordings.py pin-right  # only the ones named

Each scenario runs one call on ``Simulator(speed=50)`` with ``App(record=...)``, checks that
the call went the way the scenario says (else it is retried, then the script fails), replays
the new cassette against the example to be sure it round-trips, and writes
``recordings/<scenario>.yaml``. ``tests/test_recordings.py`` replays every cassette here.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from ivrscript import App, Simulator  # noqa: E402
from ivrscript.loader import load_script_file  # noqa: E402
from ivrscript.recorder import cassette_name, load_recording  # noqa: E402
from ivrscript.testing import replay  # noqa: E402

CALLER = "+15550100"


@dataclass(frozen=True)
class Scenario:
    """One recorded call: which example, what the caller does, what must have happened."""

    example: str
    caller: Callable[[Any], None]  # drives the simulated Phone
    end_reason: str
    expect: tuple[str, ...] = ()  # lines that must be in the transcript
    app_options: dict[str, Any] = field(default_factory=dict)


def press(*keys: str) -> Callable[[Any], None]:
    def run(phone: Any) -> None:
        for key in keys:
            phone.press(key)

    return run


def silent(phone: Any) -> None:
    """The caller says nothing: every collect times out."""


def hang_up_after(*keys: str) -> Callable[[Any], None]:
    def run(phone: Any) -> None:
        for key in keys:
            phone.press(key)
        phone.hang_up()

    return run


def hang_up_during_first_play(phone: Any) -> None:
    phone.wait_for(lambda: bool(phone.heard) or phone.ended, 30, "the greeting never started")
    phone.hang_up()


SCENARIOS: dict[str, Scenario] = {
    "greeting": Scenario("greeting.py", silent, "hangup",
                         ("play    prompts/goodbye.wav", "exit    hangup")),
    "greeting-caller-hangs-up": Scenario("greeting.py", hang_up_during_first_play,
                                         "caller-hangup", ("exit    caller-hangup",)),
    "pin-right": Scenario("pin.py", press("1234"), "hangup",
                          ("  -> '1234' Completed", "play    prompts/pin-accepted.wav")),
    "pin-right-masked": Scenario("pin.py", press("1234"), "hangup",
                                 ("play    prompts/pin-accepted.wav",),
                                 {"record_numbers": False}),
    "pin-wrong-then-right": Scenario("pin.py", press("1111", "1234"), "hangup",
                                     ("play    prompts/wrong-pin.wav",
                                      "play    prompts/pin-accepted.wav")),
    "pin-timeouts": Scenario("pin.py", silent, "hangup",
                             ("  -> '' Timeout", "play    prompts/too-many-tries.wav")),
    "pin-hang-up-mid-pin": Scenario("pin.py", hang_up_after("12"), "caller-hangup",
                                    ("exit    caller-hangup",)),
    "menu-sales": Scenario("support_menu.py", press("1"), "forwarded",
                           ("forward extension 101",)),
    "menu-support": Scenario("support_menu.py", press("2"), "forwarded",
                             ("forward extension 102",)),
    "menu-operator": Scenario("support_menu.py", press("0"), "forwarded",
                              ("forward extension 0",)),
    "menu-wrong-key-then-forward": Scenario("support_menu.py", press("5", "2"), "forwarded",
                                            ("play    prompts/invalid-choice.wav",
                                             "forward extension 102")),
    "menu-no-input": Scenario("support_menu.py", silent, "hangup",
                              ("play    prompts/no-input.wav", "play    prompts/goodbye.wav")),
    "say-balance": Scenario("say_hello.py", press("1"), "hangup",
                            ('play    say "The balance of account" say "4 0 7 2 1"',
                             'play    say "Goodbye."')),
    "say-operator": Scenario("say_hello.py", press("0"), "forwarded",
                             ('play    say "Please hold while I transfer you."',
                              "forward extension 0")),
}


def record(name: str, scenario: Scenario, attempts: int = 3) -> str:
    script, _ = load_script_file(os.path.join(ROOT, "examples", scenario.example))
    problem = ""
    for _attempt in range(attempts):
        folder = tempfile.mkdtemp(prefix="ivrscript-recording-")
        try:
            with Simulator(speed=50) as sim, \
                    App(script, platform=sim, record=folder, **scenario.app_options) as app:
                phone = sim.call(app, caller=CALLER)
                scenario.caller(phone)
                phone.wait_until_ended(timeout=30)
                call = next(c for c in app.calls if c.session_id == phone.session_id)
                call.wait_until_ended(timeout=30)
                lines = call.transcript.lines()
            # The app has stopped: every finished call's cassette is written.
            path = os.path.join(folder, cassette_name(call))
            problem = _check(scenario, call.end_reason, lines)
            if problem:
                continue
            target = os.path.join(HERE, f"{name}.yaml")
            shutil.move(path, target)
            replay(target, script)  # it must round-trip, to the same transcript
            assert load_recording(target).meta["end_reason"] == scenario.end_reason
            return target
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(f"{name}: the call did not go as the scenario says ({problem}) in "
                     f"{attempts} attempts")


def _check(scenario: Scenario, end_reason: str | None, lines: list[str]) -> str:
    if end_reason != scenario.end_reason:
        return f"ended {end_reason}, expected {scenario.end_reason}"
    missing = [line for line in scenario.expect if not any(seen.startswith(line) for seen in lines)]
    return f"transcript lacks {missing}" if missing else ""


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    for name in names or list(SCENARIOS):
        print(f"recorded {os.path.relpath(record(name, SCENARIOS[name]), ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
