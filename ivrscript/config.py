"""The persistent secret path segment of the callback URLs, for live mode.

Callback URLs are configured once on the platform, so their secret must survive restarts: it
comes from ``IVRSCRIPT_SECRET``, else from ``$XDG_CONFIG_HOME/ivrscript/secret`` (default
``~/.config/ivrscript/secret``), created on first use with mode 0600, atomically (any number
of processes starting at once all read the same secret).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Mapping

from .errors import ConfigError

__all__ = ["ENV_SECRET", "load_secret", "secret_path"]

ENV_SECRET = "IVRSCRIPT_SECRET"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{22,}$")  # URL-safe, at least 128 bits


def secret_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the secret is kept: ``$XDG_CONFIG_HOME/ivrscript/secret`` or under ``~/.config``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ivrscript", "secret")


def load_secret(environ: Mapping[str, str] | None = None) -> str:
    """The secret path segment: ``IVRSCRIPT_SECRET``, else the kept one (created once).

    Raises :class:`ConfigError` for a secret that is too short or not URL-safe, or a config
    folder that cannot be written.
    """
    env = os.environ if environ is None else environ
    given = (env.get(ENV_SECRET) or "").strip()
    if given:
        return _checked(given, ENV_SECRET)
    path = secret_path(env)
    try:
        with open(path, encoding="ascii") as handle:
            return _checked(handle.read().strip(), path)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the callback secret from {path}: {error}; fix or "
                          f"delete the file, or set {ENV_SECRET}") from None
    secret = secrets.token_urlsafe(24)
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a process starting
        # at the same moment sees no file or the whole secret, never a half-written one, and
        # os.link refuses to replace a secret another process linked first.
        fd, temporary = tempfile.mkstemp(prefix=".secret-", dir=folder)
    except OSError as error:
        raise ConfigError(f"cannot keep the callback secret in {path}: {error}; set "
                          f"{ENV_SECRET} to 22 or more URL-safe characters instead") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:  # mkstemp: mode 0600
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return load_secret(env)  # another process was first: everyone uses its secret
        except OSError as error:
            raise ConfigError(f"cannot keep the callback secret in {path}: {error}; set "
                              f"{ENV_SECRET} to 22 or more URL-safe characters instead"
                              ) from None
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass
    return secret


def _checked(secret: str, source: str) -> str:
    if not _SECRET.match(secret):
        raise ConfigError(f"the callback secret from {source} must be 22 or more URL-safe "
                          "characters (A-Z, a-z, 0-9, '-', '_'), e.g. from "
                          "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return secret
