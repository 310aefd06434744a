"""Issue #11 item 4, end to end (real app processes, the simulator, a real redis-server):

* fencing: a holder that lost its lease (paused with SIGSTOP past the lease while the other
  process takes its calls over, then SIGCONT) issues nothing more: every call is driven by one
  process at a time, and the simulator's request log has no command twice;
* Redis unreachable for a few seconds (our own redis-server paused with SIGSTOP): callbacks
  that cannot be stored are answered 503 (the platform sends them again), and the calls the
  processes hold go on as soon as Redis answers again, with nothing issued twice.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import requests

from ivrscript.simulator import Simulator
from ivrscript.stores.redis import RedisStore

from ..redis_helpers import own_redis_server, wait_for
from .test_scaleout import (  # noqa: F401 - the scale-out tests' fixtures
    WAIT,
    AppProcess,
    balancer,
    check,
    redis_store,
    ring,
    sim,
    start_apps,
)


def holders(store: RedisStore, phones: list[Any]) -> list[str | None]:
    return [store.holder(p.session_id) for p in phones]


def test_a_paused_holder_that_lost_its_leases_issues_nothing(
        sim: Simulator, start_apps: Any, balancer: Any,  # noqa: F811
        redis_store: str) -> None:  # noqa: F811
    """SIGSTOP one of two processes (past its 2 s leases) while its calls wait for keys; the
    load balancer takes it out and the other process takes its calls up (adopts them once
    their leases lapse). Half the callers press their keys while it is paused; then SIGCONT,
    it is back in the balancer, and the other half press: every call completes, driven by the
    process that holds it, with no command sent twice (none was in flight: nothing may be)."""
    lease_ttl = 2.0
    apps = start_apps(2, redis_store, lease_ttl)
    lb = balancer(apps)
    phones = ring(sim, lb.rewrite(apps[0].urls), 8)
    store = RedisStore.from_url(redis_store)
    paused = apps[0]
    try:
        before = holders(store, phones)
        assert None not in before and len(set(before)) == 2, before  # both hold calls
        os.kill(paused.popen.pid, signal.SIGSTOP)
        try:
            lb.backends = [apps[1].base]  # its health check fails: out of the balancer
            # The other process adopts the paused one's calls once their leases lapse.
            wait_for(lambda: len(set(holders(store, phones))) == 1
                     and None not in holders(store, phones),
                     "the running process to hold every call", timeout=WAIT)
            for phone in phones[:4]:
                phone.press("1234", wait=True, timeout=WAIT)
            for phone in phones[:4]:
                phone.wait_until_ended(WAIT)
        finally:
            os.kill(paused.popen.pid, signal.SIGCONT)
        lb.backends = [apps[0].base, apps[1].base]
        for phone in phones[4:]:  # their callbacks now reach both processes in turn
            phone.press("1234", wait=True, timeout=WAIT)
        for phone in phones[4:]:
            phone.wait_until_ended(WAIT)
        check(sim, phones)  # exactly the expected commands: nothing twice
        # The paused process let go of what it lost and took nothing back (a finished call's
        # lease is refused to it): its health check counts no call held.
        assert all(h is None for h in holders(store, phones)), holders(store, phones)
        health = paused.base + "/" + paused.urls["on-call-enter"].rsplit("/", 2)[1] + "/health"
        wait_for(lambda: requests.get(health, timeout=10).json()["calls"] == 0,
                 "the resumed process to hold no call")
        for app in apps:
            assert "Traceback" not in app.stderr(), app.stderr()
    finally:
        store.close()


def test_redis_unreachable_for_seconds_503_then_calls_go_on() -> None:
    """Our redis-server paused (SIGSTOP: connections hang, nothing is refused) while two
    processes hold calls waiting for keys, and the keys are pressed meanwhile: each process
    answers the callbacks it cannot store 503 (after its 1 s socket timeout; the simulator
    sends them again), a callback posted straight to a process gets 503 too; once Redis runs
    again every call completes with exactly its commands."""
    with Simulator(speed=1, default_media_seconds=0.01, callback_retry=30.0) as platform, \
            own_redis_server() as server:
        assert server.process is not None
        apps = [AppProcess(platform, server.url + "?prefix=pause:", 2.0) for _ in range(2)]
        try:
            phones = ring(platform, [apps[0].urls, apps[1].urls], 6)
            store = RedisStore.from_url(server.url + "?prefix=pause:")
            try:  # every update before the keys is stored: the calls wait only for keys
                for phone in phones:
                    wait_for(lambda p=phone: [e.kind for e in store.load(p.session_id)]
                             .count("callback") >= 2, "the prompt's update to be stored")
            finally:
                store.close()
            server.process.send_signal(signal.SIGSTOP)
            try:
                began = time.monotonic()
                # A stale update (not the one the call waits for: harmless if Redis runs the
                # timed-out append after all once it is back).
                answer = requests.post(apps[0].urls["on-command-update"], json={
                    "sessionId": phones[0].session_id, "command": "Play",
                    "status": "Completed", "commandId": "forged-1"}, timeout=30)
                took = time.monotonic() - began
                assert answer.status_code == 503, (answer.status_code, answer.text)
                assert took < 15, took  # a guard against hanging, not a timing
                for phone in phones:
                    phone.press("1234", wait=True, timeout=WAIT)
                wait_for(lambda: all("answered 503" in a.stderr() for a in apps),
                         "both processes to answer a callback 503", timeout=WAIT)
            finally:
                server.process.send_signal(signal.SIGCONT)
            for phone in phones:
                phone.wait_until_ended(WAIT)
            try:
                check(platform, phones)
            except AssertionError as error:
                raise AssertionError(f"{error}\n" + "\n---\n".join(a.stderr() for a in apps)
                                     ) from None
            print(f"\n503 to a callback after {took:.2f} s with Redis paused")
        finally:
            for app in apps:
                app.stop()
