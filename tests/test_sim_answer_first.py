"""Commands come after the 204 to on-call-enter: the simulator answers an earlier one 409
``CMN-409``, and the app releases a call's first command only once its 204 has been sent."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import requests

import ivrscript as ivr
from ivrscript.simulator import Simulator

from .test_simulator import ACCOUNT, Receiver


def _play_body() -> dict[str, Any]:
    return {"resources": [{"uri": "https://media.example/a.wav"}]}


def test_play_before_the_answer_is_409_and_after_it_is_accepted() -> None:
    """An app that sends Play from inside its on-call-enter handler (before its 204 is
    sent) gets 409 CMN-409; the same Play once the 204 is out is accepted."""
    answers: list[requests.Response] = []
    with Simulator(speed=20) as sim:
        receiver = Receiver().start()
        http = requests.Session()
        http.trust_env = False

        def too_early(body: dict[str, Any]) -> None:
            party = body["inParty"]["id"]
            answers.append(http.post(
                f"{sim.url}{ACCOUNT}/telephony/sessions/{body['sessionId']}/parties/{party}"
                "/play", json=_play_body(), headers={"Authorization": f"Bearer {sim.token}"},
                timeout=10))

        receiver.on_enter = too_early
        try:
            phone = sim.call(receiver)
            assert [a.status_code for a in answers] == [409]
            error = answers[0].json()
            assert error["errorCode"] == "CMN-409"
            assert "before on-call-enter was answered" in error["message"]
            assert phone.heard == [] and not phone.ended
            assert any(e.kind == "rejected" and "409 CMN-409" in e.details
                       for e in phone.transcript)
            later = http.post(f"{sim.url}{ACCOUNT}/telephony/sessions/{phone.session_id}/"
                              f"parties/{phone.caller_party_id}/play", json=_play_body(),
                              headers={"Authorization": f"Bearer {sim.token}"}, timeout=10)
            assert later.status_code == 201, later.text
            assert phone.heard == ["https://media.example/a.wav"]
        finally:
            http.close()
            receiver.stop()


def test_collect_and_forward_before_the_answer_are_409() -> None:
    """Collect and Forward are held to the same rule as Play."""
    statuses: list[tuple[str, int]] = []
    with Simulator(speed=20) as sim:
        receiver = Receiver().start()
        http = requests.Session()
        http.trust_env = False

        def too_early(body: dict[str, Any]) -> None:
            base = f"{sim.url}{ACCOUNT}/telephony/sessions/{body['sessionId']}/parties/"
            auth = {"Authorization": f"Bearer {sim.token}"}
            collect = http.post(base + body["inParty"]["id"] + "/collect",
                                json={"patterns": ["x"]}, headers=auth, timeout=10)
            forward = http.post(base + body["partyId"] + "/forward",
                                json={"extensionNumber": "102"}, headers=auth, timeout=10)
            statuses.extend([("collect", collect.status_code), ("forward", forward.status_code)])

        receiver.on_enter = too_early
        try:
            phone = sim.call(receiver)
            assert statuses == [("collect", 409), ("forward", 409)]
            assert not phone.ended and not phone.listening
        finally:
            http.close()
            receiver.stop()


def test_fifty_concurrent_calls_never_race_their_204(sim: Simulator, make_app: Any) -> None:
    """The app's first command (a Play, at once) never reaches the platform before the app's
    204 to on-call-enter: 50 concurrent calls, zero 409s in the simulator's request log."""

    def main(call: ivr.Call) -> Any:
        yield ivr.play("https://media.example/hello.wav")
        yield ivr.hangup()

    app = make_app(main)

    def one(i: int) -> Any:
        phone = sim.call(app, caller=f"+1555{i:07d}")
        phone.wait_until_ended(30)
        return phone

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        phones = list(pool.map(one, range(50)))
    conflicts = [r for r in sim.requests_log if r.status == 409]
    assert conflicts == []
    plays = [r for r in sim.requests_log if r.method == "POST" and r.path.endswith("/play")]
    assert len(plays) == 50 and all(r.status == 201 for r in plays)
    assert all(p.end_reason == "hangup" and p.heard == ["https://media.example/hello.wav"]
               for p in phones)


