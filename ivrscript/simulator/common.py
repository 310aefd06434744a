"""Names every part of the simulator shares: the account, the callback kinds, URL helpers."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

ACCOUNT_ID = "400131801008"
KEYS = frozenset("0123456789*#")
ENTER, UPDATE, EXIT = "on-call-enter", "on-command-update", "on-call-exit"
_REQUIRED_URLS = (ENTER, UPDATE, EXIT)


class _HasCallbackUrls(Protocol):
    @property
    def callback_urls(self) -> Mapping[str, str]: ...


AppLike = _HasCallbackUrls | Mapping[str, str]
# one app, or several processes of the same app that share its calls (a load balancer)
Apps = AppLike | Sequence[AppLike]


def _join(thread: threading.Thread | None, timeout: float) -> None:
    """Join a thread we started, unless it is the caller (stop() from a listener)."""
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)



def _origin(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _callback_urls(app_or_urls: AppLike) -> dict[str, str]:
    urls = getattr(app_or_urls, "callback_urls", app_or_urls)
    if not isinstance(urls, Mapping):
        raise TypeError("expected an app with .callback_urls or a dict of callback URLs, "
                        f"got {app_or_urls!r}")
    missing = [key for key in _REQUIRED_URLS if not isinstance(urls.get(key), str)]
    if missing:
        raise ValueError(f"callback URLs lack {', '.join(missing)}; expected the keys "
                         "'on-call-enter', 'on-command-update', 'on-call-exit', "
                         "'on-command-error'")
    return {str(k): str(v) for k, v in urls.items()}


def _targets(apps: Apps) -> tuple[list[dict[str, str]], list[Any]]:
    """(the callback URLs of each app, the app objects among them, to wait on their calls)."""
    if isinstance(apps, Sequence) and not isinstance(apps, str | bytes):
        if not apps:
            raise ValueError("expected an app, a dict of callback URLs or a non-empty list of "
                             "them, got an empty list")
        items: list[Any] = list(apps)
    else:
        items = [apps]
    urls = [_callback_urls(item) for item in items]
    return urls, [item for item in items if not isinstance(item, Mapping)]
