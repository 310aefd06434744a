"""The platform misbehaving: hanging, 429/503 with Retry-After, a POST that times out, tokens
that expire under load. Real simulator, with a fault proxy in between where the fault must be
placed exactly."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

import ivrscript as ivr
from ivrscript import RingCentral, Simulator
from ivrscript.engine import MAX_ATTEMPTS

from .conftest import FIGURES, REMOTE, count_call, enter_body, finish, post


def _is_play(method, path):
    return method == "POST" and path.endswith("/play")


def test_platform_hanging_5s_callbacks_still_answered_within_500ms(fault_proxy, apps):
    """While the platform hangs (every play POST held for up to 5 s, all workers blocked),
    the listener still answers every callback within 500 ms, and the calls complete once the
    platform answers again."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("hang", 5.0) if _is_play(m, p) else None)
        workers = 4
        client = RingCentral(server_url=proxy.url, token=sim.token, timeout=(1.0, 10.0))

        def main(call):
            try:
                yield ivr.play(REMOTE + "a.wav")
            except ivr.CommandFailed:
                pass  # the held POST is finally answered 504: the script hangs up

        app = apps(main, platform=client, workers=workers)
        phones = [sim.call(app) for _ in range(workers + 4)]
        proxy.wait_for(lambda: proxy.hanging >= workers, 10, f"{workers} held play requests")
        latencies = []
        for i in range(20):  # new calls, updates and exits while every worker is blocked
            kind, body = [("on-call-enter", enter_body(f"s-extra-{i}")),
                          ("on-command-update", {"sessionId": phones[i % len(phones)]
                                                 .session_id, "command": "Play",
                                                 "commandId": "1", "status": "Completed"}),
                          ("on-call-exit", {"sessionId": f"s-nobody-{i}"})][i % 3]
            started = time.monotonic()
            answer = post(app, kind, body)
            latencies.append(time.monotonic() - started)
            assert answer.status_code in (200, 204)
        assert proxy.hanging >= workers, "the platform stopped hanging during the check"
        assert max(latencies) < 0.5, f"callbacks answered in {latencies}"
        FIGURES["callbacks answered while the platform hung"] += len(latencies)
        proxy.release()
        for phone in phones:
            call = finish(app, phone)
            assert call.end_reason == "hangup"
            count_call(True)
        for i in range(0, 20, 3):
            post(app, "on-call-exit", {"sessionId": f"s-extra-{i}"})


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limit_is_retried_once_after_retry_after(fault_proxy, apps, status):
    """A play answered 429 (or 503) with Retry-After: 2 is sent again once, after the wait;
    the platform carries it out once; another call is not held up meanwhile."""
    with Simulator(speed=20) as sim:
        faulted: list[str] = []

        def rule(method, path, n):
            if _is_play(method, path) and not faulted:  # only the very first play
                faulted.append(path)
                return ("status", status, 2)
            return None

        proxy = fault_proxy(sim.url, rule)
        client = RingCentral(server_url=proxy.url, token=sim.token)

        def main(call):
            yield ivr.play(REMOTE + "a.wav")

        app = apps(main, platform=client)
        first = sim.call(app)
        proxy.wait_for(lambda: len(proxy.log) >= 1, 10, "the first play")
        second = sim.call(app)
        call2 = finish(app, second)
        call1 = finish(app, first)
        plays1 = [e for e in proxy.requests_to("POST", "play") if first.session_id in e[2]]
        assert [e[3] for e in plays1] == [f"answered {status}", "forwarded"]
        assert plays1[1][0] - plays1[0][0] >= 1.9, "retried before Retry-After"
        assert call2.end_reason == call1.end_reason == "hangup"
        drop2 = [e for e in proxy.log if e[1] == "DELETE" and second.session_id in e[2]]
        assert drop2 and drop2[0][0] < plays1[1][0], "the other call waited for the retry"
        done = [r for r in sim.requests_log if r.path.endswith("/play")
                and r.session_id == first.session_id]
        assert [r.status for r in done] == [201], "the platform did not run the play once"
        assert call1.transcript.kinds() == ["enter", "play", "result", "hangup", "exit"]
        FIGURES[f"faults injected: {status} (proxy)"] += 1
        count_call(True)
        count_call(True)


