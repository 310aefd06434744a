"""The RingCentral client against a fake platform over real loopback HTTP."""

from __future__ import annotations

import ast
import base64
import email.utils
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import urllib3.connectionpool
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

import ivrscript.ringcentral as ringcentral_module
from ivrscript.errors import ConfigError, PlatformError, RetryLater
from ivrscript.ringcentral import PRODUCTION, RingCentral, _retry_after

STATIC = "static-tok-Zq9xW"
CLIENT_ID = "cid-Kd81"
SECRET = "sekret-Pa55w0rd"
JWT = "eyJhbGciOiJSUzI1NiJ9.cGF5bG9hZA.c2lnbmF0dXJl"
TOKEN_PATH = "/restapi/oauth/token"
ACCOUNT = "/restapi/v1.0/account/~"
PARTY = f"{ACCOUNT}/telephony/sessions/s-1/parties/p-caller"
PHONE = "+16505550123"

Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Seen:
    """One request as the fake platform received it."""

    method: str
    path: str
    raw_uri: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class FakePlatform:
    """A scripted RingCentral on loopback.

    API requests need a Bearer token in ``valid`` (else 401 OAU-213), then get the next reply
    from ``replies`` (a tuple or a function of the request), else ``default``. The token
    endpoint issues ``access-N``/``refresh-N`` (refresh tokens single use) unless
    ``token_replies`` has a scripted answer.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.token_seen: list[Seen] = []
        self.replies: deque[Reply | Callable[[Seen], Reply]] = deque()
        self.default: Reply | None = None
        self.token_replies: deque[Reply] = deque()
        self.valid: set[str] = {STATIC}
        self.refresh_valid: set[str] = set()
        self.accept_issued = True
        self.expires_in = 3600
        self.before_reject: Callable[[], Any] | None = None
        self.events: list[threading.Event] = []
        self._issued = 0
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True,
                                  request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # A short poll interval only makes shutdown() quick; nothing waits on it otherwise.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.replies.append((status, body, headers or {}))

    def event(self) -> threading.Event:
        """An event that stop() sets, so no handler outlives the test."""
        event = threading.Event()
        self.events.append(event)
        return event

    def stop(self) -> None:
        for event in self.events:
            event.set()
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        seen = Seen(request.method, request.path, environ.get("RAW_URI", request.path),
                    dict(request.headers), request.get_data())
        if request.path == TOKEN_PATH:
            reply = self._token(seen)
        else:
            with self.lock:
                self.seen.append(seen)
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in self.valid:
                if self.before_reject is not None:
                    self.before_reject()
                reply = (401, {"errorCode": "OAU-213", "message": "Token not found"}, {})
            else:
                with self.lock:
                    item = self.replies.popleft() if self.replies else self.default
                if item is None:
                    reply = (500, {"errorCode": "TEST", "message": "no scripted reply"}, {})
                else:
                    reply = item(seen) if callable(item) else item
        return _response(reply)(environ, start_response)

    def _token(self, seen: Seen) -> Reply:
        with self.lock:
            self.token_seen.append(seen)
            if self.token_replies:
                return self.token_replies.popleft()
            form = seen.form
            if form.get("grant_type") == "refresh_token":
                if form.get("refresh_token") not in self.refresh_valid:
                    return (400, {"error": "invalid_grant", "errorCode": "OAU-211",
                                  "message": "Token is revoked"}, {})
                self.refresh_valid.discard(form["refresh_token"])
            elif form.get("assertion") != JWT:
                return (400, {"error": "invalid_grant", "errorCode": "OAU-140",
                              "message": "Invalid assertion"}, {})
            self._issued += 1
            access, refresh = f"access-{self._issued}", f"refresh-{self._issued}"
            if self.accept_issued:
                self.valid.add(access)
            self.refresh_valid.add(refresh)
            return (200, {"access_token": access, "token_type": "bearer",
                          "expires_in": self.expires_in, "refresh_token": refresh,
                          "refresh_token_expires_in": 604800, "scope": "CallControl"}, {})


def _response(reply: Reply) -> Response:
    status, body, headers = reply
    if isinstance(body, dict | list):
        return Response(json.dumps(body), status, headers, content_type="application/json")
    return Response(body or "", status, headers, content_type="text/html")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakePlatform]:
    platform = FakePlatform()
    yield platform
    platform.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(fake: FakePlatform, sleeps: list[float]) -> Iterator[Callable[..., RingCentral]]:
    """Clients on the fake platform (static token unless JWT credentials are given), closed
    at the end; Retry-After waits are recorded in ``sleeps`` instead of slept."""
    made: list[RingCentral] = []

    def make(*, real_sleep: bool = False, **kwargs: Any) -> RingCentral:
        if not {"token", "client_id", "client_secret", "jwt"} & kwargs.keys():
            kwargs["token"] = STATIC
        kwargs.setdefault("server_url", fake.url)
        client = RingCentral(**kwargs)
        if not real_sleep:
            client._sleep = sleeps.append
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., RingCentral]) -> RingCentral:
    return make_client()


@pytest.fixture
def jwt_client(make_client: Callable[..., RingCentral]) -> RingCentral:
    return make_client(client_id=CLIENT_ID, client_secret=SECRET, jwt=JWT)


# ------------------------------------------------------------------ commands on the wire

def test_play_posts_resources_and_always_sends_interrupt_by_dtmf(fake, client):
    """Play goes to the caller party with every URI, interruptByDtmf (even False) and repeat."""
    fake.reply(201, {"id": "171888866234845407", "status": "InProgress"})
    command_id = client.play("s-1", "p-caller", ["https://x/a.wav", "https://x/b.wav"],
                             interrupt_by_dtmf=False, repeat=2)
    assert command_id == "171888866234845407"
    [seen] = fake.seen
    assert (seen.method, seen.path) == ("POST", f"{PARTY}/play")
    assert seen.json == {"resources": [{"uri": "https://x/a.wav"}, {"uri": "https://x/b.wav"}],
                         "interruptByDtmf": False, "repeatCount": 2}
    assert seen.headers["Authorization"] == f"Bearer {STATIC}"
    assert seen.headers["Content-Type"] == "application/json"


def test_play_numeric_id_becomes_a_string(fake, client):
    """A numeric command id is returned as a string."""
    fake.reply(201, {"id": 42})
    assert client.play("s-1", "p-caller", ["u"], interrupt_by_dtmf=True, repeat=0) == "42"
    assert fake.seen[0].json["interruptByDtmf"] is True


def test_play_without_id_is_a_platform_error(fake, client):
    """A play answer with no id cannot be matched to its update: PlatformError."""
    fake.reply(201, {"status": "InProgress"})
    with pytest.raises(PlatformError, match="no command id"):
        client.play("s-1", "p-caller", ["u"], interrupt_by_dtmf=True, repeat=1)


def test_cancel_play_deletes_the_command(fake, client):
    """Cancel play is DELETE on the play's id."""
    fake.reply(204)
    assert client.cancel_play("s-1", "p-caller", "123") is None
    assert [(s.method, s.path) for s in fake.seen] == [("DELETE", f"{PARTY}/play/123")]


