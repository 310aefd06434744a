"""The engine as a pure state machine: events in, requests out, no sockets."""

from __future__ import annotations

import pytest

import ivrscript as ivr
from ivrscript.engine import CommandError, GoneTimeout, Media
from ivrscript.errors import PlatformError, RetryLater

from .enginedriver import Driver


def test_play_sends_caller_party_request_and_resumes_with_result():
    """play() targets the caller party and resumes with a PlayResult carrying the status."""
    seen = []

    def main(call):
        result = yield ivr.play("https://x/hello.wav", interrupt_by_dtmf=True, repeat=2)
        seen.append(result)

    d = Driver(main).start()
    req = d.last("play")
    assert req.args == {"session_id": "s-1", "party_id": "p-caller",
                        "uris": ["https://x/hello.wav"], "interrupt_by_dtmf": True, "repeat": 2}
    d.play_done("Interrupted")
    assert seen[0].status == "Interrupted" and seen[0].interrupted
    assert d.ops() == ["play", "drop"]
    assert d.finished == "hangup"
    assert d.call.end_reason == "hangup"


@pytest.mark.parametrize("status", ["Completed", "Interrupted", "Canceled"])
def test_every_play_status_resumes(status):
    """Completed, Interrupted and Canceled resume the yield with that status."""
    seen = []

    def main(call):
        seen.append((yield ivr.play("a.wav")).status)

    d = Driver(main).start()
    d.play_done(status)
    assert seen == [status]


def test_failed_play_raises_command_failed_at_the_yield():
    """A play the platform reports Failed raises CommandFailed at that yield."""
    caught = []

    def main(call):
        try:
            yield ivr.play("https://x/missing.wav")
        except ivr.CommandFailed as e:
            caught.append(str(e))
        yield ivr.play("https://x/ok.wav")

    d = Driver(main).start()
    d.play_done("Failed")
    assert "missing.wav" in caught[0]
    assert d.last("play").args["uris"] == ["https://x/ok.wav"]


@pytest.mark.parametrize("status,digits", [("Completed", "1234"), ("Not Found", "9"),
                                           ("Timeout", "")])
def test_collect_statuses_give_digits(status, digits):
    """collect() resumes with Digits: a str with .status and .matched."""
    seen = []

    def main(call):
        seen.append((yield ivr.collect("xxxx", timeout=8, inter_digit_timeout=2)))

    d = Driver(main).start()
    req = d.last("collect")
    assert req.args == {"session_id": "s-1", "party_id": "p-caller", "patterns": ["xxxx"],
                        "timeout_ms": 8000, "inter_digit_timeout_ms": 2000, "terminator": "#",
                        "reset_input": True}
    d.collect_done(digits, status, after=9)
    got = seen[0]
    assert isinstance(got, str) and got == digits
    assert got.status == status and got.matched == (status == "Completed")


def test_prompted_collect_plays_with_barge_in_and_adds_prompt_length():
    """A prompt plays interruptible first; the collect's timeout adds the prompt's length."""
    def main(call):
        yield ivr.collect("x", timeout=5, prompt="pin.wav")

    d = Driver(main, resolve_media=lambda ref: Media(f"http://app/{ref}", 2.5)).start()
    assert d.ops() == ["play", "collect"]
    play, collect = d.requests
    assert play.args["interrupt_by_dtmf"] is True and play.args["uris"] == ["http://app/pin.wav"]
    assert collect.args["timeout_ms"] == 7500


def test_collect_result_cancels_the_prompt_still_playing():
    """When the caller answers before the prompt ends, the rest of the prompt is canceled."""
    got = []

    def main(call):
        got.append((yield ivr.collect("1", prompt="https://x/menu.wav")))

    d = Driver(main).start()
    prompt_id = d.play_id()
    d.collect_done("1", after=1)
    assert got == ["1"]
    cancel = d.last("cancel")
    assert cancel.args["command_id"] == prompt_id
    # the prompt's own Canceled update afterwards changes nothing
    d.play_done("Canceled", command_id=prompt_id)
    assert d.finished == "hangup"


