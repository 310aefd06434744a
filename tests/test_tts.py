"""Spoken prompts: ivr.say / ivr.speech, say-as words, the engine seam and the cache, and calls
on the simulator that speak every prompt for its real length."""

from __future__ import annotations

import glob
import io
import os
import threading
import wave

import pytest
import requests

import ivrscript as ivr
from ivrscript.recorder import load_recording
from ivrscript.testing import check_transcript, replay
from ivrscript.tts import Synthesizer, uses_speech

from .conftest import example


@pytest.fixture(autouse=True)
def speech_cache(tmp_path, monkeypatch):
    """Every test gets its own empty speech cache (the default one is in ~/.cache)."""
    folder = tmp_path / "speech-cache"
    monkeypatch.setenv("IVRSCRIPT_SPEECH_CACHE", str(folder))
    return folder


class CountingEngine:
    """A plugged-in engine: a tone whose length grows with the text; counts its calls."""

    name = "counting-tone"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str | None, float | None]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, text: str, voice: str | None, rate: float | None) -> bytes:
        with self.lock:
            self.calls.append((text, voice, rate))
        if self.fail:
            raise ConnectionError("the TTS service answered 503")
        out = io.BytesIO()
        with wave.open(out, "wb") as w:  # 16 kHz stereo: the cache must convert it
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\x10\x00\xf0\xff" * (1600 * len(text)))  # 0.1 s per character
        return out.getvalue()


def wav_format(data: bytes) -> tuple[int, int, int, float]:
    with wave.open(io.BytesIO(data), "rb") as w:
        return (w.getframerate(), w.getnchannels(), w.getsampwidth(),
                w.getnframes() / w.getframerate())


def finish(app, phone, timeout=20):
    phone.wait_until_ended(timeout)
    call = next(c for c in app.calls if c.session_id == phone.session_id)
    call.wait_until_ended(timeout)
    return call


# -- building -------------------------------------------------------------------------------


def test_say_is_a_play_of_a_speech_item_shown_as_say_in_transcripts():
    """say(text) is play(speech(text)); it reads `say "..."` in descriptions."""
    command = ivr.say("Welcome to Acme", interrupt_by_dtmf=True)
    assert command == ivr.play(ivr.speech("Welcome to Acme"), interrupt_by_dtmf=True)
    assert command.describe() == 'say "Welcome to Acme" (interruptible)'
    mixed = ivr.collect("xxxx", prompt=[ivr.speech("Enter your PIN", voice="en-gb", rate=1.2),
                                        "prompts/beep.wav"])
    assert mixed.describe() == 'xxxx (prompt say "Enter your PIN" (voice en-gb, rate 1.2) ' \
        'prompts/beep.wav)'
    menu = ivr.menu(ivr.speech("Press 1 or 2"), ["1", "2"], invalid=ivr.speech("Sorry"))
    assert menu.describe().startswith('1 2 (prompt say "Press 1 or 2"')
    assert ivr.speech("hi", voice="en-gb") != ivr.speech("hi")


@pytest.mark.parametrize("text, message", [
    ("", "needs some text"),
    ("   ", "needs some text"),
    ("x" * 2001, "2001 characters, over 2000"),
])
def test_empty_or_too_long_text_is_a_value_error_when_built(text, message):
    """Empty text and text over 2,000 characters fail when the item is built."""
    with pytest.raises(ValueError, match=message):
        ivr.speech(text)
    with pytest.raises(ValueError, match=message):
        ivr.say(text)
    assert ivr.speech("x" * 2000).text == "x" * 2000


def test_bad_rate_and_voice_values_are_value_errors():
    """A rate outside 0.25..4 or an empty voice name fails when built."""
    for rate in (0, 5, "fast", True):
        with pytest.raises(ValueError, match="rate is relative"):
            ivr.speech("hi", rate=rate)
    with pytest.raises(ValueError, match="voice must be"):
        ivr.speech("hi", voice=" ")