def test_collect_204_gives_none_and_omits_a_none_terminator(fake, client):
    """Collect sends times in ms, no terminator key when None; a 204 answer has no id."""
    fake.reply(204)
    result = client.collect("s-1", "p-caller", ["xxxx", "0"], timeout_ms=8000,
                            inter_digit_timeout_ms=3000, terminator=None, reset_input=True)
    assert result is None
    [seen] = fake.seen
    assert (seen.method, seen.path) == ("POST", f"{PARTY}/collect")
    assert seen.json == {"patterns": ["xxxx", "0"], "timeout": 8000,
                         "interDigitTimeout": 3000, "resetInput": True}


def test_collect_201_with_id_gives_the_id(fake, client):
    """A collect answered 201 with an id returns that id; a terminator is sent when given."""
    fake.reply(201, {"id": "99"})
    result = client.collect("s-1", "p-caller", ["xx"], timeout_ms=1, inter_digit_timeout_ms=2,
                            terminator="#", reset_input=False)
    assert result == "99"
    assert fake.seen[0].json == {"patterns": ["xx"], "timeout": 1, "interDigitTimeout": 2,
                                 "terminator": "#", "resetInput": False}


def test_collect_200_without_id_gives_none(fake, client):
    """A 200 without an id is tolerated as no id."""
    fake.reply(200, {})
    assert client.collect("s-1", "p-caller", ["1"], timeout_ms=1, inter_digit_timeout_ms=1,
                          terminator="#", reset_input=True) is None


def test_forward_to_extension_or_number_on_the_app_party(fake, client):
    """Forward goes to the app party with exactly one of extensionNumber / phoneNumber."""
    fake.reply(200, {"id": "p-new", "status": {"code": "Proceeding"}})
    fake.reply(200, {})
    assert client.forward("s-1", "p-app", extension="101")["id"] == "p-new"
    assert client.forward("s-1", "p-app", phone_number=PHONE) == {}
    path = f"{ACCOUNT}/telephony/sessions/s-1/parties/p-app/forward"
    assert [(s.method, s.path, s.json) for s in fake.seen] == [
        ("POST", path, {"extensionNumber": "101"}), ("POST", path, {"phoneNumber": PHONE})]


