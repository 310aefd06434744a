"""Spoken prompts: how fast eSpeak NG synthesises, and what a spoken prompt adds to a call.

    python benchmarks/speech.py            # prints the figures
    python benchmarks/speech.py --json     # the same as JSON

* **synthesis**: seconds of 8 kHz audio per second of wall time, over 20 different sentences
  (engine + conversion to 8 kHz + cache write: a cold ``Synthesizer.render``), in one thread.
  Goal: at least 20x real time.
* **resolve**: ``MediaLibrary.resolve`` of a spoken prompt in process, what the worker that
  issues the play spends on it: cold (synthesis and cache write) and warm (a cache hit),
  median of 20 prompts.
* **first play**: on the simulator (loopback HTTP; speed 50 shortens the plays only), from the
  phone ringing the app to the platform starting the call's first play (its ``play`` event),
  median of N calls per case, interleaved: a local WAV prompt (the baseline), a spoken prompt
  with a cold cache (a new text each call) and with a warm cache. The difference from the
  baseline is the latency a spoken prompt adds to a call; on a shared machine a few ms of it
  are noise, which is why ``resolve`` is timed on its own too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import ivrscript as ivr  # noqa: E402
from ivrscript.media import MediaLibrary  # noqa: E402
from ivrscript.tts import Synthesizer  # noqa: E402

SENTENCES = [
    "Welcome to Acme support.", "For sales, press one.", "For support, press two.",
    "Please enter your four digit PIN, followed by the pound key.",
    "Sorry, that PIN is not right. Please try again.", "Your PIN is accepted.",
    "Please hold while I transfer you to the next available agent.",
    "Your call is important to us.", "Our office hours are nine to five, Monday to Friday.",
    "Sorry, I did not hear a key.", "That is not one of the choices.", "Goodbye.",
    "Your balance is one thousand two hundred fifty dollars and seventy five cents.",
    "To repeat these options, press star.", "To speak to an operator, press zero.",
    "You have three new messages.", "The next message was left on Tuesday, December first.",
    "Thank you for calling. Have a nice day.", "Please say or enter your account number.",
    "We are experiencing higher than usual call volumes.",
]
WAV = os.path.join(os.path.dirname(HERE), "examples", "prompts", "welcome.wav")


def synthesis(folder: str) -> dict[str, Any]:
    synth = Synthesizer(cache_dir=os.path.join(folder, "synthesis"))
    synth.render(ivr.speech("warm up the engine"))  # loads the library and its voice data
    audio = 0.0
    start = time.perf_counter()
    for text in SENTENCES:
        audio += synth.render(ivr.speech(text))[1]
    wall = time.perf_counter() - start
    return {"sentences": len(SENTENCES), "audio_s": round(audio, 2), "wall_s": round(wall, 3),
            "x_real_time": round(audio / wall, 1)}


def resolve(folder: str, rounds: int) -> dict[str, Any]:
    """What a spoken prompt costs the worker that issues the play: MediaLibrary.resolve."""
    library = MediaLibrary()
    library.speech = Synthesizer(cache_dir=os.path.join(folder, "resolve"))
    library.resolve(ivr.speech("warm up the engine"))
    cold, warm = [], []
    for i in range(rounds):
        item = ivr.speech(f"Welcome to Acme support, caller {i}.")
        start = time.perf_counter()
        library.resolve(item)
        cold.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        library.resolve(item)
        warm.append((time.perf_counter() - start) * 1000)
    return {"cold_ms": round(statistics.median(cold), 2),
            "warm_ms": round(statistics.median(warm), 3), "rounds": rounds}


def first_play(folder: str, calls: int) -> dict[str, Any]:
    cache = os.path.join(folder, "calls")
    Synthesizer(cache_dir=cache).render(ivr.speech("Welcome to Acme support."))  # warm entry
    samples: dict[str, list[float]] = {"wav": [], "cold": [], "warm": []}
    with ivr.Simulator(speed=50) as sim:  # plays end fast; ringing to play is real time
        for i in range(calls):
            for case in samples:  # interleaved, so a busy moment hits every case alike
                prompt = {"wav": WAV, "cold": ivr.speech(f"Welcome to Acme support, {i}."),
                          "warm": ivr.speech("Welcome to Acme support.")}[case]

                def script(call: Any, prompt: Any = prompt) -> Any:
                    yield ivr.play(prompt)

                app = ivr.App(script, platform=sim, speech=Synthesizer(cache_dir=cache)).start()
                try:
                    phone = sim.call(app)
                    phone.wait_until_ended(30)
                    played = next(e for e in phone.transcript if e.kind == "play")
                    samples[case].append(played.time * 1000)
                finally:
                    app.stop()
    results: dict[str, Any] = {
        case: {"median_ms": round(statistics.median(values), 1),
               "max_ms": round(max(values), 1), "calls": calls}
        for case, values in samples.items()}
    base = results["wav"]["median_ms"]
    for case in ("cold", "warm"):
        results[case]["added_ms"] = round(results[case]["median_ms"] - base, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--calls", type=int, default=20, help="calls per first-play case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = {"synthesis": synthesis(folder), "resolve": resolve(folder, 20),
                   "first_play": first_play(folder, args.calls)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    s = results["synthesis"]
    print(f"synthesis: {s['audio_s']} s of audio in {s['wall_s']} s = {s['x_real_time']}x "
          f"real time ({s['sentences']} sentences; goal: >= 20x)")
    r = results["resolve"]
    print(f"resolving a spoken prompt: cold cache {r['cold_ms']} ms (synthesis), warm cache "
          f"{r['warm_ms']} ms (median of {r['rounds']})")
    for case, label in (("wav", "local WAV"), ("cold", "say, cold cache"),
                        ("warm", "say, warm cache")):
        r = results["first_play"][case]
        added = f", {r['added_ms']:+} ms vs WAV" if "added_ms" in r else ""
        print(f"first play, {label}: median {r['median_ms']} ms, max {r['max_ms']} ms "
              f"({r['calls']} calls{added})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
