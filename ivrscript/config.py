"""The persistent secret path segment of the callback URLs, for live mode.

Callback URLs are configured once on the platform, so their secret must survive restarts: it
comes from ``IVRSCRIPT_SECRET``, else from ``$XDG_CONFIG_HOME/ivrscript/secret`` (default
``~/.config/ivrscript/secret``), created on first use with mode 0600.
"""

from __future__ import annotations

import os
import re
import secrets
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
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # O_EXCL: two processes starting at once agree on the first secret written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret(env)
    except OSError as error:
        raise ConfigError(f"cannot keep the callback secret in {path}: {error}; set "
                          f"{ENV_SECRET} to 22 or more URL-safe characters instead") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret


def _checked(secret: str, source: str) -> str:
    if not _SECRET.match(secret):
        raise ConfigError(f"the callback secret from {source} must be 22 or more URL-safe "
                          "characters (A-Z, a-z, 0-9, '-', '_'), e.g. from "
                          "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return secret
