"""Redis for the tests: the test server's URL (skip, or fail under CI, without one), fresh key
prefixes, and a redis-server of a test's own that it can stop and start again."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def redis_url() -> str:
    """The test Redis's URL, or skip (fail under CI) when no Redis answers there."""
    url = os.environ.get("IVRSCRIPT_TEST_REDIS") or "redis://127.0.0.1:6379/0"
    try:
        from ivrscript.stores.redis import RedisStore

        probe = RedisStore.from_url(url, prefix=f"ivrtest-probe-{uuid.uuid4().hex}:")
        try:
            reachable = probe.ping()
        finally:
            probe.close()
    except ImportError as error:
        reachable, why = False, f"the redis client is not installed ({error})"
    else:
        why = f"no Redis answers at {url} (set IVRSCRIPT_TEST_REDIS)"
    if not reachable:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs a Redis server: {why}")
        pytest.skip(why)
    return url


def redis_prefix() -> str:
    return f"ivrtest:{uuid.uuid4().hex[:12]}:"


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


@contextmanager
def redis_store_url() -> Iterator[str]:
    """The test Redis with a fresh prefix; every key under it is deleted afterwards."""
    from ivrscript.stores.redis import RedisStore

    url = with_prefix(redis_url(), redis_prefix())
    try:
        yield url
    finally:
        janitor = RedisStore.from_url(url)
        try:
            janitor.clear()
        finally:
            janitor.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class RedisServer:
    """Our own redis-server (no persistence unless ``options`` say) that a test can stop and
    start again on the same port."""

    def __init__(self, binary: str, port: int, *options: str) -> None:
        self.binary, self.port, self.options = binary, port, options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from ivrscript.stores.redis import RedisStore

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self.options], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        probe = RedisStore.from_url(self.url)
        try:
            wait_for(lambda: probe.ping() or self.process.poll() is not None,  # type: ignore
                     "our redis-server to answer")
        finally:
            probe.close()
        assert self.process.poll() is None, f"redis-server on port {self.port} did not start"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def own_redis_server(*options: str) -> Iterator[RedisServer]:
    """A started redis-server of the test's own on a free port (skip, or fail under CI,
    without redis-server on PATH); stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI needs redis-server on PATH for the Redis restart tests")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(binary, free_port(), *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