def test_interrupted_prompt_is_not_canceled():
    """A prompt already interrupted by the key needs no cancel."""
    def main(call):
        yield ivr.collect("1", prompt="https://x/menu.wav")

    d = Driver(main).start()
    d.play_done("Interrupted")
    d.collect_done("1", after=1)
    assert "cancel" not in d.ops()


def test_forward_uses_app_party_and_raises_call_ended_forwarded():
    """forward() targets the app party; once accepted CallEnded('forwarded') is raised."""
    reasons = []

    def main(call):
        try:
            yield ivr.forward(extension="101")
        except ivr.CallEnded as e:
            reasons.append(e.reason)
            raise

    d = Driver(main).start()
    assert d.last("forward").args == {"session_id": "s-1", "app_party_id": "p-app",
                                      "extension": "101", "phone_number": None}
    assert reasons == ["forwarded"]
    assert d.call.end_reason == "forwarded" and d.finished == "forwarded"
    d.exit()  # the platform's on-call-exit afterwards changes nothing
    assert d.ops() == ["forward"]


def test_hangup_raises_call_ended_hangup_and_finally_runs():
    """hangup() drops the call; CallEnded('hangup') at the yield, so finally runs."""
    log = []

    def main(call):
        try:
            yield ivr.hangup()
        finally:
            log.append("finally")

    d = Driver(main).start()
    assert d.ops() == ["drop"] and log == ["finally"] and d.call.end_reason == "hangup"


def test_returning_hangs_up():
    """When the script returns, the app hangs up."""
    def main(call):
        yield ivr.play("https://x/bye.wav")
        return "done"

    d = Driver(main).start()
    d.play_done()
    assert d.ops() == ["play", "drop"]
    assert d.call.result == "done" and d.call.ended and d.finished == "hangup"
    assert d.call.transcript.kinds() == ["enter", "play", "result", "hangup", "exit"]


def test_caller_hangup_raises_call_ended_at_pending_yield():
    """The caller hanging up raises CallEnded('caller-hangup'); no more commands after."""
    log = []

    def main(call):
        try:
            yield ivr.collect("xxxx")
        except ivr.CallEnded as e:
            log.append(e.reason)
        yield ivr.play("https://x/never.wav")  # gets no command

    d = Driver(main).start()
    d.exit()
    assert log == ["caller-hangup"]
    assert d.ops() == ["collect"]
    assert d.call.end_reason == "caller-hangup" and d.finished == "caller-hangup"


def test_subflows_return_values():
    """Yielding a generator runs it as a sub-flow and resumes with its return value."""
    def ask_pin(call):
        pin = yield ivr.collect("xxxx")
        return f"pin:{pin}"

    out = []

    def main(call):
        out.append((yield ask_pin(call)))
        out.append((yield from ask_pin(call)))

    d = Driver(main).start()
    d.collect_done("1111", after=1)
    d.collect_done("2222", after=1)
    assert out == ["pin:1111", "pin:2222"]


def test_bad_yield_throws_type_error_naming_value():
    """Yielding a non-command throws TypeError at that yield, naming the value."""
    caught = []

    def main(call):
        try:
            yield 42
        except TypeError as e:
            caught.append(str(e))
        yield ivr.play("https://x/a.wav")

    d = Driver(main).start()
    assert "42" in caught[0] and "ivr.play" in caught[0]
    assert d.ops() == ["play"]


def test_yielding_a_builder_function_hints_to_call_it():
    """Yielding ivr.hangup (not called) says to call it."""
    caught = []

    def main(call):
        try:
            yield ivr.hangup
        except TypeError as e:
            caught.append(str(e))

    Driver(main).start()
    assert "forget to call" in caught[0]