@pytest.mark.parametrize("value, kind, words", [
    ("1234", "digits", "1 2 3 4"),
    ("555-0100", "digits", "5 5 5 0 1 0 0"),
    ("*9#", "digits", "star 9 pound"),
    (1234567, "number", "one million two hundred thirty-four thousand five hundred sixty-seven"),
    ("-3.50", "number", "minus three point five"),
    (0, "number", "zero"),
    ("$1,250.05", "money", "one thousand two hundred fifty dollars and five cents"),
    (1, "money", "one dollar"),
    ("0.01", "money", "zero dollars and one cent"),
    ("2026-12-01", "date", "Tuesday, December first, twenty twenty-six"),
    ("2003-05-22", "date", "Thursday, May twenty-second, two thousand three"),
    ("1999-03-30", "date", "Tuesday, March thirtieth, nineteen ninety-nine"),
    ("14:05", "time", "two oh five PM"),
    ("00:30", "time", "twelve thirty AM"),
    ("09:00", "time", "nine AM"),
])
def test_say_as_reads_values_in_english(value, kind, words):
    """as_= turns digits, numbers, money, dates and times into the words spoken."""
    assert ivr.speech(value, as_=kind).text == words


def test_say_as_bad_values_are_value_errors():
    """A value that is not of its kind, or an unknown kind, fails when built."""
    with pytest.raises(ValueError, match="needs a number"):
        ivr.speech("twelve", as_="money")
    with pytest.raises(ValueError, match="ISO date"):
        ivr.speech("yesterday", as_="date")
    with pytest.raises(ValueError, match="as_ must be one of digits"):
        ivr.speech("1", as_="ordinal")
    with pytest.raises(TypeError, match="use as_="):
        ivr.speech(12)


def test_static_scan_finds_scripts_that_speak():
    """uses_speech sees say( and speech( in the script's module (here: this test file)."""
    def main(call):
        yield ivr.say("hi")

    assert uses_speech(main)
    assert not uses_speech(example("greeting.py"))
    assert uses_speech(example("say_hello.py"))


# -- synthesis and the cache -----------------------------------------------------------------


def test_espeak_synthesis_is_an_8khz_mono_wav_with_its_length(speech_cache):
    """The default engine (eSpeak NG in process) gives an 8 kHz mono 16-bit PCM WAV."""
    synth = Synthesizer()
    path, seconds = synth.render(ivr.speech("Welcome to Acme support."))
    with open(path, "rb") as handle:
        rate, channels, width, length = wav_format(handle.read())
    assert (rate, channels, width) == (8000, 1, 2)
    assert length == seconds and 1.0 < seconds < 4.0
    assert os.path.dirname(path) == str(speech_cache)
    slower, slow_seconds = synth.render(ivr.speech("Welcome to Acme support.", rate=0.6))
    assert slower != path and slow_seconds > seconds * 1.3


def test_cache_hits_do_not_synthesise_again(tmp_path):
    """The same (engine, voice, rate, text) is synthesised once, also across Synthesizers."""
    engine = CountingEngine()
    first = Synthesizer(engine, cache_dir=str(tmp_path / "c"))
    path, seconds = first.render(ivr.speech("Hello"))
    assert first.render(ivr.speech("Hello")) == (path, seconds)
    assert Synthesizer(engine, cache_dir=str(tmp_path / "c")).render(ivr.speech("Hello"))[0] \
        == path
    assert len(engine.calls) == 1
    first.render(ivr.speech("Hello", voice="other"))
    first.render(ivr.speech("Hello", rate=1.5))
    assert engine.calls == [("Hello", None, None), ("Hello", "other", None), ("Hello", None, 1.5)]
    with open(path, "rb") as handle:
        assert wav_format(handle.read()) == (8000, 1, 2, pytest.approx(0.5))
    with open(path, "wb") as handle:  # a damaged entry is synthesised again
        handle.write(b"RIFF")
    assert first.render(ivr.speech("Hello")) == (path, seconds) and len(engine.calls) == 4


def test_unknown_voice_is_a_value_error_listing_voices():
    """eSpeak NG: an unknown voice is a ValueError naming a few that exist."""
    with pytest.raises(ValueError, match=r"unknown voice 'xx-nowhere'.*en-us, en") as caught:
        Synthesizer().render(ivr.speech("hello", voice="xx-nowhere"))
    assert "voices include" in str(caught.value)


