"""What durability costs: one flow, MemoryStore vs SQLiteStore, in one run.

    python benchmarks/durable.py            # ~1 minute
    python benchmarks/durable.py --calls 40 --rounds 1   # quicker
    python benchmarks/durable.py --only replay           # the replay cost alone, seconds

Figures (printed as a table, and as JSON with ``--out PATH``):
- steps/s on the flow (enter -> play -> collect with a barge-in prompt -> play -> forward: 5
  commands a call) at 10 calls in flight, SQLite vs memory (goal: >= 0.8x);
- replay cost per logged step on a cache miss: a fresh driver rebuilding a call of 100
  collects from its log (goal: <= 0.2 ms per step), from each store;
- recovery: a call parked in a collect, the app stopped and a new one started on the same
  SQLite file: restart -> the call rebuilt, and the caller's keys -> the next command (a
  crashed holder adds up to ``lease_ttl``, 5 s by default, before the new one may take it);
- store bytes per call: the SQLite file's growth per finished call, and the log's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import ivrscript as ivr  # noqa: E402
from ivrscript import App, Simulator  # noqa: E402
from ivrscript.stores import MemoryStore, SQLiteStore  # noqa: E402

SECRET = "durable-bench-secret-0123456789abcdef"


def flow(call: ivr.Call) -> Any:
    yield ivr.play("https://example.com/welcome.wav")
    pin = yield ivr.collect("xxxx", timeout=60, prompt="https://example.com/pin.wav")
    yield ivr.play("https://example.com/ok.wav" if pin == "1234" else
                   "https://example.com/no.wav")
    yield ivr.forward(extension="101")


def run_calls(sim: Simulator, app: App, calls: int, in_flight: int) -> float:
    """Calls/s for ``calls`` calls of the flow, ``in_flight`` at a time."""
    def one(_: int) -> None:
        phone = sim.call(app)
        phone.press("1234", timeout=30)
        assert phone.wait_until_ended(30) == "forwarded", phone.transcript

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(calls)))
    return calls / (time.perf_counter() - start)


def throughput(calls: int, rounds: int, folder: str) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"memory": [], "sqlite": []}
    with Simulator(speed=50, default_media_seconds=0.0002) as sim:
        for n in range(rounds):
            for name in ("memory", "sqlite"):
                store: Any = MemoryStore() if name == "memory" else \
                    SQLiteStore(os.path.join(folder, f"steps-{n}.db"))
                app = App(flow, platform=sim, store=store).start()
                try:
                    run_calls(sim, app, 5, 5)  # warm up
                    rates[name].append(run_calls(sim, app, calls, 10) * 5)
                finally:
                    app.stop()
                    store.close()
    memory, sqlite = statistics.median(rates["memory"]), statistics.median(rates["sqlite"])
    return {"memory_steps_per_s": memory, "sqlite_steps_per_s": sqlite,
            "ratio": sqlite / memory, "runs": rates}


class _Host:
    """The driver's host without a platform: every request accepted at once."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls: list[ivr.Call] = []

    def new_engine(self, body: dict[str, Any]) -> Any:
        from ivrscript.app import call_from_enter
        from ivrscript.engine import CallEngine

        call = call_from_enter(body)
        return CallEngine(self.script, call), call

    def send(self, request: Any) -> Any:
        from ivrscript.engine import Sent

        return Sent(request.token, None)

    def call_entered(self, call: ivr.Call, *, observed: bool) -> None:
        self.calls.append(call)

    def call_finished(self, runner: Any, call: ivr.Call) -> None:
        pass

    def run_effect(self, *args: Any) -> None:
        raise AssertionError("no effects here")

    def timer_set(self, delay: float) -> None:
        pass

    def hang_up_unknown(self, *args: Any) -> None:
        pass


def long_flow(call: ivr.Call) -> Any:
    for _ in range(100):
        yield ivr.collect("x", timeout=60)


ENTER = {"sessionId": "s-bench", "partyId": "p-app",
         "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"}}}


class _NoPlatform:
    """A started simulator's shape: enough for an App that is never started (the replay
    benchmark drives its driver by hand)."""

    url = "http://127.0.0.1:9"
    token = "t" * 30


