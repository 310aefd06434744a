"""The store backends under test: one fixture gives each conformance test every backend.

``backend`` is parametrized over memory, sqlite and redis. ``backend.make()`` opens another
store object on the same storage (the same file, the same Redis and key prefix; for memory the
same object, since nothing else shares its memory), so tests can play several processes.

Redis is found at ``IVRSCRIPT_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``). When CI is
set (``CI=true``) a missing Redis fails the tests; elsewhere they skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ivrscript.stores import CallStore, MemoryStore, SQLiteStore

from ..redis_helpers import redis_prefix, redis_url, with_prefix
from ..redis_helpers import wait_for as wait_for  # the store tests' bounded wait

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
ROOT = os.path.dirname(os.path.dirname(HERE))


class Backend:
    """One backend's storage: ``make()`` opens store objects on it, all closed at the end."""

    def __init__(self, name: str, url: str | None, opener: Callable[[], CallStore]) -> None:
        self.name = name
        self.url = url  # for another process; None for memory (nothing to share)
        self._opener = opener
        self.stores: list[CallStore] = []

    @property
    def shared(self) -> bool:
        """True if separate store objects (and processes) share the storage."""
        return self.url is not None

    def make(self) -> CallStore:
        store = self._opener()
        self.stores.append(store)
        return store

    def close(self) -> None:
        for store in self.stores:
            store.close()


@contextmanager
def open_backend(name: str, tmp_path: Any) -> Iterator[Backend]:
    """A fresh, empty storage of backend ``name``; everything opened on it is closed after."""
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if name == "memory":
        single = MemoryStore()
        made = Backend(name, None, lambda: single)
    elif name == "sqlite":
        path = str(tmp_path / "calls.db")
        made = Backend(name, "sqlite:///" + path, lambda: SQLiteStore(path, poll_interval=0.02))
    else:
        base = redis_url()
        from ivrscript.stores.redis import RedisStore

        prefix = redis_prefix()
        url = with_prefix(base, prefix)
        made = Backend(name, url, lambda: RedisStore.from_url(url))

        def cleanup() -> None:
            janitor = RedisStore.from_url(url)
            try:
                janitor.clear()
            finally:
                janitor.close()

    try:
        yield made
    finally:
        made.close()
        cleanup()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """Every backend, one at a time."""
    with open_backend(request.param, tmp_path) as made:
        yield made


@pytest.fixture(params=["sqlite", "redis"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """The backends several processes share."""
    with open_backend(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def store(backend: Backend) -> CallStore:
    return backend.make()


def run_peer(url: str, *args: str, timeout: float = 60.0) -> list[str]:
    """Run ``peer.py URL ARGS...`` in another process; its stdout lines."""
    done = subprocess.run([sys.executable, PEER, url, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"peer {args} failed:\n{done.stderr}"
    return done.stdout.splitlines()


def start_peer(url: str, *args: str) -> subprocess.Popen[str]:
    """Start ``peer.py URL ARGS...`` in another process (the caller waits for and stops it)."""
    return subprocess.Popen([sys.executable, PEER, url, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
