"""Scale-out figures: steps/s of 1, 2 and 4 app processes sharing one Redis, against one
process on the memory store (and on SQLite); reaction time per store; Redis round trips per
step.

    python benchmarks/scaleout.py            # full run (~3 minutes)
    python benchmarks/scaleout.py --quick    # smoke run
    python benchmarks/scaleout.py --out results/scaleout.json

N app processes (``scaleout_app.py``: the benchmark flow ``run.flow`` in an ``App`` on the
store) share one lean fake platform process (``lean.py``: asyncio, keep-alive both ways, calls
back at once), which sends each new call to the next app in turn, with the same calls and
concurrency per process for every N: the ratio of N processes to one says whether the store
is the bottleneck. steps/s = 5 x calls completed / seconds.

* **reaction**: p50/p99 at one call in flight, from the platform writing a callback's first
  byte to it having read the command that answered it (measured in the platform process).
* **Redis round trips per step**: one process on Redis at the same concurrency, the commands
  Redis received from it (``MONITOR``, only those naming the run's key prefix, not the ones a
  Lua script ran inside Redis; the app's housekeeping included) divided by the steps (5 a
  call). Needs ``redis-cli`` on PATH. Nothing is pipelined, so each command is one round trip.
* **servers**: one process on the memory store, the same flow served by ``python -m ivrscript
  serve`` (gunicorn, one threaded worker), by werkzeug's threaded dev server (the App's WSGI
  app) and by the App's own listener.

Redis comes from ``IVRSCRIPT_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``); every run
uses a fresh key prefix and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from app_cpu import Proc, percentile  # noqa: E402

STEPS_PER_CALL = 5


def redis_base() -> str:
    return os.environ.get("IVRSCRIPT_TEST_REDIS") or "redis://127.0.0.1:6379/0"


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def clear(store_url: str) -> None:
    if store_url.startswith("redis"):
        from ivrscript.stores.redis import RedisStore

        store = RedisStore.from_url(store_url)
        try:
            store.clear()
        finally:
            store.close()


class Group:
    """N app processes on one store URL, and the one lean platform they all talk to."""

    def __init__(self, store_url: str, count: int, server: str = "listener") -> None:
        self.platform = Proc("lean.py")
        self.apps: list[Proc] = []
        try:
            for _ in range(count):
                self.apps.append(Proc("scaleout_app.py", store_url, self.platform.first["url"],
                                      self.platform.first["token"], server))
        except BaseException:
            self.close()
            raise

    def run(self, calls: int, concurrency: int) -> dict[str, Any]:
        """``calls`` calls, ``concurrency`` in flight, each call to the next app in turn."""
        return self.platform.send({"op": "run", "urls": [a.first["urls"] for a in self.apps],
                                   "calls": calls, "concurrency": concurrency})

    def close(self) -> None:
        for proc in [*self.apps, self.platform]:
            proc.close()


def throughput(store_url: str, count: int, calls: int, concurrency: int,
               server: str = "listener") -> dict[str, Any]:
    """``calls`` and ``concurrency`` per process."""
    group = Group(store_url, count, server)
    try:
        group.run(min(30, calls) * count, min(10, concurrency) * count)  # warm-up
        before = sum(app.send("cpu")["cpu"] for app in group.apps)
        run = group.run(calls * count, concurrency * count)
        cpu = sum(app.send("cpu")["cpu"] for app in group.apps) - before
    finally:
        group.close()
    steps = STEPS_PER_CALL * run["ok"]
    return {"processes": count, "calls": run["calls"], "ok": run["ok"],
            "seconds": run["seconds"], "steps_per_s": steps / run["seconds"],
            "cpu_ms_per_step": 1000 * cpu / steps if steps else float("nan"),
            "errors": run["errors"][:3]}


def reaction(store_url: str, calls: int) -> dict[str, Any]:
    group = Group(store_url, 1)
    try:
        group.run(10, 1)
        run = group.run(calls, 1)
    finally:
        group.close()
    return {"p50_ms": percentile(run["reactions"], 50),
            "p99_ms": percentile(run["reactions"], 99), "samples": len(run["reactions"]),
            "failed": run["calls"] - run["ok"]}


def script_names() -> dict[str, str]:
    """SHA1 -> name of the RedisStore's Lua scripts, to tell its EVALSHAs apart."""
    import hashlib

    from ivrscript.stores import redis as backend

    return {hashlib.sha1(source.encode()).hexdigest(): name.strip("_").lower()
            for name, source in vars(backend).items()
            if name.isupper() and name.startswith("_") and isinstance(source, str)
            and "redis.call" in source}