@pytest.mark.parametrize("kwargs", [{}, {"extension": "1", "phone_number": PHONE}])
def test_forward_needs_exactly_one_target(fake, client, kwargs):
    """Neither or both targets: ValueError, nothing sent."""
    with pytest.raises(ValueError, match="exactly one"):
        client.forward("s-1", "p-app", **kwargs)
    assert fake.seen == []


def test_drop_deletes_the_session(fake, client):
    """Drop is DELETE on the session."""
    fake.reply(204)
    client.drop("s-1")
    assert [(s.method, s.path) for s in fake.seen] == [
        ("DELETE", f"{ACCOUNT}/telephony/sessions/s-1")]


def test_ring_out_rings_the_customer_first_then_the_app(fake, make_client):
    """RingOut: the customer is `from`, the app's extension `to` (or an explicit to_number)."""
    client = make_client(extension_number="120")
    ring = {"id": "r-9", "status": {"callStatus": "InProgress"}}
    fake.reply(200, ring)
    fake.reply(200, ring)
    assert client.ring_out(PHONE) == ring
    client.ring_out(PHONE, "+15550199")
    path = f"{ACCOUNT}/extension/~/ring-out"
    assert [(s.method, s.path, s.json) for s in fake.seen] == [
        ("POST", path, {"from": {"phoneNumber": PHONE}, "to": {"phoneNumber": "120"}}),
        ("POST", path, {"from": {"phoneNumber": PHONE}, "to": {"phoneNumber": "+15550199"}})]


def test_ring_out_without_extension_says_what_to_set(fake, client):
    """No to_number and no extension_number: ConfigError naming the variable, nothing sent."""
    with pytest.raises(ConfigError, match="RINGCENTRAL_EXTENSION_NUMBER"):
        client.ring_out(PHONE)
    assert fake.seen == []


def test_ring_out_status_and_cancel(fake, client):
    """Poll with GET, cancel with DELETE, both on the RingOut id."""
    fake.reply(200, {"id": "r-9", "status": {"callStatus": "Success"}})
    fake.reply(204)
    assert client.ring_out_status("r-9")["status"]["callStatus"] == "Success"
    client.cancel_ring_out("r-9")
    path = f"{ACCOUNT}/extension/~/ring-out/r-9"
    assert [(s.method, s.path) for s in fake.seen] == [("GET", path), ("DELETE", path)]


def test_ids_are_quoted_as_one_path_segment(fake, client):
    """An id can never add path segments."""
    fake.reply(204)
    client.drop("s-a/b?c")
    assert fake.seen[0].raw_uri == f"{ACCOUNT}/telephony/sessions/s-a%2Fb%3Fc"


def test_request_takes_paths_relative_to_the_server(fake, client):
    """request() adds a missing leading slash and refuses absolute URLs."""
    fake.reply(200, {"ok": True})
    assert client.request("get", "restapi/v1.0/account/~").json() == {"ok": True}
    assert (fake.seen[0].method, fake.seen[0].path) == ("GET", "/restapi/v1.0/account/~")
    with pytest.raises(ValueError, match="relative"):
        client.request("GET", "https://elsewhere.example/x")


def test_every_request_has_explicit_timeouts_and_the_pool_size(make_client, fake,
                                                                monkeypatch):
    """Each request carries (connect, read) timeouts, on the lean path and through the
    session alike; the adapter pools pool_size connections."""
    client = make_client(timeout=(1.5, 4.0), pool_size=7)
    assert client._session.get_adapter(fake.url)._pool_maxsize == 7
    calls: list[Any] = []
    original = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout")
        calls.append((timeout.connect_timeout, timeout.read_timeout))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", spy)
    import http.client

    lean: list[Any] = []
    sent = http.client.HTTPConnection.request

    def watch(self: Any, *args: Any, **kwargs: Any) -> Any:
        # the lean path's kept-alive connection: connected within 1.5 s, 4 s per read
        lean.append((self.timeout, self.sock.gettimeout()))
        return sent(self, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "request", watch)
    fake.reply(204)
    fake.reply(200, {})
    client.drop("s-1")
    client.ring_out_status("r")
    assert lean == [(1.5, 4.0)] * 2 and calls == []
    lean.clear()
    client._session.proxies["ftp"] = "http://unused.invalid"  # not lean: through requests
    fake.reply(204)
    client.drop("s-1")
    assert calls == [(1.5, 4.0)]


