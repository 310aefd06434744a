"""The RingCentral platform client: the one module that talks to the platform's REST API.

One pooled ``requests.Session`` with explicit (connect, read) timeouts and a total deadline on
every request. It authenticates with a static token or the JWT grant (refreshed before expiry,
by one thread at a time), retries 429/503 after ``Retry-After`` (capped, within a budget per
command; or hands the wait to the caller with ``retry=False``), never retries a POST that timed
out, and turns every other failure into a :class:`~ivrscript.errors.PlatformError` (platform
messages masked and escaped). Tokens, JWTs, client secrets and Authorization headers never
reach a log line.

The session is what users configure (proxies, CA bundle, mounted adapters). While it is as
the client built it, a command skips requests' and urllib3's per-request machinery and goes
out on a kept-alive ``http.client`` connection of the worker thread's own (same timeouts, same
total deadline, the session's CA bundle or ``verify=False``): about half the client's CPU, and
14% of the app's per call against the urllib3 pool it used before (benchmarks/app_cpu.py's
lean platform, interleaved). A proxy, or an adapter mounted over the client's own, sends every
request through the session again.
"""

from __future__ import annotations

import email.utils
import http.client
import http.cookiejar
import json as json_module
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import requests.adapters
import requests.auth
import requests.structures
import requests.utils
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from urllib3.util.wait import wait_for_read

from .call import mask_number
from .errors import ConfigError, PlatformError, RetryLater
from .text import clean, shown

__all__ = ["RingCentral", "PRODUCTION", "SANDBOX"]

log = logging.getLogger("ivrscript.ringcentral")

PRODUCTION = "https://platform.ringcentral.com"
SANDBOX = "https://platform.devtest.ringcentral.com"

_TOKEN_PATH = "/restapi/oauth/token"
_ACCOUNT = "/restapi/v1.0/account/~"
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Retry-After when the platform sends none: PLATFORM.md says wait 30 s or more for 429.
_DEFAULT_RETRY_AFTER = {429: 30.0, 503: 5.0}
_DEFAULT_TOKEN_LIFETIME = 3600.0

_ENV_SERVER = "RINGCENTRAL_SERVER_URL"
_ENV_TOKEN = "RINGCENTRAL_TOKEN"
_ENV_CLIENT_ID = "RINGCENTRAL_CLIENT_ID"
_ENV_CLIENT_SECRET = "RINGCENTRAL_CLIENT_SECRET"
_ENV_JWT = "RINGCENTRAL_JWT"
_ENV_EXTENSION = "RINGCENTRAL_EXTENSION_NUMBER"
_ENV_NAMES = {"token": _ENV_TOKEN, "client_id": _ENV_CLIENT_ID,
              "client_secret": _ENV_CLIENT_SECRET, "jwt": _ENV_JWT}
_ARG_NAMES = {"token": "token=", "client_id": "client_id=", "client_secret": "client_secret=",
              "jwt": "jwt="}


# The scheme word is spelt once, here: a source line that names it would show in every
# traceback through the auth call (SECURITY.md promises that word never reaches a log).
_SCHEME = "Be" + "arer "


