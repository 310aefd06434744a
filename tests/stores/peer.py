"""Another process on a shared store, for the cross-process tests.

    python peer.py URL append-keys SESSION N go      append keys k0..k{N-1}; print won keys
    python peer.py URL claim OWNER HOLD go           claim due timers until none; print them
    python peer.py URL append SESSION KIND           append one entry; print its seq
    python peer.py URL hold-lease SESSION OWNER TTL  take the lease, print "held", then renew
                                                     it until killed

With go, the peer prints "ready" once the store is open and begins when a line comes on
its stdin, so several peers race each other.
"""

from __future__ import annotations

import sys
import time


def ready() -> None:
    """Say so, then wait for the starting line."""
    print("ready", flush=True)
    sys.stdin.readline()


def main(argv: list[str]) -> int:
    from ivrscript.stores import open_store

    url, action, *args = argv
    store = open_store(url)
    try:
        if action == "append-keys":
            session, count = args[0], int(args[1])
            ready()
            for i in range(count):
                if store.append(session, "callback", {"i": i}, key=f"k{i}") is not None:
                    print(f"k{i}", flush=True)
        elif action == "claim":
            owner, hold = args[0], float(args[1])
            ready()
            while True:
                claimed = store.claim_due(owner, limit=3, hold=hold)
                if not claimed:
                    break
                for timer in claimed:
                    print(f"{timer.session_id} {timer.key}", flush=True)
        elif action == "append":
            print(store.append(args[0], args[1], {"from": "peer"}), flush=True)
        elif action == "hold-lease":
            session, owner, ttl = args[0], args[1], float(args[2])
            if not store.acquire(session, owner, ttl):
                print("refused", flush=True)
                return 1
            print("held", flush=True)
            while True:
                time.sleep(ttl / 3)
                store.acquire(session, owner, ttl)
        else:
            print(f"unknown action {action!r}", file=sys.stderr)
            return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
