"""The simulator in a process of its own, for the parked-calls figures.

Run by ``run.py``: with the simulator out of the app's process, the app process's heap, RSS
and thread count are the app's alone. It speaks JSON lines: one request on stdin, one answer
on stdout.

  {"op": "park", "n": N, "urls": {...}}   ring N calls, answer once each is in a collect
  {"op": "finish", "keys": "1234"}          press keys on every parked call, wait for the ends
  {"op": "hangup"}                          hang up every call in progress, wait for the ends
  {"op": "quit"}
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ivrscript import Simulator
from ivrscript.errors import IvrError
from ivrscript.simulator import Phone

RINGERS = 8  # threads that ring calls in parallel


def main() -> None:
    speed = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    media = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0002
    sim = Simulator(speed=speed, default_media_seconds=media).start()
    parked: list[Phone] = []
    pool = ThreadPoolExecutor(RINGERS)
    answer({"url": sim.url, "token": sim.token, "speed": sim.speed})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            if op == "park":
                urls = request["urls"]

                def ring(_: int, urls: dict[str, str] = urls) -> Phone:
                    phone = sim.call(urls)
                    phone.wait_until_listening(timeout=120)
                    return phone

                try:
                    phones = list(pool.map(ring, range(int(request["n"]))))
                except IvrError as error:
                    answer({"error": str(error)})
                    continue
                parked.extend(phones)
                answer({"parked": len(parked)})
            elif op == "finish":
                keys = request.get("keys", "1234")
                for phone in parked:
                    phone.press(keys, wait=False)
                reasons = [phone.wait_until_ended(timeout=120) for phone in parked]
                parked.clear()
                answer({"ended": len(reasons), "forwarded": reasons.count("forwarded")})
            elif op == "hangup":
                for phone in parked:
                    phone.hang_up()
                for phone in parked:
                    phone.wait_until_ended(timeout=120)
                answer({"ended": len(parked)})
                parked.clear()
            elif op == "quit":
                break
            else:
                answer({"error": f"unknown op {op!r}"})
    finally:
        pool.shutdown(wait=False)
        sim.stop()


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
