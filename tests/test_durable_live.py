"""Durable calls across a real crash: ``python -m ivrscript SCRIPT --live --store sqlite:///...``
in a subprocess against the standalone simulator process, killed with SIGKILL mid-call and
started again. The simulator's output (one line per command it accepted) is the platform's
request log: it proves what was sent, and that nothing was sent twice."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .test_cli import ROOT, Proc, clean_env, kill_all
from .test_live import free_port, start_simulator

SECRET = "durable-live-secret-0123456789abcdef"
WAIT = 30.0

FLOW = '''
import os
import time

import ivrscript as ivr

HERE = os.path.dirname(os.path.abspath(__file__))


def bump(name):
    path = os.path.join(HERE, name)
    n = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as handle:
        handle.write(str(n))
    return n


def slow_once():
    n = bump("slow.count")
    while n == 1:  # the first run waits (for the kill); a run after a restart returns
        time.sleep(0.05)
    return n


def main(call):
    yield ivr.play("https://example.com/welcome.wav")
    first = yield ivr.effect(bump, "once.count")
    if EFFECT_SLOW:
        yield ivr.effect(slow_once)
    pin = yield ivr.collect("PATTERN", timeout=60)
    yield ivr.play("https://example.com/ok-%s-%s.wav" % (pin, first))
'''


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    kill_all(started)


def write_flow(tmp_path: Any, *, pattern: str = "xxxx", slow: bool = False) -> str:
    path = tmp_path / "flow.py"
    path.write_text(FLOW.replace("PATTERN", pattern).replace("EFFECT_SLOW", str(slow)))
    return str(path)


def start_app(tmp_path: Any, procs: list[Proc], script: str, sim_url: str, token: str,
              port: int) -> Proc:
    env = clean_env(tmp_path, RINGCENTRAL_SERVER_URL=sim_url, RINGCENTRAL_TOKEN=token,
                    RINGCENTRAL_EXTENSION_NUMBER="201", IVRSCRIPT_SECRET=SECRET)
    app = Proc(["-m", "ivrscript", script, "--live", "--port", str(port), "--public-url",
                f"http://127.0.0.1:{port}", "--store", f"sqlite:///{tmp_path}/calls.db", "-v"],
               env)
    procs.append(app)
    app.expect(r"Waiting for calls")
    return app


def wait_until_logged(tmp_path: Any, op: str) -> None:
    """Until the call's log has the outcome of its last ``op`` request (the app is parked)."""
    from ivrscript.stores import SQLiteStore

    store = SQLiteStore.from_url(f"sqlite:///{tmp_path}/calls.db")
    try:
        def parked() -> bool:
            for info in store.calls(active=True):
                log = store.load(info.session_id)
                requests = [e for e in log if e.kind == "request" and e.data["op"] == op]
                if requests and any(e.kind == "outcome" and e.data["req"] == requests[-1].seq
                                    for e in log):
                    return True
            return False

        deadline_wait(parked, f"the outcome of the {op} in the log")
    finally:
        store.close()


def kill9(app: Proc) -> None:
    app.popen.kill()  # SIGKILL: no finally, no lease released, nothing flushed
    assert app.wait() == -9


def platform_lines(sim: Proc) -> list[str]:
    """What the platform accepted from the app on call 1, in order."""
    keep = ("play", "listen", "hangup", "forward")
    out = []
    for line in sim.out:
        match = re.match(r"^\[1\] (\S+)\s+(.*)$", line)
        if match and match.group(1) in keep:
            out.append(f"{match.group(1)} {match.group(2)}")
    return out


def test_kill_9_mid_collect_then_restart_completes_the_call(tmp_path: Any, procs: list[Proc]
                                                            ) -> None:
    """SIGKILL while the call waits for keys; a new process on the same SQLite file takes the
    call up once the dead one's lease lapses; the keys complete it; every command reached the
    platform once, and the effect ran once."""
    sim, sim_url, token = start_simulator(tmp_path, procs)
    script = write_flow(tmp_path)
    port = free_port()
    app = start_app(tmp_path, procs, script, sim_url, token, port)
    sim.send(f"call http://127.0.0.1:{port}/{SECRET}/on-call-enter")
    sim.expect(r"^\[1\] listen\s+xxxx$")
    wait_until_logged(tmp_path, "collect")
    kill9(app)
    app2 = start_app(tmp_path, procs, script, sim_url, token, port)
    app2.expect(r"^\[1\] collect xxxx$", timeout=WAIT)  # the call, rebuilt by replay
    sim.send("1234")
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")
    assert platform_lines(sim) == [
        "play https://example.com/welcome.wav", "listen xxxx",
        "play https://example.com/ok-1234-1.wav", "hangup the app dropped the call"]
    assert (tmp_path / "once.count").read_text() == "1"
    assert "Traceback" not in app2.output()