# ------------------------------------------------------------------ errors

def test_error_body_becomes_platform_error_fields(fake, client):
    """A non-2xx JSON body gives status, errorCode, message, method and path."""
    fake.reply(404, {"errorCode": "CMN-102", "message": "Resource for parameter [sessionId] "
                     "is not found", "errors": [{"errorCode": "CMN-102", "message": "x",
                                                 "parameterName": "sessionId"}]})
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    error = info.value
    assert type(error) is PlatformError
    assert (error.status, error.error_code, error.errorCode) == (404, "CMN-102", "CMN-102")
    assert error.message == "Resource for parameter [sessionId] is not found"
    assert (error.method, error.path) == ("DELETE", f"{ACCOUNT}/telephony/sessions/s-1")


def test_error_code_from_the_errors_list(fake, client):
    """With no top-level errorCode, the first entry of `errors` gives code and message."""
    fake.reply(400, {"errors": [{"errorCode": "CMN-101", "message": "Parameter value is "
                                 "invalid", "parameterName": "patterns"}]})
    with pytest.raises(PlatformError) as info:
        client.collect("s-1", "p-caller", ["?"], timeout_ms=1, inter_digit_timeout_ms=1,
                       terminator=None, reset_input=True)
    assert info.value.error_code == "CMN-101"
    assert "invalid" in info.value.message and "patterns" in info.value.message


@pytest.mark.parametrize("body", ["<html><body><h1>Bad Gateway</h1></body></html>", ""])
def test_non_json_error_body(fake, client, body):
    """A non-JSON (or empty) error body still gives a PlatformError with a message."""
    fake.reply(502, body)
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    assert (info.value.status, info.value.error_code) == (502, None)
    assert "bad gateway" in info.value.message.lower()


def test_429_is_retried_after_retry_after_then_succeeds(fake, make_client, caplog):
    """429 with Retry-After: wait that long (really), send the same request again, log WARNING."""
    client = make_client(real_sleep=True)
    fake.reply(429, {"errorCode": "CMN-301", "message": "Request rate exceeded"},
               {"Retry-After": "0.05"})
    fake.reply(201, {"id": "7"})
    caplog.set_level(logging.WARNING, logger="ivrscript.ringcentral")
    started = time.monotonic()
    assert client.play("s-1", "p-caller", ["u"], interrupt_by_dtmf=True, repeat=1) == "7"
    assert time.monotonic() - started >= 0.05
    assert len(fake.seen) == 2 and fake.seen[0].json == fake.seen[1].json
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "429" in record.getMessage()


def test_503_without_retry_after_waits_5_s(fake, client, sleeps):
    """503 is retried like 429; without Retry-After the wait is 5 s."""
    fake.reply(503, "Service Unavailable")
    fake.reply(204)
    client.drop("s-1")
    assert sleeps == [5.0]
    assert len(fake.seen) == 2


def test_retries_are_capped_then_platform_error(fake, make_client, sleeps):
    """After max_retries retries a 429 gives a plain PlatformError (not RetryLater)."""
    client = make_client(max_retries=2)
    for _ in range(4):
        fake.reply(429, {"errorCode": "CMN-301", "message": "Request rate exceeded"},
                   {"Retry-After": "0"})
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    assert type(info.value) is PlatformError
    assert (info.value.status, info.value.error_code) == (429, "CMN-301")
    assert "after 2 retries" in info.value.message
    assert len(fake.seen) == 3 and sleeps == [0.0, 0.0]


def test_retry_false_raises_retry_later_at_once(fake, client, sleeps):
    """retry=False: a 429 raises RetryLater with the Retry-After seconds, no wait, one request."""
    fake.reply(429, {"errorCode": "CMN-301", "message": "Request rate exceeded"},
               {"Retry-After": "0.1"})
    with pytest.raises(RetryLater) as info:
        client.play("s-1", "p-caller", ["u"], interrupt_by_dtmf=True, repeat=1, retry=False)
    error = info.value
    assert isinstance(error, PlatformError)
    assert (error.status, error.error_code, error.retry_after) == (429, "CMN-301", 0.1)
    assert (error.method, error.path) == ("POST", f"{PARTY}/play")
    assert len(fake.seen) == 1 and sleeps == []


@pytest.mark.parametrize(("status", "wait"), [(429, 30.0), (503, 5.0)])
def test_retry_later_defaults_without_header(fake, client, status, wait):
    """Without Retry-After: 30 s for 429, 5 s for 503."""
    fake.reply(status, "")
    with pytest.raises(RetryLater) as info:
        client.drop("s-1", retry=False)
    assert info.value.retry_after == wait


