"""The CallStore conformance suite: every backend (memory, sqlite, redis) keeps the same rules.

The rules are the docstrings of :class:`ivrscript.stores.CallStore`; ``MemoryStore`` is the
reference. Each test runs once per backend through the ``backend`` fixture.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ivrscript.stores import CallStore, StoreError

from .conftest import Backend, wait_for


def race(count: int, fn: Any) -> list[Any]:
    """Run ``fn(i)`` on ``count`` threads released together; their results in order."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn(i)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racing thread did not finish"
    assert not errors, f"a racing thread failed: {errors[0]!r}"
    return results


# -- the log ---------------------------------------------------------------------------------

def test_append_numbers_entries_and_load_returns_them_in_order(store: CallStore) -> None:
    """Appends get seq 1, 2, 3...; load gives them back in order; load(after=n) the rest."""
    assert store.append("c1", "enter", {"to": "+1"}, at=100.0) == 1
    assert store.append("c1", "callback", {"n": 1}, at=101.0) == 2
    assert store.append("c2", "enter", {}) == 1
    assert store.append("c1", "sent", {"id": "x"}) == 3
    log = store.load("c1")
    assert [(e.seq, e.kind) for e in log] == [(1, "enter"), (2, "callback"), (3, "sent")]
    assert log[0].data == {"to": "+1"} and log[0].at == 100.0 and log[1].at == 101.0
    assert [e.seq for e in store.load("c1", after=1)] == [2, 3]
    assert store.load("c1", after=3) == []
    assert [e.kind for e in store.load("c2")] == ["enter"]


def test_load_of_an_unknown_call_is_empty(store: CallStore) -> None:
    """A call the store never saw has an empty log (not an error)."""
    assert store.load("never-seen") == []
    assert store.load("never-seen", after=5) == []


def test_append_without_at_stamps_now(store: CallStore) -> None:
    """``at`` defaults to the wall clock."""
    before = time.time()
    store.append("c1", "enter", {})
    (entry,) = store.load("c1")
    assert before - 1 <= entry.at <= time.time() + 1


def test_a_repeated_dedupe_key_is_a_no_op(store: CallStore) -> None:
    """The second append with a key already in the call's log returns None and adds nothing;
    the same key in another call is independent."""
    assert store.append("c1", "callback", {"n": 1}, key="cb-1") == 1
    assert store.append("c1", "callback", {"n": 2}, key="cb-1") is None
    assert store.append("c1", "callback", {"n": 3}, key="cb-2") == 2
    assert store.append("c1", "note", {}) == 3  # no key: never deduped
    assert store.append("c2", "callback", {"n": 1}, key="cb-1") == 1
    assert [e.data for e in store.load("c1")] == [{"n": 1}, {"n": 3}, {}]


def test_concurrent_appends_of_one_key_have_exactly_one_winner(backend: Backend) -> None:
    """Many threads (each with its own store object where the backend is shared) append the
    same key at once: exactly one gets a seq, the log holds one entry."""
    stores = [backend.make() for _ in range(8)]
    for round_ in range(5):
        key = f"cb-{round_}"
        results = race(16, lambda i, k=key: stores[i % 8].append(
            "c1", "callback", {"by": i}, key=k))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, f"{key}: {results}"
        assert winners[0] == round_ + 1
    assert [e.seq for e in stores[0].load("c1")] == [1, 2, 3, 4, 5]


def test_concurrent_appends_get_distinct_consecutive_seqs(backend: Backend) -> None:
    """Appends racing on one call are all kept, numbered 1..n without gaps or repeats."""
    stores = [backend.make() for _ in range(4)]
    results = race(12, lambda i: stores[i % 4].append("c1", "callback", {"by": i}))
    assert sorted(results) == list(range(1, 13))
    log = stores[0].load("c1")
    assert [e.seq for e in log] == list(range(1, 13))
    assert sorted(e.data["by"] for e in log) == list(range(12))


def test_data_round_trips_as_json(store: CallStore) -> None:
    """What comes back is what a JSON round trip gives: nested values, unicode, numbers."""
    data: dict[str, Any] = {
        "text": "Grüße \u2028 \"quoted\" \\ \n tab\t", "emoji": "\U0001f4de",
        "int": 2**53, "neg": -7, "float": 0.1, "big": 1e300, "true": True, "none": None,
        "list": [1, "two", [3.5, {"four": []}]], "nested": {"a": {"b": {"c": "d"}}},
        "empty": {}, "session id": "s-1\x00x",
    }
    store.append("c1", "effect", data)
    store.append("c1", "int keys", {1: "one"})  # type: ignore[dict-item]
    first, second = store.load("c1")
    assert first.data == data
    assert second.data == {"1": "one"}


