"""The notebook widgets, headless: the Keypad drives whole simulated calls through its buttons,
the Dashboard shows calls as they arrive and their transcripts as they grow, and the notebook
ergonomics (hot-swapping the script, re-running a cell that builds an App on the same port)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets
import pytest

import ivrscript as ivr
from ivrscript import App
from ivrscript.widgets import CallView, Dashboard, Keypad

from .conftest import EXAMPLES

WELCOME = os.path.join(EXAMPLES, "prompts", "welcome.wav")
ENTER_PIN = os.path.join(EXAMPLES, "prompts", "enter-pin.wav")
GOODBYE = os.path.join(EXAMPLES, "prompts", "goodbye.wav")
TIMEOUT = 10.0


def until(widget: ipywidgets.Widget, trait: str, predicate: Callable[[Any], bool],
          what: str, timeout: float = TIMEOUT) -> None:
    """Wait (on trait changes, no polling) until ``predicate(widget.<trait>)`` holds."""
    done = threading.Event()

    def check(_change: Any = None) -> None:
        if predicate(getattr(widget, trait)):
            done.set()

    widget.observe(check, names=trait)
    try:
        check()
        if not done.wait(timeout):
            raise AssertionError(f"{what}: not seen within {timeout} s; {trait} is "
                                 f"{getattr(widget, trait)!r}")
    finally:
        widget.unobserve(check, names=trait)


def pin_script(call: ivr.Call) -> Any:
    yield ivr.play(WELCOME)
    pin = yield ivr.collect("xxxx", timeout=8, prompt=ENTER_PIN)
    call.data["pin"] = str(pin)
    yield ivr.collect("x", timeout=8)  # wait here until the caller hangs up
    yield ivr.play(GOODBYE)


def transcript_text(keypad: Keypad) -> str:
    (view,) = keypad.transcript.children
    assert isinstance(view, CallView)
    return view.text.value


def test_keypad_buttons_drive_a_whole_call(sim: Any, make_app: Callable[..., Any]) -> None:
    """Clicking Call places a simulated call, the digit buttons press keys, Hang up hangs up,
    and the keypad's transcript widget shows all of it."""
    app = make_app(pin_script)
    keypad = Keypad(sim, app)
    assert [keypad.buttons[k].description for k in keypad.buttons] == [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#", "Call", "Hang up"]

    keypad.buttons["Call"].click()
    phone, call = keypad.phone, keypad.call
    assert phone is not None and call is not None and call in app.calls
    phone.wait_until_listening(TIMEOUT)
    until(keypad.status, "value", lambda v: "listening" in v and "xxxx" in v,
          "the status line shows the app listening for xxxx")
    for key in "1234":
        keypad.buttons[key].click()
    until(keypad.transcript.children[0].text, "value", lambda v: "&#x27;1234&#x27; Completed" in v,
          "the transcript shows the PIN collected")
    phone.wait_until_listening(TIMEOUT)  # the second collect
    keypad.buttons["Hang up"].click()
    assert phone.wait_until_ended(TIMEOUT) == "caller-hangup"
    assert call.wait_until_ended(TIMEOUT) == "caller-hangup"
    assert call.data["pin"] == "1234"
    until(keypad.status, "value", lambda v: "Call ended" in v and "caller-hangup" in v,
          "the status line shows the call ended by the caller")
    text = transcript_text(keypad)
    for line in ("enter", "play", "welcome.wav", "collect xxxx", "exit"):
        assert line in text, f"{line!r} missing from the transcript widget:\n{text}"
    until(keypad.transcript.children[0].title, "value", lambda v: "ended: caller-hangup" in v,
          "the transcript's title shows the call ended")


def test_keypad_plays_local_wav_prompts_as_audio(sim: Any, make_app: Callable[..., Any]
                                                 ) -> None:
    """A local WAV prompt the app plays is put in the keypad's Audio widget, bytes and all."""
    app = make_app(pin_script)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    with open(WELCOME, "rb") as file:
        welcome = file.read()
    until(keypad.audio, "value", lambda v: v == welcome, "welcome.wav in the Audio widget")
    assert keypad.audio.format == "wav"
    keypad.buttons["Hang up"].click()
    keypad.phone.wait_until_ended(TIMEOUT)


def test_keypad_explains_clicks_without_a_call(sim: Any, make_app: Callable[..., Any]) -> None:
    """A key or Hang up with no call in progress says what to do instead of raising; Call
    while a call is in progress says to hang up first and places no second call."""
    app = make_app(pin_script)
    keypad = Keypad(sim, app)
    keypad.buttons["5"].click()
    assert "press Call first" in keypad.status.value
    keypad.buttons["Hang up"].click()
    assert "No call in progress" in keypad.status.value
    keypad.buttons["Call"].click()
    first = keypad.phone
    keypad.buttons["Call"].click()
    assert keypad.phone is first and len(app.calls) == 1
    assert "hang up first" in keypad.status.value
    keypad.buttons["Hang up"].click()
    first.wait_until_ended(TIMEOUT)


def test_keypad_reports_an_app_that_is_not_running(sim: Any) -> None:
    """Call on a stopped app says so in the status line; nothing is raised into the kernel."""
    app = App(pin_script, platform=sim)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    assert keypad.phone is None
    assert "Cannot call" in keypad.status.value and "start()" in keypad.status.value


def test_assigning_app_script_changes_the_next_call(sim: Any, make_app: Callable[..., Any]
                                                    ) -> None:
    """`app.script = main` after redefining main: the next call (placed through the Keypad)
    runs the new script; the first call ran the old one."""
    def main(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)

    app = make_app(main)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    first = keypad.call
    assert first is not None and first.wait_until_ended(TIMEOUT) == "hangup"

    def main(call: ivr.Call) -> Any:  # noqa: F811 - redefined, as in a notebook cell
        choice = yield ivr.collect("x", timeout=8)
        call.data["choice"] = str(choice)
        yield ivr.play(GOODBYE)

    app.script = main
    keypad.buttons["Call"].click()
    second = keypad.call
    assert second is not None and second is not first
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["7"].click()
    assert second.wait_until_ended(TIMEOUT) == "hangup"
    assert second.data == {"choice": "7"}
    assert "goodbye.wav" in str(second.transcript)
    assert "goodbye.wav" not in str(first.transcript) and "collect" not in first.transcript.kinds()


def test_dashboard_shows_calls_appearing_and_transcripts_updating(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """A Dashboard shows where the app listens and its URLs; a call appears in it when it
    enters (no polling), and its transcript grows while the call runs."""
    app = make_app(pin_script)
    dash = Dashboard(app)
    assert app.url in dash.header.value
    for url in app.callback_urls.values():
        assert url in dash.urls.value
    assert dash.calls.children == ()

    phone = sim.call(app)
    (view,) = dash.calls.children  # the enter hook ran before the platform got its 204
    assert isinstance(view, CallView) and view.call.session_id == phone.session_id
    until(view.text, "value", lambda v: "collect xxxx" in v, "the collect in the transcript")
    phone.press("4321")
    until(view.text, "value", lambda v: "&#x27;4321&#x27; Completed" in v,
          "the collected digits in the transcript")
    phone.wait_until_listening(TIMEOUT)
    phone.hang_up()
    until(view.title, "value", lambda v: "ended: caller-hangup" in v, "the call ended")
    until(dash.header, "value", lambda v: "1 call, 0 in progress" in v, "the header's count (singular)")

    second = sim.call(app)
    assert [v.call.session_id for v in dash.calls.children] == [phone.session_id,
                                                                second.session_id]
    second.hang_up()
    second.wait_until_ended(TIMEOUT)
    dash.close()
    assert all(not hasattr(o, "owner") for o in app._observers), "close() detaches"


def test_dashboard_shows_every_one_of_many_concurrent_calls(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """Calls entering at the same time on different listener threads each get their view
    (no update lost to a race), and each view ends up showing its own call's transcript."""
    app = make_app(pin_script)
    dash = Dashboard(app, max_calls=50)
    phones: list[Any] = []
    start = threading.Barrier(12)

    def ring() -> None:
        start.wait(TIMEOUT)
        phones.append(sim.call(app))

    threads = [threading.Thread(target=ring) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(phones) == 12
    shown = {view.call.session_id: view for view in dash.calls.children}
    assert set(shown) == {phone.session_id for phone in phones}
    for phone in phones:
        phone.hang_up()
    for call in app.calls:
        call.wait_until_ended(TIMEOUT)
        until(shown[call.session_id].text, "value", lambda v: "exit    caller-hangup" in v,
              f"the end of call {call.session_id}")
        assert shown[call.session_id].text.value.count("enter   from") == 1


def test_dashboard_keeps_the_last_calls_only(sim: Any, make_app: Callable[..., Any]) -> None:
    """With more calls than max_calls the dashboard shows the newest and says so."""
    def main(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)

    app = make_app(main)
    dash = Dashboard(app, max_calls=2)
    phones = [sim.call(app) for _ in range(3)]
    assert [v.call.session_id for v in dash.calls.children] == [p.session_id
                                                                for p in phones[1:]]
    for phone in phones:
        phone.wait_until_ended(TIMEOUT)
    for call in app.calls:
        call.wait_until_ended(TIMEOUT)
    until(dash.header, "value", lambda v: "showing the last 2" in v and "0 in progress" in v,
          "the header")


@pytest.fixture
def default_log_levels() -> Iterator[None]:
    """ivrscript's loggers at their defaults (another test, e.g. an in-process CLI run, may
    have turned them down), restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("ivrscript", "ivrscript.engine")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield
    for logger, level in zip(loggers, saved, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("default_log_levels")
def test_dashboard_shows_ivrscript_warnings_from_background_threads(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """A script that raises is logged from a worker thread; a live dashboard shows the error
    in its log line (instead of stderr, which lands in a random notebook cell)."""
    def main(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)
        raise KeyError("no such customer")

    app = make_app(main)
    dash = Dashboard(app)
    phone = sim.call(app)
    until(dash.log_line, "value", lambda v: "no such customer" in v, "the error in the log line")
    phone.wait_until_ended(TIMEOUT)
    (view,) = dash.calls.children
    until(view.text, "value", lambda v: "KeyError" in v, "the traceback in the transcript")


def test_app_displays_as_a_dashboard(sim: Any, make_app: Callable[..., Any]) -> None:
    """An App as a cell's last value renders as a Dashboard widget, with its repr as text."""
    app = make_app(pin_script)
    bundle = app._repr_mimebundle_()
    assert bundle["text/plain"] == repr(app)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    model_id = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    shown = ipywidgets.widget_serialization["from_json"](f"IPY_MODEL_{model_id}", None)
    assert isinstance(shown, Dashboard) and shown.app is app
    shown.close()


def test_a_new_app_on_a_port_an_older_app_holds_stops_it_with_a_notice(
        sim: Any, make_app: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Re-running a cell that builds an App on the same port stops the earlier App, prints
    one line saying so, and the new App serves calls there."""
    def main(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)

    old = make_app(main)
    port = old.port
    new = make_app(main, port=port)
    out = capsys.readouterr().out
    assert out.strip() == (f"ivrscript: stopped the earlier App on 127.0.0.1:{port} to start "
                           "this one")
    assert not old.running and new.running and new.port == port
    phone = sim.call(new)
    assert phone.wait_until_ended(TIMEOUT) == "hangup"
    assert len(new.calls) == 1 and old.calls == []


def waiting_script(call: ivr.Call) -> Any:
    yield ivr.collect("x", timeout=60)


def test_stopping_the_app_ends_its_calls_and_its_widgets_say_stopped(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """App.stop() with a call in progress ends it through on_error (the caller hears the app
    hang up, not silence); its Dashboard and Keypad then say the app is stopped, and Call
    says why it cannot call."""
    app = make_app(waiting_script)
    dash = Dashboard(app)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    phone, call = keypad.phone, keypad.call
    assert call is not None
    phone.wait_until_listening(TIMEOUT)
    app.stop()
    assert phone.wait_until_ended(TIMEOUT) == "hangup"
    assert call.end_reason == "hangup"
    assert "IvrError: the app was stopped" in str(call.transcript)
    assert "hangup  (on_error)" in str(call.transcript)
    assert "stopped" in dash.header.value and "1 call, 0 in progress" in dash.header.value
    until(keypad.status, "value", lambda v: "Call ended: <b>hangup</b>" in v
          and "the app is stopped" in v, "the keypad says the call ended and the app stopped")
    keypad.buttons["Call"].click()
    assert "Cannot call: the app is stopped" in keypad.status.value
    assert len(app.calls) == 1


@pytest.mark.usefixtures("default_log_levels")
def test_each_widget_shows_its_own_apps_warnings_one_line_each(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """A script error of one App shows in that App's widgets as one line without the traceback
    (the transcript has it), not in another App's widgets, and not in a widget built later."""
    def failing(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)
        raise KeyError("no such customer")

    bad, good = make_app(failing), make_app(waiting_script)
    bad_dash, good_dash = Dashboard(bad), Dashboard(good)
    good_keypad = Keypad(sim, good)
    phone = sim.call(bad)
    until(bad_dash.log_line, "value", lambda v: "no such customer" in v, "the error")
    phone.wait_until_ended(TIMEOUT)
    text = bad_dash.log_line.value
    assert "Traceback" not in text and text.count("no such customer") == 1, text
    assert "the script raised KeyError: &#x27;no such customer&#x27;" in text, text
    assert good_dash.log_line.value == "" and good_keypad.log_line.value == ""
    assert Dashboard(bad).log_line.value == "", "a new widget starts with no old lines"
    hidden = make_app(failing)  # an App without widgets: its errors reach no other App's
    other = sim.call(hidden)
    other.wait_until_ended(TIMEOUT)
    hidden.calls[0].wait_until_ended(TIMEOUT)
    assert good_dash.log_line.value == "" and bad_dash.log_line.value == text
    (view,) = bad_dash.calls.children
    until(view.text, "value", lambda v: "Traceback" in v, "the traceback in the transcript")


def test_prompt_audio_plays_once_and_stops_on_interruption_and_hang_up(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """The prompt plays once (no loop); no player is shown before the first prompt (an empty
    one errors in the browser); a key that interrupts the prompt, and the hang-up, stop it."""
    from ivrscript.widgets import _SILENCE

    app = make_app(pin_script)
    keypad = Keypad(sim, app)
    assert keypad.audio.loop is False and keypad.audio.autoplay is True
    assert keypad.audio_box.children == ()
    keypad.buttons["Call"].click()
    with open(ENTER_PIN, "rb") as file:
        enter_pin = file.read()
    until(keypad.audio, "value", lambda v: v == enter_pin, "enter-pin.wav playing")
    assert keypad.audio_box.children == (keypad.audio,) and keypad.audio.autoplay
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["1"].click()  # barge-in: the prompt is interrupted
    until(keypad.audio, "value", lambda v: v == _SILENCE, "the prompt stopped by the key")
    assert keypad.audio.autoplay is False
    keypad.press("234")
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["Hang up"].click()
    keypad.phone.wait_until_ended(TIMEOUT)
    until(keypad.audio, "value", lambda v: v == _SILENCE, "silent after the hang-up")


def test_status_shows_keys_per_collect_and_drops_notes_about_a_past_state(
        sim: Any, make_app: Callable[..., Any]) -> None:
    """The status line shows the keys of each collect apart (a PIN, then a menu choice), and
    a note about the call in progress ("hang up first") goes once the call has ended."""
    def main(call: ivr.Call) -> Any:
        yield ivr.collect("xxxx", timeout=8)
        yield ivr.collect("x", timeout=8)
        yield ivr.collect("x", timeout=30)

    app = make_app(main)
    keypad = Keypad(sim, app)
    keypad.buttons["Call"].click()
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.press("1234")
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.press("2")
    until(keypad.status, "value", lambda v: "keys <code>1234</code> <code>2</code>" in v,
          "the keys of each collect")
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["Call"].click()
    assert "hang up first" in keypad.status.value
    keypad.buttons["Hang up"].click()
    keypad.phone.wait_until_ended(TIMEOUT)
    until(keypad.status, "value", lambda v: "Call ended" in v and "hang up first" not in v,
          "the note about the call in progress is gone")


def test_a_replay_mismatch_shows_as_a_side_by_side_table(tmp_path: Any) -> None:
    """show_mismatch(error) renders what was recorded and what was issued in two columns, the
    differing rows marked, whole URLs in their cells."""
    pytest.importorskip("ivrscript.recorder")
    from ivrscript import Simulator
    from ivrscript.testing import replay
    from ivrscript.widgets import show_mismatch

    def main(call: ivr.Call) -> Any:
        yield ivr.play(WELCOME)

    def changed(call: ivr.Call) -> Any:
        yield ivr.play(GOODBYE)

    with Simulator(speed=20) as sim, App(main, platform=sim, record=str(tmp_path)) as app:
        phone = sim.call(app)
        phone.wait_until_ended(TIMEOUT)
        path = app._recorder.wait_for(phone.session_id, TIMEOUT)
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(path, changed)
    shown = show_mismatch(caught.value).value
    assert caught.value._repr_html_() == shown  # a mismatch left as a cell's value
    assert "<table" in shown and "<th style='text-align:left'>recorded</th>" in shown
    marked = [row for row in shown.split("<tr") if "background" in row]
    assert any("welcome.wav" in row and "goodbye.wav" in row for row in marked), shown


def test_keypad_plays_and_names_a_prompt_whose_name_is_quoted_in_its_url(
        sim: Any, make_app: Callable[..., Any], tmp_path: Any) -> None:
    """A local prompt named ``menu#2 100%.wav`` (``menu%232%20100%25.wav`` in its media URL)
    is played by the Keypad, bytes and all, and named as it is on disk; a spoken prompt is
    named by its words, as the transcript shows it."""
    import shutil

    prompt = tmp_path / "menu#2 100%.wav"
    shutil.copy(ENTER_PIN, prompt)
    seen: list[str] = []

    def main(call: ivr.Call) -> Any:
        yield ivr.collect("x", timeout=8, prompt=str(prompt))
        yield ivr.collect("x", timeout=8, prompt=ivr.speech("Press 1, Bob."))

    app = make_app(main)
    keypad = Keypad(sim, app)
    keypad.status.observe(lambda change: seen.append(change["new"]), names="value")
    keypad.buttons["Call"].click()
    with open(ENTER_PIN, "rb") as file:
        data = file.read()
    until(keypad.audio, "value", lambda v: v == data, "menu#2 100%.wav in the Audio widget")
    assert any("playing <code>menu#2 100%.wav</code>" in v for v in seen), seen
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["1"].click()
    until(keypad.status, "value", lambda v: "say &quot;Press 1, Bob.&quot;" in v or any(
        "say &quot;Press 1, Bob.&quot;" in s for s in seen), "the spoken prompt named")
    keypad.phone.wait_until_listening(TIMEOUT)
    keypad.buttons["Hang up"].click()
    keypad.phone.wait_until_ended(TIMEOUT)
    assert not any("%23" in v or "say-Press" in v for v in seen), seen
