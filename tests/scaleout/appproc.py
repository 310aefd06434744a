"""One app process for the scale-out tests: the flow below on a shared store.

    python appproc.py SIM_URL SIM_TOKEN STORE_URL [LEASE_TTL]

Every process uses the same callback secret (SECRET), as every process behind one load
balancer must.

Prints one JSON line with its callback URLs once it listens; serves until its stdin closes
(then stops, releasing its leases) or until it is killed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import ivrscript as ivr

WELCOME = "https://media.example/welcome.wav"
PROMPT = "https://media.example/pin.wav"
SECRET = "scale-out-test-secret-0123456789abcdef"


def flow(call: ivr.Call) -> Iterator[Any]:
    yield ivr.play(WELCOME)
    pin = yield ivr.collect("xxxx", timeout=60, prompt=PROMPT)
    yield ivr.forward(extension="101" if pin == "1234" else "102")


def main(argv: list[str]) -> int:
    sim_url, token, store = argv[:3]
    lease_ttl = float(argv[3]) if len(argv) > 3 else 5.0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    platform = SimpleNamespace(url=sim_url, token=token, speed=1.0)
    app = ivr.App(flow, platform=platform, store=store, lease_ttl=lease_ttl,
                  secret=SECRET).start()
    try:
        print(json.dumps(app.callback_urls), flush=True)
        sys.stdin.read()
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