def test_kill_9_during_an_effect_runs_it_again_and_nothing_else(tmp_path: Any,
                                                                procs: list[Proc]) -> None:
    """SIGKILL while an effect runs: after the restart that effect (in flight, the
    at-least-once window) runs again, the one before it does not, no command is re-sent."""
    sim, sim_url, token = start_simulator(tmp_path, procs)
    script = write_flow(tmp_path, slow=True)
    port = free_port()
    app = start_app(tmp_path, procs, script, sim_url, token, port)
    sim.send(f"call http://127.0.0.1:{port}/{SECRET}/on-call-enter")
    sim.expect(r"^\[1\] play\s+https://example.com/welcome.wav$")
    deadline_wait(lambda: (tmp_path / "slow.count").exists(), "the slow effect to start")
    kill9(app)
    start_app(tmp_path, procs, script, sim_url, token, port)
    sim.expect(r"^\[1\] listen\s+xxxx$")
    sim.send("4321")
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")
    assert platform_lines(sim) == [
        "play https://example.com/welcome.wav", "listen xxxx",
        "play https://example.com/ok-4321-1.wav", "hangup the app dropped the call"]
    assert (tmp_path / "once.count").read_text() == "1"
    assert (tmp_path / "slow.count").read_text() == "2"


def test_script_changed_between_kill_and_restart(tmp_path: Any, procs: list[Proc]) -> None:
    """The script is edited while the process is dead: the replay finds the collect changed,
    ScriptChanged names the step, and on_error ends the call (the platform sees the hang-up,
    not silence)."""
    sim, sim_url, token = start_simulator(tmp_path, procs)
    script = write_flow(tmp_path)
    port = free_port()
    app = start_app(tmp_path, procs, script, sim_url, token, port)
    sim.send(f"call http://127.0.0.1:{port}/{SECRET}/on-call-enter")
    sim.expect(r"^\[1\] listen\s+xxxx$")
    wait_until_logged(tmp_path, "collect")
    kill9(app)
    write_flow(tmp_path, pattern="xxxxxx")
    app2 = start_app(tmp_path, procs, script, sim_url, token, port)
    app2.expect(r"ScriptChanged: step 3: the call's log has collect xxxx", timeout=WAIT)
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")
    assert platform_lines(sim) == [
        "play https://example.com/welcome.wav", "listen xxxx",
        "hangup the app dropped the call"]


def test_keys_pressed_during_the_outage_are_not_lost(tmp_path: Any, procs: list[Proc]) -> None:
    """The caller presses keys while no process listens: the simulator retries the update
    (``--callback-retry``), the restarted app logs it and completes the call."""
    sim, sim_url, token = start_simulator(tmp_path, procs, "--callback-retry", "20")
    script = write_flow(tmp_path)
    port = free_port()
    app = start_app(tmp_path, procs, script, sim_url, token, port)
    sim.send(f"call http://127.0.0.1:{port}/{SECRET}/on-call-enter")
    sim.expect(r"^\[1\] listen\s+xxxx$")
    wait_until_logged(tmp_path, "collect")
    kill9(app)
    sim.send("2468")  # nobody listens: the update is retried
    sim.expect(r"^\[1\] collected\s+'2468' Completed$")
    start_app(tmp_path, procs, script, sim_url, token, port)
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")
    assert platform_lines(sim) == [
        "play https://example.com/welcome.wav", "listen xxxx",
        "play https://example.com/ok-2468-1.wav", "hangup the app dropped the call"]


def deadline_wait(condition: Any, what: str, timeout: float = WAIT) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_cli(tmp_path: Any, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivrscript", *args], cwd=ROOT,
                          env=clean_env(tmp_path), input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_a_store_in_an_unwritable_place_is_one_sentence(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = run_cli(tmp_path, "examples/pin.py", "--store", f"sqlite:///{blocker}/calls.db")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("ivrscript: cannot use ") and "as the call store" in \
        done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_second_script_on_one_store_file_is_refused(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path}/calls.db"
    first = run_cli(tmp_path, "examples/pin.py", "--speed", "20", "--store", store,
                    stdin="1234\n")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_cli(tmp_path, "examples/support_menu.py", "--store", store, stdin="1\n")
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert "belongs to main in " in second.stderr and "pin.py" in second.stderr
    assert "give this script its own store" in second.stderr