def test_retries_are_capped_then_command_failed_and_on_error(fault_proxy, apps):
    """A play answered 503 every time is sent MAX_ATTEMPTS times in all, then the script gets
    CommandFailed at the yield and on_error runs."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("status", 503, 0) if _is_play(m, p)
                            else None)
        client = RingCentral(server_url=proxy.url, token=sim.token)
        caught = []

        def main(call):
            try:
                yield ivr.play(REMOTE + "a.wav")
            except ivr.CommandFailed as error:
                caught.append(error)
                raise

        app = apps(main, platform=client, on_error=ivr.forward(extension="0"))
        phone = sim.call(app)
        call = finish(app, phone)
        assert len(proxy.requests_to("POST", "play")) == MAX_ATTEMPTS
        assert len(caught) == 1 and "503" in str(caught[0])
        assert phone.forwarded_to == "0" and call.end_reason == "forwarded"
        FIGURES["faults injected: 503 (proxy)"] += MAX_ATTEMPTS
        count_call(True)


def test_a_post_that_timed_out_is_not_retried(fault_proxy, apps):
    """A play POST that gets no answer within the read timeout is sent once only: the script
    gets CommandFailed at the yield, on_error runs (here: forward to 0)."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("hang", 5.0) if _is_play(m, p) else None)
        client = RingCentral(server_url=proxy.url, token=sim.token, timeout=(1.0, 0.5))
        caught = []

        def main(call):
            try:
                yield ivr.play(REMOTE + "a.wav")
            except ivr.CommandFailed as error:
                caught.append(error)
                raise

        app = apps(main, platform=client, on_error=ivr.forward(extension="0"))
        phone = sim.call(app)
        call = finish(app, phone)
        proxy.release()
        assert len(proxy.requests_to("POST", "play")) == 1, proxy.log
        assert len(caught) == 1
        assert isinstance(caught[0].__cause__, ivr.PlatformError)
        assert caught[0].__cause__.status == 0 and "timed out" in str(caught[0])
        assert phone.forwarded_to == "0" and call.end_reason == "forwarded"
        assert "CommandFailed" in str(call.transcript)
        FIGURES["faults injected: POST timed out (proxy)"] += 1
        count_call(True)


def test_eight_threads_hitting_401_at_once_refresh_the_token_once():
    """Eight threads whose token expired all get 401 at once: exactly one token refresh, and
    all eight requests succeed."""
    with Simulator(speed=20) as sim:
        client = RingCentral(server_url=sim.url, client_id="id", client_secret="secret",
                             jwt="a.jwt.assertion")
        with ivr.App(_parked, platform=client) as app:
            phone = sim.call(app)
            phone.wait_until_listening(10)
            path = f"/restapi/v1.0/account/~/telephony/sessions/{phone.session_id}"
            assert sim.token_grants == 1
            sim.expire_tokens()
            barrier = threading.Barrier(8)

            def hit(_):
                barrier.wait(10)
                return client.request("GET", path).status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(hit, range(8)))
            assert statuses == [200] * 8
            assert sim.token_grants == 2, "expected exactly one refresh"
            four01 = [r for r in sim.requests_log if r.status == 401]
            assert len(four01) >= 1
            FIGURES["401s answered with one refresh"] += len(four01)
            phone.hang_up()
            finish(app, phone)


def _parked(call):
    yield ivr.collect("xxxx", timeout=600)


def test_calls_hitting_401_together_end_normally_with_one_refresh():
    """Eight calls waiting in collect when the token expires: all press at once, the app's
    workers hit 401 together, the token is refreshed once, every call completes."""
    with Simulator(speed=20) as sim:
        client = RingCentral(server_url=sim.url, client_id="id", client_secret="secret",
                             jwt="a.jwt.assertion")
        got = []

        def main(call):
            got.append((yield ivr.collect("xxxx", timeout=600)))
            yield ivr.play(REMOTE + "ok.wav")

        with ivr.App(main, platform=client) as app:
            phones = [sim.call(app) for _ in range(8)]
            for phone in phones:
                phone.wait_until_listening(10)
            grants = sim.token_grants
            sim.expire_tokens()
            barrier = threading.Barrier(8)

            def press(phone):
                barrier.wait(10)
                phone.press("1234", wait=False)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(press, phones))
            for phone in phones:
                call = finish(app, phone)
                assert call.end_reason == "hangup"
                count_call(True)
            assert got == ["1234"] * 8
            assert sim.token_grants == grants + 1
            rejected = [r for r in sim.requests_log if r.status == 401]
            assert rejected, "no request met the expired token"


def test_stopping_with_a_retry_pending_is_quiet(fault_proxy):
    """An app stopped while a Retry-After wait is pending stops promptly; the timer does not
    fire into a stopped pool."""
    with Simulator(speed=20) as sim:
        proxy = fault_proxy(sim.url, lambda m, p, n: ("status", 429, 30) if _is_play(m, p)
                            else None)
        client = RingCentral(server_url=proxy.url, token=sim.token)

        def main(call):
            yield ivr.play(REMOTE + "a.wav")

        app = ivr.App(main, platform=client).start()
        try:
            sim.call(app)
            proxy.wait_for(lambda: len(proxy.log) >= 1, 10, "the first play")
        finally:
            started = time.monotonic()
            app.stop()
        # stop() did not wait out the 30 s Retry-After, and nothing was sent after it.
        assert time.monotonic() - started < 20
        assert len(proxy.requests_to("POST", "play")) == 1
        assert app._timers is None and app._pool is None
