"""Testing helpers and the pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

``ivr_simulator``
    a started :class:`~ivrscript.Simulator` (``speed=20``), stopped after the test.
``ivr_call``
    ``phone, call = ivr_call(main)`` starts an App running ``main`` on the test's simulator,
    rings it and returns the simulated :class:`~ivrscript.Phone` and the app's
    :class:`~ivrscript.Call`. Every App is stopped after the test.
``ivr_replay``
    ``transcript = ivr_replay("recordings/pin-right.yaml", main)`` replays a recorded call
    against ``main`` (no network, no sleeping) and also checks that the replayed transcript is
    the one recorded; a drift raises :class:`~ivrscript.ReplayMismatch` with the difference.

:func:`replay` (also without pytest, e.g. for the CLI's ``--replay``) and :func:`cassettes`
(for ``pytest.mark.parametrize`` over a folder) are plain functions.

The plugin imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from typing import Any

try:
    import pytest
except ImportError:  # replay() works without pytest (the CLI's --replay)
    pytest = None  # type: ignore[assignment]

__all__ = ["ivr_simulator", "ivr_call", "ivr_replay", "SimulatedCalls", "replay", "cassettes",
           "check_transcript"]


def replay(path: str | os.PathLike[str], script: Callable[..., Any], *,
           on_error: Any = None) -> Any:
    """Re-run ``script`` against the call recorded in the cassette at ``path``; returns the
    replayed :class:`~ivrscript.Transcript`.

    Callbacks come from the recording and REST answers from vcrpy's playback: no sockets, no
    sleeping. A script that issues a different request, one the recording lacks, or stops
    early raises :class:`~ivrscript.ReplayMismatch` naming the step, with the recorded and
    the issued request side by side and the transcript up to there.
    """
    try:
        from .recorder import replay as _replay
    except ImportError as error:
        from .errors import ConfigError

        raise ConfigError(f"replay needs an optional package ({error.name or error}): "
                          "pip install 'ivrscript[record]'") from None
    return _replay(path, script, on_error=on_error)


def check_transcript(path: str | os.PathLike[str], transcript: Any) -> None:
    """Raise :class:`~ivrscript.ReplayMismatch` if ``transcript`` differs from the one
    recorded in the cassette at ``path`` (shown as a diff)."""
    from .errors import ReplayMismatch
    from .recorder import load_recording, mask_numbers_in

    recording = load_recording(path)
    recorded = recording.transcript
    replayed = list(transcript.lines())
    if recording.meta.get("numbers_masked"):
        replayed = [mask_numbers_in(line) for line in replayed]
    if recorded and recorded != replayed:
        diff = "\n".join(difflib.unified_diff(recorded, replayed, "recorded", "replayed",
                                               lineterm=""))
        raise ReplayMismatch(f"replay of {os.fspath(path)}: the transcript differs from the "
                             f"recorded one:\n{diff}")


def cassettes(folder: str | os.PathLike[str]) -> list[str]:
    """The cassettes (``*.yaml``) under ``folder``, sorted: ``parametrize`` over them."""
    found = []
    for root, _dirs, files in os.walk(os.fspath(folder)):
        found += [os.path.join(root, name) for name in files if name.endswith((".yaml", ".yml"))]
    return sorted(found)


class SimulatedCalls:
    """Starts Apps on one simulator and rings them; ``close()`` stops every App it started."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator
        self.apps: list[Any] = []

    def __call__(self, script: Callable[..., Any], *, caller: str = "+15550100",
                 called: str | None = None, **app_kwargs: Any) -> tuple[Any, Any]:
        from .app import App

        app = next((a for a in self.apps if a.script is script and not app_kwargs), None)
        if app is None:
            app = App(script, platform=self.simulator, **app_kwargs).start()
            self.apps.append(app)
        phone = self.simulator.call(app, caller=caller, called=called)
        call = next(c for c in app.calls if c.session_id == phone.session_id)
        return phone, call

    def close(self) -> None:
        for app in self.apps:
            app.stop()
        self.apps.clear()


def _ivr_simulator() -> Iterator[Any]:
    """A started Simulator (speed=20), stopped after the test."""
    from .simulator import Simulator

    with Simulator(speed=20) as sim:
        yield sim


def _ivr_call(ivr_simulator: Any) -> Iterator[SimulatedCalls]:
    """``phone, call = ivr_call(main)``: ring an App running ``main`` on the simulator."""
    calls = SimulatedCalls(ivr_simulator)
    try:
        yield calls
    finally:
        calls.close()


def _ivr_replay() -> Callable[..., Any]:
    """``transcript = ivr_replay(path, main)``: replay a recorded call and check that its
    transcript is the recorded one."""

    def run(path: str | os.PathLike[str], script: Callable[..., Any], *,
            on_error: Any = None, same_transcript: bool = True) -> Any:
        transcript = replay(path, script, on_error=on_error)
        if same_transcript:
            check_transcript(path, transcript)
        return transcript

    return run


if pytest is not None:
    ivr_simulator = pytest.fixture(_ivr_simulator, name="ivr_simulator")
    ivr_call = pytest.fixture(_ivr_call, name="ivr_call")
    ivr_replay = pytest.fixture(_ivr_replay, name="ivr_replay")
