"""One app process of the scale-out benchmark: the benchmark flow on a store.

    python scaleout_app.py STORE_URL PLATFORM_URL TOKEN

Prints ``{"urls": {...}}`` once serving; ``quit`` on stdin stops it (``cpu`` answers its
user+sys seconds). Every process uses the same callback secret, as processes sharing calls
must.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SECRET = "scale-out-benchmark-secret-0123456789"


def main() -> None:
    from run import flow

    from ivrscript import App, RingCentral

    store, url, token = sys.argv[1:4]
    app = App(flow, platform=RingCentral(server_url=url, token=token), store=store,
              secret=SECRET).start()
    print(json.dumps({"urls": dict(app.callback_urls)}), flush=True)
    try:
        for line in sys.stdin:
            op = line.strip()
            if op == "cpu":
                times = os.times()
                print(json.dumps({"cpu": times.user + times.system}), flush=True)
            elif op == "quit":
                break
    finally:
        app.stop()


if __name__ == "__main__":
    main()
