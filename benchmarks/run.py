"""ivrscript benchmarks: throughput, reaction time and memory per call, against a hand-written
baseline and the loopback limit, all in one run.

    python benchmarks/run.py            # full run (a few minutes); writes results/latest.json
    python benchmarks/run.py --quick    # smoke run (~30 s); writes results/quick.json
    python benchmarks/run.py --out PATH # write the JSON elsewhere

One fixed call flow for every figure: enter -> play -> collect 4 digits with a barge-in prompt
-> play -> forward: five commands a call.

* **app side** (the headline, ``app_cpu.py``): ivrscript, the hand-written baseline and a
  minimal asyncio app (the floor), each in a fresh process of its own against a lean fake
  platform in another (asyncio, keep-alive both ways): the app process's CPU per call, calls/s,
  reaction p50/p99 measured outside the app, lost connections with a connection per callback,
  and the loopback limit of a kept-alive asyncio pair of processes. The sections below drive
  the full simulator, which shares this process and its GIL with the app: they are end-to-end
  figures and cannot show what the app alone costs. The simulator plays the platform over loopback HTTP
(remote media URIs, so it fetches nothing, each lasting 0.2 ms: plays are near-instant), the caller
presses the four keys as soon as the collect starts (``Phone.press`` from a simulator listener).

* **werkzeug stack**: HTTP exchanges/s of the same stack (one ``requests.Session`` from 1, 8 and 16
  threads -> werkzeug's threaded server, an empty handler); the best is the limit. A step needs
  two exchanges (a callback and a command), so the steps/s limit is half of it.
* **throughput**: calls/s (steps/s = 5 x calls/s) with 50 and 200 calls in flight; ivrscript
  and the baseline alternate, each repeat on a fresh simulator and app, medians reported.
* **reaction**: for each command the app sends in answer to a callback (all but the collect,
  which follows the prompt's POST at once), from the simulator starting to send that callback
  to the simulator having handled the command; one call at a time, p50 and p99.
* **parked**: calls left waiting in a collect, with the simulator in a child process so this
  process holds only the app: live Python heap (tracemalloc, after gc) per call between 10 and
  N parked calls, RSS growth per call (a separate round without tracemalloc), thread count at
  10 and N.
* **replay**: steps/s of ``ivrscript.testing.replay`` over recordings of the flow, when the
  package has it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import ivrscript as ivr
from ivrscript import App, Simulator
from ivrscript.errors import IvrError
from ivrscript.simulator import Phone, PhoneEvent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app_cpu  # noqa: E402
from baseline import BaselineApp, loopback_rate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Plays near-instant through short media (remote URIs last ``default_media_seconds``) rather
# than a large ``speed``, which would also shorten the collect's timeout (at most 10 minutes).
SPEED = 1.0
MEDIA_SECONDS = 0.0002
COLLECT_TIMEOUT = 600.0  # seconds (the most collect() takes): nobody times out while parked
WELCOME = "https://media.example/welcome.wav"
PROMPT = "https://media.example/enter-pin.wav"
THANKS = "https://media.example/thanks.wav"
EXTENSION = "101"
KEYS = "1234"
STEPS_PER_CALL = 5
STEP_NAMES = ("enter -> play", "played -> prompt+collect", "keys -> play", "played -> forward")
SIDES = ("ivrscript", "baseline")

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def flow(call: ivr.Call) -> Iterator[Any]:
    """The benchmark flow: enter -> play -> 4 digits with a barge-in prompt -> play -> forward."""
    yield ivr.play(WELCOME)
    yield ivr.collect("xxxx", timeout=COLLECT_TIMEOUT, prompt=PROMPT)
    yield ivr.play(THANKS)
    yield ivr.forward(extension=EXTENSION)


# -- the two sides -----------------------------------------------------------------------------


class Side:
    """A started app of one side on a platform: its callback URLs and how to stop it."""

    def __init__(self, name: str, platform: Any) -> None:
        self.name = name
        if name == "ivrscript":
            self.app: Any = App(flow, platform=platform).start()
        else:
            self.app = BaselineApp(platform.url, platform.token, welcome=WELCOME, prompt=PROMPT,
                                   thanks=THANKS, extension=EXTENSION,
                                   collect_timeout_ms=int(COLLECT_TIMEOUT * 1000)).start()
        self.urls: dict[str, str] = dict(self.app.callback_urls)

    def active(self) -> int:
        """Calls the app still has in progress."""
        if self.name == "ivrscript":
            return sum(not call.ended for call in self.app.calls)
        return len(self.app.calls)

    def stop(self) -> None:
        self.app.stop()


# -- driving calls -----------------------------------------------------------------------------


class Load:
    """Keeps ``concurrency`` calls in flight on a simulator until ``total`` have ended.

    The caller presses the keys from a simulator listener as soon as a collect starts; four
    ringer threads place calls (``sim.call`` returns once on-call-enter is answered).
    """

    RINGERS = 4

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(0)
        self._done = threading.Event()
        self._ended = 0
        self._total = 0
        sim.add_listener(self._on_event)

    def _on_event(self, phone: Phone, event: PhoneEvent) -> None:
        if event.kind == "listen":
            try:
                phone.press(KEYS, wait=False)
            except IvrError:
                pass
        elif event.kind == "exit":
            self._slots.release()
            with self._lock:
                self._ended += 1
                if self._ended >= self._total:
                    self._done.set()

    def run(self, urls: dict[str, str], total: int, concurrency: int,
            timeout: float = 300.0) -> tuple[float, list[Phone]]:
        """Seconds from the first ring to the last end, and the phones."""
        with self._lock:
            self._ended, self._total = 0, total
            self._done.clear()
        self._slots = threading.Semaphore(concurrency)
        phones: list[Phone] = []
        placed = [0]

        def ringer() -> None:
            while True:
                with self._lock:
                    if placed[0] >= total:
                        return
                    placed[0] += 1
                self._slots.acquire()
                phones.append(self.sim.call(urls))

        threads = [threading.Thread(target=ringer, daemon=True) for _ in range(self.RINGERS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        if not self._done.wait(timeout):
            raise RuntimeError(f"{total} calls did not end within {timeout} s "
                               f"({self._ended} ended)")
        elapsed = time.monotonic() - began
        for thread in threads:
            thread.join(10)
        return elapsed, phones


def new_sim() -> Simulator:
    return Simulator(speed=SPEED, default_media_seconds=MEDIA_SECONDS).start()


def measure_calls(side_name: str, total: int, concurrency: int, warmup: int
                  ) -> dict[str, Any]:
    """One measured run on a fresh simulator and app: throughput, reactions, failures."""
    sim = new_sim()
    side = Side(side_name, sim)
    try:
        load = Load(sim)
        if warmup:
            load.run(side.urls, warmup, min(concurrency, 10))
        with sim._lock:
            sim.requests_log.clear()
        sim.callback_log = []
        elapsed, phones = load.run(side.urls, total, concurrency)
        failed = sum(1 for p in phones if p.end_reason != "forwarded")
        reactions = reaction_times(sim)
    finally:
        side.stop()
        sim.stop()
    return {"calls": total, "seconds": elapsed, "calls_per_s": total / elapsed,
            "steps_per_s": STEPS_PER_CALL * total / elapsed, "failed": failed,
            "reactions": reactions}


def reaction_times(sim: Simulator) -> dict[str, list[float]]:
    """Seconds from each triggering callback to the command that answered it, by step."""
    events: dict[str, list[tuple[float, int, str]]] = {}
    for session_id, kind, at in sim.callback_log or []:
        events.setdefault(session_id, []).append((at, 0, kind))
    for record in sim.requests_log:
        if record.session_id is None or record.method != "POST" \
                or record.path.endswith("/collect"):
            continue
        events.setdefault(record.session_id, []).append((record.time, 1, record.path))
    steps: dict[str, list[float]] = {name: [] for name in STEP_NAMES}
    for seq in events.values():
        seq.sort()
        last_callback: float | None = None
        index = 0
        for at, is_command, _ in seq:
            if not is_command:
                last_callback = at
                continue
            if last_callback is not None and index < len(STEP_NAMES):
                steps[STEP_NAMES[index]].append(at - last_callback)
            last_callback = None
            index += 1
    return steps


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- parked calls ------------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def thread_count() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


class SimProcess:
    """The simulator in a child process (benchmarks/simproc.py), spoken to in JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "simproc.py"),
                                      str(SPEED), str(MEDIA_SECONDS)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        info = self._read()
        self.platform = SimpleNamespace(url=info["url"], token=info["token"],
                                        speed=info["speed"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process ended early")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(op="quit")
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def settle() -> None:
    for _ in range(3):
        gc.collect()
    time.sleep(0.2)  # let the listener threads finish answering the last callbacks


def measure_parked(side_name: str, parked: int, trace: bool) -> dict[str, Any]:
    """Threads and RSS (or, with ``trace``, the traced heap) at 10 and ``parked`` calls."""
    child = SimProcess()
    side = Side(side_name, child.platform)
    result: dict[str, Any] = {}
    try:
        child.ask(op="park", n=50, urls=side.urls)  # warm up: pools, connections, threads
        child.ask(op="finish", keys=KEYS)
        settle()
        if trace:
            tracemalloc.start()
        child.ask(op="park", n=10, urls=side.urls)
        settle()
        before = (tracemalloc.get_traced_memory()[0] if trace else rss_bytes(),
                  thread_count())
        snap1 = tracemalloc.take_snapshot() if trace else None
        child.ask(op="park", n=parked - 10, urls=side.urls)
        settle()
        after = (tracemalloc.get_traced_memory()[0] if trace else rss_bytes(), thread_count())
        key = "heap" if trace else "rss"
        result[f"{key}_per_call_bytes"] = (after[0] - before[0]) / (parked - 10)
        result[f"threads_{key}_round"] = {"10": before[1], str(parked): after[1]}
        if trace and snap1 is not None:
            snap2 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            top = snap2.compare_to(snap1, "lineno")[:8]
            result["heap_top"] = [
                {"where": f"{os.path.relpath(s.traceback[0].filename, os.path.dirname(HERE))}"
                          f":{s.traceback[0].lineno}",
                 "bytes_per_call": s.size_diff / (parked - 10)} for s in top]
        child.ask(op="hangup")
        deadline = time.monotonic() + 30
        while side.active() and time.monotonic() < deadline:  # let the exits arrive
            time.sleep(0.05)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        side.stop()
        child.close()
    return result


def parked_in_child(side_name: str, parked: int, trace: bool) -> dict[str, Any]:
    """:func:`measure_parked` in a fresh process, so RSS and threads are the app's alone."""
    command = [sys.executable, os.path.abspath(__file__), "--parked", side_name,
               "--calls", str(parked)] + (["--trace"] if trace else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the parked-calls run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- replay ------------------------------------------------------------------------------------


def measure_replay(calls: int, rounds: int) -> dict[str, Any] | str:
    try:
        from ivrscript.testing import replay
    except ImportError:
        return "n/a (replay not available)"
    with tempfile.TemporaryDirectory() as folder:
        try:
            sim = new_sim()
            app = App(flow, platform=sim, record=folder).start()
            try:
                load = Load(sim)
                load.run(app.callback_urls, calls, min(calls, 10))
            finally:
                app.stop()
                sim.stop()
            paths = [os.path.join(root, name) for root, _, names in os.walk(folder)
                     for name in names if name.endswith((".yaml", ".yml"))]
            if not paths:
                return "n/a (no recordings were written)"
            began = time.monotonic()
            for _ in range(rounds):
                for path in paths:
                    replay(path, flow)
            elapsed = time.monotonic() - began
        except Exception as error:  # replay is another issue's work in progress
            return f"n/a (replay failed: {type(error).__name__}: {error})"
    replays = rounds * len(paths)
    return {"recordings": len(paths), "replays": replays,
            "steps_per_s": STEPS_PER_CALL * replays / elapsed,
            "calls_per_s": replays / elapsed}


# -- the run -----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(quick: bool) -> dict[str, Any]:
    repeats = 1 if quick else 5
    loads = {50: 100, 200: 200} if quick else {50: 300, 200: 500}
    reaction_calls = 20 if quick else 100
    parked_n = 100 if quick else 1000
    limit_seconds = 0.3 if quick else 2.0

    progress("app side: ivrscript, baseline and the asyncio floor, each in its own process, "
             "against the lean platform (benchmarks/app_cpu.py)")
    app_side = app_cpu.measure(quick, progress)

    progress("werkzeug stack (requests -> werkzeug threaded server, empty handler)")
    rates = {}
    for threads in (1, 8, 16):
        rates[str(threads)] = median([loopback_rate(threads, limit_seconds)
                                      for _ in range(repeats)])
        progress(f"  {threads:2d} client threads: {rates[str(threads)]:7.0f} exchanges/s")
    exchanges = max(rates.values())
    step_limit = exchanges / 2

    throughput: dict[str, Any] = {}
    for concurrency, total in loads.items():
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for rep in range(repeats):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for side in order:
                progress(f"throughput: {side}, {concurrency} calls in flight, {total} calls "
                         f"(repeat {rep + 1}/{repeats})")
                result = measure_calls(side, total, concurrency, warmup=20)
                progress(f"  {result['calls_per_s']:6.1f} calls/s, {result['steps_per_s']:6.0f}"
                         f" steps/s, {result['failed']} failed")
                runs[side].append(result)
        entry: dict[str, Any] = {}
        for side in SIDES:
            entry[side] = {
                "calls_per_s": median([r["calls_per_s"] for r in runs[side]]),
                "steps_per_s": median([r["steps_per_s"] for r in runs[side]]),
                "failed": sum(r["failed"] for r in runs[side]),
                "runs_calls_per_s": [round(r["calls_per_s"], 1) for r in runs[side]],
            }
        entry["ratio"] = median([a["calls_per_s"] / b["calls_per_s"] for a, b in
                                 zip(runs["ivrscript"], runs["baseline"], strict=True)])
        entry["fraction_of_limit"] = entry["ivrscript"]["steps_per_s"] / step_limit
        entry["baseline_fraction_of_limit"] = entry["baseline"]["steps_per_s"] / step_limit
        throughput[str(concurrency)] = entry

    reaction: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[float]]] = {side: {n: [] for n in STEP_NAMES}
                                                 for side in SIDES}
    p50s: dict[str, list[float]] = {side: [] for side in SIDES}
    for rep in range(repeats):
        order = SIDES if rep % 2 == 0 else SIDES[::-1]
        for side in order:
            progress(f"reaction: {side}, one call at a time, {reaction_calls} calls "
                     f"(repeat {rep + 1}/{repeats})")
            result = measure_calls(side, reaction_calls, 1, warmup=10)
            every = [v for values in result["reactions"].values() for v in values]
            p50s[side].append(percentile(every, 50))
            for name, values in result["reactions"].items():
                pooled[side][name].extend(values)
            progress(f"  p50 {percentile(every, 50) * 1000:.2f} ms, "
                     f"p99 {percentile(every, 99) * 1000:.2f} ms")
    for side in SIDES:
        every = [v for values in pooled[side].values() for v in values]
        reaction[side] = {
            "p50_ms": median(p50s[side]) * 1000,
            "p99_ms": percentile(every, 99) * 1000,
            "samples": len(every),
            "steps_p50_ms": {n: percentile(v, 50) * 1000 for n, v in pooled[side].items()},
        }
    reaction["p50_diff_ms"] = reaction["ivrscript"]["p50_ms"] - reaction["baseline"]["p50_ms"]
    reaction["p50_ratio"] = reaction["ivrscript"]["p50_ms"] / reaction["baseline"]["p50_ms"]

    parked: dict[str, Any] = {}
    for side in SIDES:
        progress(f"parked: {side}, {parked_n} calls in a collect (RSS and threads)")
        plain = parked_in_child(side, parked_n, trace=False)
        progress(f"parked: {side}, {parked_n} calls in a collect (tracemalloc heap)")
        traced = parked_in_child(side, parked_n, trace=True)
        parked[side] = {**plain, **traced,
                        "threads_10": plain["threads_rss_round"]["10"],
                        f"threads_{parked_n}": plain["threads_rss_round"][str(parked_n)]}
        progress(f"  heap {traced['heap_per_call_bytes'] / 1024:.1f} KiB/call, RSS "
                 f"{plain['rss_per_call_bytes'] / 1024:.1f} KiB/call, threads "
                 f"{parked[side]['threads_10']} -> {parked[side][f'threads_{parked_n}']}")
    parked["calls"] = parked_n

    progress("replay")
    replay = measure_replay(10 if quick else 40, 5 if quick else 20)

    ivs = parked["ivrscript"]
    ours = app_side["sides"]["ivrscript"]
    ratios = app_side["ratios"]
    replay_rate = replay["steps_per_s"] if isinstance(replay, dict) else 0.0
    goals = {
        "app CPU per call <= 0.5x baseline (lean platform)": {
            "value": ratios["cpu_per_call_vs_baseline"],
            "holds": ratios["cpu_per_call_vs_baseline"] <= 0.5},
        "calls/s >= 2x baseline (lean platform, 50 in flight)": {
            "value": ratios["calls_per_s_vs_baseline"],
            "holds": ratios["calls_per_s_vs_baseline"] >= 2.0},
        "reaction p50 <= 1.0 ms at one call in flight (lean platform)": {
            "value": ours["reaction_p50_ms"]["median"],
            "holds": ours["reaction_p50_ms"]["median"] <= 1.0},
        f"0 lost connections at {app_side['burst']} in flight, a connection per callback": {
            "value": ours["burst_lost_connections"] + ours["burst_failed"],
            "holds": ours["burst_lost_connections"] + ours["burst_failed"] == 0},
        "replay >= 5,000 steps/s": {"value": replay_rate, "holds": replay_rate >= 5000},
        "<= 4 KiB heap per parked call": {
            "value": ivs["heap_per_call_bytes"], "holds": ivs["heap_per_call_bytes"] <= 4096},
        "threads flat from 10 to N parked calls": {
            "value": [ivs["threads_10"], ivs[f"threads_{parked_n}"]],
            "holds": ivs[f"threads_{parked_n}"] <= ivs["threads_10"]},
    }
    return {
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "implementation": platform.python_implementation(),
                    "system": f"{platform.system()} {platform.release()}",
                    "ivrscript": getattr(ivr, "__version__", "?")},
        "config": {"speed": SPEED, "repeats": repeats, "calls": loads,
                   "reaction_calls": reaction_calls, "parked_calls": parked_n,
                   "app_workers": 16, "flow": "enter -> play -> collect xxxx with a barge-in "
                   "prompt -> play -> forward (5 commands)"},
        "app_side": app_side,
        "limit": {"exchanges_per_s_by_threads": rates, "exchanges_per_s": exchanges,
                  "steps_per_s": step_limit},
        "throughput": throughput,
        "reaction": reaction,
        "parked": parked,
        "replay": replay,
        "goals": goals,
    }


