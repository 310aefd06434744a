"""App-side figures: what a call costs the APP, measured against a lean platform.

    python benchmarks/app_cpu.py            # full: 5 interleaved rounds (~2 min)
    python benchmarks/app_cpu.py --quick    # 1 round, small counts (CI's smoke run)

Every side runs in a fresh process of its own (``appside.py``) against a fresh lean fake
platform process (``lean.py``: asyncio, keep-alive both ways, answers and calls back at once
with the simulator's shapes), so the figures are the app's and nothing else's. Sides, in the
same run and interleaved A B C A B C ...:

* ``ivrscript``: the benchmark flow (``run.flow``) in an ``App`` on a ``RingCentral`` client;
* ``baseline``: the flow written by hand the way RingCentral's demo was (``baseline.py``);
* ``floor``: the flow as a minimal asyncio app (``floor.py``), the least a call can cost.

Figures per side (medians over rounds, with min-max):
* CPU per call: the app process's user+sys seconds over a measured run, divided by its calls;
* calls/s with ``CONCURRENCY`` calls in flight;
* reaction p50/p99 at one call in flight: from the platform writing a callback's first byte to
  it having read the command that answered it (measured in the platform process);
* lost connections and failed calls at 500 in flight with a new connection per callback (a
  platform without keep-alive);
* the loopback limit: exchanges/s between two asyncio processes over kept-alive connections.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SIDES = ("ivrscript", "baseline", "floor")
STEPS_PER_CALL = 5


class Proc:
    """A child speaking JSON lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=HERE)
        self.first = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args} ended early (exit {self.proc.poll()})")
        return json.loads(line)

    def send(self, message: dict[str, Any] | str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        text = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\nquit\n")
            self.proc.stdin.flush()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait(5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def one_round(side: str, calls: int, concurrency: int, reaction_calls: int,
              burst: int) -> dict[str, Any]:
    """Fresh platform + fresh app: warm-up, measured throughput with CPU, reaction at one in
    flight, then a burst with a new connection per callback."""
    platform = Proc("lean.py")
    app = Proc("appside.py", side, platform.first["url"], platform.first["token"])
    urls = app.first["urls"]
    try:
        warm = platform.send({"op": "run", "urls": urls, "calls": min(50, calls),
                              "concurrency": min(10, concurrency)})
        cpu0 = app.send("cpu")["cpu"]
        run = platform.send({"op": "run", "urls": urls, "calls": calls,
                             "concurrency": concurrency})
        cpu1 = app.send("cpu")["cpu"]
        single = platform.send({"op": "run", "urls": urls, "calls": reaction_calls,
                                "concurrency": 1})
        fresh = platform.send({"op": "run", "urls": urls, "calls": burst, "concurrency": burst,
                               "fresh": True})
    finally:
        app.close()
        platform.close()
    return {
        "cpu_ms_per_call": (cpu1 - cpu0) * 1000 / calls,
        "calls_per_s": run["calls"] / run["seconds"],
        "failed": (run["calls"] - run["ok"]) + (warm["calls"] - warm["ok"]),
        "errors": run["errors"][:3],
        "reaction_p50_ms": percentile(single["reactions"], 50),
        "reaction_p99_ms": percentile(single["reactions"], 99),
        "burst_lost_connections": fresh["lost"],
        "burst_failed": fresh["calls"] - fresh["ok"],
    }


def loopback_limit(seconds: float, concurrency: int) -> float:
    platform = Proc("lean.py")
    echo = Proc("appside.py", "echo", platform.first["url"], platform.first["token"])
    try:
        result = platform.send({"op": "hammer", "url": echo.first["urls"]["on-call-enter"],
                                "seconds": seconds, "concurrency": concurrency})
    finally:
        echo.close()
        platform.close()
    return float(result["exchanges_per_s"])


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(quick: bool, progress: Any = None) -> dict[str, Any]:
    rounds = 1 if quick else 5
    calls = 100 if quick else 1000
    concurrency = 50
    reaction_calls = 30 if quick else 200
    burst = 50 if quick else 500
    per_side: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for index in range(rounds):
        order = SIDES if index % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            if progress:
                progress(f"app side: round {index + 1}/{rounds}, {side}")
            per_side[side].append(one_round(side, calls, concurrency, reaction_calls, burst))
    limit = loopback_limit(1.0 if quick else 3.0, concurrency)
    result: dict[str, Any] = {"rounds": rounds, "calls": calls, "concurrency": concurrency,
                              "burst": burst, "loopback_limit_exchanges_per_s": limit,
                              "sides": {}}
    for side, runs in per_side.items():
        result["sides"][side] = {
            key: summary([r[key] for r in runs])
            for key in ("cpu_ms_per_call", "calls_per_s", "reaction_p50_ms", "reaction_p99_ms")
        } | {"failed": sum(r["failed"] for r in runs),
             "burst_lost_connections": sum(r["burst_lost_connections"] for r in runs),
             "burst_failed": sum(r["burst_failed"] for r in runs),
             "errors": [e for r in runs for e in r["errors"]][:5]}
    ours, base, floor = (result["sides"][s] for s in SIDES)
    result["ratios"] = {
        "cpu_per_call_vs_baseline": ours["cpu_ms_per_call"]["median"]
        / base["cpu_ms_per_call"]["median"],
        "calls_per_s_vs_baseline": ours["calls_per_s"]["median"]
        / base["calls_per_s"]["median"],
        "cpu_per_call_vs_floor": ours["cpu_ms_per_call"]["median"]
        / floor["cpu_ms_per_call"]["median"],
        "steps_per_s_vs_limit": STEPS_PER_CALL * ours["calls_per_s"]["median"] * 2 / limit,
    }
    return result


def fmt(entry: dict[str, float], unit: str = "", digits: int = 2) -> str:
    return (f"{entry['median']:.{digits}f}{unit} ({entry['min']:.{digits}f}-"
            f"{entry['max']:.{digits}f})")


def table(result: dict[str, Any]) -> str:
    rows = [("CPU per call (ms, app process)", "cpu_ms_per_call", 3),
            (f"calls/s, {result['concurrency']} in flight", "calls_per_s", 1),
            ("reaction p50 (ms), 1 in flight", "reaction_p50_ms", 2),
            ("reaction p99 (ms), 1 in flight", "reaction_p99_ms", 2)]
    lines = [f"{'app side (lean platform)':<34}" + "".join(f"{s:>24}" for s in SIDES)]
    for label, key, digits in rows:
        lines.append(f"{label:<34}" + "".join(
            f"{fmt(result['sides'][s][key], '', digits):>24}" for s in SIDES))
    lines.append(f"{'failed calls':<34}" + "".join(
        f"{result['sides'][s]['failed']:>24}" for s in SIDES))
    lines.append(f"{'lost connections, ' + str(result['burst']) + ' in flight, fresh':<34}"
                 + "".join(f"{result['sides'][s]['burst_lost_connections']:>24}"
                           for s in SIDES))
    r = result["ratios"]
    lines.append(f"loopback limit (kept-alive asyncio pair): "
                 f"{result['loopback_limit_exchanges_per_s']:.0f} exchanges/s")
    lines.append(f"ivrscript / baseline: CPU per call {r['cpu_per_call_vs_baseline']:.2f}x, "
                 f"calls/s {r['calls_per_s_vs_baseline']:.2f}x; ivrscript / floor: CPU per call "
                 f"{r['cpu_per_call_vs_floor']:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    began = time.monotonic()
    result = measure(args.quick, lambda m: print(m, file=sys.stderr, flush=True))
    print(table(result))
    print(f"({time.monotonic() - began:.0f} s; reproduce: python benchmarks/app_cpu.py"
          f"{' --quick' if args.quick else ''})")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
