"""The app's own CPU per call, with the simulator in another process (so its cost is not
counted): the app runs in a child process against the simulator here; the figure is the
child's user + sys CPU over N calls, and calls/s.

    python benchmarks/edges_app_cpu.py [--calls 300] [--inflight 50]
    PYTHONPATH=/path/to/other/checkout python benchmarks/edges_app_cpu.py   # the same, other code

Each call: enter -> play -> collect 4 digits (pressed as soon as it listens) -> play ->
forward. Loopback only; the child is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any

APP = """
import sys
import ivrscript as ivr
from ivrscript import RingCentral

def main(call):
    yield ivr.play("https://media.example/welcome.wav")
    yield ivr.collect("xxxx", timeout=30)
    yield ivr.play("https://media.example/thanks.wav")
    yield ivr.forward(extension="101")

client = RingCentral(server_url=sys.argv[1], token=sys.argv[2])
app = ivr.App(main, platform=client, secret="b" * 32).start()
print(app.url, flush=True)
sys.stdin.readline()
app.stop()
"""


class _Target:
    def __init__(self, base: str) -> None:
        kinds = ("on-call-enter", "on-command-update", "on-call-exit", "on-command-error")
        self.callback_urls = {kind: f"{base}/{'b' * 32}/{kind}" for kind in kinds}


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--inflight", type=int, default=50)
    args = parser.parse_args()
    from ivrscript import Simulator

    with Simulator(speed=1000) as sim:
        def press(phone: Any, event: Any) -> None:
            if event.kind == "listen" and not phone.ended:
                try:
                    phone.press("1234", wait=False)
                except Exception:  # noqa: BLE001 - the call ended in between
                    pass

        sim.add_listener(press)
        child = subprocess.Popen([sys.executable, "-c", APP, sim.url, sim.token],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            target = _Target(child.stdout.readline().strip())
            warm = [sim.call(target) for _ in range(10)]
            for phone in warm:
                phone.wait_until_ended(60)
            slots = threading.Semaphore(args.inflight)
            phones = []
            cpu, started = _cpu(child.pid), time.perf_counter()
            for _ in range(args.calls):
                slots.acquire()
                phone = sim.call(target)
                phones.append(phone)
                threading.Thread(target=lambda p=phone: (p.wait_until_ended(120),
                                                         slots.release()),
                                 daemon=True).start()
            for phone in phones:
                phone.wait_until_ended(120)
            wall, cpu = time.perf_counter() - started, _cpu(child.pid) - cpu
            forwarded = sum(1 for phone in phones if phone.forwarded_to == "101")
            print(f"{args.calls} calls ({forwarded} forwarded), {args.inflight} in flight: "
                  f"app CPU {cpu / args.calls * 1000:.2f} ms per call, "
                  f"{args.calls / wall:.1f} calls/s")
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(30)
        finally:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
