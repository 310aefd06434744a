"""``phone.wait_until_ended()`` on the phone of an app's call returns once the app's side is
done too: the Call finished (its transcript complete) and, when the app records, the cassette
written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ivrscript as ivr
from ivrscript import App, Simulator


def main(call: ivr.Call) -> Any:  # the README's first example, with remote prompts
    yield ivr.play("https://media.example/welcome.wav")
    digits = yield ivr.collect("x", timeout=5, prompt="https://media.example/menu.wav")
    if digits == "2":
        yield ivr.forward(extension="102")
    yield ivr.play("https://media.example/goodbye.wav")


def test_the_readme_example_always_prints_the_exit_line() -> None:
    """30 times the README's shape: press, wait_until_ended, print the transcript: the app's
    transcript always ends with its exit line."""
    with Simulator(speed=50) as sim, App(main, platform=sim) as app:
        missing = []
        for _ in range(30):
            phone = sim.call(app)
            phone.press("2")
            phone.wait_until_ended()
            call = next(c for c in app.calls if c.session_id == phone.session_id)
            if call.transcript.kinds()[-1:] != ["exit"]:
                missing.append(str(call.transcript))
        assert missing == []


def test_the_cassette_is_written_when_wait_until_ended_returns(tmp_path: Path) -> None:
    """With record=DIR, the call's cassette is on disk once phone.wait_until_ended() returns."""
    with Simulator(speed=50) as sim, App(main, platform=sim, record=tmp_path) as app:
        for _ in range(10):
            phone = sim.call(app)
            phone.press("2")
            phone.wait_until_ended()
            written = [p for p in tmp_path.iterdir() if phone.session_id in p.name]
            assert len(written) == 1 and written[0].stat().st_size > 0, sorted(tmp_path.iterdir())


def test_a_phone_of_plain_urls_waits_for_the_platform_side_only() -> None:
    """Given only the app's URLs the simulator cannot see the app's side: it waits for its
    own end, as before (and an app that never took the call does not hold it up)."""
    with Simulator(speed=50) as sim, App(main, platform=sim) as app:
        phone = sim.call(dict(app.callback_urls))
        phone.press("2")
        assert phone.wait_until_ended() == "forwarded"
        assert phone._apps == []  # noqa: SLF001
        call = next(c for c in app.calls if c.session_id == phone.session_id)
        assert call.wait_until_ended(10) == "forwarded"


def test_the_request_that_ended_a_call_is_logged_when_wait_until_ended_returns() -> None:
    """A forward ends the call while the simulator is still answering it; the request log
    gets it once answered. ``wait_until_ended`` returns only once it is logged, so a test
    reading ``requests_log`` right after sees the whole call (50 calls, none missing)."""
    def main(call: ivr.Call) -> Any:
        yield ivr.forward(extension="101")

    import concurrent.futures

    def one(sim: Simulator, urls: dict[str, str], i: int) -> list[Any]:
        phone = sim.call(urls, caller=f"+1555{i:07d}")
        phone.wait_until_ended(30)
        assert phone.end_reason == "forwarded"
        with sim._lock:
            return [r for r in sim.requests_log
                    if r.session_id == phone.session_id and r.path.endswith("/forward")]

    with Simulator(speed=20) as sim, App(main, platform=sim) as app, \
            concurrent.futures.ThreadPoolExecutor(16) as pool:
        urls = dict(app.callback_urls)
        logged = list(pool.map(lambda i: one(sim, urls, i), range(200)))
    missing = [i for i, forwards in enumerate(logged) if len(forwards) != 1]
    assert missing == [], f"{len(missing)} of 200 calls ended before their forward was logged"
