"""Fencing in the driver, without sockets: a process whose lease moved while it was away (its
drain had already checked the lease) logs nothing and sends nothing more for the call."""

from __future__ import annotations

from typing import Any

import pytest

import ivrscript as ivr
from ivrscript.app import call_from_enter
from ivrscript.call import Call
from ivrscript.durable import CallRunner, Driver
from ivrscript.engine import CallEngine, Request, Sent
from ivrscript.stores import MemoryStore
from ivrscript.stores.base import LeaseLost

ENTER = {"sessionId": "s-1", "partyId": "p-app",
         "inParty": {"id": "p-caller", "from": {"phoneNumber": "+15550100"},
                     "to": {"phoneNumber": "+15550199"}}}


def flow(call: Call) -> Any:
    yield ivr.play("https://example.com/welcome.wav")
    yield ivr.play("https://example.com/bye.wav")


class Host:
    """The driver's host, hand-cranked: every request is accepted and remembered."""

    def __init__(self, store: MemoryStore, owner: str) -> None:
        self.sent: list[Request] = []
        self.driver = Driver(store, self, owner=owner, cache_size=10, lease_ttl=30.0)

    def new_engine(self, body: dict[str, Any]) -> tuple[CallEngine, Call]:
        call = call_from_enter(body)
        return CallEngine(flow, call), call

    def send(self, request: Request) -> Sent:
        self.sent.append(request)
        return Sent(request.token, f"id-{len(self.sent)}")

    def call_entered(self, call: Call, *, observed: bool) -> None:
        pass

    def call_finished(self, runner: CallRunner, call: Call) -> None:
        pass

    def timer_set(self, delay: float) -> None:
        pass

    def drain(self) -> None:
        runner = self.driver.runner("s-1")
        assert runner is not None
        self.driver.drain(runner)


def test_a_holder_whose_lease_moved_sends_nothing_more() -> None:
    store = MemoryStore()
    a, b = Host(store, "proc-a"), Host(store, "proc-b")
    store.append("s-1", "enter", {"body": ENTER, "script": {}}, key="enter")
    a.drain()
    assert [r.op for r in a.sent] == ["play"]
    assert store.holder("s-1") == "proc-a"
    # proc-a is away past its lease (its runner still believes the lease fresh): proc-b takes
    # the call, and the welcome's update comes.
    store.release("s-1", "proc-a")
    assert store.acquire("s-1", "proc-b", 30.0)
    store.append("s-1", "callback", {"kind": "on-command-update", "command": "Play",
                                     "status": "Completed", "commandId": "id-1",
                                     "digits": None})
    logged = len(store.load("s-1"))
    with pytest.raises(LeaseLost):
        a.drain()  # its engine asks for the next play: the fenced write refuses it
    assert [r.op for r in a.sent] == ["play"]  # not sent
    assert len(store.load("s-1")) == logged  # and not logged
    assert store.holder("s-1") == "proc-b"
    # The holder drives the call from the log: the next play, sent once, by it only.
    b.drain()
    assert [r.op for r in b.sent] == ["play"]
    assert b.sent[0].args != a.sent[0].args  # the second play (bye), not the welcome again
