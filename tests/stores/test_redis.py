"""RedisStore's own rules: URLs and prefixes, retention TTLs, corrupt entries, and a Redis
server that goes away and comes back (our own ``redis-server`` on a free port)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ivrscript import ConfigError
from ivrscript.stores import StoreError, StoreUnavailable, open_store

from ..redis_helpers import (
    RedisServer,
    free_port,
    own_redis_server,
    redis_prefix,
    redis_url,
    wait_for,
)

pytest.importorskip("redis")

from ivrscript.stores.redis import RedisStore  # noqa: E402


@pytest.fixture
def url() -> Iterator[str]:
    """A Redis URL with a fresh prefix; its keys are deleted after the test."""
    base = redis_url()
    made = f"{base}{'&' if '?' in base else '?'}prefix={redis_prefix()}"
    yield made
    janitor = RedisStore.from_url(made)
    janitor.clear()
    janitor.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with own_redis_server() as server:
        yield server


def test_url_options_and_prefixes(url: str) -> None:
    """The URL's query sets the prefix and timeouts; stores with different prefixes on one
    Redis never see each other's calls."""
    a = open_store(url)
    b = open_store(f"{redis_url()}{'&' if '?' in redis_url() else '?'}prefix=other-"
                   f"{redis_prefix()}&socket_timeout=2")
    try:
        assert isinstance(a, RedisStore) and isinstance(b, RedisStore)
        assert a.prefix.startswith("ivrtest:") and b.prefix.startswith("other-")
        a.append("c1", "enter", {})
        a.schedule("c1", "t", 1000.0)
        assert b.load("c1") == [] and b.calls() == [] and b.claim_due("p", now=2000) == []
        assert b.setdefault_meta("script", "b") == "b"
        assert a.setdefault_meta("script", "a") == "a"
    finally:
        a.close()
        b.clear()
        b.close()


@pytest.mark.parametrize("bad", ["redis://localhost:6379/0?socket_timeout=soon",
                                 "redis://localhost:6379/notadb"])
def test_bad_urls_are_config_errors(bad: str) -> None:
    """A malformed option or database is a ConfigError with the URL."""
    with pytest.raises(ConfigError, match="Redis"):
        open_store(bad)


def test_the_password_never_shows(url: str) -> None:
    """A password in the URL is masked in the store's repr and its error messages."""
    port = free_port()  # nobody listens there
    store = RedisStore.from_url(f"redis://user:s3cret@127.0.0.1:{port}/0")
    try:
        assert "s3cret" not in repr(store)
        with pytest.raises(StoreUnavailable) as caught:
            store.load("c1")
        assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    finally:
        store.close()


def test_an_unreachable_redis_is_unavailable_not_a_crash() -> None:
    """No server at the address: every method raises StoreUnavailable; ping() is False."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert store.ping() is False
        for call in (lambda: store.append("c1", "enter", {}), lambda: store.load("c1"),
                     lambda: store.acquire("c1", "me", 5), lambda: store.claim_due("me"),
                     lambda: store.calls()):
            with pytest.raises(StoreUnavailable, match="unreachable"):
                call()
    finally:
        store.close()


def test_a_corrupt_entry_is_a_store_error_naming_the_call(url: str) -> None:
    """A damaged log entry raises StoreError naming the call and the entry."""
    store = RedisStore.from_url(url)
    try:
        store.append("bad-call", "enter", {})
        store._client.rpush(store._key("log", "bad-call"), "[\"trunc")
        with pytest.raises(StoreError, match=r"call 'bad-call': log entry 2 .* corrupt"):
            store.load("bad-call")
    finally:
        store.close()


def test_retention_gives_finished_calls_a_ttl(url: str) -> None:
    """With ``retention``, a finished call's keys expire in Redis by themselves; calls() stops
    listing it, and expire() drops what is left of it."""
    store = RedisStore.from_url(url, retention=0.2)
    try:
        store.append("c1", "enter", {})
        store.append("c2", "enter", {})
        store.finish("c1", "hangup")
        wait_for(lambda: store.load("c1") == [], "the finished call's log to expire")
        assert [i.session_id for i in store.calls()] == ["c2"]
        assert store.expire(0.1) == 1
        assert store._client.zcard(store._key("finished")) == 0
    finally:
        store.close()


def test_an_active_call_has_no_ttl(url: str) -> None:
    """Only finished calls expire: a live call's keys have no TTL."""
    store = RedisStore.from_url(url, retention=60)
    try:
        store.append("c1", "enter", {}, key="k")
        assert store._client.ttl(store._key("log", "c1")) == -1
        assert store._client.ttl(store._key("keys", "c1")) == -1
    finally:
        store.close()


