"""Replay speed: steps/s of ``ivrscript.testing.replay`` over the committed recordings.

    python benchmarks/replay_speed.py             # 20 rounds over recordings/*.yaml
    python benchmarks/replay_speed.py --rounds 50

A step is one engine input: a callback or the outcome of one recorded request. Two figures:
**cold** replays a fresh copy of every cassette each round (each file is parsed), **warm**
replays the same files again (a cassette is parsed once while its file is unchanged, as in a
test session replaying it from several tests). Medians of the rounds; the machine's noise
shows in the min-max.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ivrscript.loader import load_script_file  # noqa: E402
from ivrscript.recorder import load_recording  # noqa: E402
from ivrscript.testing import replay  # noqa: E402


def cassettes() -> list[tuple[str, Any, int]]:
    """(path, script, steps) for every committed recording."""
    scripts: dict[str, Any] = {}
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "recordings", "*.yaml"))):
        recording = load_recording(path)
        name = recording.meta["script"]["file"]
        if name not in scripts:
            scripts[name] = load_script_file(os.path.join(ROOT, "examples", name))[0]
        found.append((path, scripts[name], len(recording.requests) + len(recording.callbacks)))
    return found


def one_round(items: list[tuple[str, Any, int]]) -> float:
    started = time.perf_counter()
    for path, script, _steps in items:
        replay(path, script)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    items = cassettes()
    steps = sum(n for _, _, n in items)
    figures: dict[str, list[float]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="ivrscript-replay-speed-") as folder:
        for index in range(args.rounds):
            copies = []
            for path, script, n in items:  # a new file each round: parsed again
                copy = os.path.join(folder, f"{index}-{os.path.basename(path)}")
                shutil.copyfile(path, copy)
                copies.append((copy, script, n))
            figures["cold"].append(steps / one_round(copies))
            figures["warm"].append(steps / one_round(items))
    print(f"{len(items)} recordings, {steps} steps a round, {args.rounds} rounds")
    for name, values in figures.items():
        print(f"replay {name}: {statistics.median(values):,.0f} steps/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f}; goal >= 5,000)")


if __name__ == "__main__":
    main()