def test_retry_after_header_forms():
    """Retry-After accepts seconds with fractions and HTTP dates; junk gives the default."""
    def parse(value: str | None, status: int = 429) -> float:
        response = requests.Response()
        response.status_code = status
        if value is not None:
            response.headers["Retry-After"] = value
        return _retry_after(response)

    assert parse("2") == 2.0 and parse(" 0.25 ") == 0.25 and parse("-3") == 0.0
    assert parse(None) == 30.0 and parse("soon") == 30.0 and parse("nan", 503) == 5.0
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < parse(later) <= 121


def test_post_that_times_out_is_not_retried(fake, make_client):
    """A POST with no answer within the read timeout may have run: status 0, sent once."""
    client = make_client(timeout=(2.0, 0.2))
    received, release = threading.Event(), fake.event()

    def slow(seen: Seen) -> Reply:
        received.set()
        release.wait(5)
        return (201, {"id": "1"}, {})

    fake.replies.extend([slow, (201, {"id": "2"}, {})])
    with pytest.raises(PlatformError) as info:
        client.play("s-1", "p-caller", ["u"], interrupt_by_dtmf=True, repeat=1)
    assert received.wait(5)
    error = info.value
    assert (error.status, error.error_code, error.method) == (0, None, "POST")
    assert "timed out" in error.message and "not retried" in error.message
    assert len(fake.seen) == 1
    release.set()