def test_data_that_is_not_json_is_a_store_error(store: CallStore) -> None:
    """A value JSON cannot hold is refused with StoreError, and nothing is appended."""
    with pytest.raises(StoreError, match="JSON"):
        store.append("c1", "effect", {"value": object()})
    assert store.load("c1") == []


def test_loaded_data_is_a_copy(store: CallStore) -> None:
    """Changing a loaded entry's data, or the dict that was appended, changes nothing stored."""
    data = {"list": [1]}
    store.append("c1", "x", data)
    data["list"].append(2)
    store.load("c1")[0].data["list"].append(3)
    assert store.load("c1")[0].data == {"list": [1]}


# -- leases ----------------------------------------------------------------------------------

def test_lease_take_renew_refuse_release(backend: Backend) -> None:
    """One owner at a time: the holder renews, another is refused, only the holder releases."""
    a, b = backend.make(), backend.make()
    assert a.holder("c1") is None
    assert a.acquire("c1", "proc-a", 30)
    assert a.acquire("c1", "proc-a", 30)  # renew
    assert b.holder("c1") == "proc-a"
    assert not b.acquire("c1", "proc-b", 30)
    b.release("c1", "proc-b")  # not the holder: nothing happens
    assert a.holder("c1") == "proc-a"
    a.release("c1", "proc-a")
    assert b.holder("c1") is None
    assert b.acquire("c1", "proc-b", 30)
    assert a.holder("c1") == "proc-b"
    assert not a.acquire("c1", "proc-a", 30)


def test_leases_are_per_call(store: CallStore) -> None:
    """Holding one call's lease says nothing about another's."""
    assert store.acquire("c1", "proc-a", 30)
    assert store.acquire("c2", "proc-b", 30)
    assert store.holder("c1") == "proc-a" and store.holder("c2") == "proc-b"


def test_a_lease_lapses_after_its_ttl(backend: Backend) -> None:
    """An unrenewed lease expires: holder() turns None and another owner takes it; the lapsed
    holder's release then gives nothing back."""
    a, b = backend.make(), backend.make()
    assert a.acquire("c1", "proc-a", 0.3)
    assert not b.acquire("c1", "proc-b", 30)
    wait_for(lambda: b.holder("c1") is None, "the 0.3 s lease to lapse")
    assert b.acquire("c1", "proc-b", 30)
    a.release("c1", "proc-a")
    assert b.holder("c1") == "proc-b"


def test_concurrent_acquire_has_one_winner(backend: Backend) -> None:
    """Owners racing for a free lease: exactly one gets it."""
    stores = [backend.make() for _ in range(4)]
    results = race(12, lambda i: stores[i % 4].acquire("c1", f"proc-{i}", 30))
    assert results.count(True) == 1
    assert stores[0].holder("c1") == f"proc-{results.index(True)}"


# -- timers ----------------------------------------------------------------------------------

def test_a_timer_is_claimed_when_due_with_its_data(store: CallStore) -> None:
    """claim_due gives timers whose due time has come, with their data; not before."""
    store.schedule("c1", "retry", 1000.0, {"command": 3})
    assert store.claim_due("p", now=999.0) == []
    (timer,) = store.claim_due("p", now=1000.0)
    assert (timer.session_id, timer.key, timer.due, timer.data) == ("c1", "retry", 1000.0,
                                                                   {"command": 3})


def test_a_claimed_timer_is_held_then_fires_again_unless_cancelled(backend: Backend) -> None:
    """A claimed timer is not claimed again (by anyone) within ``hold``; after it, it is due
    again until cancelled."""
    a, b = backend.make(), backend.make()
    a.schedule("c1", "retry", 1000.0)
    assert len(a.claim_due("p-a", now=1000.0, hold=5.0)) == 1
    assert b.claim_due("p-b", now=1004.0) == []
    assert a.claim_due("p-a", now=1004.9) == []
    (again,) = b.claim_due("p-b", now=1005.0, hold=5.0)
    assert again.key == "retry"
    b.cancel("c1", "retry")
    assert a.claim_due("p-a", now=2000.0) == []


