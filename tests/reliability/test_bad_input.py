"""Malformed callbacks, fuzzed over real HTTP: each gets 400 (413 over 64 KiB), none touches a
call, and a normal call still completes afterwards."""

from __future__ import annotations

import collections
import copy
import json
import socket
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ivrscript as ivr
from ivrscript import Simulator
from ivrscript.listener import CALLBACKS, MAX_BODY

from .conftest import FIGURES, REMOTE, Spy, count_call, finish

VALID: dict[str, dict[str, Any]] = {
    "on-call-enter": {"accountId": "1", "extensionId": "2", "partyId": "p-app",
                      "sessionId": "s-fuzz",
                      "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"},
                                  "to": {"phoneNumber": "+15550199"}}},
    "on-command-update": {"sessionId": "s-fuzz", "command": "Collect", "commandId": "7",
                          "status": "Completed", "parameters": {"digits": "12"}},
    "on-call-exit": {"sessionId": "s-fuzz", "partyId": "p-app"},
    "on-command-error": {"sessionId": "s-fuzz"},
}
# field path -> what makes a value wrong there
NON_EMPTY_STR = "non-empty string"
STR = "string"
OPT_STR = "string or absent"
OPT_STR_INT = "string, integer or absent"
OPT_OBJ = "object or absent"
ID = "string, number or absent"
FIELDS: dict[str, dict[tuple[str, ...], str]] = {
    "on-call-enter": {("sessionId",): NON_EMPTY_STR, ("partyId",): NON_EMPTY_STR,
                      ("inParty",): "object", ("inParty", "id"): NON_EMPTY_STR,
                      ("inParty", "from"): OPT_OBJ, ("inParty", "from", "phoneNumber"): OPT_STR,
                      ("inParty", "to"): OPT_OBJ, ("inParty", "to", "phoneNumber"): OPT_STR,
                      ("accountId",): ID, ("extensionId",): ID},
    "on-command-update": {("sessionId",): NON_EMPTY_STR, ("command",): STR, ("status",): STR,
                          ("commandId",): OPT_STR_INT, ("parameters",): OPT_OBJ,
                          ("parameters", "digits"): OPT_STR},
    "on-call-exit": {("sessionId",): NON_EMPTY_STR},
    "on-command-error": {("sessionId",): NON_EMPTY_STR},
}
REQUIRED = {kind: [path for path, rule in fields.items() if "absent" not in rule]
            for kind, fields in FIELDS.items()}
JSON_TYPES = ["application/json", "application/json; charset=utf-8"]
NOT_JSON_TYPES = [None, "", "text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/xml", "text/html",
                  "application/octet-stream", "application/jsn", "*/*", "text/plain; x=json"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                    st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
odd_strings = st.one_of(
    st.text(min_size=1, max_size=50),  # any code point, control characters included
    st.sampled_from(["\x00", "\u202e\u202d", "\ud800", "\udfff", "\n\r\t", "'\";--",
                     "../../etc/passwd", "${jndi:ldap://x}", "%s%s%n", "\ufeff", "🙂" * 40,
                     "s-" + "0" * 32]),
    st.integers(1_000, 15_000).map(lambda n: "é" * n),  # huge (2 bytes each in UTF-8)
)


def _wrong_for(rule: str) -> st.SearchStrategy[Any]:
    never_str = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.lists(scalars, max_size=3),
                          st.dictionaries(st.text(max_size=4), scalars, max_size=3))
    if rule == NON_EMPTY_STR:
        return st.one_of(never_str, st.just(""), st.none())
    if rule == STR:
        return st.one_of(never_str, st.none())
    if rule == OPT_STR:
        return never_str
    if rule == OPT_STR_INT:
        return st.one_of(st.booleans(), st.floats(allow_nan=False),
                         st.lists(scalars, max_size=3),
                         st.dictionaries(st.text(max_size=4), scalars, max_size=3))
    if rule in ("object", OPT_OBJ):
        nulls = st.none() if rule == "object" else st.nothing()
        return st.one_of(nulls, st.booleans(), st.integers(), st.text(max_size=10),
                         st.lists(scalars, max_size=3))
    # ID: strings and numbers are fine
    return st.one_of(st.floats(allow_nan=False), st.lists(scalars, max_size=3),
                     st.dictionaries(st.text(max_size=4), scalars, max_size=3))


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        body = body[key]
    body[path[-1]] = value