def table(r: dict[str, Any]) -> str:
    t, re_, p = r["throughput"], r["reaction"], r["parked"]
    n = p["calls"]
    lim = r["limit"]
    rows = [("figure", "ivrscript", "baseline", "ivrscript / baseline")]
    for k in t:
        a, b = t[k]["ivrscript"], t[k]["baseline"]
        rows.append((f"calls/s, {k} in flight", f"{a['calls_per_s']:.1f}",
                     f"{b['calls_per_s']:.1f}", f"{t[k]['ratio']:.2f}x"))
        rows.append((f"steps/s, {k} in flight (of limit {lim['steps_per_s']:.0f})",
                     f"{a['steps_per_s']:.0f} ({t[k]['fraction_of_limit']:.0%})",
                     f"{b['steps_per_s']:.0f} ({t[k]['baseline_fraction_of_limit']:.0%})", ""))
    a, b = re_["ivrscript"], re_["baseline"]
    rows.append(("reaction p50, ms", f"{a['p50_ms']:.2f}", f"{b['p50_ms']:.2f}",
                 f"{re_['p50_diff_ms']:+.2f} ms"))
    rows.append(("reaction p99, ms", f"{a['p99_ms']:.2f}", f"{b['p99_ms']:.2f}", ""))
    a, b = p["ivrscript"], p["baseline"]
    rows.append(("heap per parked call, KiB", f"{a['heap_per_call_bytes'] / 1024:.1f}",
                 f"{b['heap_per_call_bytes'] / 1024:.1f}", ""))
    rows.append(("RSS growth per parked call, KiB", f"{a['rss_per_call_bytes'] / 1024:.1f}",
                 f"{b['rss_per_call_bytes'] / 1024:.1f}", ""))
    rows.append((f"threads at 10 -> {n} parked calls",
                 f"{a['threads_10']} -> {a[f'threads_{n}']}",
                 f"{b['threads_10']} -> {b[f'threads_{n}']}", ""))
    rep = r["replay"]
    rows.append(("replay steps/s", rep if isinstance(rep, str) else f"{rep['steps_per_s']:.0f}",
                 "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("")
    lines.insert(0, "end to end through the full simulator (same process as the app):")
    lines.insert(0, "")
    lines.insert(0, app_cpu.table(r["app_side"]))
    lines.append(f"werkzeug stack: {lim['exchanges_per_s']:.0f} HTTP exchanges/s on loopback "
                 f"(1/8/16 threads: " + "/".join(f"{v:.0f}" for v in
                                                 lim["exchanges_per_s_by_threads"].values())
                 + f"), so {lim['steps_per_s']:.0f} steps/s")
    for goal, verdict in r["goals"].items():
        value = verdict["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"goal: {goal}: {shown} -> {'holds' if verdict['holds'] else 'MISSED'}")
    m = r["machine"]
    lines.append(f"machine: {m['cpus']} CPUs, {m['implementation']} {m['python']}, "
                 f"{m['system']}{' (quick run)' if r['quick'] else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~30 s)")
    parser.add_argument("--out", help="where to write the JSON (default "
                        "benchmarks/results/latest.json, or quick.json with --quick)")
    parser.add_argument("--parked", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parked:  # the child of parked_in_child
        print(json.dumps(measure_parked(args.parked, args.calls, args.trace)))
        return 0
    out = args.out or os.path.join(HERE, "results", "quick.json" if args.quick
                                   else "latest.json")
    results = run(args.quick)
    print(table(results))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(_finite(results), handle, indent=2, allow_nan=False)
        handle.write("\n")
    progress(f"wrote {out}")
    return 0


def _finite(value: Any) -> Any:
    """The results with NaN and infinities as null, so the file is strict JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

if __name__ == "__main__":
    sys.exit(main())
