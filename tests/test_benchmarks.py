"""The benchmark suite runs end to end: a smoke test of ``benchmarks/run.py --quick``.

It checks that every figure was measured and written as strict JSON, and that every call of
the benchmark flow did what the flow says (ended forwarded), on both sides. It asserts nothing
about speed: the figures depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_run_completes_and_writes_valid_json(tmp_path):
    """`run.py --quick --out PATH` exits 0, prints the table and writes every figure as JSON;
    all calls of both apps end forwarded, and the parked calls' thread counts are recorded."""
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "reaction p50" in done.stdout and "goal:" in done.stdout, done.stdout
    results = json.loads(out.read_text(), parse_constant=lambda name: pytest_fail(name))
    assert results["quick"] is True
    app_side = results["app_side"]
    for side in ("ivrscript", "baseline", "floor"):
        entry = app_side["sides"][side]
        assert entry["cpu_ms_per_call"]["median"] > 0, side
        assert entry["calls_per_s"]["median"] > 0, side
        assert entry["failed"] == 0, f"{side} lost calls against the lean platform"
        assert entry["reaction_p50_ms"]["median"] > 0, side
    assert app_side["loopback_limit_exchanges_per_s"] > 0
    assert "CPU per call" in done.stdout and "ivrscript / floor" in done.stdout
    assert results["limit"]["exchanges_per_s"] > 0
    for concurrency in ("50", "200"):
        entry = results["throughput"][concurrency]
        for side in ("ivrscript", "baseline"):
            assert entry[side]["calls_per_s"] > 0
            assert entry[side]["failed"] == 0, f"{side} lost calls at {concurrency} in flight"
        assert entry["ratio"] > 0
    for side in ("ivrscript", "baseline"):
        reaction = results["reaction"][side]
        assert reaction["samples"] > 0 and reaction["p50_ms"] > 0
        parked = results["parked"][side]
        assert parked["heap_per_call_bytes"] is not None
        assert parked["threads_10"] > 0 and parked[f"threads_{results['parked']['calls']}"] > 0
    replay = results["replay"]
    assert isinstance(replay, dict) or replay.startswith("n/a")
    assert set(results["goals"]) and all("holds" in g for g in results["goals"].values())


def pytest_fail(name: str) -> None:
    raise AssertionError(f"the results hold {name}, which is not strict JSON")