def replay_cost(folder: str, rounds: int) -> dict[str, Any]:
    """ms per logged step for a fresh driver rebuilding a 100-collect call from its log, with
    an App (not started) as its host: the App's own engine factory (media resolver, script
    choice) and call bookkeeping, as on a real cache miss; the store read included."""
    from ivrscript.durable import Driver, script_identity

    out: dict[str, Any] = {}
    for name in ("memory", "sqlite"):
        store: Any = MemoryStore() if name == "memory" else \
            SQLiteStore(os.path.join(folder, "replay.db"))
        live = Driver(store, _Host(long_flow), owner="live", cache_size=10, lease_ttl=60)
        store.append("s-bench", "enter", {"body": ENTER, "script": script_identity(long_flow)},
                     key="enter")
        runner = live.runner("s-bench")
        live.drain(runner)
        at = time.time()
        for n in range(99):  # the call is parked in its 100th collect
            store.append("s-bench", "callback", {"kind": "on-command-update",
                                                 "command": "Collect", "status": "Completed",
                                                 "commandId": None, "digits": "1"},
                         at=at + 10 * (n + 1))
            live.drain(runner)
        steps = sum(1 for e in store.load("s-bench") if e.kind == "request")
        host = App(long_flow, platform=_NoPlatform(), store=store)
        times = []
        for n in range(rounds * 5):
            store.release("s-bench", "live" if n == 0 else f"replay-{n - 1}")
            driver = Driver(store, host, owner=f"replay-{n}", cache_size=10, lease_ttl=60)
            start = time.perf_counter()
            rebuilt = driver.runner("s-bench")
            assert rebuilt is not None
            driver.drain(rebuilt)
            times.append(time.perf_counter() - start)
            assert not rebuilt.replaying and rebuilt.engine is not None \
                and rebuilt.engine.awaited is not None, "the replay did not reach the park"
        per_step = statistics.median(times) / steps * 1000
        out[name] = {"ms_per_step": per_step, "steps": steps,
                     "ms_per_replay": [t * 1000 for t in times]}
        store.close()
    return out


def recovery(folder: str) -> dict[str, Any]:
    """Restart -> the parked call rebuilt; keys -> the next command reaching the platform."""
    path = os.path.join(folder, "recovery.db")
    with Simulator(speed=1, default_media_seconds=0.0002) as sim:
        app = App(flow, platform=sim, store=f"sqlite:///{path}", secret=SECRET).start()
        port = app.port
        phone = sim.call(app)
        phone.wait_until_listening(30)
        app.stop()
        start = time.perf_counter()
        app2 = App(flow, platform=sim, store=f"sqlite:///{path}", port=port,
                   secret=SECRET).start()
        try:
            while not app2.calls:
                time.sleep(0.001)
            resumed = time.perf_counter() - start
            heard = len(phone.heard)
            pressed = time.perf_counter()
            phone.press("1234")
            while len(phone.heard) == heard:
                time.sleep(0.001)
            next_command = time.perf_counter() - pressed
            phone.wait_until_ended(30)
        finally:
            app2.stop()
    return {"restart_to_resumed_ms": resumed * 1000, "keys_to_next_command_ms":
            next_command * 1000}


def bytes_per_call(folder: str, calls: int) -> dict[str, Any]:
    """The SQLite file's growth per finished call, measured with every connection closed
    (so the WAL is checkpointed into the file and removed: a size, not a WAL's high-water
    mark), and the log's JSON per call."""
    path = os.path.join(folder, "bytes.db")
    with Simulator(speed=50, default_media_seconds=0.0002) as sim:
        store = SQLiteStore(path)
        app = App(flow, platform=sim, store=store).start()
        try:
            run_calls(sim, app, 5, 5)
        finally:
            app.stop()
            store.close()
        before = _size(path)
        store = SQLiteStore(path)
        app = App(flow, platform=sim, store=store).start()
        try:
            run_calls(sim, app, calls, 10)
            json_bytes = [sum(len(json.dumps(e.data)) for e in store.load(c.session_id))
                          for c in app.calls]
        finally:
            app.stop()
            store.close()
    return {"file_bytes_per_call": (_size(path) - before) / calls,
            "log_json_bytes_per_call": statistics.median(json_bytes)}


def _size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--only", choices=("replay",),
                        help="only this part (replay: a few seconds)")
    args = parser.parse_args()
    if args.only == "replay":
        with tempfile.TemporaryDirectory() as folder:
            r = replay_cost(folder, args.rounds)
        for name in ("memory", "sqlite"):
            print(f"replay per logged step, {name}: {r[name]['ms_per_step']:.3f} ms "
                  f"(goal <= 0.2; {r[name]['steps']} steps)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        results = {"throughput": throughput(args.calls, args.rounds, folder),
                   "replay": replay_cost(folder, args.rounds),
                   "recovery": recovery(folder),
                   "bytes": bytes_per_call(folder, args.calls)}
    t, r, c, b = (results[k] for k in ("throughput", "replay", "recovery", "bytes"))
    rows = [
        ("steps/s, memory store (10 in flight)", f"{t['memory_steps_per_s']:.0f}"),
        ("steps/s, SQLite store (10 in flight)", f"{t['sqlite_steps_per_s']:.0f}"),
        ("SQLite / memory", f"{t['ratio']:.2f}x (goal >= 0.8x)"),
        ("replay per logged step, memory", f"{r['memory']['ms_per_step']:.3f} ms (goal <= 0.2)"),
        ("replay per logged step, SQLite", f"{r['sqlite']['ms_per_step']:.3f} ms (goal <= 0.2)"),
        ("restart -> parked call rebuilt", f"{c['restart_to_resumed_ms']:.0f} ms"),
        ("keys -> next command after restart", f"{c['keys_to_next_command_ms']:.1f} ms"),
        ("SQLite file bytes per call", f"{b['file_bytes_per_call']:.0f}"),
        ("log JSON bytes per call", f"{b['log_json_bytes_per_call']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"machine: {os.cpu_count()} CPUs, CPython {sys.version.split()[0]}, "
          f"{threading.active_count()} threads at the end")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
