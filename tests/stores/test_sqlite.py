"""SQLiteStore's own rules: URLs, where the file may live, corrupt rows, a locked file."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import warnings

import pytest

from ivrscript import ConfigError
from ivrscript.stores import SQLiteStore, StoreError, StoreUnavailable, open_store

from .conftest import wait_for


def test_urls_follow_sqlalchemy(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
                                ) -> None:
    """Three slashes: relative to the current directory; four: absolute; options in the
    query."""
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///sub/calls.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db?busy_timeout=1.5&poll_interval=0.2")
    try:
        assert isinstance(relative, SQLiteStore) and isinstance(absolute, SQLiteStore)
        assert relative.path == os.path.join(str(tmp_path), "sub", "calls.db")
        assert os.path.exists(relative.path)
        assert absolute.path == os.path.join(str(tmp_path), "abs.db")
        assert (absolute.busy_timeout, absolute.poll_interval) == (1.5, 0.2)
        again = open_store(absolute.url)
        assert isinstance(again, SQLiteStore) and again.path == absolute.path
        again.close()
    finally:
        relative.close()
        absolute.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:",
                                 "sqlite://host/calls.db", "sqlite:///x.db?colour=red",
                                 "sqlite:///x.db?busy_timeout=soon"])
def test_bad_urls_are_config_errors(url: str, tmp_path: os.PathLike[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL without a file, with a host, or with an unknown option says what to write."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="sqlite|SQLite|seconds"):
        open_store(url)


def test_a_file_in_an_unwritable_place_is_a_config_error(tmp_path: os.PathLike[str]) -> None:
    """Under a regular file, or a file that is not a database: ConfigError at open."""
    blocker = os.path.join(tmp_path, "plain")
    with open(blocker, "w") as f:
        f.write("not a directory")
    with pytest.raises(ConfigError, match="cannot use .*plain.*as the call store"):
        SQLiteStore(os.path.join(blocker, "calls.db"))
    garbage = os.path.join(tmp_path, "garbage.db")
    with open(garbage, "wb") as f:
        f.write(b"this is not a sqlite file at all" * 100)
    with pytest.raises(ConfigError, match="garbage.db"):
        SQLiteStore(garbage)


def test_a_corrupt_row_is_a_store_error_naming_the_call(tmp_path: os.PathLike[str]) -> None:
    """A damaged log row raises StoreError naming the call and entry; other calls load."""
    path = os.path.join(tmp_path, "calls.db")
    store = SQLiteStore(path)
    try:
        store.append("bad-call", "enter", {"ok": True})
        store.append("bad-call", "callback", {"ok": True})
        store.append("good-call", "enter", {})
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE log SET data = '{\"trunc' WHERE session_id = 'bad-call' "
                        "AND seq = 2")
        with pytest.raises(StoreError, match=r"call 'bad-call': log entry 2 .* is corrupt"):
            store.load("bad-call")
        assert [e.seq for e in store.load("bad-call", after=2)] == []
        assert [e.kind for e in store.load("good-call")] == ["enter"]
    finally:
        store.close()


def test_a_file_locked_past_the_busy_timeout_is_unavailable(tmp_path: os.PathLike[str]
                                                             ) -> None:
    """Another connection holding the write lock past busy_timeout: StoreUnavailable (the
    caller retries), and the store works again once the lock is gone."""
    path = os.path.join(tmp_path, "calls.db")
    store = SQLiteStore(path, busy_timeout=0.2)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            store.append("c1", "enter", {})
        assert store.load("c1") == []  # readers are not blocked in WAL mode
        raw.execute("ROLLBACK")
        assert store.append("c1", "enter", {}) == 1
    finally:
        raw.close()
        store.close()


def test_entries_are_compact_json(tmp_path: os.PathLike[str]) -> None:
    """Data is stored as compact JSON text (no spaces, unicode as is)."""
    path = os.path.join(tmp_path, "calls.db")
    store = SQLiteStore(path)
    try:
        store.append("c1", "callback", {"digits": "12", "name": "Zoë", "list": [1, 2]})
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        (text,) = raw.execute("SELECT data FROM log").fetchone()
    assert text == '{"digits":"12","name":"Zoë","list":[1,2]}'
    assert json.loads(text)["name"] == "Zoë"


def test_the_wal_journal_is_used(tmp_path: os.PathLike[str]) -> None:
    """The file is in WAL mode, so readers never wait for a writer."""
    path = os.path.join(tmp_path, "calls.db")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_closed_store_refuses_work_and_stops_its_poller(tmp_path: os.PathLike[str]) -> None:
    """After close() the poller thread is gone and calls raise StoreError, not hang."""
    store = SQLiteStore(os.path.join(tmp_path, "calls.db"), poll_interval=0.01)
    store.subscribe(lambda sid: None)
    assert any(t.name == "ivrscript-sqlite-poll" for t in threading.enumerate())
    store.close()
    wait_for(lambda: not any(t.name == "ivrscript-sqlite-poll" and t.is_alive()
                             for t in threading.enumerate()), "the poller to stop")
    with pytest.raises(StoreError, match="closed"):
        store.append("c1", "enter", {})
    assert store.ping() is False


def test_many_threads_share_a_small_pool(tmp_path: os.PathLike[str]) -> None:
    """Short-lived threads (a threaded HTTP server's) do not each keep a connection open."""
    store = SQLiteStore(os.path.join(tmp_path, "calls.db"), pool_size=2)
    try:
        threads = [threading.Thread(target=store.append, args=(f"c{i}", "enter", {}))
                   for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(store.calls()) == 20
        assert store._idle.qsize() <= 2
    finally:
        store.close()


def test_a_forked_child_opens_its_own_connections(tmp_path: os.PathLike[str]) -> None:
    """A store opened before a fork (a pre-loading server) works in the child: the child never
    reuses the parent's pooled connections, and the parent's keep working."""
    store = SQLiteStore(os.path.join(tmp_path, "calls.db"))
    try:
        store.append("c1", "enter", {})  # leaves a pooled connection behind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: exit at once, whatever happens
            code = 1
            try:
                code = 0 if store.append("c1", "callback", {"from": "child"}) == 2 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert [e.data for e in store.load("c1")] == [{}, {"from": "child"}]
        assert store.append("c1", "note", {}) == 3
    finally:
        store.close()