def _delete(body: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        body = body[key]
    del body[path[-1]]


def _with_odd_strings(draw: Any, body: dict[str, Any], kind: str) -> None:
    """Put odd strings in the fields that take strings (the body stays as valid as it was)."""
    for path, rule in FIELDS[kind].items():
        if "string" in rule and draw(st.booleans()):
            try:
                _set(body, path, draw(odd_strings))
            except (KeyError, TypeError):
                pass


@st.composite
def malformed(draw: Any) -> tuple[str, str, bytes, str | None, int]:
    """(kind, what, body bytes, content type, expected status) of one bad callback."""
    kind = draw(st.sampled_from(CALLBACKS))
    what = draw(st.sampled_from(["not json", "wrong content type", "not an object",
                                 "missing field", "wrong type", "deep nesting", "bad utf-8",
                                 "over 64 KiB"]))
    ctype: str | None = draw(st.sampled_from(JSON_TYPES))
    if what == "not json":
        raw = draw(st.one_of(
            st.binary(max_size=300),
            st.text(max_size=300).map(str.encode),
            st.sampled_from([b"", b" ", b"{", b'{"sessionId": ', b"null,", b"{'a': 1}",
                             b'{"sessionId": "s"', b"\xef\xbb\xbf{", b"NaN-", b"[1,]"])))
        try:  # the rare valid-looking draw is still not a valid body of this kind
            json.loads(raw)
            raw = b"\x00" + raw
        except ValueError:
            pass
    elif what == "wrong content type":
        # Any declared type is read as JSON if the body is JSON: this one is not.
        ctype = draw(st.sampled_from(NOT_JSON_TYPES))
        raw = draw(st.sampled_from([b"sessionId=s-fuzz&partyId=p", b"<sessionId/>", b"",
                                    b"\x00" + json.dumps(VALID[kind]).encode()]))
    elif what == "not an object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        raw = json.dumps(value).encode()
    elif what == "missing field":
        body = copy.deepcopy(VALID[kind])
        _with_odd_strings(draw, body, kind)
        _delete(body, draw(st.sampled_from(REQUIRED[kind])))
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif what == "wrong type":
        body = copy.deepcopy(VALID[kind])
        _with_odd_strings(draw, body, kind)
        path = draw(st.sampled_from(sorted(FIELDS[kind])))
        _set(body, path, draw(_wrong_for(FIELDS[kind][path])))
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    elif what == "deep nesting":
        depth = draw(st.integers(2_000, 30_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        raw = (opener * depth + "1" + closer * depth).encode()
        if opener == "[" and draw(st.booleans()):
            raw = raw[: len(raw) // 2]  # and cut off
    elif what == "bad utf-8":
        body = json.dumps(VALID[kind])
        cut = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80",
                                     b"\x80\x80", b"\xfe\xff"]))
        raw = body[:cut].encode() + junk + body[cut:].encode()
        if _is_valid(kind, raw):
            raw = b"\xff" + raw
    else:
        size = draw(st.integers(MAX_BODY + 1, 3 * MAX_BODY))
        raw = json.dumps(dict(VALID[kind], padding="x" * size)).encode()
    return kind, what, raw, ctype, 413 if len(raw) > MAX_BODY else 400


def _is_valid(kind: str, raw: bytes) -> bool:
    from ivrscript.listener import BadCallback, validate_callback

    try:
        validate_callback(kind, json.loads(raw))
    except (ValueError, BadCallback, RecursionError):
        return False
    return True


@pytest.fixture(scope="module")
def target():
    """One real app on a simulator for the whole fuzz run (loopback HTTP)."""
    got: list[str] = []

    def main(call):
        yield ivr.play(REMOTE + "hello.wav")
        got.append((yield ivr.collect("xxxx", timeout=30)))

    with Simulator(speed=20) as sim, ivr.App(main, platform=sim) as app:
        spy = Spy()
        app._observers.append(spy)
        yield sim, app, spy, got


def test_malformed_callbacks_get_400_and_a_normal_call_completes_afterwards(target):
    """Property-based fuzzing (500 cases over real HTTP): non-JSON (under any content type),
    bodies that are not objects, missing fields, wrong types, huge and odd strings, deep
    nesting, bad UTF-8 all get 400, bodies over 64 KiB get 413; none reaches the app's
    dispatcher; then a normal call completes."""
    sim, app, spy, got = target
    session = requests.Session()
    session.trust_env = False
    outcomes: collections.Counter[tuple[str, int]] = collections.Counter()

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(case=malformed())
    def one(case: tuple[str, str, bytes, str | None, int]) -> None:
        kind, what, raw, ctype, expected = case
        headers = {} if ctype is None else {"Content-Type": ctype}
        try:
            answer = session.post(app.callback_urls[kind], data=raw, headers=headers,
                                  timeout=10)
            status = answer.status_code
        except requests.ConnectionError:
            # A 413 answered before the whole body was sent may reset the connection.
            assert expected == 413, (kind, what, raw[:200])
            status = 413
        outcomes[(what, status)] += 1
        assert status == expected, (kind, what, ctype, raw[:300], status)

    one()
    tried = sum(outcomes.values())
    assert tried >= 500
    assert spy.seen == [], f"malformed callbacks reached the dispatcher: {spy.seen}"
    assert app.calls == [] and sim.requests_log == []
    assert app._listener.stats["errors"] == 0
    FIGURES["bad inputs tried (fuzz, real HTTP)"] += tried
    FIGURES["bad inputs answered 400"] += sum(n for (_, s), n in outcomes.items() if s == 400)
    FIGURES["bad inputs answered 413"] += sum(n for (_, s), n in outcomes.items() if s == 413)
    # A normal call still completes.
    phone = sim.call(app)
    phone.press("1234")
    call = finish(app, phone)
    assert got == ["1234"] and call.end_reason == "hangup"
    spy.wait_for(4)  # enter, two updates, exit: nothing of this call arrives later
    count_call(True)


@pytest.mark.parametrize("ctype", NOT_JSON_TYPES)
def test_a_json_body_is_accepted_whatever_its_content_type(target, ctype):
    """Be liberal with the platform: a valid JSON body declared as another type (or as
    nothing) is read as JSON and accepted."""
    sim, app, spy, _ = target
    before = len(spy.seen)
    headers = {} if ctype is None else {"Content-Type": ctype}
    answer = requests.post(app.callback_urls["on-command-update"], headers=headers,
                           data=json.dumps(VALID["on-command-update"]).encode(), timeout=10)
    assert answer.status_code == 200
    spy.wait_for(before + 1)
    assert spy.seen[before:] == ["on-command-update"]
    del spy.seen[before:]  # the fuzz test expects no accepted callback of its own
    FIGURES["liberal cases accepted (content type, numeric commandId)"] += 1


def test_a_numeric_command_id_is_accepted_as_its_string(target):
    """A numeric ``commandId`` is accepted and handed on as a string; a boolean or a float
    is still 400."""
    sim, app, spy, _ = target
    before = len(spy.seen)
    bodies = []
    spy_callback = spy.callback

    def keep(kind: str, body: Any) -> None:
        bodies.append(copy.deepcopy(body))
        spy_callback(kind, body)

    spy.callback = keep  # type: ignore[method-assign]
    try:
        ok = requests.post(app.callback_urls["on-command-update"], timeout=10,
                           json=dict(VALID["on-command-update"], commandId=12))
        bad = [requests.post(app.callback_urls["on-command-update"], timeout=10,
                             json=dict(VALID["on-command-update"], commandId=value)).status_code
               for value in (True, 1.5)]
        spy.wait_for(before + 1)
    finally:
        del spy.callback
        del spy.seen[before:]
    assert ok.status_code == 200 and bad == [400, 400]
    assert bodies[0]["commandId"] == "12"
    FIGURES["liberal cases accepted (content type, numeric commandId)"] += 1


def _raw_exchange(app: Any, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_bodies_over_64_kib_get_413(target):
    """A body over 64 KiB gets 413: with its Content-Length, and sent chunked without one."""
    sim, app, spy, _ = target
    before = list(spy.seen)
    big = json.dumps(dict(VALID["on-command-update"], pad="x" * MAX_BODY)).encode()
    answer = requests.post(app.callback_urls["on-command-update"], data=big, timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413

    def chunks():
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    answer = requests.post(app.callback_urls["on-command-update"], data=chunks(), timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert spy.seen == before
    FIGURES["bad inputs tried (other)"] += 2


HEADER_ODDITIES = [
    b"Content-Length: abc\r\n\r\n{}",
    b"Content-Length: -5\r\n\r\n{}",
    b"Content-Length: 99999999999999999999999\r\n\r\n{}",
    b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}",
    b"Content-Length: 2\r\n\r\n\xff\xfe",
    b"Content-Length: 10\r\n\r\n{}",
]


@pytest.mark.parametrize("tail", HEADER_ODDITIES)
def test_header_oddities_get_4xx_and_the_listener_keeps_serving(target, tail):
    """Broken framing (bad or lying Content-Length, broken chunked bodies, bad bytes) gets a
    4xx, never a 500, and the listener keeps serving."""
    sim, app, spy, _ = target
    before = list(spy.seen)
    head = (f"POST /{app.secret}/on-call-exit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n").encode()
    answer = _raw_exchange(app, head + tail)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    assert 400 <= status < 500, answer[:200]
    assert app._listener.stats["errors"] == 0 and spy.seen == before
    ok = requests.post(app.callback_urls["on-call-exit"], json={"sessionId": "s-none"},
                       timeout=10)
    assert ok.status_code == 200
    FIGURES["bad inputs tried (other)"] += 1


def test_a_stalled_client_does_not_block_other_callbacks(target):
    """Clients that send half a request and stall (slowloris) hold only their own
    connection: other callbacks are answered meanwhile."""
    sim, app, spy, _ = target
    stalled = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
            sock.sendall(f"POST /{app.secret}/on-call-exit HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                         .encode())
            stalled.append(sock)
        ok = requests.post(app.callback_urls["on-call-exit"], json={"sessionId": "s-none"},
                           timeout=10)
        assert ok.status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    FIGURES["bad inputs tried (other)"] += len(stalled)