def test_schedule_moves_and_cancel_removes(store: CallStore) -> None:
    """Scheduling a key again moves it (and replaces its data); cancel removes it; cancelling
    an unknown timer is a no-op."""
    store.schedule("c1", "t", 1000.0, {"v": 1})
    store.schedule("c1", "t", 1100.0, {"v": 2})
    assert store.claim_due("p", now=1050.0) == []
    (timer,) = store.claim_due("p", now=1100.0)
    assert timer.due == 1100.0 and timer.data == {"v": 2}
    store.schedule("c1", "t", 900.0)
    (timer,) = store.claim_due("p", now=1000.0)
    assert timer.due == 900.0 and timer.data == {}
    store.cancel("c1", "t")
    store.cancel("c1", "t")
    store.cancel("nobody", "t")
    assert store.claim_due("p", now=5000.0) == []


def test_claim_due_is_oldest_first_and_limited(store: CallStore) -> None:
    """Due timers come oldest first, at most ``limit``; the rest on the next claim."""
    for i, due in enumerate([1005.0, 1001.0, 1003.0, 1002.0, 1004.0]):
        store.schedule(f"c{i}", "t", due)
    store.schedule("c0", "later", 2000.0)
    first = store.claim_due("p", now=1010.0, limit=3)
    assert [t.due for t in first] == [1001.0, 1002.0, 1003.0]
    rest = store.claim_due("p", now=1010.0, limit=3)
    assert [t.due for t in rest] == [1004.0, 1005.0]
    assert [(t.session_id, t.key) for t in first + rest] == [
        ("c1", "t"), ("c3", "t"), ("c2", "t"), ("c4", "t"), ("c0", "t")]


def test_timers_of_one_call_are_separate_keys(store: CallStore) -> None:
    """A call may have several timers; cancelling one leaves the others."""
    store.schedule("c1", "a", 1000.0)
    store.schedule("c1", "b", 1000.0)
    store.cancel("c1", "a")
    assert [t.key for t in store.claim_due("p", now=1000.0)] == ["b"]


def test_concurrent_claims_never_claim_a_timer_twice(backend: Backend) -> None:
    """Threads with their own store objects claim 60 due timers at once: each timer is claimed
    by exactly one of them within its hold."""
    stores = [backend.make() for _ in range(4)]
    for i in range(60):
        stores[0].schedule(f"c{i}", "t", 1000.0 + i % 7)

    def claim_all(i: int) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        while True:
            claimed = stores[i % 4].claim_due(f"p{i}", now=1100.0, limit=4, hold=60.0)
            if not claimed:
                return got
            got.extend((t.session_id, t.key) for t in claimed)

    results = race(8, claim_all)
    everything = [item for got in results for item in got]
    assert len(everything) == len(set(everything)) == 60


# -- calls -----------------------------------------------------------------------------------

def test_calls_lists_active_and_finished_oldest_first(store: CallStore) -> None:
    """calls() lists every call oldest first with its entry count; finish marks it with its
    time and reason (the first finish wins); ``active`` filters."""
    store.append("c2", "enter", {}, at=200.0)
    store.append("c1", "enter", {}, at=100.0)
    store.append("c1", "callback", {}, at=101.0)
    store.append("c3", "enter", {}, at=300.0)
    store.finish("c1", "hangup", at=150.0)
    store.finish("c1", "caller-hangup", at=160.0)
    infos = store.calls()
    assert [(i.session_id, i.started, i.entries) for i in infos] == [
        ("c1", 100.0, 2), ("c2", 200.0, 1), ("c3", 300.0, 1)]
    assert (infos[0].finished, infos[0].end_reason) == (150.0, "hangup")
    assert (infos[1].finished, infos[1].end_reason) == (None, None)
    assert [i.session_id for i in store.calls(active=True)] == ["c2", "c3"]
    assert [i.session_id for i in store.calls(active=False)] == ["c1"]
    assert store.load("c1") != []  # finished calls keep their log until expired


def test_finish_drops_the_lease_and_timers(backend: Backend) -> None:
    """A finished call has no holder and no timers to fire."""
    a, b = backend.make(), backend.make()
    a.append("c1", "enter", {})
    a.acquire("c1", "proc-a", 30)
    a.schedule("c1", "retry", 1000.0)
    b.finish("c1", "hangup")
    assert a.holder("c1") is None
    assert a.claim_due("p", now=5000.0) == []


