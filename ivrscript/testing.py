"""Testing helpers and the pytest plugin (registered through the ``pytest11`` entry point).

Fixtures (``pytest --fixtures`` shows each one's full description):

``ivr_simulator``
    a started :class:`~ivrscript.Simulator` (``speed=20``), stopped after the test.
``ivr_call``
    ``phone, call = ivr_call(main, caller=..., called=..., **app_options)`` starts an App
    running ``main`` on the test's simulator, rings it and returns the simulated
    :class:`~ivrscript.Phone` and the app's :class:`~ivrscript.Call`.
``ivr_replay``
    ``transcript = ivr_replay("recordings/pin-right.yaml", main)`` replays a recorded call
    against ``main`` (no network, no sleeping); a drift raises
    :class:`~ivrscript.ReplayMismatch` with the difference.

:func:`replay` (also without pytest, e.g. for the CLI's ``--replay``: both compare the same
things) and :func:`cassettes` (for ``pytest.mark.parametrize`` over a folder) are plain
functions.

The plugin imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    import pytest
except ImportError:  # replay() works without pytest (the CLI's --replay)
    pytest = None  # type: ignore[assignment]

__all__ = ["ivr_simulator", "ivr_call", "ivr_replay", "SimulatedCalls", "replay", "cassettes",
           "check_transcript"]


def _recorder() -> Any:
    try:
        from . import recorder
    except ImportError as error:
        from .errors import ConfigError

        raise ConfigError(f"replay needs an optional package ({error.name or error}): "
                          "pip install 'ivrscript[record]'") from None
    return recorder


def replay(path: str | os.PathLike[str], script: Callable[..., Any], *,
           on_error: Any = None, digits: Iterable[str] | None = None,
           same_transcript: bool = True) -> Any:
    """Re-run ``script`` against the call recorded in the cassette at ``path``; returns the
    replayed :class:`~ivrscript.Transcript`.

    Callbacks come from the recording and REST answers from the recorded ones: no sockets, no
    sleeping. Each ``ivr.effect`` the script yields gets its recorded result (or raises its
    recorded exception) and its function is never called. A script that issues a different
    request or effect, one the recording lacks, or stops early raises :class:`~ivrscript.ReplayMismatch` naming the step and the script line, with
    the recorded and the replayed command (as transcript lines and as the script's
    arguments), the REST detail and the transcript up to there. Then the replayed transcript
    must be the recorded one (``same_transcript=False`` skips that).

    ``on_error`` is the App's ``on_error`` command. ``digits``: the keys to give the script
    for each collect recorded with ``sensitive=True`` (the cassette holds ``****``), in order;
    without it the script gets a stand-in fitting the collect's first pattern (``x`` -> ``0``).
    """
    __tracebackhide__ = True
    return _recorder().replay(path, script, on_error=on_error, digits=digits,
                              same_transcript=same_transcript)


def check_transcript(path: str | os.PathLike[str], transcript: Any) -> None:
    """Raise :class:`~ivrscript.ReplayMismatch` if ``transcript`` differs from the one
    recorded in the cassette at ``path`` (shown as a diff). :func:`replay` does this too."""
    __tracebackhide__ = True
    recorder = _recorder()
    recorder.compare_transcript(recorder.load_recording(path), transcript)


def cassettes(folder: str | os.PathLike[str], *, allow_empty: bool = False) -> list[str]:
    """The cassettes (``*.yaml``, ``*.yml``) under ``folder``, sorted: ``parametrize`` over
    them. A missing folder is a :class:`~ivrscript.ConfigError`, and so is one without
    cassettes unless ``allow_empty=True`` (a typo must not give a green run of zero replays).
    """
    from .errors import ConfigError

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"cassettes({folder!r}): no such folder (looked in "
                          f"{os.path.abspath(folder)}); build the path from the test file, "
                          "e.g. Path(__file__).parent / 'recordings'")
    found = []
    for root, _dirs, files in os.walk(folder):
        found += [os.path.join(root, name) for name in files if name.endswith((".yaml", ".yml"))]
    if not found and not allow_empty:
        raise ConfigError(f"cassettes({folder!r}): the folder holds no *.yaml cassette "
                          "(pass allow_empty=True if that is expected)")
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
    """A started :class:`ivrscript.Simulator` (``speed=20``: its clock runs 20 times faster
    than real time), stopped after the test. Use it to place calls with ``sim.call(app)``
    or to give an ``App(platform=ivr_simulator)``."""
    from .simulator import Simulator

    with Simulator(speed=20) as sim:
        yield sim


def _ivr_call(ivr_simulator: Any) -> Iterator[SimulatedCalls]:
    """Ring a script on the test's simulator: ``phone, call = ivr_call(main)``;
    ``ivr_call(script, *, caller="+15550100", called=None, **app_options)`` starts an
    ``App(script, platform=ivr_simulator, **app_options)`` (``record=DIR``,
    ``record_numbers=False``, ``on_error=...``, ``workers=``, ... : any App keyword), rings
    it from ``caller`` (to ``called``, default the app's extension) and returns the
    simulated :class:`ivrscript.Phone` (``press``, ``hang_up``, ``heard``,
    ``wait_until_ended``) and the app's :class:`ivrscript.Call` (``transcript``,
    ``wait_until_ended``). Calls of the same script without app options share one App.
    Every App it started is stopped after the test."""
    calls = SimulatedCalls(ivr_simulator)
    try:
        yield calls
    finally:
        calls.close()


def _ivr_replay() -> Callable[..., Any]:
    """Replay a recorded call: ``transcript = ivr_replay(path, main)``;
    ``ivr_replay(path, script, *, on_error=None, digits=None, same_transcript=True)`` runs
    ``script`` against the cassette at ``path`` (no network, no sleeping) and returns the
    replayed :class:`ivrscript.Transcript`. A request that differs from the recording, or a
    transcript that differs from the recorded one, raises :class:`ivrscript.ReplayMismatch`
    naming the step and the script's line. ``digits``: the keys for each collect recorded
    with ``sensitive=True``, in order (default: a stand-in fitting its pattern). The same
    check as ``python -m ivrscript SCRIPT --replay CASSETTE``."""

    def run(path: str | os.PathLike[str], script: Callable[..., Any], *,
            on_error: Any = None, digits: Iterable[str] | None = None,
            same_transcript: bool = True) -> Any:
        __tracebackhide__ = True
        return replay(path, script, on_error=on_error, digits=digits,
                      same_transcript=same_transcript)

    return run


if pytest is not None:
    ivr_simulator = pytest.fixture(_ivr_simulator, name="ivr_simulator")
    ivr_call = pytest.fixture(_ivr_call, name="ivr_call")
    ivr_replay = pytest.fixture(_ivr_replay, name="ivr_replay")
