"""The simulator: a fake RingCentral over real loopback HTTP (rules in PLATFORM.md).

Every test drives the simulator's REST API with plain ``requests`` and receives its callbacks on
a small real werkzeug server, as an app would. Timers run at ``speed=20``.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from ivrscript.errors import IvrError
from ivrscript.simulator import Phone, PhoneEvent, Simulator

ACCOUNT = "/restapi/v1.0/account/~"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    """Silence, 16-bit mono PCM."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Receiver:
    """A real app endpoint: records posted callbacks, serves media under /media/<name>."""

    def __init__(self, port: int = 0) -> None:
        self.cond = threading.Condition()
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.media: dict[str, bytes] = {}
        self.media_gets: list[str] = []
        self.enter_status = 204
        self.status = 204  # the answer to the other callbacks
        # called with the on-call-enter body before it is answered (an app racing its 204)
        self.on_enter: Callable[[dict[str, Any]], None] | None = None
        self._server: BaseWSGIServer = make_server("127.0.0.1", port, self._wsgi,
                                                   threaded=True, request_handler=_Quiet)
        self.port = self._server.server_port
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @Request.application  # type: ignore[misc]
    def _wsgi(self, request: Request) -> Response:
        if request.method == "GET" and request.path.startswith("/media/"):
            name = request.path.removeprefix("/media/")
            with self.cond:
                self.media_gets.append(name)
            if name not in self.media:
                return Response("no such file", status=404)
            return Response(self.media[name], mimetype="audio/wav")
        kind = request.path.removeprefix("/cb/")
        body = request.get_json()
        with self.cond:
            self.posts.append((kind, body))
            self.cond.notify_all()
        if kind == "on-call-enter" and self.on_enter is not None:
            self.on_enter(body)
        return Response(status=self.enter_status if kind == "on-call-enter" else self.status)

    @property
    def callback_urls(self) -> dict[str, str]:
        return {kind: f"{self.base}/cb/{kind}" for kind in
                ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")}

    def media_url(self, name: str) -> str:
        return f"{self.base}/media/{name}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()

    def of(self, session_id: str, kind: str | None = None,
           command: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [body for k, body in self.posts if body.get("sessionId") == session_id
                    and (kind is None or k == kind)
                    and (command is None or body.get("command") == command)]

    def wait(self, session_id: str, count: int = 1, kind: str = "on-command-update",
             command: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until the session has at least ``count`` such callbacks; return them."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: len(self.of(session_id, kind, command)) >= count, timeout)
        found = self.of(session_id, kind, command)
        assert ok, f"expected {count} {kind} {command or ''} for {session_id}, got {found}"
        return found

    def kinds(self, session_id: str) -> list[str]:
        with self.cond:
            return [k if k != "on-command-update" else f"{body['command']} {body['status']}"
                    for k, body in self.posts if body.get("sessionId") == session_id]


class Api:
    """Plain-requests client for the simulator's REST API."""

    def __init__(self, sim: Simulator, token: str | None = None) -> None:
        self.sim = sim
        self.token = token or sim.token
        self.http = requests.Session()
        self.http.trust_env = False

    def request(self, method: str, path: str, *, auth: bool = True,
                **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if auth:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.http.request(method, self.sim.url + path, headers=headers, timeout=5,
                                 **kwargs)

    def party(self, phone: Phone, party: str | None = None) -> str:
        return (f"{ACCOUNT}/telephony/sessions/{phone.session_id}/parties/"
                f"{party or phone.caller_party_id}")

    def play(self, phone: Phone, *uris: str, interrupt: bool = False, repeat: int = 1,
             party: str | None = None) -> requests.Response:
        body = {"resources": [{"uri": u} for u in uris], "interruptByDtmf": interrupt,
                "repeatCount": repeat}
        return self.request("POST", self.party(phone, party) + "/play", json=body)

    def cancel(self, phone: Phone, command_id: str) -> requests.Response:
        return self.request("DELETE", self.party(phone) + f"/play/{command_id}")

    def collect(self, phone: Phone, *patterns: str, party: str | None = None,
                **extra: Any) -> requests.Response:
        body = {"patterns": list(patterns), "timeout": 60000, "interDigitTimeout": 60000,
                **extra}
        return self.request("POST", self.party(phone, party) + "/collect", json=body)

    def forward(self, phone: Phone, party: str | None = None,
                **body: Any) -> requests.Response:
        return self.request("POST", self.party(phone, party or phone.app_party_id) + "/forward",
                            json=body)

    def drop(self, phone: Phone) -> requests.Response:
        return self.request("DELETE", f"{ACCOUNT}/telephony/sessions/{phone.session_id}")

    def token_request(self, auth: str | None = "Basic " + base64.b64encode(b"id:secret")
                      .decode(), **form: str) -> requests.Response:
        headers = {"Authorization": auth} if auth else {}
        return self.request("POST", "/restapi/oauth/token", auth=False, headers=headers,
                            data=form)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., tuple[Simulator, Api]]]:
    made: list[tuple[Simulator, Api]] = []

    def make(**options: Any) -> tuple[Simulator, Api]:
        options.setdefault("speed", 20)
        sim = Simulator(**options).start()
        made.append((sim, Api(sim)))
        return made[-1]

    yield make
    for sim, api in made:
        api.close()
        sim.stop()


@pytest.fixture
def sim_api(make_sim: Callable[..., tuple[Simulator, Api]]) -> tuple[Simulator, Api]:
    return make_sim()


def error_code(response: requests.Response) -> str:
    return str(response.json()["errorCode"])


# -- auth ------------------------------------------------------------------------------------


def test_rest_calls_need_a_bearer_token(sim_api: tuple[Simulator, Api],
                                        receiver: Receiver) -> None:
    """No token -> 401 OAU-123, an unknown token -> 401 OAU-213, the static token works."""
    sim, api = sim_api
    phone = sim.call(receiver)
    path = f"{ACCOUNT}/telephony/sessions/{phone.session_id}"
    missing = api.request("GET", path, auth=False)
    assert missing.status_code == 401 and error_code(missing) == "OAU-123"
    wrong = api.request("GET", path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and error_code(wrong) == "OAU-213"
    assert wrong.json()["errors"][0]["errorCode"] == "OAU-213"
    assert api.request("GET", path).status_code == 200
    assert [r.status for r in sim.requests_log] == [401, 401, 200]


def test_jwt_grant_and_single_use_refresh(sim_api: tuple[Simulator, Api],
                                          receiver: Receiver) -> None:
    """JWT and refresh grants issue working tokens; a refresh token works once."""
    sim, api = sim_api
    phone = sim.call(receiver)
    path = f"{ACCOUNT}/telephony/sessions/{phone.session_id}"
    no_client = api.token_request(auth=None, grant_type=JWT_GRANT, assertion="jwt")
    assert no_client.status_code == 401 and error_code(no_client).startswith("OAU-")
    assert api.token_request(grant_type="password").status_code == 400
    assert api.token_request(grant_type=JWT_GRANT).json()["errors"][0]["parameterName"] \
        == "assertion"

    grant = api.token_request(grant_type=JWT_GRANT, assertion="a.b.c")
    assert grant.status_code == 200
    body = grant.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["refresh_token_expires_in"] == 604800
    assert {"access_token", "refresh_token", "scope", "owner_id"} <= body.keys()
    assert api.request("GET", path, headers={
        "Authorization": f"Bearer {body['access_token']}"}).status_code == 200

    refreshed = api.token_request(grant_type="refresh_token",
                                  refresh_token=body["refresh_token"])
    assert refreshed.status_code == 200
    assert refreshed.json()["access_token"] != body["access_token"]
    reused = api.token_request(grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert reused.status_code == 400 and error_code(reused).startswith("OAU-")
    assert sim.token_grants == 2
    assert all(r.json is None for r in sim.requests_log if r.path.endswith("/token"))


def test_expire_tokens_invalidates_issued_tokens_only(sim_api: tuple[Simulator, Api],
                                                      receiver: Receiver) -> None:
    """After expire_tokens() issued tokens get 401; the static token and refresh still work."""
    sim, api = sim_api
    phone = sim.call(receiver)
    path = f"{ACCOUNT}/telephony/sessions/{phone.session_id}"
    body = api.token_request(grant_type=JWT_GRANT, assertion="jwt").json()
    sim.expire_tokens()
    expired = api.request("GET", path, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert expired.status_code == 401 and error_code(expired) == "OAU-213"
    assert api.request("GET", path).status_code == 200
    again = api.token_request(grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert api.request("GET", path, headers={
        "Authorization": f"Bearer {again.json()['access_token']}"}).status_code == 200


def test_token_older_than_ttl_is_refused(make_sim: Callable[..., tuple[Simulator, Api]],
                                         receiver: Receiver) -> None:
    """An access token older than token_ttl (real seconds) gets 401."""
    sim, api = make_sim(token_ttl=0)
    phone = sim.call(receiver)
    body = api.token_request(grant_type=JWT_GRANT, assertion="jwt").json()
    assert body["expires_in"] == 0
    response = api.request("GET", f"{ACCOUNT}/telephony/sessions/{phone.session_id}",
                           headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status_code == 401 and "expired" in response.json()["message"]


# -- validation ------------------------------------------------------------------------------


def test_on_call_enter_has_the_platform_shape(sim_api: tuple[Simulator, Api],
                                              receiver: Receiver) -> None:
    """call() posts on-call-enter with the documented body and returns once it is answered."""
    sim, _ = sim_api
    phone = sim.call(receiver, caller="+15550111", called="+15550199")
    (enter,) = receiver.of(phone.session_id, "on-call-enter")
    assert enter == {
        "accountId": phone.account_id, "extensionId": phone.extension_id,
        "inParty": {"from": {"phoneNumber": "+15550111"}, "id": phone.caller_party_id,
                    "to": {"phoneNumber": "+15550199"}},
        "partyId": phone.app_party_id, "sessionId": phone.session_id,
    }
    assert phone.session_id.startswith("s-") and len(phone.session_id) == 34
    assert phone.caller_party_id.startswith("p-") and len(phone.app_party_id) == 34
    assert sim.phone(phone.session_id) is phone and sim.phones == [phone]
    assert not phone.ended


def test_parties_are_strict(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """Play/Collect on the app party and Forward on the caller party -> 404 CMN-102."""
    sim, api = sim_api
    phone = sim.call(receiver)
    play = api.play(phone, "http://example.com/a.wav", party=phone.app_party_id)
    assert play.status_code == 404 and error_code(play) == "CMN-102"
    assert "caller party" in play.json()["message"]
    collect = api.collect(phone, "1", party=phone.app_party_id)
    assert collect.status_code == 404 and error_code(collect) == "CMN-102"
    forward = api.forward(phone, party=phone.caller_party_id, extensionNumber="101")
    assert forward.status_code == 404 and "app party" in forward.json()["message"]
    unknown_party = api.play(phone, "http://example.com/a.wav", party="p-" + "0" * 32)
    assert unknown_party.status_code == 404
    other = api.request("DELETE", f"{ACCOUNT}/telephony/sessions/s-{'0' * 32}")
    assert other.status_code == 404 and error_code(other) == "CMN-102"
    assert not phone.ended and phone.heard == []
    assert [e.kind for e in phone.transcript].count("rejected") == 4


@pytest.mark.parametrize(("command", "body", "parameter"), [
    ("play", {"interruptByDtmf": False}, "resources"),
    ("play", {"resources": [{"uri": "prompts/a.wav"}]}, "resources[0].uri"),
    ("play", {"resources": [{"uri": "http://e.com/a.wav"}], "repeatCount": -1}, "repeatCount"),
    ("collect", {"patterns": ["1a"]}, "patterns"),
    ("collect", {"patterns": ["1"], "timeout": "5"}, "timeout"),
    ("collect", {"patterns": ["1"], "terminator": "1"}, "terminator"),
    ("forward", {"extensionNumber": "101", "phoneNumber": "+15550123"}, "extensionNumber"),
    ("forward", {}, "extensionNumber"),
])
def test_bad_bodies_name_the_parameter(sim_api: tuple[Simulator, Api], receiver: Receiver,
                                       command: str, body: dict[str, Any],
                                       parameter: str) -> None:
    """A bad body -> 400 CMN-101 with the parameter's name in errors[]."""
    sim, api = sim_api
    phone = sim.call(receiver)
    party = phone.app_party_id if command == "forward" else phone.caller_party_id
    response = api.request("POST", api.party(phone, party) + f"/{command}", json=body)
    assert response.status_code == 400 and error_code(response) == "CMN-101"
    assert response.json()["errors"][0]["parameterName"] == parameter
    not_json = api.request("POST", api.party(phone, party) + f"/{command}", data=b"{oops")
    assert not_json.status_code == 400
    assert not phone.ended


# -- play ------------------------------------------------------------------------------------


def test_play_lasts_the_served_wav_divided_by_speed(
        make_sim: Callable[..., tuple[Simulator, Api]], receiver: Receiver) -> None:
    """A WAV the app serves plays for its header's length / speed, fetched once."""
    sim, api = make_sim(default_media_seconds=60)
    receiver.media["two.wav"] = make_wav(2.0)
    phone = sim.call(receiver)
    uri = receiver.media_url("two.wav")
    start = time.monotonic()
    response = api.play(phone, uri)
    assert response.status_code == 201
    assert response.json() == {"id": response.json()["id"], "interruptByDtmf": False,
                               "repeatCount": 1, "resources": [{"uri": uri}],
                               "status": "InProgress"}
    assert response.json()["id"].isdigit()
    assert phone.playing == uri and phone.heard == [uri]
    (update,) = receiver.wait(phone.session_id, command="Play")
    elapsed = time.monotonic() - start
    assert 2.0 / 20 <= elapsed < 2.0  # 60 s of default media would be 3 s
    assert update == {"accountId": phone.account_id, "command": "Play",
                      "commandId": response.json()["id"], "extensionId": phone.extension_id,
                      "partyId": phone.caller_party_id, "sessionId": phone.session_id,
                      "status": "Completed"}
    assert phone.playing is None
    api.play(phone, uri)
    receiver.wait(phone.session_id, 2, command="Play")
    assert receiver.media_gets == ["two.wav"]
    assert phone.heard == [uri, uri]


def test_play_of_served_non_wav_uses_default_length(
        make_sim: Callable[..., tuple[Simulator, Api]], receiver: Receiver) -> None:
    """A served body that is not a WAV counts default_media_seconds."""
    sim, api = make_sim(default_media_seconds=2.0)
    receiver.media["text.wav"] = b"not a wav at all"
    phone = sim.call(receiver)
    start = time.monotonic()
    api.play(phone, receiver.media_url("text.wav"))
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Completed"
    assert time.monotonic() - start >= 2.0 / 20


def test_play_of_missing_served_media_fails(sim_api: tuple[Simulator, Api],
                                            receiver: Receiver) -> None:
    """Media the app serves that answers 404 -> the play's update is Failed."""
    sim, api = sim_api
    phone = sim.call(receiver)
    assert api.play(phone, receiver.media_url("missing.wav")).status_code == 201
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Failed"
    assert phone.heard == [] and receiver.media_gets == ["missing.wav"]


def test_other_hosts_media_is_not_fetched(sim_api: tuple[Simulator, Api],
                                          receiver: Receiver) -> None:
    """A URI not on the app's host:port is never fetched: default length, Completed."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.play(phone, "http://127.0.0.1:9/elsewhere.wav")
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Completed" and receiver.media_gets == []


def test_resources_play_in_sequence_and_repeat(sim_api: tuple[Simulator, Api],
                                               receiver: Receiver) -> None:
    """Resources play in order, each heard once per play; repeatCount multiplies the length."""
    sim, api = sim_api
    receiver.media["a.wav"] = make_wav(0.5)
    receiver.media["b.wav"] = make_wav(0.5)
    phone = sim.call(receiver)
    uris = [receiver.media_url("a.wav"), receiver.media_url("b.wav")]
    start = time.monotonic()
    api.play(phone, *uris, repeat=3)
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Completed"
    assert time.monotonic() - start >= 3 * 1.0 / 20
    assert phone.heard == uris


def test_cancel_play(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """DELETE of a play -> 204, then Canceled; deleting it again changes nothing."""
    sim, api = sim_api
    phone = sim.call(receiver)
    command_id = api.play(phone, "http://example.com/long.wav", repeat=0,
                          interrupt=True).json()["id"]
    assert api.cancel(phone, command_id).status_code == 204
    assert phone.playing is None
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Canceled" and update["commandId"] == command_id
    assert api.cancel(phone, command_id).status_code == 204
    assert api.cancel(phone, "42").status_code == 404
    api.drop(phone)
    receiver.wait(phone.session_id, kind="on-call-exit")
    assert receiver.kinds(phone.session_id) == ["on-call-enter", "Play Canceled",
                                                "on-call-exit"]


def test_a_new_play_replaces_the_one_playing(sim_api: tuple[Simulator, Api],
                                             receiver: Receiver) -> None:
    """A Play while another plays ends the earlier one Canceled."""
    sim, api = sim_api
    phone = sim.call(receiver)
    first = api.play(phone, "http://example.com/first.wav").json()["id"]
    api.play(phone, "http://example.com/second.wav")
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["commandId"] == first and update["status"] == "Canceled"
    assert phone.playing == "http://example.com/second.wav"
    assert phone.heard == ["http://example.com/first.wav", "http://example.com/second.wav"]


def test_a_key_interrupts_an_interruptible_play_and_is_kept(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """A key stops an interruptByDtmf play (Interrupted) and still reaches the collect."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.play(phone, "http://example.com/prompt.wav", interrupt=True)
    api.collect(phone, "1", "2")
    phone.press("1")
    updates = receiver.wait(phone.session_id, 2)
    assert [(u["command"], u["status"]) for u in updates] == [("Play", "Interrupted"),
                                                              ("Collect", "Completed")]
    assert updates[1]["parameters"] == {"digits": "1"}


def test_a_key_does_not_stop_a_play_without_interrupt(sim_api: tuple[Simulator, Api],
                                                      receiver: Receiver) -> None:
    """Without interruptByDtmf the play goes on; the key goes to the collect."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.play(phone, "http://example.com/notice.wav", interrupt=False)
    api.collect(phone, "1")
    phone.press("1")
    (update,) = receiver.wait(phone.session_id)
    assert update["command"] == "Collect"
    assert phone.playing == "http://example.com/notice.wav"


# -- collect ---------------------------------------------------------------------------------


def test_collect_completes_at_once_on_a_full_match(sim_api: tuple[Simulator, Api],
                                                   receiver: Receiver) -> None:
    """Input equal to a pattern with no longer pattern possible -> Completed at once."""
    sim, api = sim_api
    phone = sim.call(receiver)
    response = api.collect(phone, "12", "3x")
    assert response.status_code == 204 and response.content == b""
    assert phone.listening and phone.collect_patterns == ("12", "3x")
    phone.press("12")
    assert not phone.listening and phone.collect_patterns is None
    (update,) = receiver.wait(phone.session_id)
    assert update == {"accountId": phone.account_id, "extensionId": phone.extension_id,
                      "command": "Collect", "partyId": phone.caller_party_id,
                      "sessionId": phone.session_id, "status": "Completed",
                      "parameters": {"digits": "12"}}
    assert "'12' Completed" in str(phone.transcript)


def test_collect_waits_inter_digit_timeout_when_a_longer_pattern_could_match(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """Input equal to a pattern while a longer one could match -> Completed after the
    interDigitTimeout."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "1", "12", interDigitTimeout=1000)
    start = time.monotonic()
    phone.press("1")
    assert phone.listening
    (update,) = receiver.wait(phone.session_id)
    assert time.monotonic() - start >= 1.0 / 20
    assert (update["status"], update["parameters"]["digits"]) == ("Completed", "1")


def test_collect_wrong_key_is_not_found_at_once(sim_api: tuple[Simulator, Api],
                                                receiver: Receiver) -> None:
    """A key no pattern allows -> Not Found at once, with the digits entered."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "12")
    phone.press("3")
    assert not phone.listening
    (update,) = receiver.wait(phone.session_id)
    assert (update["status"], update["parameters"]["digits"]) == ("Not Found", "3")


def test_collect_no_match_after_inter_digit_timeout_is_not_found(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """At least the shortest pattern's length, no match, interDigitTimeout -> Not Found."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "1", "123", interDigitTimeout=1000)
    phone.press("12")
    assert phone.listening
    (update,) = receiver.wait(phone.session_id)
    assert (update["status"], update["parameters"]["digits"]) == ("Not Found", "12")


def test_collect_terminator(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """The terminator ends the input: Completed (without it) if it matches, else Not Found."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "12", "123", terminator="#")
    phone.press("12#")
    api.collect(phone, "12", "123", terminator="*")
    phone.press("1*")
    first, second = receiver.wait(phone.session_id, 2)
    assert (first["status"], first["parameters"]["digits"]) == ("Completed", "12")
    assert (second["status"], second["parameters"]["digits"]) == ("Not Found", "1")


@pytest.mark.parametrize("terminator", ["absent", None])
def test_collect_without_terminator_ends_on_hash(
        sim_api: tuple[Simulator, Api], receiver: Receiver, terminator: str | None) -> None:
    """A terminator absent or null means '#' (the guide's default): '#' ends the input, and
    a pattern that needs '#' as a key cannot be completed."""
    sim, api = sim_api
    phone = sim.call(receiver)
    extra = {} if terminator == "absent" else {"terminator": None}
    api.collect(phone, "1", "12", **extra)
    phone.press("1#")
    api.collect(phone, "#", "1#", **extra)
    phone.press("1#")
    first, second = receiver.wait(phone.session_id, 2)
    assert (first["status"], first["parameters"]["digits"]) == ("Completed", "1")
    assert (second["status"], second["parameters"]["digits"]) == ("Not Found", "1")


def test_collect_with_star_terminator_takes_hash_as_a_key(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """With terminator '*', '#' is an ordinary key (how a menu offers '#' as a choice)."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "#", "1#", terminator="*")
    phone.press("1#")
    (update,) = receiver.wait(phone.session_id)
    assert (update["status"], update["parameters"]["digits"]) == ("Completed", "1#")


def test_collect_timeout_reports_the_digits_so_far(sim_api: tuple[Simulator, Api],
                                                   receiver: Receiver) -> None:
    """timeout with fewer digits than the shortest pattern -> Timeout with the digits."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "xxxx", timeout=2000)
    start = time.monotonic()
    phone.press("12")
    (update,) = receiver.wait(phone.session_id)
    assert time.monotonic() - start < 2.0
    assert (update["status"], update["parameters"]["digits"]) == ("Timeout", "12")
    api.collect(phone, "xxxx", timeout=1000)
    empty = receiver.wait(phone.session_id, 2)[1]
    assert (empty["status"], empty["parameters"]["digits"]) == ("Timeout", "")


def test_reset_input(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """Keys with no collect are buffered; resetInput false uses them, true drops them."""
    sim, api = sim_api
    phone = sim.call(receiver)
    phone.press("5", wait=False)
    api.collect(phone, "5", resetInput=False)
    (kept,) = receiver.wait(phone.session_id)
    assert (kept["status"], kept["parameters"]["digits"]) == ("Completed", "5")
    assert not phone.listening
    phone.press("7", wait=False)
    api.collect(phone, "x")
    assert phone.listening
    phone.press("8")
    dropped = receiver.wait(phone.session_id, 2)[1]
    assert dropped["parameters"]["digits"] == "8"


def test_one_collect_at_a_time(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """A second collect while one is active -> 409."""
    sim, api = sim_api
    phone = sim.call(receiver)
    assert api.collect(phone, "1").status_code == 204
    second = api.collect(phone, "2")
    assert second.status_code == 409 and error_code(second) == "TAS-409"
    assert phone.collect_patterns == ("1",)


def test_collect_ids(make_sim: Callable[..., tuple[Simulator, Api]],
                     receiver: Receiver) -> None:
    """collect_ids=True: Collect answers 201 with an id, echoed as the update's commandId."""
    sim, api = make_sim(collect_ids=True)
    phone = sim.call(receiver)
    response = api.collect(phone, "1")
    assert response.status_code == 201
    command_id = response.json()["id"]
    phone.press("1")
    (update,) = receiver.wait(phone.session_id)
    assert update["commandId"] == command_id and update["status"] == "Completed"


def test_press_waits_for_a_collect_not_fed_by_an_earlier_press(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """press(wait=True) needs a collect the previous press did not feed; bad keys ValueError."""
    sim, api = sim_api
    phone = sim.call(receiver)
    with pytest.raises(ValueError, match="not a phone key"):
        phone.press("1a")
    api.collect(phone, "1", "12", interDigitTimeout=60000)
    phone.press("1")
    assert phone.listening  # still waiting for a possible "2", but fed already
    with pytest.raises(IvrError, match="did not start a new collect"):
        phone.press("2", timeout=0.1)
    phone.press("2", wait=False)
    api.collect(phone, "3")
    phone.press("3")
    statuses = [(u["status"], u["parameters"]["digits"]) for u in
                receiver.wait(phone.session_id, 2)]
    assert statuses == [("Completed", "12"), ("Completed", "3")]


def test_press_and_waits_fail_when_the_call_ends(sim_api: tuple[Simulator, Api],
                                                 receiver: Receiver) -> None:
    """A press waiting for a collect raises IvrError when the call ends."""
    sim, api = sim_api
    phone = sim.call(receiver)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(phone.press, "1", True, 10.0)
        assert api.drop(phone).status_code == 204
        with pytest.raises(IvrError, match="ended"):
            pending.result(timeout=10)
    with pytest.raises(IvrError, match="ended"):
        phone.wait_until_listening(timeout=1)
    with pytest.raises(IvrError, match="ended"):
        phone.press("1", wait=False)


# -- ending ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "value"), [("extensionNumber", "101"),
                                               ("phoneNumber", "+15550123")])
def test_forward_ends_the_call(sim_api: tuple[Simulator, Api], receiver: Receiver,
                               target: str, value: str) -> None:
    """Forward on the app party -> 200 party Gone, on-call-exit, forwarded_to; then 404."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.collect(phone, "1")
    response = api.forward(phone, **{target: value})
    assert response.status_code == 200
    assert response.json()["id"] == phone.app_party_id
    assert response.json()["status"]["code"] == "Gone"
    (exit_,) = receiver.wait(phone.session_id, kind="on-call-exit")
    assert exit_ == {"accountId": phone.account_id, "extensionId": phone.extension_id,
                     "partyId": phone.app_party_id, "sessionId": phone.session_id}
    assert phone.wait_until_ended() == "forwarded" and phone.forwarded_to == value
    assert not phone.listening
    after = api.play(phone, "http://example.com/a.wav")
    assert after.status_code == 404 and error_code(after) == "CMN-102"
    assert receiver.kinds(phone.session_id) == ["on-call-enter", "on-call-exit"]


def test_drop_ends_the_call(sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """DELETE of the session -> 204, on-call-exit, end_reason "hangup"; a second -> 404."""
    sim, api = sim_api
    phone = sim.call(receiver)
    assert api.drop(phone).status_code == 204
    receiver.wait(phone.session_id, kind="on-call-exit")
    assert phone.ended and phone.end_reason == "hangup" and phone.forwarded_to is None
    assert api.drop(phone).status_code == 404


def test_caller_hang_up_stops_commands_without_updates(sim_api: tuple[Simulator, Api],
                                                       receiver: Receiver) -> None:
    """The caller hangs up: play and collect stop without updates, then on-call-exit."""
    sim, api = sim_api
    phone = sim.call(receiver)
    api.play(phone, "http://example.com/a.wav")
    api.collect(phone, "1")
    phone.hang_up()
    phone.hang_up()
    assert phone.wait_until_ended() == "caller-hangup"
    assert phone.playing is None and not phone.listening
    receiver.wait(phone.session_id, kind="on-call-exit")
    assert receiver.kinds(phone.session_id) == ["on-call-enter", "on-call-exit"]


def test_refused_on_call_enter_ends_the_call(sim_api: tuple[Simulator, Api],
                                             receiver: Receiver) -> None:
    """An on-call-enter answered without a 2xx ends the call; phone.error says why."""
    sim, api = sim_api
    receiver.enter_status = 500
    phone = sim.call(receiver)
    assert phone.ended and phone.end_reason == "hangup"
    assert phone.error is not None and "500" in phone.error
    assert api.play(phone, "http://example.com/a.wav").status_code == 404


def test_wait_until_ended_times_out(sim_api: tuple[Simulator, Api],
                                    receiver: Receiver) -> None:
    """Waits are bounded: IvrError when the time runs out."""
    sim, _ = sim_api
    phone = sim.call(receiver)
    with pytest.raises(IvrError, match="did not end"):
        phone.wait_until_ended(timeout=0.05)


# -- ring-out --------------------------------------------------------------------------------


def test_ring_out_rings_the_connected_app(sim_api: tuple[Simulator, Api],
                                          receiver: Receiver) -> None:
    """RingOut rings the customer (answers at once), then on-call-enter goes to the app."""
    sim, api = sim_api
    body = {"from": {"phoneNumber": "+15550123"}, "to": {"phoneNumber": "201"}}
    none = api.request("POST", f"{ACCOUNT}/extension/~/ring-out", json=body)
    assert none.status_code == 404 and error_code(none) == "CMN-102"
    assert "no app is connected" in none.json()["message"]

    sim.connect(receiver, extension_number="201")
    sim.connect(receiver.callback_urls, extension_number="201")
    response = api.request("POST", f"{ACCOUNT}/extension/~/ring-out", json=body)
    assert response.status_code == 200
    ring_out = response.json()
    assert ring_out["status"]["callStatus"] == "InProgress"
    assert {"callerStatus", "calleeStatus"} <= ring_out["status"].keys()
    assert ring_out["uri"].endswith(f"/ring-out/{ring_out['id']}")
    phone = sim.phones[-1]
    (enter,) = receiver.wait(phone.session_id, kind="on-call-enter")
    assert enter["inParty"]["from"] == {"phoneNumber": "+15550123"}
    assert enter["inParty"]["id"] == phone.caller_party_id
    phone.wait_for(lambda: any(e.kind == "answered" for e in phone.transcript), 5)
    status = api.request("GET", f"{ACCOUNT}/extension/~/ring-out/{ring_out['id']}")
    assert status.json()["status"]["callStatus"] == "Success"
    assert api.request("DELETE", f"{ACCOUNT}/extension/~/ring-out/{ring_out['id']}") \
        .status_code == 204
    receiver.wait(phone.session_id, kind="on-call-exit")
    assert phone.end_reason == "hangup"
    assert api.request("GET", f"{ACCOUNT}/extension/~/ring-out/{ring_out['id']}") \
        .status_code == 404


def test_ring_out_picks_the_app_by_extension(sim_api: tuple[Simulator, Api],
                                             receiver: Receiver) -> None:
    """With several apps connected, ring-out's "to" selects one; an unknown one -> 404."""
    sim, api = sim_api
    other = {k: v.replace("/cb/", "/other/") for k, v in receiver.callback_urls.items()}
    sim.connect(other, extension_number="202")
    sim.connect(receiver, extension_number="201")
    body = {"from": {"phoneNumber": "+15550123"}, "to": {"phoneNumber": "201"}}
    assert api.request("POST", f"{ACCOUNT}/extension/~/ring-out", json=body).status_code == 200
    receiver.wait(sim.phones[-1].session_id, kind="on-call-enter")
    body["to"]["phoneNumber"] = "299"
    unknown = api.request("POST", f"{ACCOUNT}/extension/~/ring-out", json=body)
    assert unknown.status_code == 404 and "201, 202" in unknown.json()["message"]


# -- fault injection -------------------------------------------------------------------------


def _fault_statuses(sim: Simulator, api: Api, receiver: Receiver) -> list[int]:
    phone = sim.call(receiver)
    return [api.cancel(phone, "1").status_code for _ in range(30)]


def test_rest_faults_are_seeded_per_call(make_sim: Callable[..., tuple[Simulator, Api]],
                                         receiver: Receiver) -> None:
    """429/503 with Retry-After: 1 for a share of commands; the same seed, the same faults."""
    options = {"seed": 7, "rate_limited": 0.3, "unavailable": 0.2}
    first = _fault_statuses(*make_sim(**options), receiver)
    second = _fault_statuses(*make_sim(**options), receiver)
    assert first == second
    assert {429, 503, 404} == set(first)
    assert _fault_statuses(*make_sim(**{**options, "seed": 8}), receiver) != first

    sim, api = make_sim(rate_limited=1.0)
    phone = sim.call(receiver)
    limited = api.drop(phone)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert error_code(limited) == "CMN-301"
    assert not phone.ended  # a faulted request is not executed
    assert sim.requests_log[-1].status == 429 and sim.requests_log[-1].session_id == \
        phone.session_id

    sim, api = make_sim(unavailable=1.0)
    phone = sim.call(receiver)
    unavailable = api.play(phone, "http://example.com/a.wav")
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "1"
    assert phone.heard == []


@pytest.mark.parametrize("collect_ids", [False, True])
def test_duplicate_callbacks(make_sim: Callable[..., tuple[Simulator, Api]],
                             receiver: Receiver, collect_ids: bool) -> None:
    """duplicate_callbacks=1: every callback twice, except on-call-enter, and Collect updates
    only when they carry an id."""
    sim, api = make_sim(duplicate_callbacks=1.0, collect_ids=collect_ids, seed=1)
    phone = sim.call(receiver)
    api.play(phone, "http://example.com/a.wav", interrupt=True)
    api.collect(phone, "1")
    phone.press("1")
    api.drop(phone)
    receiver.wait(phone.session_id, 2, kind="on-call-exit")
    collect_copies = 2 if collect_ids else 1
    assert receiver.kinds(phone.session_id) == (
        ["on-call-enter"] + ["Play Interrupted"] * 2 + ["Collect Completed"] * collect_copies
        + ["on-call-exit"] * 2)


def test_late_callbacks_can_be_overtaken(make_sim: Callable[..., tuple[Simulator, Api]],
                                         receiver: Receiver) -> None:
    """late_callbacks=1: callbacks are held back up to 200 ms, so later ones overtake them."""
    sim, api = make_sim(late_callbacks=1.0, seed=3)
    phone = sim.call(receiver)
    assert receiver.of(phone.session_id, "on-call-enter")  # never late
    sent = []
    for _ in range(8):
        command_id = api.play(phone, "http://example.com/a.wav").json()["id"]
        api.cancel(phone, command_id)
        sent.append(command_id)
    received = [u["commandId"] for u in receiver.wait(phone.session_id, 8, command="Play")]
    assert sorted(received) == sorted(sent) and received != sent


# -- threads, listeners, lifecycle -----------------------------------------------------------


def _sim_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("ivrscript-sim"))


def test_threads_do_not_grow_with_calls(sim_api: tuple[Simulator, Api],
                                        receiver: Receiver) -> None:
    """200 calls parked in a collect with a long timeout cost no threads."""
    sim, api = sim_api
    warm = sim.call(receiver)
    api.collect(warm, "1", timeout=600000)
    own, total = _sim_threads(), threading.active_count()
    phones = [sim.call(receiver) for _ in range(200)]
    for phone in phones:
        assert api.collect(phone, "1234", timeout=600000).status_code == 204
    assert all(phone.listening for phone in phones)
    assert _sim_threads() == own
    assert threading.active_count() <= total + 20
    phones[0].press("1234")
    assert receiver.wait(phones[0].session_id)[0]["status"] == "Completed"


def test_stop_ends_everything(receiver: Receiver) -> None:
    """stop() stops its threads, closes kept-alive connections and ends calls quietly; it can
    be called twice."""
    api: Api | None = None
    try:
        with Simulator(speed=20) as sim:
            api = Api(sim)
            phone = sim.call(receiver)
            api.collect(phone, "1")  # the client keeps this connection (and a thread) open
            assert len(_sim_threads()) >= 3
        sim.stop()
        assert _sim_threads() == []
        for thread in threading.enumerate():
            if "process_request" in thread.name:
                thread.join(timeout=5)
        assert not [t for t in threading.enumerate() if "process_request" in t.name]
        assert phone.ended and phone.end_reason == "caller-hangup" and phone.error
        assert receiver.kinds(phone.session_id) == ["on-call-enter"]
        with pytest.raises(RuntimeError, match="cannot be restarted"):
            sim.start()
    finally:
        if api is not None:
            api.close()


def test_huge_timeouts_do_not_break_the_timer_thread(sim_api: tuple[Simulator, Api],
                                                     receiver: Receiver) -> None:
    """A collect timeout of centuries is accepted and other timers still run."""
    sim, api = sim_api
    phone = sim.call(receiver)
    assert api.collect(phone, "1", timeout=10**15, interDigitTimeout=10**15).status_code == 204
    api.play(phone, "http://example.com/a.wav")
    (update,) = receiver.wait(phone.session_id, command="Play")
    assert update["status"] == "Completed" and phone.listening


def test_listeners_see_every_event_and_cannot_break_the_simulator(
        sim_api: tuple[Simulator, Api], receiver: Receiver) -> None:
    """add_listener(fn) gets (phone, event) for every event; a failing listener is logged."""
    sim, api = sim_api
    seen: list[tuple[Phone, PhoneEvent]] = []
    cond = threading.Condition()

    def broken(phone: Phone, event: PhoneEvent) -> None:
        raise RuntimeError("listener bug")

    def record(phone: Phone, event: PhoneEvent) -> None:
        with cond:
            seen.append((phone, event))
            cond.notify_all()

    sim.add_listener(broken)
    sim.add_listener(record)
    phone = sim.call(receiver)
    api.play(phone, "http://example.com/a.wav")
    phone.hang_up()
    with cond:
        assert cond.wait_for(lambda: any(e.kind == "exit" for _, e in seen), 5)
    assert [e.kind for _, e in seen] == ["ring", "answered", "play", "caller-hangup", "exit"]
    assert all(p is phone for p, _ in seen)
    assert [e.kind for e in phone.transcript] == [e.kind for _, e in seen]
    assert str(seen[2][1]) == "play          http://example.com/a.wav"