def test_no_server_is_status_0_could_not_connect(make_client):
    """Nothing listening: PlatformError(status=0) saying it could not connect, and where."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = make_client(server_url=url)
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    assert info.value.status == 0 and info.value.error_code is None
    assert f"could not connect to {url}" in info.value.message


# ------------------------------------------------------------------ auth

def test_jwt_grant_uses_basic_auth_and_a_form_body(fake, jwt_client):
    """The first request runs the JWT grant (Basic client credentials, form body)."""
    assert fake.token_seen == []  # no I/O in __init__
    fake.reply(204)
    jwt_client.drop("s-1")
    [grant] = fake.token_seen
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert grant.method == "POST"
    assert grant.headers["Authorization"] == f"Basic {basic}"
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert grant.form == {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                          "assertion": JWT}
    assert fake.seen[0].headers["Authorization"] == "Bearer access-1"


@pytest.mark.parametrize(("lifetime", "margin"), [(100, 10.0), (3600, 60.0)])
def test_token_is_refreshed_before_expiry(fake, jwt_client, lifetime, margin):
    """Renew when less than 60 s (or 10% of a short lifetime) is left, by refresh grant."""
    clock = FakeClock()
    jwt_client._clock = clock
    fake.expires_in = lifetime
    fake.default = (204, None, {})
    jwt_client.drop("s-1")
    clock.now += lifetime - margin - 1  # just more than the margin left
    jwt_client.drop("s-1")
    assert len(fake.token_seen) == 1
    clock.now += 2  # now less than the margin left
    jwt_client.drop("s-1")
    assert [t.form["grant_type"] for t in fake.token_seen] == [
        "urn:ietf:params:oauth:grant-type:jwt-bearer", "refresh_token"]
    assert fake.token_seen[1].form["refresh_token"] == "refresh-1"
    assert [s.headers["Authorization"] for s in fake.seen] == [
        "Bearer access-1", "Bearer access-1", "Bearer access-2"]


def test_refresh_token_is_used_once(fake, jwt_client):
    """Each refresh uses the refresh token from the latest answer, never an old one."""
    clock = FakeClock()
    jwt_client._clock = clock
    fake.default = (204, None, {})
    for _ in range(3):
        jwt_client.drop("s-1")
        clock.now += 3600
    assert [t.form.get("refresh_token") for t in fake.token_seen] == [
        None, "refresh-1", "refresh-2"]
    assert fake.seen[-1].headers["Authorization"] == "Bearer access-3"


def test_failed_refresh_falls_back_to_a_new_jwt_grant(fake, jwt_client, caplog):
    """A refresh the platform rejects is followed by a JWT grant; the request succeeds."""
    clock = FakeClock()
    jwt_client._clock = clock
    fake.default = (204, None, {})
    jwt_client.drop("s-1")
    fake.refresh_valid.clear()  # the platform revoked refresh-1
    clock.now += 3600
    caplog.set_level(logging.WARNING, logger="ivrscript.ringcentral")
    jwt_client.drop("s-1")
    assert [t.form["grant_type"].rsplit(":", 1)[-1] for t in fake.token_seen] == [
        "jwt-bearer", "refresh_token", "jwt-bearer"]
    assert fake.seen[-1].headers["Authorization"] == "Bearer access-2"
    assert "OAU-211" in caplog.text


def test_eight_threads_hitting_401_cause_one_refresh(fake, jwt_client):
    """Eight requests rejected together with the same token: ONE refresh, all eight succeed."""
    fake.default = (200, {"ok": True}, {})
    jwt_client.request("GET", f"{ACCOUNT}/extension/~")
    assert len(fake.token_seen) == 1
    fake.valid.clear()  # the platform no longer knows access-1
    fake.before_reject = threading.Barrier(8, timeout=5).wait  # answer all 401s together
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            statuses.append(jwt_client.request("GET", f"{ACCOUNT}/extension/~").status_code)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == [] and statuses == [200] * 8
    assert [t.form["grant_type"] for t in fake.token_seen[1:]] == ["refresh_token"]
    with_old = [s for s in fake.seen if s.headers["Authorization"] == "Bearer access-1"]
    assert len(with_old) == 9  # the warm-up and the eight
    assert sum(s.headers["Authorization"] == "Bearer access-2" for s in fake.seen) == 8


def test_401_after_renewal_is_a_platform_error(fake, jwt_client):
    """Renew once and retry once: a second 401 is raised, with exactly one renewal."""
    fake.accept_issued = False
    with pytest.raises(PlatformError) as info:
        jwt_client.drop("s-1")
    assert (info.value.status, info.value.error_code) == (401, "OAU-213")
    assert len(fake.token_seen) == 2 and len(fake.seen) == 2


def test_static_token_401_is_a_platform_error(fake, make_client):
    """A static token cannot be renewed: its 401 is raised at once."""
    client = make_client(token="not-a-known-token")
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    assert (info.value.status, info.value.error_code) == (401, "OAU-213")
    assert len(fake.seen) == 1 and fake.token_seen == []


def test_token_endpoint_error_is_a_platform_error(fake, jwt_client):
    """A rejected grant gives PlatformError with the OAU code; no API request goes out."""
    fake.token_replies.append((400, {"error": "invalid_client", "errorCode": "OAU-123",
                                     "error_description": "Invalid client"}, {}))
    with pytest.raises(PlatformError) as info:
        jwt_client.drop("s-1")
    error = info.value
    assert (error.status, error.error_code, error.path) == (400, "OAU-123", TOKEN_PATH)
    assert "Invalid client" in error.message and "client secret" in error.message
    assert fake.seen == []


def test_rate_limited_token_endpoint_is_not_hammered(fake, jwt_client):
    """A 429 from the token endpoint with retry=False: RetryLater, and no new token request
    until the wait is over."""
    clock = FakeClock()
    jwt_client._clock = clock
    fake.token_replies.append((429, {"errorCode": "CMN-301", "message": "Rate"},
                               {"Retry-After": "20"}))
    with pytest.raises(RetryLater) as first:
        jwt_client.drop("s-1", retry=False)
    assert first.value.retry_after == 20.0
    clock.now += 5
    with pytest.raises(RetryLater) as second:
        jwt_client.drop("s-1", retry=False)
    assert second.value.retry_after == pytest.approx(15.0)
    assert len(fake.token_seen) == 1
    clock.now += 15
    fake.reply(204)
    jwt_client.drop("s-1", retry=False)
    assert len(fake.token_seen) == 2 and len(fake.seen) == 1


# ------------------------------------------------------------------ configuration

def test_init_needs_exactly_one_way_to_authenticate():
    """No credentials, an incomplete JWT triple, or both kinds: ConfigError saying what to set."""
    with pytest.raises(ConfigError, match="token=.*client_id=, client_secret= and jwt="):
        RingCentral()
    with pytest.raises(ConfigError, match="set client_secret= and jwt= too"):
        RingCentral(client_id=CLIENT_ID)
    with pytest.raises(ConfigError, match="both token= and jwt="):
        RingCentral(token=STATIC, jwt=JWT)
    with pytest.raises(ConfigError, match="server_url"):
        RingCentral("platform.ringcentral.com", token=STATIC)


ALL_NAMES = ["RINGCENTRAL_TOKEN", "RINGCENTRAL_CLIENT_ID", "RINGCENTRAL_CLIENT_SECRET",
             "RINGCENTRAL_JWT"]


@pytest.mark.parametrize(("environ", "names"), [
    ({}, ALL_NAMES),
    ({"RINGCENTRAL_TOKEN": "  "}, ALL_NAMES),
    ({"RINGCENTRAL_CLIENT_ID": "c"}, ["RINGCENTRAL_CLIENT_SECRET and RINGCENTRAL_JWT too"]),
    ({"RINGCENTRAL_CLIENT_ID": "c", "RINGCENTRAL_CLIENT_SECRET": "s"}, ["RINGCENTRAL_JWT too"]),
    ({"RINGCENTRAL_TOKEN": "t", "RINGCENTRAL_JWT": "j"}, ["RINGCENTRAL_TOKEN", "RINGCENTRAL_JWT"]),
    ({"RINGCENTRAL_TOKEN": "t", "RINGCENTRAL_SERVER_URL": "ftp://x"}, ["RINGCENTRAL_SERVER_URL"]),
])
def test_from_env_names_the_variables_to_set(environ, names):
    """from_env's ConfigError names exactly the variables to set."""
    with pytest.raises(ConfigError) as info:
        RingCentral.from_env(environ)
    for name in names:
        assert name in str(info.value)


