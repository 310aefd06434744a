"""Several processes on one store (SQLite file, Redis): the conformance rules hold across
processes, not only across threads (real subprocesses, real signals)."""

from __future__ import annotations

import os
import signal
import time

from .conftest import Backend, start_peer, wait_for


def race_peers(url: str, *argsets: tuple[str, ...]) -> list[list[str]]:
    """Start one peer per argument set; once all have opened the store, let them go at once."""
    peers = [start_peer(url, *args, "go") for args in argsets]
    try:
        for peer in peers:
            assert peer.stdout is not None
            line = peer.stdout.readline()
            assert line.strip() == "ready", f"peer did not start: {line!r}"
        for peer in peers:
            assert peer.stdin is not None
            peer.stdin.write("go\n")
            peer.stdin.flush()
        outputs = []
        for peer in peers:
            out, err = peer.communicate(timeout=120)
            assert peer.returncode == 0, f"peer failed:\n{err}"
            outputs.append(out.splitlines())
        return outputs
    finally:
        for peer in peers:
            if peer.poll() is None:
                peer.kill()
                peer.communicate(timeout=30)


def test_two_processes_appending_the_same_keys_store_each_once(shared_backend: Backend) -> None:
    """Two processes append the same 150 dedupe keys to one call at once: each key is won by
    exactly one of them and the log holds 150 entries numbered 1..150."""
    a, b = race_peers(shared_backend.url or "", ("append-keys", "c1", "150"),
                      ("append-keys", "c1", "150"))
    assert sorted(a + b) == sorted(f"k{i}" for i in range(150))
    log = shared_backend.make().load("c1")
    assert [e.seq for e in log] == list(range(1, 151))
    assert sorted(e.data["i"] for e in log) == list(range(150))


def test_two_processes_never_claim_a_timer_twice(shared_backend: Backend) -> None:
    """Two processes claim 90 due timers at once: together they claim each exactly once."""
    store = shared_backend.make()
    now = time.time()
    for i in range(90):
        store.schedule(f"c{i}", "retry", now - 1 - i % 5)
    a, b = race_peers(shared_backend.url or "", ("claim", "proc-a", "120"),
                      ("claim", "proc-b", "120"))
    claimed = a + b
    assert len(claimed) == len(set(claimed)) == 90, (len(a), len(b))
    assert store.claim_due("proc-c") == []  # all held


def test_a_subscriber_hears_of_another_process_append(shared_backend: Backend) -> None:
    """An append made by another process reaches this process's subscriber."""
    store = shared_backend.make()
    heard: list[str] = []
    store.subscribe(heard.append)
    peer = start_peer(shared_backend.url or "", "append", "from-peer", "callback")
    out, err = peer.communicate(timeout=60)
    assert peer.returncode == 0, err
    assert out.strip() == "1"
    wait_for(lambda: "from-peer" in heard, "the subscriber to hear of the peer's append")
    assert [e.data for e in store.load("from-peer")] == [{"from": "peer"}]


def test_a_killed_holders_lease_lapses_and_another_process_takes_it(shared_backend: Backend) -> None:
    """A process holding (and renewing) a call's lease is killed with SIGKILL: within the
    lease's ttl another process takes the call."""
    store = shared_backend.make()
    peer = start_peer(shared_backend.url or "", "hold-lease", "c1", "proc-peer", "1.0")
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "held"
        assert store.holder("c1") == "proc-peer"
        assert not store.acquire("c1", "proc-me", 30)
        os.kill(peer.pid, signal.SIGKILL)
        peer.wait(timeout=30)
        wait_for(lambda: store.acquire("c1", "proc-me", 30), "the killed holder's lease to lapse")
        assert store.holder("c1") == "proc-me"
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait(timeout=30)
        for pipe in (peer.stdin, peer.stdout, peer.stderr):
            if pipe is not None:
                pipe.close()
