"""Testing helpers and the pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

``ivr_simulator``
    a started :class:`~ivrscript.Simulator` (``speed=20``), stopped after the test.
``ivr_call``
    ``phone, call = ivr_call(main)`` starts an App running ``main`` on the test's simulator,
    rings it and returns the simulated :class:`~ivrscript.Phone` and the app's
    :class:`~ivrscript.Call`. Every App is stopped after the test.

The plugin imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["ivr_simulator", "ivr_call", "SimulatedCalls"]


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


@pytest.fixture
def ivr_simulator() -> Iterator[Any]:
    """A started Simulator (speed=20), stopped after the test."""
    from .simulator import Simulator

    with Simulator(speed=20) as sim:
        yield sim


@pytest.fixture
def ivr_call(ivr_simulator: Any) -> Iterator[SimulatedCalls]:
    """``phone, call = ivr_call(main)``: ring an App running ``main`` on the simulator."""
    calls = SimulatedCalls(ivr_simulator)
    try:
        yield calls
    finally:
        calls.close()
