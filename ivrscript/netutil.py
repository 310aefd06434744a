"""Small network helpers shared by the terminal (cli) and the standalone simulator."""

from __future__ import annotations

import errno
import socket

from .errors import ConfigError

__all__ = ["check_port_free"]


def check_port_free(host: str, port: int) -> None:
    """A taken port is one sentence here (werkzeug would print its own lines and exit)."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use: stop the program "
                                  "using it, or choose another --port (0 picks a free one)"
                                  ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