def test_unwritable_cache_folder_is_a_config_error_at_app_start(sim, tmp_path):
    """A cache folder that cannot be written: ConfigError when the App is built."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    def main(call):
        yield ivr.say("hi")

    with pytest.raises(ivr.ConfigError, match="speech cache folder .* is not writable"):
        ivr.App(main, platform=sim, speech=Synthesizer(cache_dir=str(blocker / "cache")))


def test_no_engine_is_a_config_error_at_app_start_saying_what_to_install(sim, monkeypatch):
    """No eSpeak NG (neither wheel nor program): ConfigError at App start, only when the script
    speaks."""
    import ivrscript.espeak as espeak

    monkeypatch.setattr(espeak, "find_engine", lambda: None)

    def main(call):
        yield ivr.say("hi")

    with pytest.raises(ivr.ConfigError, match=r'pip install "ivrscript\[speech\]"'):
        ivr.App(main, platform=sim)
    ivr.App(example("greeting.py"), platform=sim)  # no speech: no engine needed


def test_a_non_callable_speech_option_is_a_value_error(sim):
    """App(speech=...) takes an engine (a function works) or a Synthesizer."""
    with pytest.raises(ValueError, match="speech must be an engine"):
        ivr.App(example("greeting.py"), platform=sim, speech="espeak")


# -- on the simulator ------------------------------------------------------------------------


def test_spoken_prompts_play_for_their_real_length_and_collect_timeout_includes_it(
        sim, make_app):
    """A spoken collect prompt is served as an 8 kHz WAV; the simulator plays it for that
    length and the collect's timeout is the script's plus exactly that length."""
    def main(call):
        yield ivr.say("Hello.")
        call.data["pin"] = yield ivr.collect("xx", timeout=3, prompt=ivr.speech(
            "Enter two digits."))

    app = make_app(main)
    phone = sim.call(app)
    phone.press("42")
    call = finish(app, phone)
    assert call.data["pin"] == "42"
    assert 'play    say "Hello."' in str(call.transcript)
    assert 'collect xx (prompt say "Enter two digits.")' in str(call.transcript)
    assert [u.rsplit("/", 1)[-1] for u in phone.heard] == ["say-Hello.wav",
                                                           "say-Enter-two-digits.wav"]
    served = requests.get(phone.heard[1], timeout=5)
    rate, channels, width, seconds = wav_format(served.content)
    assert (rate, channels, width) == (8000, 1, 2) and served.headers["Content-Type"] == \
        "audio/wav"
    assert sim._media_cache[phone.heard[1]] == seconds  # what the simulator plays
    (collect,) = [r for r in sim.requests_log if r.path.endswith("/collect")]
    assert collect.json["timeout"] == int(round((3 + seconds) * 1000))


def test_a_plugged_in_engine_is_used(sim, make_app):
    """App(speech=engine) speaks with that engine (a plain function works too)."""
    engine = CountingEngine()
    app = make_app(lambda call: (yield ivr.say("Four")), speech=engine)
    phone = sim.call(app)
    finish(app, phone)
    assert engine.calls == [("Four", None, None)]
    served = requests.get(phone.heard[0], timeout=5)
    assert wav_format(served.content) == (8000, 1, 2, pytest.approx(0.4))

    def tone(text, voice, rate):
        return CountingEngine()(text, voice, rate)

    app2 = make_app(lambda call: (yield ivr.say("Seven chars"[:7])), speech=tone)
    phone2 = sim.call(app2)
    finish(app2, phone2)
    assert wav_format(requests.get(phone2.heard[0], timeout=5).content)[3] == \
        pytest.approx(0.7)


def test_a_failing_engine_mid_call_is_command_failed_then_on_error(sim, make_app):
    """A cloud engine that fails mid-call: CommandFailed at the yield (the script may catch
    it); uncaught, on_error runs: never silence."""
    def main(call):
        try:
            yield ivr.say("first")
        except ivr.CommandFailed as error:
            call.data["error"] = str(error)
        yield ivr.say("second")

    app = make_app(main, speech=CountingEngine(fail=True),
                   on_error=ivr.forward(extension="0"))
    phone = sim.call(app)
    call = finish(app, phone)
    assert call.data["error"] == 'say "first" could not be spoken: the TTS service answered 503'
    assert phone.forwarded_to == "0" and phone.end_reason == "forwarded"
    assert "could not be spoken" in str(call.transcript)


def test_say_example_speaks_every_prompt(sim, make_app):
    """examples/say_hello.py: every prompt the caller hears is spoken text."""
    app = make_app(example("say_hello.py"))
    phone = sim.call(app)
    phone.press("1")
    call = finish(app, phone)
    names = [u.rsplit("/", 1)[-1] for u in phone.heard]
    assert names and all(n.startswith("say-") for n in names)
    assert "play    say " in str(call.transcript) and phone.end_reason == "hangup"


# -- recording and replay --------------------------------------------------------------------


def _speaking(greeting):
    def main(call):
        yield ivr.say(greeting)
        pin = yield ivr.collect("xx", timeout=2, prompt=ivr.speech("Two digits, please."))
        yield ivr.say(pin, as_="digits")
    main.__qualname__ = "main"
    return main


def test_replay_of_spoken_prompts_passes_and_fails_on_changed_text(sim, make_app, tmp_path):
    """A recorded call with spoken prompts replays; a changed text fails with both texts."""
    app = make_app(_speaking("Welcome to Acme."), record=str(tmp_path / "rec"))
    phone = sim.call(app)
    phone.press("12")
    finish(app, phone)
    app.stop()
    (path,) = glob.glob(str(tmp_path / "rec" / "*.yaml"))
    assert 'play    say "Welcome to Acme."' in load_recording(path).transcript
    transcript = replay(path, _speaking("Welcome to Acme."))
    check_transcript(path, transcript)
    assert 'play    say "1 2"' in str(transcript)
    with pytest.raises(ivr.ReplayMismatch) as caught:
        replay(path, _speaking("Welcome to Acme Corp."))
    message = str(caught.value)
    assert "say-Welcome-to-Acme.wav" in message and "say-Welcome-to-Acme-Corp.wav" in message
    assert 'say "Welcome to Acme Corp."' in message


def test_a_say_not_yielded_is_reported():
    """`ivr.say("...")` alone on a line never speaks: the loader warns, naming the line."""
    def main(call):
        ivr.say("never heard")
        yield ivr.hangup()

    with pytest.warns(ivr.NotYieldedWarning, match=r"say\(\.\.\.\) is built but not yielded"):
        ivr.check_script(main)


def test_an_engine_returning_mp3_is_converted(sim, make_app):
    """An engine may return MP3 (as cloud services do): the app serves an 8 kHz mono WAV."""
    with open(os.path.join(os.path.dirname(__file__), "fixtures", "hello.mp3"), "rb") as handle:
        mp3 = handle.read()
    app = make_app(lambda call: (yield ivr.say("any")), speech=lambda text, voice, rate: mp3)
    phone = sim.call(app)
    finish(app, phone)
    rate, channels, width, seconds = wav_format(requests.get(phone.heard[0], timeout=5).content)
    assert (rate, channels, width) == (8000, 1, 2) and 1.5 < seconds < 2.5


def test_an_unknown_voice_mid_call_is_command_failed_listing_voices(sim, make_app):
    """voice= names an eSpeak voice that does not exist: CommandFailed at the yield, with the
    engine's ValueError (a few voices that exist) as its message and cause."""
    voice = "xx-" + "nowhere"  # not a literal: a literal is checked when the App is built

    def main(call):
        try:
            yield ivr.say("hello", voice=voice)
        except ivr.CommandFailed as error:
            call.data["error"] = str(error)
            call.data["cause"] = type(error.__cause__).__name__

    app = make_app(main)
    phone = sim.call(app)
    call = finish(app, phone)
    assert "unknown voice 'xx-nowhere'" in call.data["error"]
    assert "voices include en-us" in call.data["error"] and call.data["cause"] == "ValueError"
    assert phone.heard == []


