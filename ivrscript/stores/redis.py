"""``RedisStore``: calls' logs in Redis, shared by any number of processes and hosts.

The only module that imports the ``redis`` client (``pip install "ivrscript[redis]"``). Every
write is one round trip: a Lua script runs atomically on the server (append + dedupe, lease
compare-and-set, timer claims), so no two processes ever interleave inside one step.

Keys, all under the store's ``prefix`` (default ``"ivrscript:"``, so several apps can share
one Redis)::

    log:<session>      list of entries, JSON text ``[kind, at, data]`` (seq = position)
    keys:<session>     set of the call's dedupe keys
    call:<session>     hash: started, finished, reason
    lease:<session>    the holder's owner id, with a PX expiry (the lease's ttl)
    ctimers:<session>  set of the call's timer members
    calls / finished   sorted sets of session ids by start / finish time
    lapse              sorted set of unfinished calls by when their lease lapses (0: no
                       lease), so ``orphans`` reads only the calls nobody holds
    timers / tdata     sorted set of timer members by due time / hash of their data
    meta               hash (setdefault_meta)
    events             a capped stream of session ids, one entry per append, and the pub/sub
                       channel of the same name that each append publishes its entry on

Subscribers hear of appends made through this store object at once, in the appending thread;
of other processes' appends by pub/sub on one thread (a push: no request per wake-up). Each
time that thread (re)subscribes it reads the ``events`` stream from the last entry it saw, so
no wake-up is lost while Redis or the connection is briefly away (the stream is the poll
fallback).

Redis down: every method raises :class:`StoreUnavailable` within about ``socket_timeout``
(1 s) and the client reconnects on the next call once Redis is back. A command is retried
once after a broken connection (never after a timeout, when it may have run).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.client
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError
from ..text import shown
from .base import Append, CallInfo, DueTimer, LogEntry, StoreError, StoreUnavailable

__all__ = ["RedisStore"]

log = logging.getLogger("ivrscript.stores")

# KEYS: log, keys, call, calls, events (a stream; its name is also the pub/sub channel), lapse.
# ARGV: entry, has key, key, at, session, stream length, the appending store's id.
_APPEND = """
if ARGV[2] == '1' and redis.call('SADD', KEYS[2], ARGV[3]) == 0 then return false end
if redis.call('HSETNX', KEYS[3], 'started', ARGV[4]) == 1 then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[6], 0, ARGV[5])
end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local id = redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 's', ARGV[5], 'o', ARGV[7])
redis.call('PUBLISH', KEYS[5], id .. ' ' .. ARGV[7] .. ' ' .. ARGV[5])
return n
"""

# KEYS: lease, call, calls, lapse. ARGV: owner, ttl ms, now, session.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], 'finished') == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('HSETNX', KEYS[2], 'started', ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
redis.call('ZADD', KEYS[4], tonumber(ARGV[3]) + tonumber(ARGV[2]) / 1000, ARGV[4])
return 1
"""

# KEYS: lease, lapse. ARGV: owner, session.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[2])
end
return 0
"""

# KEYS: timers, tdata, ctimers, call, calls, lapse. ARGV: member, due, data, now, session.
_SCHEDULE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('HSETNX', KEYS[4], 'started', ARGV[4]) == 1 then
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[6], 0, ARGV[5])
end
return 0
"""

# KEYS: timers, tdata, ctimers. ARGV: member.
_CANCEL = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 0
"""

# KEYS: timers, tdata. ARGV: now, limit, now + hold. Returns member, due, data triples.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], ARGV[3], due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or '{}'
end
return out
"""

# KEYS: call, calls, finished, lease, ctimers, timers, tdata, log, keys, lapse.
# ARGV: at, reason, now, session, retention ms (0: none).
_FINISH = """
redis.call('ZREM', KEYS[10], ARGV[4])
if redis.call('HSETNX', KEYS[1], 'started', ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
if redis.call('HSETNX', KEYS[1], 'finished', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'reason', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[4])
end
redis.call('DEL', KEYS[4])
for _, member in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('ZREM', KEYS[6], member)
  redis.call('HDEL', KEYS[7], member)
end
redis.call('DEL', KEYS[5])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  for _, key in ipairs({KEYS[1], KEYS[8], KEYS[9]}) do redis.call('PEXPIRE', key, ttl) end
end
return 0
"""