def round_trips(base: str, calls: int, concurrency: int) -> dict[str, Any] | str:
    """Commands one process sends Redis per step, counted with MONITOR."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return "n/a (redis-cli is not on PATH)"
    prefix = f"ivrbench:{uuid.uuid4().hex[:8]}:"
    store_url = with_prefix(base, prefix)
    group = Group(store_url, 1)
    with tempfile.TemporaryFile("w+") as out:
        monitor = subprocess.Popen([cli, "-u", base.split("?")[0], "monitor"], stdout=out,
                                   stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(0.5)  # MONITOR is on before the measured calls begin
            run = group.run(calls, concurrency)
            time.sleep(0.5)
        finally:
            monitor.terminate()
            monitor.wait(10)
            group.close()
            clear(store_url)
        out.seek(0)
        counts: dict[str, int] = {}
        names = script_names()
        for line in out:
            if prefix not in line or " lua]" in line:
                continue
            parts = line.split('"')
            command = parts[1].upper() if len(parts) > 1 else "?"
            if command == "EVALSHA" and len(parts) > 3:
                command = f"EVALSHA {names.get(parts[3], parts[3][:8])}"
            counts[command] = counts.get(command, 0) + 1
    steps = STEPS_PER_CALL * run["ok"]
    total = sum(counts.values())
    return {"calls": run["ok"], "steps": steps, "commands": total,
            "per_step": total / steps if steps else float("nan"),
            "by_command": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def measure(quick: bool, progress: Any) -> dict[str, Any]:
    calls = 60 if quick else 250
    concurrency = 20
    reaction_calls = 20 if quick else 150
    rounds = 1 if quick else 2
    base = redis_base()
    folder = tempfile.mkdtemp(prefix="ivrscript-scaleout-")
    configs: list[tuple[str, str, int]] = [("memory", "memory:", 1), ("sqlite", "sqlite", 1),
                                           ("redis", "redis", 1), ("redis", "redis", 2),
                                           ("redis", "redis", 4)]
    if not quick:
        configs.insert(2, ("sqlite", "sqlite", 2))
    figures: dict[str, list[dict[str, Any]]] = {}
    for index in range(rounds):
        for name, kind, count in configs:
            if kind == "sqlite":
                url = f"sqlite:///{folder}/calls-{uuid.uuid4().hex[:6]}.db"
            elif kind == "redis":
                url = with_prefix(base, f"ivrbench:{uuid.uuid4().hex[:8]}:")
            else:
                url = kind
            label = f"{name} x{count}"
            progress(f"throughput: {label} (round {index + 1}/{rounds})")
            try:
                result = throughput(url, count, calls, concurrency)
            finally:
                clear(url)
            progress(f"  {result['steps_per_s']:.0f} steps/s, {result['ok']}/{result['calls']}"
                     " calls")
            figures.setdefault(label, []).append(result)
    summary = {label: {"steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
                       "cpu_ms_per_step": statistics.median(r["cpu_ms_per_step"] for r in runs),
                       "runs": [round(r["steps_per_s"]) for r in runs],
                       "failed": sum(r["calls"] - r["ok"] for r in runs),
                       "errors": [e for r in runs for e in r["errors"]][:3]}
               for label, runs in figures.items()}
    one = summary["redis x1"]["steps_per_s"]
    ratios = {label: entry["steps_per_s"] / one for label, entry in summary.items()
              if label.startswith("redis")}
    ratios["memory x1"] = summary["memory x1"]["steps_per_s"] / one
    reactions: dict[str, Any] = {}
    for name, kind in (("memory", "memory:"), ("sqlite", "sqlite"), ("redis", "redis")):
        url = (f"sqlite:///{folder}/reaction.db" if kind == "sqlite"
               else with_prefix(base, f"ivrbench:{uuid.uuid4().hex[:8]}:") if kind == "redis"
               else kind)
        progress(f"reaction: {name}, one call at a time")
        try:
            reactions[name] = reaction(url, reaction_calls)
        finally:
            clear(url)
    progress("Redis round trips per step (MONITOR)")
    trips = round_trips(base, 40 if quick else 200, concurrency)
    servers: dict[str, Any] = {}
    for server in ("serve", "werkzeug", "listener"):
        progress(f"server: {server}, one process on the memory store")
        servers[server] = throughput("memory:", 1, calls, concurrency, server)
        progress(f"  {servers[server]['steps_per_s']:.0f} steps/s")
    shutil.rmtree(folder, ignore_errors=True)
    return {"quick": quick, "calls_per_process": calls, "concurrency_per_process": concurrency,
            "rounds": rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
            "throughput": summary, "vs_one_redis_process": ratios, "reaction": reactions,
            "redis_round_trips": trips, "servers": servers,
            "load_average": os.getloadavg()}


def table(result: dict[str, Any]) -> str:
    load = result.get("load_average")
    lines = [f"({result['cpus']} CPUs, load average at the end "
             f"{', '.join(f'{x:.1f}' for x in load)})"] if load else []
    lines.append(f"{'processes on store':<20}{'steps/s':>10}{'vs 1 on Redis':>16}"
                 f"{'app CPU ms/step':>18}")
    for label, entry in result["throughput"].items():
        ratio = result["vs_one_redis_process"].get(label)
        lines.append(f"{label:<20}{entry['steps_per_s']:>10.0f}"
                     f"{(f'{ratio:.2f}x' if ratio is not None else ''):>16}"
                     f"{entry['cpu_ms_per_step']:>18.2f}"
                     + (f"   ({entry['failed']} failed)" if entry["failed"] else ""))
    lines.append(f"{'reaction, 1 in flight':<20}{'p50 ms':>10}{'p99 ms':>16}")
    for name, entry in result["reaction"].items():
        lines.append(f"{name:<20}{entry['p50_ms']:>10.2f}{entry['p99_ms']:>16.2f}")
    servers = result.get("servers") or {}
    if servers:
        lines.append(f"{'server, memory x1':<20}{'steps/s':>10}{'vs werkzeug':>16}")
        dev = servers.get("werkzeug", {}).get("steps_per_s") or float("nan")
        names = {"serve": "serve (gunicorn)", "werkzeug": "werkzeug dev",
                 "listener": "App's listener"}
        for name, entry in servers.items():
            lines.append(f"{names.get(name, name):<20}{entry['steps_per_s']:>10.0f}"
                         f"{entry['steps_per_s'] / dev:>15.2f}x")
    trips = result["redis_round_trips"]
    if isinstance(trips, dict):
        top = ", ".join(f"{k} {v}" for k, v in list(trips["by_command"].items())[:6])
        lines.append(f"Redis round trips per step: {trips['per_step']:.2f} "
                     f"({trips['commands']} commands / {trips['steps']} steps: {top})")
    else:
        lines.append(f"Redis round trips per step: {trips}")
    two = result["vs_one_redis_process"].get("redis x2")
    if two is not None:
        lines.append(f"goal: 2 processes >= 1.6x one on Redis: {two:.2f}x "
                     f"({'holds' if two >= 1.6 else 'does not hold'} on "
                     f"{result['cpus']} CPUs)")
    if isinstance(trips, dict):
        lines.append(f"goal: <= 3 Redis round trips per step: {trips['per_step']:.2f} "
                     f"({'holds' if trips['per_step'] <= 3 else 'does not hold'})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    began = time.monotonic()
    result = measure(args.quick, lambda m: print(m, file=sys.stderr, flush=True))
    print(table(result))
    print(f"({time.monotonic() - began:.0f} s; reproduce: python benchmarks/scaleout.py"
          f"{' --quick' if args.quick else ''})")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