def test_expire_removes_calls_finished_before_the_retention(backend: Backend) -> None:
    """expire(retention, now) removes calls finished more than ``retention`` seconds ago —
    log, lease and timers — keeps newer and active ones, and counts what it removed."""
    a, b = backend.make(), backend.make()
    for sid, at in [("old", 100.0), ("new", 200.0), ("live", 300.0)]:
        a.append(sid, "enter", {}, at=at)
        a.append(sid, "callback", {}, key="k1", at=at)
    a.finish("old", "hangup", at=1000.0)
    a.finish("new", "hangup", at=1900.0)
    a.schedule("old", "late", 10.0)  # a timer set after finish goes with the call
    a.acquire("old", "proc-a", 60)
    assert b.expire(500.0, now=2000.0) == 1
    assert a.load("old") == []
    assert a.holder("old") is None
    assert a.claim_due("p", now=5000.0) == []
    assert [i.session_id for i in a.calls()] == ["new", "live"]
    assert len(a.load("new")) == 2 and len(a.load("live")) == 2
    assert b.expire(500.0, now=2000.0) == 0
    # An expired call is gone for good: a new log under its id starts again at 1, and its old
    # dedupe keys are forgotten.
    assert a.append("old", "callback", {}, key="k1") == 1
    assert a.expire(0.0, now=10_000.0) == 1


# -- store-wide ------------------------------------------------------------------------------

def test_setdefault_meta_keeps_the_first_value(backend: Backend) -> None:
    """The first value stored under a key stays, whichever store object asks later."""
    a, b = backend.make(), backend.make()
    assert a.setdefault_meta("script", "flow.py:main sha=1") == "flow.py:main sha=1"
    assert b.setdefault_meta("script", "other.py:main sha=2") == "flow.py:main sha=1"
    assert b.setdefault_meta("other", "x") == "x"


def test_subscribers_hear_of_appends_from_another_store_object(backend: Backend) -> None:
    """A subscriber is called with the session id soon after any store object on the same
    backend appends to that call; after unsubscribing, no more."""
    listener, writer = backend.make(), backend.make()
    heard: list[str] = []
    lock = threading.Lock()

    def hear(session_id: str) -> None:
        with lock:
            heard.append(session_id)

    unsubscribe = listener.subscribe(hear)
    try:
        writer.append("c1", "callback", {})
        wait_for(lambda: "c1" in heard, "the subscriber to hear of c1")
        writer.append("c2", "callback", {})
        listener.append("c3", "callback", {})
        wait_for(lambda: {"c2", "c3"} <= set(heard), "the subscriber to hear of c2 and c3")
    finally:
        unsubscribe()
    with lock:
        heard.clear()
    writer.append("c4", "callback", {})
    listener.append("c5", "callback", {})
    # The other direction is proved above; give a stray notification time to arrive.
    time.sleep(0.3)
    assert heard == []


def test_own_appends_notify_at_once_in_the_appending_thread(backend: Backend) -> None:
    """An append through the subscribed store object calls the subscriber before append
    returns, in the appending thread, and only once."""
    store = backend.make()
    heard: list[tuple[str, threading.Thread]] = []
    store.subscribe(lambda sid: heard.append((sid, threading.current_thread())))
    store.append("c1", "callback", {})
    assert heard == [("c1", threading.current_thread())]
    store.append("c1", "callback", {}, key="k")
    assert store.append("c1", "callback", {}, key="k") is None  # a deduped append: no news
    time.sleep(0.3)  # a second notification from the store's thread would arrive by now
    assert [sid for sid, _ in heard] == ["c1", "c1"]


def test_ping_and_close(backend: Backend) -> None:
    """ping() is True on a reachable store; close() can be called twice."""
    store = backend.make()
    assert store.ping() is True
    store.append("c1", "enter", {})
    store.close()
    store.close()
    if backend.shared:
        other = backend.make()
        assert [e.kind for e in other.load("c1")] == ["enter"]


# -- calls nobody holds, and several writes at once ------------------------------------------