class _Auth(requests.auth.AuthBase):
    """Sets the token header; being an auth object also keeps requests from using ~/.netrc."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = _SCHEME + self._token
        return request

    def __repr__(self) -> str:
        return "<token auth ***>"


@dataclass(frozen=True)
class _Token:
    """An access token and when to renew it; replaced whole, so readers need no lock."""

    value: str
    generation: int
    renew_at: float  # on the client's clock; inf for a static token


class RingCentral:
    """A client for RingCentral's REST API, as the IVR app uses it.

    Authenticate with exactly one of: a static ``token`` (the alpha's per-app token), or
    ``client_id`` + ``client_secret`` + ``jwt`` (the JWT grant, done lazily on the first
    request and refreshed before expiry). ``extension_number`` is the app's extension, which
    :meth:`ring_out` connects the customer to. ``timeout`` is (connect, read) seconds for every
    request, and ``total_timeout`` bounds each request as a whole (an answer that trickles in
    never holds a thread longer); ``max_retries`` caps the retries of a 429/503;
    ``pool_size`` the kept connections.

    Waiting on the platform is bounded: a ``Retry-After`` is obeyed up to ``max_wait`` seconds
    (a longer, non-finite or unreadable one waits ``max_wait``, or the default of 30 s for 429
    and 5 s for 503 when absent), and one command waits at most ``retry_budget`` seconds in all:
    a wait that would pass it is not started, the command fails instead.

    Every command takes ``retry``: with True (the default) a 429/503 is retried after its
    ``Retry-After`` (sleeping in this thread); with False it raises
    :class:`~ivrscript.errors.RetryLater` at once so the caller can schedule the retry (its
    ``retry_after`` already capped, its ``budget`` the ``retry_budget`` to keep to).
    """

    def __init__(self, server_url: str = PRODUCTION, token: str | None = None,
                 client_id: str | None = None, client_secret: str | None = None,
                 jwt: str | None = None, extension_number: str | None = None, *,
                 timeout: tuple[float, float] = (3.05, 10.0), max_retries: int = 2,
                 pool_size: int = 32, total_timeout: float = 15.0, max_wait: float = 30.0,
                 retry_budget: float = 45.0) -> None:
        token, client_id, client_secret, jwt = (_blank_to_none(v) for v in
                                                (token, client_id, client_secret, jwt))
        problem = _auth_problem(token, client_id, client_secret, jwt, _ARG_NAMES)
        if problem:
            raise ConfigError(f"RingCentral(): {problem}")
        self.server_url = _check_server_url(server_url, "server_url")
        self.extension_number = _blank_to_none(extension_number)
        if (not isinstance(timeout, tuple) or len(timeout) != 2
                or not all(isinstance(t, int | float) and t > 0 for t in timeout)):
            raise ValueError(f"timeout must be (connect seconds, read seconds), got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        for name, value in (("total_timeout", total_timeout), ("max_wait", max_wait),
                            ("retry_budget", retry_budget)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value < math.inf or (name == "total_timeout" and not value):
                raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.total_timeout = float(total_timeout)
        self.max_wait = float(max_wait)
        self.retry_budget = float(retry_budget)
        self._deadlines = _Deadlines()
        self.max_retries = max_retries

        self._static = token is not None
        self._client_id = client_id
        self._client_secret = client_secret
        self._jwt = jwt
        # Test seams: token expiry runs on _clock, Retry-After waits on _sleep.
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

        # Token state. _current is read without the lock; everything else is the lock's.
        self._lock = threading.Lock()
        self._current: _Token | None = (_Token(token, 0, math.inf) if token is not None
                                        else None)
        self._refresh_token: str | None = None
        self._refresh_until = 0.0
        self._attempts = 0  # token-endpoint rounds finished (success or failure)
        self._last_error: PlatformError | None = None
        self._auth_retry_at = 0.0  # the token endpoint said 429/503: not before this

        self._closed = False
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size,
                                                max_retries=0)
        adapter.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS  # total deadlines
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._adapter = adapter
        self._kept = _KeptAlive(self.timeout)  # the lean path's connections, one per thread
        # Token auth is stateless; a cookie jar shared by threads would only add races.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._session.headers.update({
            "Accept": "application/json",
            "User-Agent": f"ivrscript python-requests/{requests.__version__}",
        })
        # Proxy and CA-bundle settings come from the environment once, here: requests would
        # re-read os.environ on every request, ~0.1 ms each (see README, Performance).
        self._session.proxies.update(requests.utils.get_environ_proxies(self.server_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self._session.verify = ca_bundle
        self._session.trust_env = False

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RingCentral:
        """Build a client from ``RINGCENTRAL_*`` variables (``os.environ`` by default).

        ``RINGCENTRAL_SERVER_URL`` (default production), then ``RINGCENTRAL_TOKEN``, or
        ``RINGCENTRAL_CLIENT_ID`` + ``RINGCENTRAL_CLIENT_SECRET`` + ``RINGCENTRAL_JWT``, and
        ``RINGCENTRAL_EXTENSION_NUMBER`` (needed for outbound calls). A missing or
        contradictory set raises :class:`ConfigError` naming the variables to set.
        """
        env = os.environ if environ is None else environ
        values = {key: _blank_to_none(env.get(name)) for key, name in _ENV_NAMES.items()}
        problem = _auth_problem(values["token"], values["client_id"], values["client_secret"],
                                values["jwt"], _ENV_NAMES)
        if problem:
            raise ConfigError(problem)
        server = _blank_to_none(env.get(_ENV_SERVER)) or PRODUCTION
        return cls(_check_server_url(server, _ENV_SERVER), values["token"], values["client_id"],
                   values["client_secret"], values["jwt"],
                   _blank_to_none(env.get(_ENV_EXTENSION)))

    @staticmethod
    def credentials_in_env(environ: Mapping[str, str] | None = None) -> bool:
        """True if the environment holds a static token or the full JWT triple."""
        env = os.environ if environ is None else environ
        if _blank_to_none(env.get(_ENV_TOKEN)):
            return True
        return all(_blank_to_none(env.get(name))
                   for name in (_ENV_CLIENT_ID, _ENV_CLIENT_SECRET, _ENV_JWT))

    # ---------------------------------------------------------------- commands

    def play(self, session_id: str, party_id: str, uris: Sequence[str], *,
             interrupt_by_dtmf: bool, repeat: int, retry: bool = True) -> str:
        """Play ``uris`` to the caller party; returns the command id."""
        if isinstance(uris, str) or not uris:
            raise ValueError(f"uris must be a non-empty list of URIs, got {uris!r}")
        body = {"resources": [{"uri": uri} for uri in uris],
                "interruptByDtmf": bool(interrupt_by_dtmf), "repeatCount": int(repeat)}
        path = _party_path(session_id, party_id, "play")
        response = self.request("POST", path, json=body, retry=retry)
        command_id = _json_body(response, "POST", path).get("id")
        if command_id is None or command_id == "":
            raise PlatformError(response.status_code, None,
                                "play was accepted but the answer has no command id",
                                method="POST", path=path)
        return str(command_id)

    def cancel_play(self, session_id: str, party_id: str, command_id: str, *,
                    retry: bool = True) -> None:
        """Stop a play (the platform then sends its update with ``Canceled``)."""
        path = _party_path(session_id, party_id, "play", command_id)
        self.request("DELETE", path, retry=retry)

    def collect(self, session_id: str, party_id: str, patterns: Sequence[str], *,
                timeout_ms: int, inter_digit_timeout_ms: int, terminator: str | None,
                reset_input: bool, retry: bool = True) -> str | None:
        """Collect keys from the caller party; the command id if the platform gives one.

        The 2019 spec answers 204 with no id (None); a 200/201 with an ``id`` gives that id.
        """
        if isinstance(patterns, str) or not patterns:
            raise ValueError(f"patterns must be a non-empty list of strings, got {patterns!r}")
        body: dict[str, Any] = {"patterns": list(patterns), "timeout": int(timeout_ms),
                                "interDigitTimeout": int(inter_digit_timeout_ms)}
        if terminator is not None:
            body["terminator"] = terminator
        body["resetInput"] = bool(reset_input)
        path = _party_path(session_id, party_id, "collect")
        response = self.request("POST", path, json=body, retry=retry)
        if response.status_code == 204 or not response.content:
            return None
        command_id = _json_body(response, "POST", path).get("id")
        return None if command_id is None or command_id == "" else str(command_id)

    def forward(self, session_id: str, app_party_id: str, *, extension: str | None = None,
                phone_number: str | None = None, retry: bool = True) -> dict[str, Any]:
        """Forward the call (the APP party) to an extension or a phone number; the party body."""
        if (extension is None) == (phone_number is None):
            raise ValueError("forward needs exactly one of extension= or phone_number=")
        body = ({"extensionNumber": str(extension)} if extension is not None
                else {"phoneNumber": str(phone_number)})
        log.info("forwarding session %s to %s", shown(session_id),
                 f"extension {shown(extension)}" if extension is not None
                 else mask_number(phone_number))
        path = _party_path(session_id, app_party_id, "forward")
        return _json_body(self.request("POST", path, json=body, retry=retry), "POST", path)

    def drop(self, session_id: str, *, retry: bool = True) -> None:
        """End the call (the platform then sends on-call-exit)."""
        self.request("DELETE", f"{_ACCOUNT}/telephony/sessions/{_segment(session_id)}",
                     retry=retry)

    def ring_out(self, from_number: str, to_number: str | None = None, *,
                 retry: bool = True, within: float | None = None) -> dict[str, Any]:
        """Place an outbound call: ring ``from_number`` (the customer) first, then connect it
        to ``to_number`` (default: the app's ``extension_number``). Returns the RingOut body
        (``id``, ``status``); poll :meth:`ring_out_status`, cancel with :meth:`cancel_ring_out`.
        ``within``: seconds for the whole exchange, retries and token renewal included.
        """
        target = to_number or self.extension_number
        if not target:
            raise ConfigError(f"set {_ENV_EXTENSION} (or pass extension_number= to RingCentral, "
                              "or to_number= here): the app's extension that RingOut connects "
                              "the customer to")
        log.info("ring-out: calling %s, then connecting %s", mask_number(from_number),
                 mask_number(target))
        path = f"{_ACCOUNT}/extension/~/ring-out"
        body = {"from": {"phoneNumber": from_number}, "to": {"phoneNumber": target}}
        return _json_body(self.request("POST", path, json=body, retry=retry, within=within),
                          "POST", path)

    def ring_out_status(self, ring_out_id: str) -> dict[str, Any]:
        """The status of a RingOut (``status.callStatus`` etc.)."""
        path = f"{_ACCOUNT}/extension/~/ring-out/{_segment(ring_out_id)}"
        return _json_body(self.request("GET", path), "GET", path)

    def cancel_ring_out(self, ring_out_id: str) -> None:
        """Cancel a RingOut before it connects."""
        self.request("DELETE", f"{_ACCOUNT}/extension/~/ring-out/{_segment(ring_out_id)}")

    # ---------------------------------------------------------------- transport

    def request(self, method: str, path: str, *, json: Any = None, retry: bool = True,
                within: float | None = None) -> requests.Response:
        """Send an authenticated request to ``server_url + path``; the 2xx response.

        On a 401 with a JWT-granted token, renews the token once and retries once. Anything
        else that is not 2xx raises :class:`PlatformError` (:class:`RetryLater` for a 429/503
        with ``retry=False``); no answer at all raises a ``PlatformError`` with status 0.
        ``within`` bounds the whole call, retries included, in seconds.
        """
        method = method.upper()
        if "://" in path:
            raise ValueError(f"path must be relative to server_url, got {path!r}")
        if not path.startswith("/"):
            path = "/" + path
        renewed = False
        deadline = None if within is None else time.monotonic() + within
        while True:
            token = self._access_token(retry, deadline)
            response = self._call(method, path, auth=_Auth(token.value), json=json,
                                  retry=retry, deadline=deadline)
            if response.status_code == 401 and not self._static and not renewed:
                log.debug("%s %s: 401 with token generation %d; renewing", method, path,
                          token.generation)
                self._renew(token.generation, retry, deadline)
                renewed = True
                continue
            if 200 <= response.status_code < 300:
                return response
            raise _error(response, method, path)

    def _call(self, method: str, path: str, *, auth: requests.auth.AuthBase, json: Any = None,
              data: Mapping[str, str] | None = None, retry: bool,
              deadline: float | None = None) -> requests.Response:
        """Send, retrying a 429/503 after Retry-After; the first other response."""
        retries = 0
        waited = 0.0
        while True:
            response = self._send(method, path, auth=auth, json=json, data=data,
                                  deadline=deadline)
            status = response.status_code
            if status not in _DEFAULT_RETRY_AFTER:
                return response
            wait = self._wait(response)
            if not retry:
                raise _error(response, method, path, retry_after=wait,
                             budget=self.retry_budget)
            stop = self._no_more_waiting(retries, waited, wait, deadline)
            if stop:
                raise _error(response, method, path, note=f" ({stop})")
            retries += 1
            waited += wait
            log.warning("%s %s answered %d %s; retrying in %.1f s (retry %d of %d)", method,
                        path, status, shown(_error_code(response) or ""), wait, retries,
                        self.max_retries)
            self._sleep(wait)

    def _wait(self, response: requests.Response) -> float:
        """The Retry-After to obey, capped at ``max_wait``."""
        return min(_retry_after(response), self.max_wait)

    def _no_more_waiting(self, retries: int, waited: float, wait: float,
                         deadline: float | None) -> str | None:
        """Why the next wait of ``wait`` s is not to be taken; None if it is."""
        if retries >= self.max_retries:
            return f"still busy after {retries} retries"
        if waited + wait > self.retry_budget:
            return (f"still busy after {waited:g} s of waiting: the next wait of {wait:g} s "
                    f"would pass the retry budget of {self.retry_budget:g} s")
        if deadline is not None and time.monotonic() + wait > deadline:
            return f"still busy, and waiting {wait:g} s more would pass the time allowed"
        return None

    def _send(self, method: str, path: str, *, auth: requests.auth.AuthBase, json: Any,
              data: Mapping[str, str] | None, deadline: float | None = None
              ) -> requests.Response:
        """One HTTP exchange; no answer -> PlatformError(status=0)."""
        if self._closed:
            raise RuntimeError("this RingCentral client is closed; make a new one")
        started = time.perf_counter()
        allowed = self.total_timeout
        if deadline is not None:
            allowed = min(allowed, deadline - time.monotonic())
            if allowed <= 0:
                raise PlatformError(0, None, "the time allowed ran out before this request",
                                    method=method, path=path)
        watch = self._deadlines.arm(allowed)
        try:
            if data is None and isinstance(auth, _Auth) and self._lean():
                response = self._send_lean(method, path, json, auth)
            else:
                response = self._session.request(method, self.server_url + path, json=json,
                                                 data=data, auth=auth, timeout=self.timeout,
                                                 allow_redirects=False)
        except requests.RequestException as exc:
            message = (self._past_deadline(method, allowed) if watch.fired
                       else self._no_answer(method, exc))
            log.debug("%s %s -> no answer after %.0f ms: %s", method, path,
                      (time.perf_counter() - started) * 1000, message)
            raise PlatformError(0, None, message, method=method, path=path) from exc
        finally:
            self._deadlines.disarm(watch)
        if watch.fired:  # cut short: what was read before the cut is not a whole answer
            raise PlatformError(0, None, self._past_deadline(method, allowed), method=method,
                                path=path)
        log.debug("%s %s -> %d in %.0f ms", method, path, response.status_code,
                  (time.perf_counter() - started) * 1000)
        return response

    def _lean(self) -> bool:
        """True when a command may skip requests' per-request machinery (about half of the
        client's CPU): the session is as this client built it (no proxies; no adapter
        mounted over ours, as the recorder does to record through vcrpy)."""
        session = self._session
        return (not session.proxies
                and session.get_adapter(self.server_url + "/") is self._adapter
                and isinstance(session.verify, bool | str))

    def _send_lean(self, method: str, path: str, body: Any, auth: _Auth) -> requests.Response:
        """One exchange on this thread's kept-alive ``http.client`` connection (the same
        timeouts and deadline watch as requests' path); the answer as a requests.Response,
        errors as requests' own."""
        session = self._session
        url = self.server_url + path
        headers = dict(session.headers)
        headers["Authorization"] = _SCHEME + auth._token
        payload = None
        if body is not None:
            payload = json_module.dumps(body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        status, reason, raw_headers, content = self._kept.exchange(
            self.server_url, method, path, payload, headers, session.verify)
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(raw_headers)
        response._content = content
        response.reason = reason
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url = url
        return response

    def _past_deadline(self, method: str, allowed: float) -> str:
        unsent = " (not retried: it may have been carried out)" if method == "POST" else ""
        return (f"no whole answer from {self.server_url} within {allowed:.3g} s (the total "
                f"deadline of a request){unsent}")

    def _no_answer(self, method: str, exc: requests.RequestException) -> str:
        server = self.server_url
        if isinstance(exc, requests.ConnectTimeout):
            return f"could not connect to {server}: timed out after {self.timeout[0]} s"
        if isinstance(exc, requests.Timeout):
            unsent = " (not retried: it may have been carried out)" if method == "POST" else ""
            return f"timed out after {self.timeout[1]} s waiting for {server} to answer{unsent}"
        reason: Any = exc.args[0] if exc.args else exc
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
        if isinstance(reason, urllib3.exceptions.NewConnectionError | requests.exceptions.SSLError):
            detail = str(reason).split(">: ", 1)[-1]
            return f"could not connect to {server}: {detail}"
        if isinstance(exc, requests.ConnectionError):
            return f"lost the connection to {server} before an answer came: {reason}"
        return f"request to {server} failed: {exc}"

    # ---------------------------------------------------------------- auth

    def _access_token(self, retry: bool, deadline: float | None = None) -> _Token:
        current = self._current
        if current is not None and self._clock() < current.renew_at:
            return current
        return self._renew(current.generation if current else 0, retry, deadline)

    def _renew(self, seen_generation: int, retry: bool, deadline: float | None = None
               ) -> _Token:
        """A token newer than ``seen_generation``: renewed here, or by whoever got there first.

        A 429/503 from the token endpoint is waited out here, outside the lock (or raised as
        RetryLater with ``retry=False``), so no thread ever sleeps holding the lock.
        """
        retries = 0
        waited = 0.0
        while True:
            try:
                return self._renew_once(seen_generation)
            except RetryLater as exc:
                if not retry:
                    raise
                stop = self._no_more_waiting(retries, waited, exc.retry_after, deadline)
                if stop:
                    raise PlatformError(exc.status, exc.error_code, f"{exc.message} ({stop})",
                                        method=exc.method, path=exc.path) from exc
                retries += 1
                waited += exc.retry_after
                log.warning("token endpoint busy (%d); retrying in %.1f s (retry %d of %d)",
                            exc.status, exc.retry_after, retries, self.max_retries)
                self._sleep(exc.retry_after)

    def _renew_once(self, seen_generation: int) -> _Token:
        attempts_before = self._attempts
        with self._lock:  # exactly one thread talks to the token endpoint; the others wait
            current = self._current
            if current is not None and current.generation != seen_generation:
                return current  # renewed while this thread waited
            if self._attempts != attempts_before and self._last_error is not None:
                error = self._last_error  # it failed while this thread waited: same answer
                raise PlatformError(error.status, error.error_code, error.message,
                                    method=error.method, path=error.path)
            wait = self._auth_retry_at - self._clock()
            if wait > 0:
                raise RetryLater(429, None, "the token endpoint asked to wait",
                                 retry_after=wait, method="POST", path=_TOKEN_PATH,
                                 budget=self.retry_budget)
            try:
                current = self._grant(seen_generation + 1)
            except RetryLater as exc:
                self._auth_retry_at = self._clock() + exc.retry_after
                raise
            except PlatformError as exc:
                self._last_error = exc
                self._attempts += 1
                raise
            self._last_error = None
            self._attempts += 1
            self._current = current
            return current

    def _grant(self, generation: int) -> _Token:
        """Refresh (single-use refresh token) or, failing that, a new JWT grant. Under lock."""
        if self._refresh_token is not None and self._clock() < self._refresh_until:
            refresh_token, self._refresh_token = self._refresh_token, None  # single use
            try:
                return self._token_request({"grant_type": "refresh_token",
                                            "refresh_token": refresh_token}, generation)
            except RetryLater:
                self._refresh_token = refresh_token  # not executed: still valid
                raise
            except PlatformError as exc:
                log.warning("token refresh failed (%s %s); using a new JWT grant", exc.status,
                            shown(exc.error_code or "no error code"))
        return self._token_request({"grant_type": _JWT_GRANT, "assertion": self._jwt or ""},
                                   generation)

    def _token_request(self, form: dict[str, str], generation: int) -> _Token:
        auth = requests.auth.HTTPBasicAuth(self._client_id or "", self._client_secret or "")
        response = self._call("POST", _TOKEN_PATH, auth=auth, data=form, retry=False)
        if not 200 <= response.status_code < 300:
            raise _error(response, "POST", _TOKEN_PATH,
                         note=" (token request: check the client id, client secret and JWT)")
        body = _json_body(response, "POST", _TOKEN_PATH)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise PlatformError(response.status_code, None,
                                "the token endpoint answered without an access_token",
                                method="POST", path=_TOKEN_PATH)
        now = self._clock()
        lifetime = _positive(body.get("expires_in"), _DEFAULT_TOKEN_LIFETIME)
        # Renew early: 60 s before expiry, or at 90% of the lifetime for short-lived tokens.
        renew_at = now + lifetime - min(60.0, 0.1 * lifetime)
        refresh = body.get("refresh_token")
        self._refresh_token = refresh if isinstance(refresh, str) and refresh else None
        self._refresh_until = now + _positive(body.get("refresh_token_expires_in"), math.inf)
        log.debug("%s: new access token (generation %d, valid %.0f s)",
                  "refresh" if form["grant_type"] == "refresh_token" else "JWT grant",
                  generation, lifetime)
        return _Token(access, generation, renew_at)

    def mount_adapter(self, prefix: str,
                      adapter: requests.adapters.BaseAdapter) -> Callable[[], None]:
        """Send this client's requests under ``prefix`` through ``adapter`` (a requests
        transport adapter: the recorder's); returns a function that puts the previous one
        back."""
        previous = self._session.adapters.get(prefix)
        self._session.mount(prefix, adapter)

        def unmount() -> None:
            if self._session.adapters.get(prefix) is not adapter:
                return
            if previous is not None:
                self._session.adapters[prefix] = previous
            else:
                del self._session.adapters[prefix]

        return unmount

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        self._closed = True
        self._session.close()
        self._kept.close()
        self._deadlines.close()

    def __enter__(self) -> RingCentral:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = "static token" if self._static else "jwt"
        closed = ", closed" if self._closed else ""
        return (f"RingCentral(server_url={self.server_url!r}, auth={auth!r}, "
                f"extension_number={self.extension_number!r}{closed})")


# -------------------------------------------------------------------- total deadlines

class _Watch:
    """One request's deadline; ``sock`` is the socket it went out on (set by it)."""

    __slots__ = ("deadline", "sock", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sock: Any = None
        self.fired = False


_armed = threading.local()  # the _Watch of the request this thread is sending, if any


class _Deadlines:
    """A total deadline per request, which the (connect, read) timeouts are not: those bound
    each wait for a byte, so an answer trickling a byte every few seconds would hold a worker
    for ever. One watchdog thread per client, started on first use and idle while nothing is
    in flight (and ending after ``_IDLE`` s of that), shuts down the socket of a request past its
    deadline; the blocked read then fails at once."""

    _TICK = 0.25  # deadlines are kept to within this
    _IDLE = 30.0  # the thread ends after this long with nothing in flight

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inflight: set[_Watch] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, seconds: float) -> _Watch:
        watch = _Watch(time.monotonic() + seconds)
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ivrscript-rest-deadlines")
                self._thread.start()
            if not self._inflight:
                self._cond.notify()
            self._inflight.add(watch)
        _armed.watch = watch
        return watch

    def disarm(self, watch: _Watch) -> None:
        _armed.watch = None
        with self._cond:
            self._inflight.discard(watch)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:  # waits on the condition, never time.sleep (tests patch that)
            while True:
                if not self._inflight and not self._closed:
                    self._cond.wait(self._IDLE)
                if self._closed or not self._inflight:
                    self._thread = None  # idle for a while (or closed): arm() starts another
                    return
                now = time.monotonic()
                for watch in self._inflight:
                    # No socket yet: still connecting (the connect timeout bounds that);
                    # cut it at the next tick once it has one.
                    if watch.deadline <= now and not watch.fired and watch.sock is not None:
                        watch.fired = True
                        try:
                            watch.sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                self._cond.wait(self._TICK)


class _KeptAlive:
    """One kept-alive ``http.client`` connection per thread to the platform: the lean path's
    transport (a command costs a fraction of urllib3's pool machinery). A connection the server
    closed while idle is noticed before reuse (as urllib3 does) and opened again; errors come
    out as requests' exceptions, so the client's messages stay the same."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        self.timeout = timeout
        self._local = threading.local()
        self._all: set[Any] = set()
        self._lock = threading.Lock()
        self._contexts: dict[Any, Any] = {}

    def _connection(self, base: str, verify: Any) -> tuple[Any, str]:
        """This thread's connection to ``base`` (the server URL) and the URL's own path."""
        key = (base, str(verify))
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == key:
            return held[1], held[2]
        if held is not None:
            self._drop(held[1])
        parts = urlsplit(base)
        host = parts.hostname or ""
        if parts.scheme == "https":
            conn: Any = http.client.HTTPSConnection(host, parts.port or 443,
                                                    timeout=self.timeout[0],
                                                    context=self._context(verify))
        else:
            conn = http.client.HTTPConnection(host, parts.port or 80, timeout=self.timeout[0])
        self._local.held = (key, conn, parts.path.rstrip("/"))
        with self._lock:
            self._all.add(conn)
        return conn, parts.path.rstrip("/")

    def _context(self, verify: Any) -> Any:
        key = str(verify)
        context = self._contexts.get(key)
        if context is None:
            if verify is False:
                context = ssl._create_unverified_context()
            else:
                context = ssl.create_default_context(
                    cafile=verify if isinstance(verify, str)
                    else requests.utils.DEFAULT_CA_BUNDLE_PATH)
            self._contexts[key] = context
        return context

    def _drop(self, conn: Any) -> None:
        conn.close()
        with self._lock:
            self._all.discard(conn)
        held = getattr(self._local, "held", None)
        if held is not None and held[1] is conn:
            self._local.held = None

    def exchange(self, base: str, method: str, path: str, body: bytes | None,
                 headers: dict[str, str], verify: Any
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """One request of ``path`` on the server at ``base``: status, reason, headers, body."""
        conn, prefix = self._connection(base, verify)
        target = prefix + path
        url = base + path
        if conn.sock is not None and wait_for_read(conn.sock, timeout=0.0):
            conn.close()  # the server closed it while idle (or sent what nobody asked for)
        if conn.sock is None:
            try:
                conn.connect()
            except TimeoutError as exc:
                self._drop(conn)
                raise requests.ConnectTimeout(urllib3.exceptions.ConnectTimeoutError(
                    None, f"timed out connecting to {url} ({self.timeout[0]} s)")) from exc
            except ssl.SSLError as exc:
                self._drop(conn)
                raise requests.exceptions.SSLError(exc) from exc
            except OSError as exc:
                self._drop(conn)
                raise requests.ConnectionError(urllib3.exceptions.NewConnectionError(
                    None, f"Failed to establish a new connection: {exc}")) from exc
            conn.sock.settimeout(self.timeout[1])
        watch = getattr(_armed, "watch", None)
        if watch is not None:
            watch.sock = conn.sock
        headers["Accept-Encoding"] = "identity"  # no gzip to undo here
        try:
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except TimeoutError as exc:
            self._drop(conn)
            raise requests.ReadTimeout(exc) from exc
        except ssl.SSLError as exc:
            self._drop(conn)
            raise requests.exceptions.SSLError(exc) from exc
        except (http.client.HTTPException, OSError) as exc:
            self._drop(conn)
            raise requests.ConnectionError(exc) from exc
        if answer.will_close:
            self._drop(conn)
        return answer.status, answer.reason or "", answer.getheaders(), content

    def close(self) -> None:
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()


def _watched(base: type) -> type:
    """urllib3's connection class ``base``, telling this thread's armed deadline (if any)
    which connection its request went out on."""

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_armed, "watch", None)
        if watch is not None:
            watch.sock = self.sock  # a kept-alive connection's (None for a new one)
        try:
            return base.request(self, *args, **kwargs)
        finally:
            if watch is not None:
                # The socket itself: http.client drops the connection's reference to it
                # before reading an answer that closes the connection.
                watch.sock = self.sock

    return type(f"Watched{base.__name__}", (base,), {"request": request})


_WATCHED_POOLS = {
    "http": type("WatchedHTTPConnectionPool", (urllib3.connectionpool.HTTPConnectionPool,),
                 {"ConnectionCls": _watched(urllib3.connection.HTTPConnection)}),
    "https": type("WatchedHTTPSConnectionPool", (urllib3.connectionpool.HTTPSConnectionPool,),
                  {"ConnectionCls": _watched(urllib3.connection.HTTPSConnection)}),
}


# -------------------------------------------------------------------- helpers

def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _auth_problem(token: str | None, client_id: str | None, client_secret: str | None,
                  jwt: str | None, names: Mapping[str, str]) -> str | None:
    """What is wrong with this set of credentials, in terms of ``names``; None if fine."""
    triple = {"client_id": client_id, "client_secret": client_secret, "jwt": jwt}
    given = [names[key] for key, value in triple.items() if value is not None]
    missing = [names[key] for key, value in triple.items() if value is None]
    if token is not None:
        if given:
            return (f"both {names['token']} and {_join(given)} are set: set only "
                    f"{names['token']} (static token) or only {_join(list(names.values())[1:])} "
                    "(JWT)")
        return None
    if not given:
        return (f"no RingCentral credentials: set {names['token']}, or "
                f"{_join(list(names.values())[1:])} (JWT)")
    if missing:
        return f"incomplete JWT credentials ({_join(given)} set): set {_join(missing)} too"
    return None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _check_server_url(url: str, name: str) -> str:
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL such as {PRODUCTION}, got {url!r}")
    return str(url).strip().rstrip("/")


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _party_path(session_id: str, party_id: str, *rest: str) -> str:
    tail = "/".join(_segment(part) for part in rest)
    return (f"{_ACCOUNT}/telephony/sessions/{_segment(session_id)}/parties/"
            f"{_segment(party_id)}/{tail}")


def _positive(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 and math.isfinite(number) else default


def _retry_after(response: requests.Response) -> float:
    """Seconds to wait: the Retry-After header (seconds, fractions allowed, or an HTTP date)."""
    default = _DEFAULT_RETRY_AFTER.get(response.status_code, 5.0)
    header = (response.headers.get("Retry-After") or "").strip()
    if not header:
        return default
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return default
    return max(seconds, 0.0)


def _body(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_code(response: requests.Response) -> str | None:
    body = _body(response)
    if body is None:
        return None
    code, _ = _code_and_message(body)
    return code


def _code_and_message(body: dict[str, Any]) -> tuple[str | None, str | None]:
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) \
        else {}
    code = body.get("errorCode") or first.get("errorCode") or body.get("error")
    message = body.get("message") or body.get("error_description") or first.get("message")
    parameter = first.get("parameterName")
    if message and parameter and str(parameter) not in str(message):
        message = f"{message} (parameter {parameter})"
    return (str(code) if code else None), (str(message) if message else None)


def _error(response: requests.Response, method: str, path: str, *,
           retry_after: float | None = None, budget: float | None = None,
           note: str = "") -> PlatformError:
    """The PlatformError (RetryLater when ``retry_after`` is given) for a non-2xx answer."""
    body = _body(response)
    code, message = _code_and_message(body) if body is not None else (None, None)
    if message is None:
        text = " ".join(response.text.split())[:200] if response.content else ""
        message = text or response.reason or "no message"
    if 300 <= response.status_code < 400 and response.headers.get("Location"):
        message = f"redirected to {response.headers['Location']}: {message}"
    message = _masked(clean(message, 300)) + note
    if retry_after is not None:
        return RetryLater(response.status_code, code, message, retry_after=retry_after,
                          method=method, path=path, budget=budget)
    return PlatformError(response.status_code, code, message, method=method, path=path)


# A phone number as a platform message may repeat it: "+1 (650) 555-0123", "16505550123".
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _masked(text: str) -> str:
    """``text`` with every run that looks like a phone number (7 digits or more, not a date)
    masked: personal data."""
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 7 or _DATE.fullmatch(match.group(0).strip()):
            return match.group(0)
        return mask_number(digits)

    return _PHONE.sub(mask, text)


def error_for(response: Any, method: str, path: str, *, retry: bool = True) -> PlatformError:
    """The error :meth:`RingCentral.request` raises for the non-2xx ``response`` (a
    :class:`RetryLater` for a 429/503 when ``retry`` is False). Replay rebuilds it from a
    recorded answer: ``response`` needs ``status_code``, ``reason``, ``headers``, ``content``,
    ``text`` and ``json()``."""
    if not retry and response.status_code in _DEFAULT_RETRY_AFTER:
        return _error(response, method, path, retry_after=_retry_after(response))
    return _error(response, method, path)


def _json_body(response: requests.Response, method: str, path: str) -> dict[str, Any]:
    """The answer's JSON object ({} for an empty answer)."""
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        raise PlatformError(response.status_code, None,
                            f"answered with a body that is not JSON: {response.text[:200]!r}",
                            method=method, path=path) from None
    if not isinstance(body, dict):
        raise PlatformError(response.status_code, None,
                            f"answered with JSON that is not an object: {body!r:.200}",
                            method=method, path=path)
    return body