# KEYS: call, log, keys, lease, ctimers, calls, finished, timers, tdata, lapse.
# ARGV: session, cutoff.
_EXPIRE_ONE = """
local finished = redis.call('ZSCORE', KEYS[7], ARGV[1])
if not finished or tonumber(finished) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[10], ARGV[1])
for _, member in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('ZREM', KEYS[8], member)
  redis.call('HDEL', KEYS[9], member)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
return 1
"""

# Several writes of one call in one round trip (see ivrscript.stores.base.write).
# KEYS: log, keys, call, calls, events, lease, ctimers, timers, tdata, finished, lapse.
# ARGV[1]: JSON {owner ('' none), ttl (ms), now, session, stream, origin, entries: [[text,
# key ('' none), at]], schedule: [[member, due, data]], cancel: [member], finish ('' none),
# retention (ms, 0 none), quiet (an owner: no wake-up event while it holds the lease; '' none)};
# times as strings. Returns {1, seq or 0 (deduped), ...} or {0}
# (another owner holds the lease: nothing written).
_WRITE = """
local a = cjson.decode(ARGV[1])
local session = a.session
local function created(at)
  if redis.call('HSETNX', KEYS[3], 'started', at) == 1 then
    redis.call('ZADD', KEYS[4], at, session)
    redis.call('ZADD', KEYS[11], 0, session)
  end
end
local first = a.entries[1]
created(first and first[3] or a.now)
if a.owner ~= '' then
  local holder = redis.call('GET', KEYS[6])
  if holder and holder ~= a.owner then return {0} end
  if redis.call('HEXISTS', KEYS[3], 'finished') == 1 then return {0} end
  redis.call('SET', KEYS[6], a.owner, 'PX', a.ttl)
  redis.call('ZADD', KEYS[11], tonumber(a.now) + a.ttl / 1000, session)
end
local out = {1}
local appended = false
for _, e in ipairs(a.entries) do
  if e[2] ~= '' and redis.call('SADD', KEYS[2], e[2]) == 0 then
    out[#out + 1] = 0
  else
    out[#out + 1] = redis.call('RPUSH', KEYS[1], e[1])
    appended = true
  end
end
for _, t in ipairs(a.schedule) do
  redis.call('ZADD', KEYS[8], t[2], t[1])
  redis.call('HSET', KEYS[9], t[1], t[3])
  redis.call('SADD', KEYS[7], t[1])
end
for _, member in ipairs(a.cancel) do
  redis.call('ZREM', KEYS[8], member)
  redis.call('HDEL', KEYS[9], member)
  redis.call('SREM', KEYS[7], member)
end
if a.finish ~= '' then
  redis.call('ZREM', KEYS[11], session)
  if redis.call('HSETNX', KEYS[3], 'finished', a.now) == 1 then
    redis.call('HSET', KEYS[3], 'reason', a.finish)
    redis.call('ZADD', KEYS[10], a.now, session)
  end
  redis.call('DEL', KEYS[6])
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    redis.call('ZREM', KEYS[8], member)
    redis.call('HDEL', KEYS[9], member)
  end
  redis.call('DEL', KEYS[7])
  if a.retention > 0 then
    for _, key in ipairs({KEYS[3], KEYS[1], KEYS[2]}) do
      redis.call('PEXPIRE', key, a.retention)
    end
  end
end
if appended and (a.quiet == '' or redis.call('GET', KEYS[6]) ~= a.quiet) then
  local id = redis.call('XADD', KEYS[5], 'MAXLEN', '~', a.stream, '*', 's', session,
                        'o', a.origin)
  redis.call('PUBLISH', KEYS[5], id .. ' ' .. a.origin .. ' ' .. session)
end
return out
"""

# KEYS: lapse, call prefix (the key of a call is its prefix .. session), calls.
# ARGV: now, started before, limit, lease prefix.
_ORPHANS = """
local out = {}
local seen = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                        tonumber(ARGV[3]) * 4 + 16)
for _, session in ipairs(seen) do
  if redis.call('HEXISTS', KEYS[2] .. session, 'finished') == 1
      or redis.call('EXISTS', KEYS[2] .. session) == 0 then
    redis.call('ZREM', KEYS[1], session)
  elseif redis.call('EXISTS', ARGV[4] .. session) == 0 then
    local started = redis.call('ZSCORE', KEYS[3], session)
    if started and tonumber(started) <= tonumber(ARGV[2]) then
      out[#out + 1] = session
      out[#out + 1] = started
      if #out >= 2 * tonumber(ARGV[3]) then break end
    end
  end
end
return out
"""

