"""Shared fixtures: a simulator per test, apps that are always stopped."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


@pytest.fixture
def sim() -> Iterator[Any]:
    from ivrscript import Simulator

    with Simulator(speed=20) as s:
        yield s


@pytest.fixture
def make_app(sim: Any) -> Iterator[Callable[..., Any]]:
    """Build and start Apps on the test's simulator; all stopped at the end."""
    from ivrscript import App

    apps: list[Any] = []

    def make(script: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("platform", sim)
        app = App(script, **kwargs).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def example(name: str) -> Any:
    from ivrscript.loader import load_script_file

    script, _ = load_script_file(os.path.join(EXAMPLES, name))
    return script