def test_replay_checks_voice_and_rate_through_the_transcript(sim, make_app, tmp_path):
    """A changed rate keeps the prompt's URL name: check_transcript shows both lines."""
    def spoken(rate):
        def main(call):
            yield ivr.say("Thanks for calling.", rate=rate)
        main.__qualname__ = "main"
        return main

    app = make_app(spoken(None), record=str(tmp_path / "rec"))
    finish(app, sim.call(app))
    app.stop()
    (path,) = glob.glob(str(tmp_path / "rec" / "*.yaml"))
    changed = replay(path, spoken(1.5), same_transcript=False)  # replay compares it too
    with pytest.raises(ivr.ReplayMismatch) as caught:
        check_transcript(path, changed)
    assert 'say "Thanks for calling."' in str(caught.value)
    assert 'say "Thanks for calling." (rate 1.5)' in str(caught.value)


def test_speech_benchmark_runs_and_writes_every_figure():
    """benchmarks/speech.py --json measures every figure (nothing about speed is asserted)."""
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "speech.py"),
                           "--json", "--calls", "2"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["synthesis"]["audio_s"] > 10 and results["synthesis"]["x_real_time"] > 0
    assert results["resolve"]["cold_ms"] > 0 and results["resolve"]["warm_ms"] > 0
    assert {case: r["calls"] for case, r in results["first_play"].items()} == \
        {"wav": 2, "cold": 2, "warm": 2}