def test_from_env_builds_clients():
    """Static token or JWT triple, server URL (default production) and extension number."""
    with RingCentral.from_env({"RINGCENTRAL_TOKEN": STATIC}) as static:
        assert static.server_url == PRODUCTION and static.extension_number is None
    environ = {"RINGCENTRAL_CLIENT_ID": CLIENT_ID, "RINGCENTRAL_CLIENT_SECRET": SECRET,
               "RINGCENTRAL_JWT": JWT, "RINGCENTRAL_EXTENSION_NUMBER": "120",
               "RINGCENTRAL_SERVER_URL": "https://platform.devtest.ringcentral.com/"}
    with RingCentral.from_env(environ) as jwt:
        assert jwt.server_url == "https://platform.devtest.ringcentral.com"
        assert jwt.extension_number == "120"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"RINGCENTRAL_TOKEN": "t"}, True),
    ({"RINGCENTRAL_TOKEN": ""}, False),
    ({"RINGCENTRAL_CLIENT_ID": "c", "RINGCENTRAL_CLIENT_SECRET": "s"}, False),
    ({"RINGCENTRAL_CLIENT_ID": "c", "RINGCENTRAL_CLIENT_SECRET": "s", "RINGCENTRAL_JWT": "j"},
     True),
])
def test_credentials_in_env(environ, expected):
    """True for a static token or the full JWT triple only."""
    assert RingCentral.credentials_in_env(environ) is expected


def test_closed_client_refuses_requests(fake, make_client):
    """After close() (or the with block) the client says it is closed."""
    with make_client() as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        client.drop("s-1")
    assert fake.seen == []


# ------------------------------------------------------------------ no secrets anywhere

def test_repr_shows_no_secret():
    """repr names the server and the kind of auth, never a token, JWT or secret."""
    with RingCentral(token=STATIC) as static, \
            RingCentral(client_id=CLIENT_ID, client_secret=SECRET, jwt=JWT) as jwt:
        for text in (repr(static), repr(jwt)):
            assert PRODUCTION in text
            for secret in (STATIC, CLIENT_ID, SECRET, JWT, "Bearer"):
                assert secret not in text


