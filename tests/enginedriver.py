"""A hand-cranked platform for engine tests: no sockets, no threads, no clock."""

from __future__ import annotations

import collections
from typing import Any

from ivrscript.call import Call
from ivrscript.engine import (
    CallEngine,
    Exited,
    Finished,
    Request,
    SendFailed,
    Sent,
    Update,
    Wait,
)


class Driver:
    """Runs one CallEngine; every request is accepted unless a failure is queued for its op."""

    def __init__(self, script: Any, **kwargs: Any) -> None:
        self.now = 0.0
        self.call = Call("s-1", party_id="p-app", caller_party_id="p-caller",
                         caller="+15550100", called="+15550199")
        kwargs.setdefault("clock", lambda: self.now)
        self.engine = CallEngine(script, self.call, **kwargs)
        self.requests: list[Request] = []
        self.waits: list[Wait] = []
        self.finished: str | None = None
        self.failures: dict[str, collections.deque[SendFailed | Any]] = \
            collections.defaultdict(collections.deque)
        self._ids = 100

    # -- driving -----------------------------------------------------------------------------

    def start(self) -> Driver:
        self.feed(self.engine.start())
        return self

    def feed(self, actions: list[Any]) -> None:
        queue = collections.deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Request):
                self.requests.append(action)
                if action.op == "cancel":
                    continue
                queue.extend(self.engine.handle(self._outcome(action)))
            elif isinstance(action, Wait):
                self.waits.append(action)
            elif isinstance(action, Finished):
                assert self.finished is None, "Finished twice"
                self.finished = action.reason

    def _outcome(self, request: Request) -> Any:
        pending = self.failures[request.op]
        if pending:
            make = pending.popleft()
            return make(request.token)
        if request.op == "play":
            self._ids += 1
            return Sent(request.token, str(self._ids))
        return Sent(request.token, None)

    def fail_next(self, op: str, error: BaseException, retry_after: float | None = None) -> None:
        self.failures[op].append(lambda token: SendFailed(token, error, retry_after))

    def fire_wait(self) -> None:
        wait = self.waits.pop(0)
        self.feed(self.engine.handle(wait.event))

    # -- the platform's callbacks ------------------------------------------------------------

    def last(self, op: str | None = None) -> Request:
        reqs = [r for r in self.requests if op is None or r.op == op]
        assert reqs, f"no {op} request yet: {self.ops()}"
        return reqs[-1]

    def play_id(self) -> str:
        return str(self._ids)

    def play_done(self, status: str = "Completed", command_id: str | None = None) -> None:
        self.feed(self.engine.handle(Update("Play", status, command_id or self.play_id(),
                                            received_at=self.now)))

    def collect_done(self, digits: str = "", status: str = "Completed",
                     command_id: str | None = None, after: float = 0.0) -> None:
        self.now += after
        self.feed(self.engine.handle(Update("Collect", status, command_id, digits,
                                            received_at=self.now)))

    def exit(self) -> None:
        self.feed(self.engine.handle(Exited(self.now)))

    def ops(self) -> list[str]:
        return [r.op for r in self.requests]
