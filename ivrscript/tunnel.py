"""A public URL for the listener through an ngrok tunnel (the only module importing ngrok).

ngrok is optional (``pip install 'ivrscript[live]'``). Opening the tunnel runs in a worker
thread with a timeout, so a missing token or no network is a clear error in seconds, never a
hang; inside a running event loop (a Jupyter kernel) ``ngrok.forward`` returns a task, which
the worker thread avoids.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Tunnel", "open_tunnel", "OPEN_TIMEOUT"]

log = logging.getLogger("ivrscript.tunnel")

OPEN_TIMEOUT = 15.0


@dataclass
class Tunnel:
    """An open tunnel: its public ``url``; ``close()`` ends it."""

    url: str
    listener: Any = None

    def close(self) -> None:
        if self.listener is None:
            return
        try:
            close = getattr(self.listener, "close", None)
            if callable(close):
                result = close()
                if hasattr(result, "__await__"):  # some SDK versions return a coroutine
                    _run_coroutine(result)
        except Exception:
            log.warning("closing the ngrok tunnel failed", exc_info=True)
        finally:
            self.listener = None


def _run_coroutine(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def open_tunnel(spec: Any, local_url: str, *, domain: str | None = None,
                timeout: float = OPEN_TIMEOUT, environ: dict[str, str] | None = None,
                **options: Any) -> Tunnel:
    """Open a tunnel to ``local_url``. ``spec`` is ``"ngrok"`` (or True), or a Tunnel-like
    object that is already open (anything with ``url``)."""
    if spec is not True and spec != "ngrok":
        if hasattr(spec, "url"):
            return spec  # type: ignore[no-any-return]
        raise ConfigError(f"unknown tunnel {spec!r}: use tunnel='ngrok' or give public_url=")
    env = os.environ if environ is None else environ
    token = env.get("NGROK_AUTHTOKEN")
    if not token:
        raise ConfigError("the ngrok tunnel needs NGROK_AUTHTOKEN: set it to your token from "
                          "the ngrok dashboard, or give public_url= (--public-url on the command "
                          "line) if the app is reachable some other way")
    try:
        import ngrok  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("the ngrok tunnel needs the ngrok package: "
                          "pip install 'ivrscript[live]'") from None
    addr = local_url.split("://", 1)[-1]
    kwargs: dict[str, Any] = {"authtoken": token, **options}
    if domain:
        kwargs["domain"] = domain

    def forward() -> Any:
        result = ngrok.forward(addr, **kwargs)
        if hasattr(result, "__await__"):
            result = _run_coroutine(_await(result))
        return result

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ivrscript-ngrok")
    future = pool.submit(forward)
    try:
        listener = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ConfigError(f"ngrok did not open a tunnel within {timeout:.0f} s: check the "
                          "network and NGROK_AUTHTOKEN, or give public_url= (--public-url on "
                          "the command line)") from None
    except Exception as error:  # the SDK's errors carry their reasons as args
        detail = ": ".join(str(arg) for arg in error.args) or type(error).__name__
        raise ConfigError(f"ngrok could not open a tunnel ({detail}): check the network and "
                          "NGROK_AUTHTOKEN, or give public_url= (--public-url on the command "
                          "line)") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    url = listener.url() if callable(getattr(listener, "url", None)) else str(listener.url)
    log.info("ngrok tunnel open: %s -> %s", url, local_url)
    return Tunnel(url, listener)


async def _await(awaitable: Any) -> Any:
    return await awaitable
