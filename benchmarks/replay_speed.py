"""Replay speed: steps/s of ``ivrscript.testing.replay`` over the committed recordings.

    python benchmarks/replay_speed.py             # 20 rounds over recordings/*.yaml
    python benchmarks/replay_speed.py --rounds 50

A step is one engine input: a callback or the outcome of one recorded request. Three
figures, interleaved in each round: **cold** replays a fresh copy of every cassette (each file
is parsed, by the recorder's fast reader of the YAML it writes), **cold, full loader** the same
with every file read by PyYAML's safe loader (the C one when libyaml is there: the baseline,
what a cassette the fast reader declines costs), **warm** replays the same files again (a
cassette is parsed once while its file is unchanged, as in a test session replaying it from
several tests). Medians of the rounds; the machine's noise shows in the min-max; the ratio of
cold to cold-with-the-full-loader is the steadier figure.
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

from ivrscript import recorder  # noqa: E402
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


def full_loader_only(text: str) -> Any:
    raise recorder._NotSimple("the benchmark's baseline: PyYAML's loader")


def fresh(folder: str, tag: str, items: list[tuple[str, Any, int]]) -> list[tuple[str, Any, int]]:
    copies = []
    for path, script, n in items:  # a new file: parsed again
        copy = os.path.join(folder, f"{tag}-{os.path.basename(path)}")
        shutil.copyfile(path, copy)
        copies.append((copy, script, n))
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    items = cassettes()
    steps = sum(n for _, _, n in items)
    figures: dict[str, list[float]] = {"cold": [], "cold, full loader": [], "warm": []}
    ratios: list[float] = []
    fast = recorder._simple_yaml
    with tempfile.TemporaryDirectory(prefix="ivrscript-replay-speed-") as folder:
        for index in range(args.rounds):
            cold = steps / one_round(fresh(folder, f"{index}a", items))
            recorder._simple_yaml = full_loader_only
            try:
                full = steps / one_round(fresh(folder, f"{index}b", items))
            finally:
                recorder._simple_yaml = fast
            figures["cold"].append(cold)
            figures["cold, full loader"].append(full)
            figures["warm"].append(steps / one_round(items))
            ratios.append(cold / full)
    print(f"{len(items)} recordings, {steps} steps a round, {args.rounds} rounds")
    for name, values in figures.items():
        print(f"replay {name}: {statistics.median(values):,.0f} steps/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f}; goal >= 5,000)")
    print(f"cold / cold with the full loader: {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