def test_script_exception_runs_on_error_default_hangup():
    """A script that raises: traceback in the transcript, the app hangs up."""
    def main(call):
        yield ivr.play("https://x/a.wav")
        raise RuntimeError("boom")

    d = Driver(main).start()
    d.play_done()
    assert d.ops() == ["play", "drop"]
    text = str(d.call.transcript)
    assert "RuntimeError: boom" in text and "Traceback" in text
    assert isinstance(d.call.error, RuntimeError)
    assert d.call.end_reason == "hangup"


def test_on_error_forward_and_fallback_to_hangup():
    """on_error=forward runs on a script error; if it fails too the app hangs up."""
    def main(call):
        raise ValueError("bad")
        yield  # pragma: no cover

    d = Driver(main, on_error=ivr.forward(extension="0"))
    d.start()
    assert d.ops() == ["forward"] and d.call.end_reason == "forwarded"

    d2 = Driver(main, on_error=ivr.forward(extension="0"))
    d2.fail_next("forward", PlatformError(500, "CMN-999", "nope"))
    d2.start()
    assert d2.ops() == ["forward", "drop"] and d2.call.end_reason == "hangup"


def test_menu_wrong_key_then_right_one():
    """menu(): a wrong key plays `invalid` and asks again; the right key is returned."""
    out = []

    def main(call):
        out.append((yield ivr.menu("https://x/menu.wav", ["1", "2"], invalid="https://x/bad.wav",
                                   no_input="https://x/none.wav")))

    d = Driver(main).start()
    first = d.last("collect")
    assert first.args["terminator"] == "#" and first.args["patterns"] == ["1", "2"]
    d.collect_done("7", "Not Found", after=1)
    assert d.last("play").args["uris"] == ["https://x/bad.wav"]
    d.play_done()
    d.collect_done("", "Timeout", after=10)
    assert d.last("play").args["uris"] == ["https://x/none.wav"]
    d.play_done()
    d.collect_done("2", after=1)
    assert out == ["2"]


def test_menu_returns_none_after_last_try_without_playing():
    """After the last failed try menu() plays nothing and returns None."""
    out = []

    def main(call):
        out.append((yield ivr.menu("https://x/m.wav", ["1"], tries=2, invalid="https://x/b.wav")))

    d = Driver(main).start()
    d.collect_done("5", "Not Found", after=1)
    d.play_done()
    d.collect_done("5", "Not Found", after=1)
    assert out == [None]
    assert [r.args.get("uris") for r in d.requests if r.op == "play"] == [
        ["https://x/m.wav"], ["https://x/b.wav"], ["https://x/m.wav"]]


def test_duplicate_and_stale_updates_change_nothing():
    """The same update twice advances once; an update for another command is ignored."""
    def main(call):
        yield ivr.play("https://x/a.wav")
        yield ivr.play("https://x/b.wav")

    d = Driver(main).start()
    first = d.play_id()
    d.play_done(command_id=first)
    d.play_done(command_id=first)  # duplicate
    d.play_done(command_id="999")  # stale
    assert d.ops() == ["play", "play"]
    d.play_done()
    assert d.ops() == ["play", "play", "drop"]


def test_collect_update_from_before_send_or_early_timeout_is_ignored():
    """Without ids, an update older than the collect or a too-early Timeout is not its result."""
    got = []

    def main(call):
        got.append((yield ivr.collect("xxxx", timeout=10)))

    d = Driver(main)
    d.now = 5.0
    d.start()
    from ivrscript.engine import Update

    d.feed(d.engine.handle(Update("Collect", "Completed", None, "1", received_at=4.0)))
    d.collect_done("", "Timeout", after=0.1)
    assert got == []
    d.collect_done("", "Timeout", after=10)
    assert got == [""] and got[0].status == "Timeout"


def test_collect_with_id_matches_by_id():
    """When the platform gives the collect an id, the update must carry it."""
    from ivrscript.engine import Sent

    got = []

    def main(call):
        got.append((yield ivr.collect("x")))

    d = Driver(main)
    d.failures["collect"].append(lambda token: Sent(token, "c-7"))
    d.start()
    d.collect_done("1", command_id="c-6", after=1)
    assert got == []
    d.collect_done("1", command_id="c-7", after=1)
    assert got == ["1"]