_OPTIONS = {"prefix": str, "retention": float, "socket_timeout": float,
            "socket_connect_timeout": float}


def _dumps(data: Any) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise StoreError(f"log data must be JSON: {error}") from None


def _stream_id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _number(value: float) -> str:
    return repr(float(value))


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class _PubSub(redis.client.PubSub):  # type: ignore[misc]
    """redis-py's PubSub, telling when it reconnected: the client reconnects and resubscribes
    by itself (``on_connect``; not called for the first connection), and the reader must then
    catch up on the events stream."""

    reconnected = False

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        self.reconnected = True


class RedisStore:
    """A :class:`~ivrscript.stores.CallStore` on a Redis server; safe from any thread.

    ``client`` is a ``redis.Redis``; ``prefix`` starts every key (several apps share one
    Redis with different prefixes); ``retention`` (seconds), if set, gives a finished call's
    keys that TTL so Redis frees them even if no one calls ``expire``.
    Build one with :meth:`from_url`.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "ivrscript:",
                 retention: float | None = None, url: str = "redis://",
                 stream_length: int = 10_000, block: float = 0.5) -> None:
        self._client = client
        self.prefix = prefix
        self.retention = retention
        self.url = url
        self._where = _safe_url(url)
        self._stream_length = int(stream_length)
        self._block = float(block)
        self._scripts = {name: client.register_script(source) for name, source in [
            ("append", _APPEND), ("acquire", _ACQUIRE), ("release", _RELEASE),
            ("schedule", _SCHEDULE), ("cancel", _CANCEL), ("claim", _CLAIM),
            ("finish", _FINISH), ("expire", _EXPIRE_ONE), ("write", _WRITE),
            ("orphans", _ORPHANS)]}
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], Any]] = []
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._id = uuid.uuid4().hex[:16]  # marks our appends in the events stream

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """``redis://[user:password@]host:6379/0?prefix=myapp:``, ``rediss://...`` (TLS) or
        ``unix:///run/redis.sock?db=0``. Query options of ours: ``prefix``, ``retention``,
        ``socket_timeout``, ``socket_connect_timeout`` (seconds, default 1); the others go to
        ``redis.Redis.from_url``."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("redis", "rediss", "unix"):
            raise ConfigError(f"a Redis store URL is 'redis://host:6379/0', got {url!r}")
        database = parts.path.strip("/")
        if parts.scheme.lower() != "unix" and database and not database.isdigit():
            raise ConfigError(f"the database in the Redis store URL {_safe_url(url)!r} must be "
                              f"a number, got {database!r}")
        rest = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            kind = _OPTIONS.get(name)
            if kind is None:
                rest.append((name, value))
                continue
            try:
                options.setdefault(name, kind(value))
            except ValueError:
                raise ConfigError(f"{name} in the Redis store URL {_safe_url(url)!r} must be "
                                  f"a number, got {value!r}") from None
        client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        timeout = options.pop("socket_timeout", 1.0)
        connect_timeout = options.pop("socket_connect_timeout", 1.0)
        try:
            client = redis.Redis.from_url(
                client_url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                decode_responses=True, client_name="ivrscript",
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"bad Redis store URL {_safe_url(url)!r}: {error}") from None
        return cls(client, url=url, **options)

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, kind: str, session_id: str = "") -> str:
        return f"{self.prefix}{kind}:{session_id}" if session_id else f"{self.prefix}{kind}"

    @contextmanager
    def _redis(self, what: str) -> Iterator[None]:
        """Redis errors as store errors: unreachable -> StoreUnavailable, others StoreError."""
        if self._closed:
            raise StoreError(f"the Redis store at {self._where} is closed")
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis at {self._where} is unreachable ({what}): "
                                   f"{error}") from None
        except redis.RedisError as error:
            raise StoreError(f"Redis at {self._where} failed ({what}): {error}") from None
        except UnicodeDecodeError as error:
            raise StoreError(f"Redis at {self._where}: {what} is not UTF-8 text ({error})"
                             ) from None

    # -- the log -----------------------------------------------------------------------------

    def append(self, session_id: str, kind: str, data: dict[str, Any], *,
               key: str | None = None, at: float | None = None) -> int | None:
        when = time.time() if at is None else at
        entry = _dumps([kind, when, data])
        with self._redis(f"append to call {shown(session_id)}"):
            seq = self._scripts["append"](
                keys=[self._key("log", session_id), self._key("keys", session_id),
                      self._key("call", session_id), self._key("calls"), self._key("events"),
                      self._key("lapse")],
                args=[entry, "0" if key is None else "1", key or "", _number(when), session_id,
                      self._stream_length, self._id])
        if seq is None:
            return None
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:  # our own appends: at once, in this thread (as every backend)
            fn(session_id)
        return int(seq)

    def write(self, session_id: str, entries: Sequence[Append] = (), *,
              owner: str | None = None, ttl: float = 0.0,
              schedule: Sequence[tuple[str, float, dict[str, Any]]] = (),
              cancel: Sequence[str] = (), finish: str | None = None,
              quiet_for: str | None = None) -> list[int | None] | None:
        """Several writes of one call in one round trip: see
        :func:`ivrscript.stores.base.write` (one Lua script, atomic)."""
        now = time.time()
        rows = []
        for kind, data, key, at in entries:
            when = now if at is None else at
            rows.append([_dumps([kind, when, data]), key or "", _number(when)])
        args = _dumps({
            "owner": owner or "", "ttl": max(int(ttl * 1000), 1), "now": _number(now),
            "session": session_id, "stream": self._stream_length, "origin": self._id,
            "entries": rows,
            "schedule": [[self._member(session_id, key), _number(due), _dumps(data or {})]
                         for key, due, data in schedule],
            "cancel": [self._member(session_id, key) for key in cancel],
            "finish": finish or "", "quiet": quiet_for or "",
            "retention": 0 if self.retention is None or finish is None
            else max(int(self.retention * 1000), 1)})
        with self._redis(f"write to call {shown(session_id)}"):
            answer = self._scripts["write"](
                keys=[self._key("log", session_id), self._key("keys", session_id),
                      self._key("call", session_id), self._key("calls"), self._key("events"),
                      self._key("lease", session_id), self._key("ctimers", session_id),
                      self._key("timers"), self._key("tdata"), self._key("finished"),
                      self._key("lapse")],
                args=[args])
        if not answer or int(answer[0]) != 1:
            return None
        seqs = [int(n) or None for n in answer[1:]]
        if any(seqs):
            with self._lock:
                subscribers = list(self._subscribers)
            for fn in subscribers:  # our own appends: at once, in this thread
                fn(session_id)
        return seqs

    def load(self, session_id: str, after: int = 0) -> list[LogEntry]:
        with self._redis(f"load call {shown(session_id)}"):
            rows = self._client.lrange(self._key("log", session_id), max(after, 0), -1)
        entries = []
        for seq, text in enumerate(rows, start=max(after, 0) + 1):
            try:
                kind, at, data = json.loads(text)
                if not isinstance(kind, str) or not isinstance(data, dict):
                    raise ValueError("not [kind, at, data]")
                entries.append(LogEntry(seq, kind, data, float(at)))
            except (TypeError, ValueError) as error:
                raise StoreError(f"call {shown(session_id)}: log entry {seq} in Redis at "
                                 f"{self._where} is corrupt ({error})") from None
        return entries

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, session_id: str, owner: str, ttl: float) -> bool:
        with self._redis(f"lease call {shown(session_id)}"):
            taken = self._scripts["acquire"](
                keys=[self._key("lease", session_id), self._key("call", session_id),
                      self._key("calls"), self._key("lapse")],
                args=[owner, max(int(ttl * 1000), 1), _number(time.time()), session_id])
        return bool(taken)

    def release(self, session_id: str, owner: str) -> None:
        with self._redis(f"release call {shown(session_id)}"):
            self._scripts["release"](keys=[self._key("lease", session_id), self._key("lapse")],
                                     args=[owner, session_id])

    def holder(self, session_id: str) -> str | None:
        with self._redis(f"read the lease of call {shown(session_id)}"):
            owner = self._client.get(self._key("lease", session_id))
        return None if owner is None else str(owner)

    # -- timers ------------------------------------------------------------------------------

    @staticmethod
    def _member(session_id: str, key: str) -> str:
        return json.dumps([session_id, key], separators=(",", ":"), ensure_ascii=False)

    def schedule(self, session_id: str, key: str, due: float,
                 data: dict[str, Any] | None = None) -> None:
        text = _dumps(data or {})
        with self._redis(f"schedule a timer of call {shown(session_id)}"):
            self._scripts["schedule"](
                keys=[self._key("timers"), self._key("tdata"), self._key("ctimers", session_id),
                      self._key("call", session_id), self._key("calls"), self._key("lapse")],
                args=[self._member(session_id, key), _number(due), text, _number(time.time()),
                      session_id])

    def cancel(self, session_id: str, key: str) -> None:
        with self._redis(f"cancel a timer of call {shown(session_id)}"):
            self._scripts["cancel"](
                keys=[self._key("timers"), self._key("tdata"), self._key("ctimers", session_id)],
                args=[self._member(session_id, key)])

    def claim_due(self, owner: str, now: float | None = None, *, limit: int = 100,
                  hold: float = 5.0) -> list[DueTimer]:
        now = time.time() if now is None else now
        with self._redis("claim due timers"):
            flat = self._scripts["claim"](keys=[self._key("timers"), self._key("tdata")],
                                          args=[_number(now), max(int(limit), 0),
                                                _number(now + hold)])
        found = []
        for i in range(0, len(flat), 3):
            member, due, text = flat[i:i + 3]
            try:
                session_id, key = json.loads(member)
                data = json.loads(text)
            except (TypeError, ValueError) as error:
                raise StoreError(f"timer {shown(member)} in Redis at {self._where} is corrupt "
                                 f"({error})") from None
            found.append(DueTimer(str(session_id), str(key), float(due),
                                  data if isinstance(data, dict) else {}))
        return found

    # -- calls -------------------------------------------------------------------------------

    def finish(self, session_id: str, end_reason: str, at: float | None = None) -> None:
        when = time.time() if at is None else at
        ttl = 0 if self.retention is None else max(int(self.retention * 1000), 1)
        with self._redis(f"finish call {shown(session_id)}"):
            self._scripts["finish"](
                keys=[self._key("call", session_id), self._key("calls"), self._key("finished"),
                      self._key("lease", session_id), self._key("ctimers", session_id),
                      self._key("timers"), self._key("tdata"), self._key("log", session_id),
                      self._key("keys", session_id), self._key("lapse")],
                args=[_number(when), end_reason, _number(time.time()), session_id, ttl])

    def calls(self, *, active: bool | None = None) -> list[CallInfo]:
        with self._redis("list calls"):
            ids = self._client.zrange(self._key("calls"), 0, -1)
            pipe = self._client.pipeline(transaction=False)
            for sid in ids:
                pipe.hmget(self._key("call", sid), ["started", "finished", "reason"])
                pipe.llen(self._key("log", sid))
            answers = pipe.execute()
        infos = []
        for i, sid in enumerate(ids):
            (started, finished, reason), entries = answers[2 * i], answers[2 * i + 1]
            if started is None:
                continue  # its keys expired (retention TTL); expire() drops the index entry
            info = CallInfo(sid, float(started), None if finished is None else float(finished),
                            reason, int(entries))
            if active is None or (info.finished is None) == active:
                infos.append(info)
        return sorted(infos, key=lambda i: (i.started, i.session_id))

    def expire(self, retention: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cutoff = now - retention
        removed = 0
        with self._redis("expire finished calls"):
            ids = self._client.zrangebyscore(self._key("finished"), "-inf", f"({cutoff!r}")
            for sid in ids:
                removed += int(self._scripts["expire"](
                    keys=[self._key("call", sid), self._key("log", sid), self._key("keys", sid),
                          self._key("lease", sid), self._key("ctimers", sid),
                          self._key("calls"), self._key("finished"), self._key("timers"),
                          self._key("tdata"), self._key("lapse")],
                    args=[sid, _number(cutoff)]))
        return removed

    # -- store-wide --------------------------------------------------------------------------

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._redis("read the store's metadata"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hsetnx(self._key("meta"), key, value)
            pipe.hget(self._key("meta"), key)
            _, stored = pipe.execute()
        return str(stored)

    def subscribe(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the Redis store at {self._where} is closed")
            self._subscribers.append(fn)
            if self._reader is None:
                with self._redis("subscribe"):
                    newest = self._client.xrevrange(self._key("events"), count=1)
                last = newest[0][0] if newest else "0-0"
                self._reader = threading.Thread(target=self._read, args=(last,), daemon=True,
                                                name="ivrscript-redis-events")
                self._reader.start()

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def _read(self, last: str) -> None:
        """One thread per store: pushed wake-ups (pub/sub: no request per message); on every
        (re)subscription, the events stream is read from the last entry seen, so wake-ups
        missed while the connection was down still come."""
        kwargs = dict(self._client.connection_pool.connection_kwargs)
        kwargs["socket_timeout"] = self._block + 2.0
        reader = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=self._client.connection_pool.connection_class, **kwargs))
        pubsub = _PubSub(reader.connection_pool, ignore_subscribe_messages=True)
        seen = _stream_id(last)
        subscribed = failing = False
        try:
            while not self._stop.is_set():
                changed: dict[str, None] = {}
                try:
                    if not subscribed:
                        pubsub.subscribe(self._key("events"))
                        subscribed = pubsub.reconnected = True
                    if pubsub.reconnected:  # (re)subscribed: read what we may have missed
                        pubsub.reconnected = False
                        seen = self._catch_up(reader, seen, changed)
                    message = pubsub.get_message(timeout=self._block)
                    if pubsub.reconnected:  # it reconnected inside get_message
                        pubsub.reconnected = False
                        seen = self._catch_up(reader, seen, changed)
                except redis.RedisError as error:
                    if not failing:
                        log.warning("store events from Redis at %s interrupted (%s); retrying",
                                    self._where, error)
                        failing = True
                    subscribed = False
                    pubsub.reset()
                    self._stop.wait(0.2)
                    continue
                if failing:
                    log.info("store events from Redis at %s resumed", self._where)
                    failing = False
                if message is not None and message.get("type") == "message":
                    entry, origin, session_id = str(message["data"]).split(" ", 2)
                    if _stream_id(entry) > seen:
                        seen = _stream_id(entry)
                        if origin != self._id:
                            changed[session_id] = None
                self._notify(changed)
        finally:
            pubsub.close()
            reader.close()
            reader.connection_pool.disconnect()

    def _catch_up(self, reader: redis.Redis, seen: tuple[int, int],
                  changed: dict[str, None]) -> tuple[int, int]:
        """Entries of the events stream after ``seen``: their calls into ``changed``."""
        while True:
            entries = reader.xrange(self._key("events"), min=f"({seen[0]}-{seen[1]}",
                                    max="+", count=500)
            for entry_id, fields in entries:
                seen = _stream_id(entry_id)
                if "s" in fields and fields.get("o") != self._id:
                    changed[fields["s"]] = None
            if len(entries) < 500:
                return seen

    def _notify(self, changed: dict[str, None]) -> None:
        if not changed:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for sid in changed:
            for fn in subscribers:
                try:
                    fn(sid)
                except Exception:  # a subscriber's bug must not stop the reader
                    log.exception("store subscriber failed for call %s", shown(sid))

    def orphans(self, grace: float, now: float | None = None, *,
                limit: int = 100) -> list[str]:
        now = time.time() if now is None else now
        with self._redis("list calls nobody holds"):
            found = self._scripts["orphans"](
                keys=[self._key("lapse"), f"{self.prefix}call:", self._key("calls")],
                args=[_number(now), _number(now - grace), max(int(limit), 1),
                      f"{self.prefix}lease:"])
        pairs = sorted((float(found[i + 1]), str(found[i])) for i in range(0, len(found), 2))
        return [session for _, session in pairs]

    def ping(self) -> bool:
        try:
            with self._redis("ping"):
                return bool(self._client.ping())
        except StoreError:
            return False

    def clear(self) -> int:
        """Delete every key under this store's prefix (tests, or retiring an app); returns how
        many. Not part of the CallStore protocol."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
        removed = 0
        with self._redis("clear"):
            batch: list[str] = []
            for name in self._client.scan_iter(match=pattern, count=500):
                batch.append(name)
                if len(batch) >= 500:
                    removed += self._client.delete(*batch)
                    batch.clear()
            if batch:
                removed += self._client.delete(*batch)
        return removed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._subscribers.clear()
            reader, self._reader = self._reader, None
        self._stop.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=self._block + 5)
        self._client.close()
        self._client.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self.prefix!r}>"
