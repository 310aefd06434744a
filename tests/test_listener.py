"""The callback listener's WSGI app, through werkzeug's test client (no sockets)."""

from __future__ import annotations

import json

import pytest
from werkzeug.test import Client

from ivrscript.listener import MAX_BODY, CallbackListener

SECRET = "s" * 32

ENTER = {"accountId": "1", "extensionId": "2", "partyId": "p-app", "sessionId": "s-1",
         "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"},
                     "to": {"phoneNumber": "+15550199"}}}


@pytest.fixture
def seen():
    return []


@pytest.fixture
def client(seen, tmp_path):
    wav = tmp_path / "hi.wav"
    wav.write_bytes(b"RIFF....WAVE")

    def media(media_id, name):
        return (str(wav), "audio/wav") if (media_id, name) == ("m1", "hi.wav") else None

    listener = CallbackListener(lambda kind, body, t: seen.append((kind, body)), secret=SECRET,
                                media=media)
    return Client(listener.wsgi)


def post(client, path, body, **kw):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    kw.setdefault("content_type", "application/json")
    return client.post(path, data=data, **kw)


def test_enter_answers_204_and_dispatches(client, seen):
    """on-call-enter gets 204 No Content and reaches the handler."""
    r = post(client, f"/{SECRET}/on-call-enter", ENTER)
    assert r.status_code == 204 and r.data == b""
    assert seen == [("on-call-enter", ENTER)]


def test_update_and_exit_answer_200(client, seen):
    """on-command-update and on-call-exit get 200."""
    r1 = post(client, f"/{SECRET}/on-command-update",
              {"sessionId": "s-1", "command": "Collect", "status": "Completed",
               "parameters": {"digits": "12"}})
    r2 = post(client, f"/{SECRET}/on-call-exit", {"sessionId": "s-1"})
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert [k for k, _ in seen] == ["on-command-update", "on-call-exit"]


@pytest.mark.parametrize("path", ["/wrong/on-call-enter", "/on-call-enter",
                                  f"/{SECRET[:-1]}/on-call-enter", f"/{SECRET}/nope", "/"])
def test_wrong_secret_or_path_is_404_and_runs_nothing(client, seen, path):
    """A wrong or missing secret segment: 404, and no handler code runs."""
    assert post(client, path, ENTER).status_code == 404
    assert seen == []


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b"null", {"sessionId": 5}, {"partyId": "p"},
    {"sessionId": "s", "partyId": "p"}, {"sessionId": "s", "partyId": "p", "inParty": {}},
    {"sessionId": "s", "partyId": "", "inParty": {"id": "x"}},
])
def test_malformed_enter_is_400(client, seen, body):
    """Malformed JSON or a body of the wrong shape: 400, no call touched."""
    assert post(client, f"/{SECRET}/on-call-enter", body).status_code == 400
    assert seen == []


@pytest.mark.parametrize("body", [
    {"sessionId": "s", "status": "Completed"},
    {"sessionId": "s", "command": "Play", "status": 3},
    {"sessionId": "s", "command": "Play", "status": "Completed", "commandId": True},
    {"sessionId": "s", "command": "Play", "status": "Completed", "commandId": 1.5},
    {"sessionId": "s", "command": "Collect", "status": "Completed", "parameters": {"digits": 1}},
    {"sessionId": "s", "command": "Collect", "status": "Completed", "parameters": []},
])
def test_malformed_update_is_400(client, seen, body):
    """on-command-update needs command and status strings; digits a string and commandId a
    string or an integer if given."""
    assert post(client, f"/{SECRET}/on-command-update", body).status_code == 400
    assert seen == []


def test_a_json_body_under_another_content_type_is_read_as_json(client, seen):
    """Be liberal: a JSON body is accepted whatever its declared type; a body that is not
    JSON is still 400, and says JSON was expected."""
    r = post(client, f"/{SECRET}/on-call-exit", json.dumps({"sessionId": "s"}),
             content_type="text/plain")
    assert r.status_code == 200 and seen == [("on-call-exit", {"sessionId": "s"})]
    r = post(client, f"/{SECRET}/on-call-exit", "sessionId=s", content_type="text/plain")
    assert r.status_code == 400 and b"expected a JSON body" in r.data and len(seen) == 1


def test_a_numeric_command_id_becomes_a_string(client, seen):
    """A numeric commandId is accepted and handed on as its string."""
    r = post(client, f"/{SECRET}/on-command-update",
             {"sessionId": "s", "command": "Play", "status": "Completed", "commandId": 12})
    assert r.status_code == 200 and seen[0][1]["commandId"] == "12"


def test_body_over_64k_is_413(client, seen):
    """A body over 64 KiB: 413."""
    big = {"sessionId": "s", "pad": "x" * MAX_BODY}
    assert post(client, f"/{SECRET}/on-call-exit", big).status_code == 413
    assert seen == []


def test_get_on_callback_is_405(client):
    """Callbacks are POST only."""
    assert client.get(f"/{SECRET}/on-call-exit").status_code == 405


def test_media_served_under_secret_only(client):
    """Local media is served by id and file name under the secret segment."""
    r = client.get(f"/{SECRET}/media/m1/hi.wav")
    assert r.status_code == 200 and r.data == b"RIFF....WAVE" and r.mimetype == "audio/wav"
    assert client.get(f"/{SECRET}/media/m1/other.wav").status_code == 404
    assert client.get("/wrong/media/m1/hi.wav").status_code == 404


def test_handler_error_does_not_break_listener(seen):
    """A handler that raises still gets the callback answered, and the listener goes on."""
    def bad(kind, body, t):
        raise RuntimeError("bug")

    c = Client(CallbackListener(bad, secret=SECRET).wsgi)
    assert post(c, f"/{SECRET}/on-call-exit", {"sessionId": "s"}).status_code == 200
    assert post(c, f"/{SECRET}/on-call-exit", {"sessionId": "s"}).status_code == 200


def test_taken_port_is_a_clear_error():
    """werkzeug exits on a taken port; the listener says so instead."""
    from ivrscript.errors import ConfigError

    first = CallbackListener(lambda *a: None, secret=SECRET).start()
    try:
        with pytest.raises(ConfigError, match="already in use"):
            CallbackListener(lambda *a: None, secret=SECRET, port=first.port).start()
    finally:
        first.stop()