def test_retry_after_waits_then_resends_and_caps():
    """429/503: wait Retry-After (a Wait action, no blocking), resend; capped -> CommandFailed."""
    from ivrscript.engine import MAX_ATTEMPTS

    caught = []

    def main(call):
        try:
            yield ivr.play("https://x/a.wav")
        except ivr.CommandFailed as e:
            caught.append(e)

    d = Driver(main)
    for _ in range(MAX_ATTEMPTS):
        d.fail_next("play", RetryLater(429, "CMN-301", "slow down", retry_after=1.0),
                    retry_after=1.0)
    d.start()
    assert [w.seconds for w in d.waits] == [1.0]
    for _ in range(MAX_ATTEMPTS - 1):
        d.fire_wait()
    assert d.ops() == ["play"] * MAX_ATTEMPTS + ["drop"]
    assert len(caught) == 1 and not d.waits


def test_404_means_call_gone_and_ends_as_caller_hangup():
    """A 404 on a command: wait for on-call-exit, then CallEnded('caller-hangup'), no on_error."""
    reasons = []

    def main(call):
        try:
            yield ivr.play("https://x/a.wav")
        except ivr.CallEnded as e:
            reasons.append(e.reason)

    d = Driver(main, on_error=ivr.forward(extension="0"))
    d.fail_next("play", PlatformError(404, "CMN-102", "Session not found"))
    d.start()
    assert reasons == [] and isinstance(d.waits[0].event, GoneTimeout)
    d.fire_wait()
    assert reasons == ["caller-hangup"] and d.ops() == ["play"]
    assert d.call.error is None


def test_command_error_callback_fails_the_pending_command():
    """on-command-error fails the pending command with CommandFailed."""
    caught = []

    def main(call):
        try:
            yield ivr.collect("x")
        except ivr.CommandFailed as e:
            caught.append(str(e))

    d = Driver(main).start()
    d.feed(d.engine.handle(CommandError({"message": "media error"})))
    assert "media error" in caught[0]


def test_missing_local_media_raises_command_failed_naming_path():
    """A missing local file raises CommandFailed at the yield, naming the path."""
    from ivrscript.media import MediaLibrary

    caught = []

    def main(call):
        try:
            yield ivr.play("no/such/file.wav")
        except ivr.CommandFailed as e:
            caught.append(str(e))

    d = Driver(main, resolve_media=MediaLibrary([]).resolve).start()
    assert "no/such/file.wav" in caught[0]
    assert d.ops() == ["drop"]


def test_script_that_keeps_going_after_call_ended_gets_no_commands():
    """After CallEnded, whatever the script yields is not sent; the generator is closed."""
    closed = []

    def main(call):
        try:
            try:
                yield ivr.collect("x")
            except ivr.CallEnded:
                pass
            yield ivr.play("https://x/a.wav")
        finally:
            closed.append(True)

    d = Driver(main).start()
    d.exit()
    assert d.ops() == ["collect"] and closed == [True] and d.finished == "caller-hangup"


def test_transcript_lines_read_well():
    """str(transcript): one readable line per event."""
    def main(call):
        yield ivr.play("https://x/welcome.wav")
        yield ivr.collect("xxxx")

    d = Driver(main).start()
    d.play_done()
    d.collect_done("1234", after=1)
    lines = str(d.call.transcript).splitlines()
    assert lines[1:] == ["play    https://x/welcome.wav", "  -> Completed", "collect xxxx",
                         "  -> '1234' Completed", "hangup  (script returned)", "exit    hangup"]


def test_non_generator_script_returning_non_generator_fails_cleanly():
    """A script that does not return a generator is a script error, and the call hangs up."""
    d = Driver(lambda call: 5).start()
    assert d.ops() == ["drop"] and "not a generator" in str(d.call.transcript)