def test_the_notebook_keypad_plays_a_spoken_prompt(sim, make_app):
    """The Keypad widget puts a spoken prompt's WAV in its Audio widget, like a local file."""
    from ivrscript.widgets import Keypad

    synth = Synthesizer()
    path, _ = synth.render(ivr.speech("Hello from the keypad."))
    with open(path, "rb") as handle:
        spoken = handle.read()
    seen = threading.Event()
    app = make_app(lambda call: (yield ivr.say("Hello from the keypad.")), speech=synth)
    keypad = Keypad(sim, app)
    keypad.audio.observe(lambda change: change["new"] == spoken and seen.set(), names="value")
    keypad.buttons["Call"].click()
    assert seen.wait(20), "the spoken prompt never reached the keypad's Audio widget"
    keypad.phone.wait_until_ended(20)
    keypad.close()


def test_a_literal_unknown_voice_is_a_value_error_at_app_start(sim, tmp_path):
    """voice="..." written in the script is checked when the App is built: a ValueError with
    the file and line and a few voices that exist."""
    script = tmp_path / "typo.py"
    script.write_text("import ivrscript as ivr\n\n\ndef main(call):\n"
                      "    yield ivr.say('hello', voice='en-usa')\n")
    from ivrscript.loader import load_script_file

    main, _ = load_script_file(str(script))
    with pytest.raises(ValueError, match=r"typo.py:5: unknown voice 'en-usa'.*voices include "
                                         r"en-us"):
        ivr.App(main, platform=sim)
    script.write_text(script.read_text().replace("en-usa", "en-gb"))
    main, _ = load_script_file(str(script))
    ivr.App(main, platform=sim)


def test_spoken_text_is_shown_quoted_with_control_characters_escaped():
    """Text that came from outside (an escape sequence, a newline, a bidi override) cannot
    forge transcript lines or drive the terminal that prints them."""
    item = ivr.speech('Hello "Bob"\n\x1b]52;c;AAAA\x07\u202e!')
    assert str(item) == 'say "Hello \\"Bob\\"\\n\\x1b]52;c;AAAA\\x07\\u202e!"'
    assert item.text == 'Hello "Bob"\n\x1b]52;c;AAAA\x07\u202e!'  # spoken as given
    assert "\n" not in ivr.say(item.text).describe()


# -- the cache's bound on disk -----------------------------------------------------------------

ENTRY = 8000 * 2 + 44  # a ten-character text of CountingEngine: 1 s of 8 kHz 16-bit + header


def cached(folder):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(str(folder), "*.wav")))


def age(folder, seconds_ago):
    """Set every cached prompt's time ``seconds_ago`` in the past, oldest first in order."""
    now = __import__("time").time()
    for path, ago in seconds_ago.items():
        os.utime(os.path.join(str(folder), path), (now - ago, now - ago))


