"""Call stores: where a call's log, lease and timers live (see :mod:`ivrscript.stores.base`).

``open_store(url)`` turns ``"memory:"``, ``"sqlite:///path/calls.db"`` or
``"redis://host:6379/0"`` into a store; each backend is its own module and a third-party
client (redis) is imported only by its own.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError
from .base import CallInfo, CallStore, DueTimer, LogEntry, StoreError, StoreUnavailable

__all__ = ["CallStore", "LogEntry", "DueTimer", "CallInfo", "StoreError", "StoreUnavailable",
           "MemoryStore", "SQLiteStore", "RedisStore", "open_store"]

_LAZY = {"MemoryStore": ".memory", "SQLiteStore": ".sqlite", "RedisStore": ".redis"}
_SCHEMES = {"memory": "MemoryStore", "sqlite": "SQLiteStore", "redis": "RedisStore",
            "rediss": "RedisStore", "unix": "RedisStore"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ivrscript.stores' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def open_store(store: Any, **options: Any) -> CallStore:
    """A :class:`CallStore` from a store (returned as it is) or a URL string; ``options`` go to
    the backend's ``from_url``. A bad URL is a :class:`~ivrscript.ConfigError`."""
    if store is None:
        store = "memory:"
    if not isinstance(store, str):
        if not isinstance(store, CallStore):
            raise ConfigError(f"store must be a CallStore or a URL ('memory:', "
                              f"'sqlite:///path/calls.db', 'redis://host:6379/0'), got {store!r}")
        return store
    scheme = store.split(":", 1)[0].lower() if ":" in store else ""
    name = _SCHEMES.get(scheme)
    if name is None:
        raise ConfigError(f"unknown store URL {store!r}: use 'memory:', "
                          "'sqlite:///path/calls.db' or 'redis://host:6379/0'")
    backend = __getattr__(name)
    return backend.from_url(store, **options)