def test_redis_restarting_mid_call_the_store_recovers(own_redis: RedisServer) -> None:
    """Redis stops: calls raise StoreUnavailable and ping() is False; Redis starts again:
    the same store object works again and its subscriber hears new appends."""
    store = RedisStore.from_url(own_redis.url + "?prefix=restart:")
    heard: list[str] = []
    lock = threading.Lock()

    def hear(session_id: str) -> None:
        with lock:
            heard.append(session_id)

    try:
        store.subscribe(hear)
        assert store.append("c1", "enter", {}) == 1
        wait_for(lambda: "c1" in heard, "the subscriber to hear of c1")
        own_redis.stop()
        with pytest.raises(StoreUnavailable):
            store.append("c1", "callback", {})
        assert store.ping() is False
        own_redis.start()
        wait_for(store.ping, "the store to reach the restarted Redis")
        # The restarted server kept nothing (no persistence): the call starts a new log.
        assert store.append("c2", "enter", {}) == 1
        assert store.acquire("c2", "me", 5)
        wait_for(lambda: "c2" in heard, "the subscriber to hear of c2 after the restart")
    finally:
        store.close()


def test_a_slow_redis_times_out_within_the_socket_timeout(own_redis: RedisServer) -> None:
    """A Redis that stops answering (SIGSTOP) makes a call fail with StoreUnavailable after
    the socket timeout instead of hanging the caller."""
    store = RedisStore.from_url(own_redis.url + "?socket_timeout=0.3")
    assert own_redis.process is not None
    try:
        assert store.ping()
        own_redis.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.load("c1")
        assert time.monotonic() - started < 20  # a guard against hanging, not a timing
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
        store.close()


def test_wake_ups_missed_while_the_subscription_was_down_still_come(
        own_redis: RedisServer) -> None:
    """The pub/sub connection is cut (CLIENT KILL) and another store appends before it is
    back: on resubscribing, the subscriber reads what it missed from the events stream."""
    listener = RedisStore.from_url(own_redis.url + "?prefix=gap:")
    writer = RedisStore.from_url(own_redis.url + "?prefix=gap:")
    heard: list[str] = []
    try:
        listener.subscribe(heard.append)
        writer.append("before", "callback", {})
        wait_for(lambda: "before" in heard, "the subscriber to hear of the first append")
        assert writer._client.client_kill_filter(_type="pubsub") >= 1
        writer.append("missed", "callback", {})
        wait_for(lambda: "missed" in heard, "the missed wake-up after resubscribing")
        assert heard.count("missed") == 1
        writer.append("after", "callback", {})
        wait_for(lambda: "after" in heard, "wake-ups after resubscribing")
    finally:
        listener.close()
        writer.close()


def test_a_quiet_write_wakes_other_processes_only_when_another_holds_the_call(url: str) -> None:
    """write(quiet_for=owner): while that owner holds the call's lease (the appending process
    drives the call itself) other store objects hear nothing; when the lease is another's or
    nobody's, they hear of it as of any append."""
    from ivrscript.stores.base import write

    mine, other = RedisStore.from_url(url), RedisStore.from_url(url)
    heard: list[str] = []
    try:
        other.subscribe(heard.append)
        assert mine.acquire("held", "me", 30)
        assert other.acquire("theirs", "them", 30)
        assert write(mine, "held", [("callback", {"n": 1}, None, None)], quiet_for="me") == [1]
        assert write(mine, "theirs", [("callback", {}, None, None)], quiet_for="me") == [1]
        assert write(mine, "free", [("callback", {}, None, None)], quiet_for="me") == [1]
        wait_for(lambda: "theirs" in heard and "free" in heard, "the wake-ups of the others")
        # the stream and pub/sub are ordered: "held" would have come before "theirs"
        assert "held" not in heard, heard
        assert [e.data for e in other.load("held")] == [{"n": 1}]  # stored all the same
    finally:
        mine.close()
        other.close()
