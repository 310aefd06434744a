"""``SQLiteStore``: calls' logs in one SQLite file (standard library ``sqlite3`` only).

Durable across restarts and shared by several processes on one host: the file is in WAL mode
(readers never wait for the writer), every write is one ``BEGIN IMMEDIATE`` transaction (the
write lock is taken up front, so two processes never deadlock upgrading a read), and a busy
file is waited on up to ``busy_timeout`` seconds before :class:`StoreUnavailable`.

URLs follow SQLAlchemy's convention: ``sqlite:///relative/calls.db`` is relative to the current
directory, ``sqlite:////var/lib/app/calls.db`` (four slashes) is absolute. Query parameters set
options: ``sqlite:////tmp/calls.db?busy_timeout=2&poll_interval=0.1``.

Durability: with the default ``synchronous="NORMAL"`` a committed entry survives the process
being killed (``kill -9``); only a power loss or OS crash may lose the last commits. Pass
``synchronous="FULL"`` to fsync every commit.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigError
from ..text import shown
from .base import CallInfo, DueTimer, LogEntry, StoreError, StoreUnavailable

__all__ = ["SQLiteStore"]

log = logging.getLogger("ivrscript.stores")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    session_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    end_reason TEXT,
    entries INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS calls_finished ON calls (finished);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    key TEXT,
    UNIQUE (session_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS log_key ON log (session_id, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS timers (
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,
    due REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, key)
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_NEW_CALL = "INSERT INTO calls (session_id, started) VALUES (?, ?) ON CONFLICT DO NOTHING"
_COUNT_ENTRY = ("INSERT INTO calls (session_id, started, entries) VALUES (?, ?, 1) "
                "ON CONFLICT (session_id) DO UPDATE SET entries = entries + 1 RETURNING entries")


def _json(data: Any) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise StoreError(f"log data must be JSON: {error}") from None


class SQLiteStore:
    """A :class:`~ivrscript.stores.CallStore` in one SQLite file; safe from any thread and
    shared by several processes on one host.

    ``busy_timeout``: seconds a write waits for another process's write before
    :class:`StoreUnavailable`. ``poll_interval``: how often (seconds) the one subscriber thread
    looks for other processes' appends; appends made through this object notify subscribers
    at once, in the appending thread. ``pool_size``: idle connections kept for reuse.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0,
                 poll_interval: float = 0.05, synchronous: str = "NORMAL",
                 pool_size: int = 8) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, "
                              f"got {synchronous!r}")
        self.busy_timeout = float(busy_timeout)
        self.poll_interval = float(poll_interval)
        self._synchronous = synchronous.upper()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []
        self._pool_size = max(int(pool_size), 1)
        self._lock = threading.Lock()
        self._closed = False
        self._subscribers: list[Callable[[str], Any]] = []
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._mine: set[int] = set()  # log ids appended through this object, not yet polled
        self.url = "sqlite:///" + self.path
        self._open()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
        convention); query parameters ``busy_timeout``, ``poll_interval``, ``synchronous``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"a SQLite store URL is 'sqlite:///relative/calls.db' or "
                              f"'sqlite:////absolute/calls.db', got {url!r}")
        path = unquote(parts.path[1:])
        if path in ("", ":memory:"):
            raise ConfigError(f"a SQLite store needs a file path, got {url!r} "
                              "(use 'memory:' for a store in memory)")
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("busy_timeout", "poll_interval"):
                try:
                    options.setdefault(name, float(value))
                except ValueError:
                    raise ConfigError(f"{name} in {url!r} must be a number of seconds, "
                                      f"got {value!r}") from None
            elif name == "synchronous":
                options.setdefault(name, value)
            else:
                raise ConfigError(f"unknown SQLite store option {name!r} in {url!r} "
                                  "(known: busy_timeout, poll_interval, synchronous)")
        return cls(path, **options)

    # -- connections -------------------------------------------------------------------------

    def _open(self) -> None:
        """Create the file and schema now, so a bad place is a ConfigError at start."""
        where = os.path.dirname(self.path)
        try:
            os.makedirs(where, exist_ok=True)
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot use {self.path!r} as the call store ({error}): choose a "
                              "writable file, e.g. --store sqlite:////var/lib/ivr/calls.db"
                              ) from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def _forked(self) -> None:
        """In a child process (a forking server): never touch the parent's connections (SQLite
        forbids carrying one across fork); keep them unclosed and open new ones."""
        with self._lock:
            if os.getpid() == self._pid:
                return
            while True:
                try:
                    self._inherited.append(self._idle.get_nowait())
                except queue.Empty:
                    break
            self._pid = os.getpid()

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A pooled connection; with ``write``, inside one BEGIN IMMEDIATE transaction."""
        if self._closed:
            raise StoreError(f"the SQLite store {self.path!r} is closed")
        if os.getpid() != self._pid:
            self._forked()
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect()
            except sqlite3.Error as error:
                raise StoreUnavailable(f"cannot open {self.path!r}: {error}") from None
        broken = False
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        except sqlite3.OperationalError as error:
            broken = conn.in_transaction
            if "locked" in str(error) or "busy" in str(error):
                raise StoreUnavailable(f"the SQLite store {self.path!r} is locked by another "
                                       f"process past its busy timeout ({self.busy_timeout:g} s)"
                                       ) from None
            raise StoreUnavailable(f"the SQLite store {self.path!r} failed: {error}") from None
        except sqlite3.Error as error:
            broken = True
            raise StoreError(f"the SQLite store {self.path!r} failed: {error}") from None
        finally:
            if broken or self._closed or self._idle.qsize() >= self._pool_size:
                conn.close()
            else:
                self._idle.put(conn)

    # -- the log -----------------------------------------------------------------------------

    def append(self, session_id: str, kind: str, data: dict[str, Any], *,
               key: str | None = None, at: float | None = None) -> int | None:
        text = _json(data)
        when = time.time() if at is None else at
        row_id: int | None = None
        try:
            with self._conn(write=True) as conn:
                if key is not None and conn.execute(
                        "SELECT 1 FROM log WHERE session_id = ? AND key = ?",
                        (session_id, key)).fetchone():
                    return None
                # One statement makes the call's row or counts the entry (one round trip
                # fewer per append than an insert then an update).
                (seq,) = conn.execute(_COUNT_ENTRY, (session_id, when)).fetchone()
                row_id = conn.execute("INSERT INTO log (session_id, seq, kind, data, at, key) "
                                      "VALUES (?, ?, ?, ?, ?, ?)",
                                      (session_id, seq, kind, text, when, key)).lastrowid
                # Before the commit, so the poller never mistakes it for another process's.
                with self._lock:
                    if self._poller is not None and row_id is not None:
                        self._mine.add(row_id)
        except BaseException:
            if row_id is not None:
                with self._lock:
                    self._mine.discard(row_id)
            raise
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(session_id)
        return int(seq)

    def load(self, session_id: str, after: int = 0) -> list[LogEntry]:
        with self._conn() as conn:
            rows = conn.execute("SELECT seq, kind, data, at FROM log WHERE session_id = ? "
                                "AND seq > ? ORDER BY seq", (session_id, after)).fetchall()
        entries = []
        for seq, kind, text, at in rows:
            try:
                data = json.loads(text)
                if not isinstance(data, dict) or not isinstance(kind, str):
                    raise ValueError("not a JSON object with a kind")
                entries.append(LogEntry(int(seq), kind, data, float(at)))
            except (TypeError, ValueError) as error:
                raise StoreError(f"call {shown(session_id)}: log entry {seq} in {self.path!r} "
                                 f"is corrupt ({error})") from None
        return entries

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, session_id: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self._conn(write=True) as conn:
            conn.execute(_NEW_CALL, (session_id, now))
            cur = conn.execute(
                "UPDATE calls SET lease_owner = ?, lease_expires = ? WHERE session_id = ? AND "
                "finished IS NULL AND "
                "(lease_owner IS NULL OR lease_owner = ? OR lease_expires <= ?)",
                (owner, now + ttl, session_id, owner, now))
            return cur.rowcount == 1

    def release(self, session_id: str, owner: str) -> None:
        with self._conn(write=True) as conn:
            conn.execute("UPDATE calls SET lease_owner = NULL, lease_expires = NULL "
                         "WHERE session_id = ? AND lease_owner = ?", (session_id, owner))

    def holder(self, session_id: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT lease_owner FROM calls WHERE session_id = ? AND "
                               "lease_owner IS NOT NULL AND lease_expires > ?",
                               (session_id, time.time())).fetchone()
        return None if row is None else str(row[0])

    # -- timers ------------------------------------------------------------------------------

    def schedule(self, session_id: str, key: str, due: float,
                 data: dict[str, Any] | None = None) -> None:
        text = _json(data or {})
        with self._conn(write=True) as conn:
            conn.execute(_NEW_CALL, (session_id, time.time()))
            conn.execute("INSERT INTO timers (session_id, key, due, data) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (session_id, key) DO UPDATE SET due = excluded.due, "
                         "data = excluded.data", (session_id, key, due, text))

    def cancel(self, session_id: str, key: str) -> None:
        with self._conn(write=True) as conn:
            conn.execute("DELETE FROM timers WHERE session_id = ? AND key = ?", (session_id, key))

    def claim_due(self, owner: str, now: float | None = None, *, limit: int = 100,
                  hold: float = 5.0) -> list[DueTimer]:
        now = time.time() if now is None else now
        with self._conn(write=True) as conn:
            rows = conn.execute("SELECT session_id, key, due, data FROM timers WHERE due <= ? "
                                "ORDER BY due, session_id, key LIMIT ?",
                                (now, max(int(limit), 0))).fetchall()
            conn.executemany("UPDATE timers SET due = ? WHERE session_id = ? AND key = ?",
                             [(now + hold, sid, key) for sid, key, _, _ in rows])
        found = []
        for sid, key, due, text in rows:
            try:
                data = json.loads(text)
            except ValueError as error:
                raise StoreError(f"call {shown(sid)}: timer {shown(key)} in {self.path!r} "
                                 f"is corrupt ({error})") from None
            found.append(DueTimer(sid, key, float(due), data if isinstance(data, dict) else {}))
        return found

    # -- calls -------------------------------------------------------------------------------

    def finish(self, session_id: str, end_reason: str, at: float | None = None) -> None:
        when = time.time() if at is None else at
        with self._conn(write=True) as conn:
            conn.execute(_NEW_CALL, (session_id, time.time()))
            conn.execute("UPDATE calls SET end_reason = ?, finished = ? "
                         "WHERE session_id = ? AND finished IS NULL",
                         (end_reason, when, session_id))
            conn.execute("UPDATE calls SET lease_owner = NULL, lease_expires = NULL "
                         "WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM timers WHERE session_id = ?", (session_id,))

    def calls(self, *, active: bool | None = None) -> list[CallInfo]:
        where = {None: "", True: " WHERE finished IS NULL", False: " WHERE finished IS NOT NULL"}
        with self._conn() as conn:
            rows = conn.execute("SELECT session_id, started, finished, end_reason, entries "
                                f"FROM calls{where[active]} ORDER BY started, session_id"
                                ).fetchall()
        return [CallInfo(sid, float(started), None if finished is None else float(finished),
                         reason, int(entries))
                for sid, started, finished, reason, entries in rows]

    def expire(self, retention: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cutoff = now - retention
        with self._conn(write=True) as conn:
            gone = "SELECT session_id FROM calls WHERE finished IS NOT NULL AND finished < ?"
            conn.execute(f"DELETE FROM log WHERE session_id IN ({gone})", (cutoff,))
            conn.execute(f"DELETE FROM timers WHERE session_id IN ({gone})", (cutoff,))
            cur = conn.execute("DELETE FROM calls WHERE finished IS NOT NULL AND finished < ?",
                               (cutoff,))
            return cur.rowcount

    # -- store-wide --------------------------------------------------------------------------

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._conn(write=True) as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                         (key, value))
            (stored,) = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(stored)

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the SQLite store {self.path!r} is closed")
            self._subscribers.append(fn)
            if self._poller is None:
                self._stop.clear()
                last = self._last_id()
                self._poller = threading.Thread(target=self._poll, args=(last,), daemon=True,
                                                name="ivrscript-sqlite-poll")
                self._poller.start()

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def _last_id(self) -> int:
        with self._conn() as conn:
            (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()
        return int(last)

    def _poll(self, last: int) -> None:
        """One thread per store: tell subscribers of other processes' appends (a cheap
        ``MAX(id)`` read each interval; the changed calls only when it moved)."""
        while not self._stop.wait(self.poll_interval):
            try:
                with self._conn() as conn:
                    (top,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()
                    if top <= last:
                        continue
                    rows = conn.execute("SELECT id, session_id FROM log WHERE id > ? AND "
                                        "id <= ? ORDER BY id", (last, top)).fetchall()
            except StoreError:
                continue  # locked or closing: try again next interval
            last = top
            with self._lock:
                subscribers = list(self._subscribers)
                changed = [sid for row_id, sid in rows if row_id not in self._mine]
                self._mine = {i for i in self._mine if i > top}
            for sid in dict.fromkeys(changed):
                for fn in subscribers:
                    try:
                        fn(sid)
                    except Exception:  # a subscriber's bug must not stop the poller
                        log.exception("store subscriber failed for call %s", shown(sid))

    def ping(self) -> bool:
        try:
            with self._conn() as conn:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
            return True
        except StoreError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._subscribers.clear()
            poller, self._poller = self._poller, None
        self._stop.set()
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    def orphans(self, grace: float, now: float | None = None, *,
                limit: int = 100) -> list[str]:
        now = time.time() if now is None else now
        with self._conn() as conn:  # the calls_finished index: only unfinished calls are read
            rows = conn.execute("SELECT session_id FROM calls WHERE finished IS NULL AND "
                                "started <= ? AND (lease_owner IS NULL OR lease_expires <= ?) "
                                "ORDER BY started, session_id LIMIT ?",
                                (now - grace, now, max(int(limit), 1))).fetchall()
        return [str(sid) for (sid,) in rows]