def test_orphans_are_unfinished_unheld_calls_past_the_grace(backend: Backend) -> None:
    """orphans(): calls with no lease or a lapsed one, begun before the grace, oldest first;
    never a held, finished or too young call."""
    a, b = backend.make(), backend.make()
    now = time.time()
    a.append("old-free", "enter", {}, at=now - 60)
    a.append("old-held", "enter", {}, at=now - 50)
    a.append("old-done", "enter", {}, at=now - 40)
    a.append("old-released", "enter", {}, at=now - 30)
    a.append("young", "enter", {}, at=now)
    assert a.acquire("old-held", "proc-a", 30)
    assert a.acquire("old-released", "proc-a", 30)
    a.release("old-released", "proc-a")
    a.finish("old-done", "hangup")
    assert b.orphans(grace=10) == ["old-free", "old-released"]
    assert b.orphans(grace=10, limit=1) in (["old-free"], ["old-released"])
    assert b.orphans(grace=0, now=now + 1) == ["old-free", "old-released", "young"]
    assert b.acquire("old-free", "proc-b", 0.3)  # a lease that lapses: an orphan again
    assert b.orphans(grace=10) == ["old-released"]
    wait_for(lambda: a.orphans(grace=10) == ["old-free", "old-released"],
             "the lapsed lease's call to be an orphan again")
    b.finish("old-free", "hangup")
    assert a.orphans(grace=10) == ["old-released"]


def test_write_appends_under_the_lease_and_fences_other_owners(backend: Backend) -> None:
    """write(): entries (deduped), timers and finish for one call; with owner, the lease is
    taken or renewed first, and another owner's lease means nothing is written."""
    from ivrscript.stores.base import write

    a, b = backend.make(), backend.make()
    assert write(a, "c1", [("enter", {"n": 1}, "enter", 100.0), ("request", {"n": 2}, None, None)],
                 owner="proc-a", ttl=30) == [1, 2]
    assert b.holder("c1") == "proc-a"
    assert write(b, "c1", [("callback", {"n": 3}, None, None)], owner="proc-b", ttl=30) is None
    assert [e.seq for e in a.load("c1")] == [1, 2]  # the fenced write wrote nothing
    assert write(b, "c1", [("outcome", {"n": 3}, "o:2", None), ("x", {}, "enter", None)],
                 schedule=[("t1", 1000.0, {"k": 1}), ("t2", 1000.0, {})]) == [3, None]
    assert write(a, "c1", cancel=["t2"], owner="proc-a", ttl=30) == []
    assert [(t.key, t.data) for t in a.claim_due("p", now=2000.0)] == [("t1", {"k": 1})]
    log = b.load("c1")
    assert [(e.kind, e.data) for e in log] == [("enter", {"n": 1}), ("request", {"n": 2}),
                                                ("outcome", {"n": 3})]
    assert log[0].at == 100.0
    assert write(a, "c1", [("end", {}, "end", None)], owner="proc-a", ttl=30,
                 finish="hangup") == [4]
    assert b.holder("c1") is None and b.claim_due("p", now=9000.0) == []
    assert [(c.session_id, c.end_reason) for c in b.calls(active=False)] == [("c1", "hangup")]


def test_a_write_notifies_subscribers_like_an_append(backend: Backend) -> None:
    """Subscribers hear of a write's entries as of an append's (other store objects too)."""
    from ivrscript.stores.base import write

    a, b = backend.make(), backend.make()
    heard_a: list[str] = []
    heard_b: list[str] = []
    a.subscribe(heard_a.append)
    b.subscribe(heard_b.append)
    write(a, "c9", [("enter", {}, None, None), ("callback", {}, None, None)])
    assert "c9" in heard_a
    wait_for(lambda: "c9" in heard_b, "the other store object to hear of the write")


def test_a_finished_call_cannot_be_leased(backend: Backend) -> None:
    """Once finished, a call's lease is refused to everyone (a holder that was away and
    renews after another process finished the call does not take it back)."""
    from ivrscript.stores.base import write

    a, b = backend.make(), backend.make()
    a.append("c1", "enter", {})
    assert a.acquire("c1", "proc-a", 30)
    b.finish("c1", "hangup")
    assert not a.acquire("c1", "proc-a", 30)
    assert not b.acquire("c1", "proc-b", 30)
    assert write(a, "c1", [("request", {}, None, None)], owner="proc-a", ttl=30) is None
    assert a.holder("c1") is None and [e.kind for e in a.load("c1")] == ["enter"]