def test_logs_show_no_secrets_and_mask_numbers(fake, make_client, caplog):
    """DEBUG logs each request (method, path, status, ms) but no token, JWT, secret or
    Authorization header; INFO and above mask phone numbers."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="ivrscript")
    client = make_client(client_id=CLIENT_ID, client_secret=SECRET, jwt=JWT,
                         extension_number="120")
    fake.reply(200, {"id": "r-1"})
    client.ring_out(PHONE)
    fake.valid.clear()
    fake.default = (200, {}, {})
    client.forward("s-1", "p-app", phone_number=PHONE)  # 401, refresh, retry
    fake.reply(429, {"errorCode": "CMN-301", "message": f"limit for {PHONE}"},
               {"Retry-After": "0"})
    client.drop("s-1")
    with pytest.raises(PlatformError):
        make_client(token="bad-tok-77").drop("s-1")
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (STATIC, CLIENT_ID, SECRET, JWT, "access-", "refresh-1", "refresh-2",
                   "Bearer", "Basic", "bad-tok-77"):
        assert secret not in text
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("**********23" in line for line in loud)
    assert not any(PHONE[2:] in line for line in loud)
    assert f"POST {ACCOUNT}/extension/~/ring-out -> 200 in" in text
    assert f"POST {TOKEN_PATH} -> 200 in" in text
    assert any(r.levelno == logging.WARNING and "429" in r.getMessage()
               for r in caplog.records)


def test_module_imports_requests_and_none_of_the_other_edges():
    """The client imports requests, never werkzeug, vcrpy, ngrok or ipywidgets."""
    tree = ast.parse(Path(ringcentral_module.__file__).read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    assert "requests" in roots
    assert not roots & {"werkzeug", "vcr", "ngrok", "ipywidgets"}


# ------------------------------------------------------------------ bounded waits


@pytest.mark.parametrize("header", ["86400", "1e300", "1e309", "inf", "nan",
                                    "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_every_wait_is_capped_at_max_wait(fake, make_client, sleeps, header):
    """A huge, non-finite or far-future Retry-After waits at most ``max_wait`` (default 30 s):
    never a day, never an OverflowError; retry=False hands on the capped wait."""
    client = make_client()
    fake.reply(429, {"errorCode": "CMN-301", "message": "Rate"}, {"Retry-After": header})
    fake.reply(204)
    client.drop("s-1")
    assert sleeps == [30.0] and client.max_wait == 30.0
    fake.reply(503, "", {"Retry-After": header})
    with pytest.raises(RetryLater) as info:
        client.drop("s-1", retry=False)
    assert 0 <= info.value.retry_after <= 30.0 and info.value.budget == client.retry_budget


def test_a_429_without_retry_after_waits_the_default_once(fake, make_client, sleeps):
    """429 with no Retry-After: the documented 30 s once; a second 30 s would pass the retry
    budget (45 s by default), so the command fails instead of waiting 4 x 30 s."""
    client = make_client(max_retries=4)
    for _ in range(5):
        fake.reply(429, {"errorCode": "CMN-301", "message": "Rate"})
    with pytest.raises(PlatformError) as info:
        client.drop("s-1")
    assert sleeps == [30.0] and len(fake.seen) == 2
    assert type(info.value) is PlatformError and "retry budget of 45 s" in info.value.message


def test_the_retry_budget_bounds_the_waits_of_one_command(fake, make_client, sleeps):
    """Waits add up per command: with retry_budget=10 and Retry-After 4, two waits (8 s) are
    taken and the third (12 s) is not; a later command has its own budget."""
    client = make_client(max_retries=10, retry_budget=10)
    for _ in range(3):
        fake.reply(429, "", {"Retry-After": "4"})
    with pytest.raises(PlatformError, match="retry budget of 10 s"):
        client.drop("s-1")
    assert sleeps == [4.0, 4.0]
    fake.reply(429, "", {"Retry-After": "4"})
    fake.reply(204)
    client.drop("s-1")
    assert sleeps == [4.0, 4.0, 4.0]


def test_a_busy_token_endpoint_waits_at_most_max_wait(fake, jwt_client):
    """A 429 from the token endpoint with Retry-After: 86400 holds new requests back for
    max_wait, not a day."""
    clock = FakeClock()
    jwt_client._clock = clock
    fake.token_replies.append((429, {"errorCode": "CMN-301", "message": "Rate"},
                               {"Retry-After": "86400"}))
    with pytest.raises(RetryLater) as first:
        jwt_client.drop("s-1", retry=False)
    assert first.value.retry_after == 30.0
    clock.now += 30
    fake.reply(204)
    jwt_client.drop("s-1", retry=False)
    assert len(fake.token_seen) == 2


def test_within_bounds_a_command_with_its_retries(fake, make_client, sleeps):
    """``within`` (what dial's timeout uses): a wait that would pass it is not taken."""
    client = make_client(extension_number="101")
    fake.reply(429, "", {"Retry-After": "20"})
    with pytest.raises(PlatformError, match="time allowed"):
        client.ring_out(PHONE, within=3)
    assert sleeps == [] and len(fake.seen) == 1


@pytest.mark.parametrize("kwargs", [{"max_wait": -1}, {"max_wait": math.inf},
                                    {"retry_budget": math.nan}, {"total_timeout": 0},
                                    {"total_timeout": True}])
def test_wait_settings_are_checked(kwargs):
    """Negative, non-finite or boolean settings are a ValueError naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RingCentral(token=STATIC, **kwargs)


def test_platform_messages_are_masked_and_escaped(fake, client):
    """A platform message that repeats a phone number carries it masked, and control
    characters escaped, in the PlatformError (and so in every log line that shows it)."""
    fake.reply(400, {"errorCode": "CMN-101",
                     "message": "Phone number +1 (650) 555-0123 is invalid\r\nFAKE LOG LINE"})
    with pytest.raises(PlatformError) as info:
        client.forward("s-1", "p-app", phone_number=PHONE)
    message = str(info.value)
    assert "555-0123" not in message and "6505550123" not in message and "***23" in message
    assert "\r" not in message and "\n" not in message and "\\r\\n" in message