def test_the_cache_has_a_documented_default_bound_and_a_setting(monkeypatch, tmp_path):
    from ivrscript.tts import DEFAULT_CACHE_MB

    assert DEFAULT_CACHE_MB == 200
    assert Synthesizer(CountingEngine()).max_bytes == 200 * 10**6
    monkeypatch.setenv("IVRSCRIPT_SPEECH_CACHE_MB", "0.5")
    assert Synthesizer(CountingEngine()).max_bytes == 500_000
    assert Synthesizer(CountingEngine(), max_bytes=12345).max_bytes == 12345
    for bad in ("0", "-3", "lots", "inf", "nan"):
        monkeypatch.setenv("IVRSCRIPT_SPEECH_CACHE_MB", bad)
        with pytest.raises(ivr.ConfigError, match="IVRSCRIPT_SPEECH_CACHE_MB must be"):
            Synthesizer(CountingEngine())
    monkeypatch.delenv("IVRSCRIPT_SPEECH_CACHE_MB")
    with pytest.raises(ValueError, match="max_bytes"):
        Synthesizer(CountingEngine(), max_bytes=0)


def test_the_least_recently_used_prompts_are_evicted_past_the_bound(tmp_path):
    """Past max_bytes the oldest-used prompts go (down to 90% of the bound); a cache hit
    counts as a use, so a prompt in use stays; an evicted prompt is synthesised again."""
    engine = CountingEngine()
    folder = tmp_path / "cache"
    synth = Synthesizer(engine, cache_dir=str(folder), max_bytes=int(ENTRY * 3.5))
    texts = ["prompt-one", "prompt-two", "prompt-thr"]
    names = [os.path.basename(synth.render(ivr.speech(t))[0]) for t in texts]
    assert len(cached(folder)) == 3 and synth.evicted == 0
    age(folder, {names[0]: 300, names[1]: 200, names[2]: 100})
    synth.render(ivr.speech("prompt-one"))  # a hit: used now
    assert len(engine.calls) == 3
    fourth = os.path.basename(synth.render(ivr.speech("prompt-fou"))[0])
    # 4 entries > 3.5: down to 90% of the bound (3.15 entries): the least recently used one
    # goes, "two" (not "one", made first but used since).
    assert cached(folder) == sorted([names[0], names[2], fourth]), cached(folder)
    assert synth.evicted == 1
    total = sum(os.path.getsize(os.path.join(str(folder), n)) for n in cached(folder))
    assert total <= synth.max_bytes
    synth.render(ivr.speech("prompt-two"))
    assert [c[0] for c in engine.calls].count("prompt-two") == 2  # synthesised again


def test_a_prompt_used_in_the_last_minute_is_not_evicted(tmp_path):
    """A prompt the platform may still be fetching is kept even over the bound: the folder is
    over it for a while rather than a play failing."""
    engine = CountingEngine()
    folder = tmp_path / "cache"
    synth = Synthesizer(engine, cache_dir=str(folder), max_bytes=ENTRY)
    for text in ("prompt-one", "prompt-two", "prompt-thr"):
        synth.render(ivr.speech(text))
    assert len(cached(folder)) == 3 and synth.evicted == 0
    age(folder, {name: 120 for name in cached(folder)})
    synth.render(ivr.speech("prompt-fou"))
    assert len(cached(folder)) == 1 and synth.evicted == 3


def test_a_bounded_cache_serves_a_call_over_real_http(sim, make_app, tmp_path):
    """A call speaking more than the bound holds, on the simulator over real HTTP: every
    prompt is fetched and played (none is evicted while the call may still fetch it), and
    the next prompt spoken once they are old brings the folder back under its bound."""
    engine = CountingEngine()
    folder = tmp_path / "cache"
    synth = Synthesizer(engine, cache_dir=str(folder), max_bytes=int(ENTRY * 1.5))
    texts = [f"greeting-{n}" for n in range(4)]

    def main(call):
        yield ivr.play(*[ivr.speech(t) for t in texts])
        yield ivr.say("farewell-0")

    app = make_app(main, speech=synth)
    phone = sim.call(app)
    call = finish(app, phone)
    assert str(call.transcript).count("-> Completed") == 2, call.transcript
    assert len(phone.heard) == 5
    for url in phone.heard:
        answer = requests.get(url, timeout=5)
        assert answer.status_code == 200 and wav_format(answer.content)[0] == 8000
    age(folder, {name: 120 for name in cached(folder)})
    synth.render(ivr.speech("afterwards"))
    total = sum(os.path.getsize(os.path.join(str(folder), n)) for n in cached(folder))
    assert total <= synth.max_bytes and len(cached(folder)) == 1, cached(folder)