def test_listener_runs_the_after_answer_hook_when_the_wsgi_server_closes_the_body() -> None:
    """The hook a handler returns runs at close() of the response iterable (PEP 3333: after
    the server has sent the body), under any WSGI server, and not before."""
    import io
    import json

    from ivrscript.listener import CallbackListener

    ran: list[str] = []
    listener = CallbackListener(lambda kind, body, t: lambda: ran.append(kind), secret="s3cret")
    party = {"id": "p-1", "from": {"phoneNumber": "+15550100"}, "to": {"phoneNumber": "201"}}
    body = json.dumps({"sessionId": "s-1", "partyId": "p-2", "accountId": "1",
                       "extensionId": "2", "inParty": party}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/s3cret/on-call-enter",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", "SERVER_PROTOCOL": "HTTP/1.1"}
    statuses: list[str] = []
    result = listener.wsgi(environ, lambda status, headers, exc_info=None: statuses.append(status))
    chunks = list(result)
    assert statuses == ["204 NO CONTENT"] and b"".join(chunks) == b""
    assert ran == []  # the body is written, but the server has not closed it yet
    result.close()  # type: ignore[attr-defined]
    assert ran == ["on-call-enter"]


class _SlowAnswer:
    """An app endpoint on a raw socket: it sends the first line of its 204 to on-call-enter,
    then the rest only when told, so the answer has arrived but cannot be read yet."""

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.body: dict[str, Any] = {}
        self.partial_sent = threading.Event()
        self.finish = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def callback_urls(self) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        return {kind: f"{base}/{kind}" for kind in ("on-call-enter", "on-command-update",
                                                    "on-call-exit", "on-command-error")}

    def _serve(self) -> None:
        import json

        connection, _ = self.server.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(rest) < length:
                rest += connection.recv(65536)
            self.body = json.loads(rest)
            connection.sendall(b"HTTP/1.1 204 No Content\r\n")
            self.partial_sent.set()
            self.finish.wait(10)
            connection.sendall(b"Content-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.finish.set()
        self.thread.join(10)
        self.server.close()


def test_a_command_after_an_answer_that_arrived_but_is_not_yet_read_is_accepted() -> None:
    """The app's answer is out (its first bytes arrived) while the simulator cannot read all
    of it yet: a Play sent now came after the answer, so it waits for the answer to be read
    and is accepted; it is not answered 409 for the simulator's own delay."""
    import threading
    import time

    app = _SlowAnswer()
    with Simulator(speed=20) as sim:
        http = requests.Session()
        http.trust_env = False
        phones: list[Any] = []
        ringing = threading.Thread(target=lambda: phones.append(sim.call(app)), daemon=True)
        ringing.start()
        try:
            assert app.partial_sent.wait(10), "the simulator never sent on-call-enter"
            body = app.body
            answers: list[requests.Response] = []
            play = threading.Thread(target=lambda: answers.append(http.post(
                f"{sim.url}{ACCOUNT}/telephony/sessions/{body['sessionId']}/parties/"
                f"{body['inParty']['id']}/play", json=_play_body(),
                headers={"Authorization": f"Bearer {sim.token}"}, timeout=10)), daemon=True)
            play.start()
            # The Play's handler waits for the answer to be read (on the simulator's condition);
            # a simulator that went by "read" alone would have answered 409 already.
            deadline = time.monotonic() + 10
            while not sim._changed._waiters:  # type: ignore[attr-defined]  # noqa: SLF001
                assert not answers, answers[0].text
                assert time.monotonic() < deadline, "the Play never waited for the answer"
                threading.Event().wait(0.01)
            app.finish.set()
            play.join(10)
            ringing.join(10)
            assert [a.status_code for a in answers] == [201], answers[0].text
            assert phones and phones[0].heard == ["https://media.example/a.wav"]
        finally:
            http.close()
            app.close()


def test_a_proxy_that_relays_the_204_late_does_not_fail_the_first_command(
        sim: Simulator, make_app: Any) -> None:
    """Behind a proxy the app's 204 reaches the platform after the app sent it, so its first
    command can meet a 409 through no fault of its own: the app sends it again shortly while
    the call is young, and the call goes on (here the proxy holds every answer 150 ms)."""
    from .scaleout.balancer import RoundRobin

    def main(call: ivr.Call) -> Any:
        yield ivr.play("https://media.example/hello.wav")
        yield ivr.hangup()

    app = make_app(main)
    lb = RoundRobin([app.url], relay_delay=0.15).start()
    try:
        phone = sim.call(lb.rewrite(app.callback_urls))
        phone.wait_until_ended(30)
    finally:
        lb.stop()
    assert phone.end_reason == "hangup", phone.error
    assert phone.heard == ["https://media.example/hello.wav"]
    plays = [r.status for r in sim.requests_log if r.method == "POST"
             and r.path.endswith("/play")]
    assert plays[0] == 409 and plays[-1] == 201, plays
