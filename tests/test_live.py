"""Live mode end to end, without an account: the standalone simulator process
(``python -m ivrscript.simulator``) plays RingCentral, and ``python -m ivrscript --live`` runs
the app against it with ``--public-url`` on loopback instead of a tunnel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ivrscript.simserver import callback_urls

from .test_cli import ROOT, WAIT, Proc, clean_env, kill_all

SECRET = "live-test-secret-0123456789abcdef"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Subprocesses started by the test, all killed at its end."""
    started: list[Proc] = []
    yield started
    kill_all(started)


def free_port() -> int:
    """A port free right now (bound to port 0, then released) for the app's listener."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_simulator(tmp_path: Any, procs: list[Proc], *extra: str) -> tuple[Proc, str, str]:
    """The standalone simulator; returns it, its URL and its token (parsed from its output)."""
    sim = Proc(["-m", "ivrscript.simulator", "--port", "0", *extra], clean_env(tmp_path))
    procs.append(sim)
    url = sim.expect(r"^RINGCENTRAL_SERVER_URL=(\S+)$").group(1)
    token = sim.expect(r"^RINGCENTRAL_TOKEN=(\S+)$").group(1)
    sim.expect(r"^commands:")
    return sim, url, token


def start_app(tmp_path: Any, procs: list[Proc], sim_url: str, token: str, port: int,
              *extra: str, secret: str | None = SECRET) -> Proc:
    env = clean_env(tmp_path, RINGCENTRAL_SERVER_URL=sim_url, RINGCENTRAL_TOKEN=token,
                    RINGCENTRAL_EXTENSION_NUMBER="201")
    if secret is not None:
        env["IVRSCRIPT_SECRET"] = secret
    app = Proc(["-m", "ivrscript", "examples/pin.py", "--live", "--port", str(port),
                "--public-url", f"http://127.0.0.1:{port}", *extra], env)
    procs.append(app)
    return app


def stop_app(app: Proc) -> str:
    """Ctrl-C the app; it exits 130 after its summary. Returns its stdout."""
    app.popen.send_signal(signal.SIGINT)
    assert app.wait() == 130, app.output()
    assert "Traceback" not in app.output()
    return "\n".join(app.out)


def test_inbound_call_from_the_standalone_simulator(tmp_path: Any, procs: list[Proc]) -> None:
    """A call placed from the simulator's terminal reaches the live-mode app at the callback
    URL it printed; the keys typed there are collected; the app prints the transcript live."""
    sim, sim_url, token = start_simulator(tmp_path, procs)
    port = free_port()
    app = start_app(tmp_path, procs, sim_url, token, port)
    enter = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
    assert enter == f"http://127.0.0.1:{port}/{SECRET}/on-call-enter"
    for kind in ("on-command-update", "on-call-exit", "on-command-error"):
        app.expect(rf"^  {kind}\s+http://127\.0\.0\.1:{port}/{SECRET}/{kind}$")
    app.expect(r"Waiting for calls")
    sim.send(f"call {enter} +15550177")
    sim.send("1234")  # pressed when the app next listens
    app.expect(r"^\[1\] call s-\w+ from \+15550177$")
    app.expect(r"^\[1\] collect xxxx")
    app.expect(r"^\[1\]   -> '1234' Completed$")
    app.expect(r"^\[1\] play    prompts/pin-accepted\.wav$")
    app.expect(r"^\[1\] exit    hangup$")
    sim.expect(r"^\[1\] exit\s+hangup$")
    out = stop_app(app)
    assert "Stopped: 1 call: 1 hangup." in out


def test_outbound_call_with_call_flag(tmp_path: Any, procs: list[Proc]) -> None:
    """--call NUMBER dials out by RingOut: the simulator (told the app's URLs with --connect)
    rings its phone, connects it to the app, and the keys typed there are collected."""
    port = free_port()
    sim, sim_url, token = start_simulator(tmp_path, procs, "--connect",
                                          f"http://127.0.0.1:{port}/{SECRET}")
    app = start_app(tmp_path, procs, sim_url, token, port, "--call", "+15550188")
    sim.expect(r"^\[1\] ring\s+\+15550188 -> 201$")
    sim.send("1234")  # to the call just rung, when the app next listens
    app.expect(r"^\[1\] call s-\w+ from \+15550188$")
    app.expect(r"^\[1\]   -> '1234' Completed$")
    app.expect(r"^\[1\] exit    hangup$")
    out = stop_app(app)
    assert "Stopped: 1 call: 1 hangup." in out


def test_ctrl_c_ends_live_calls_through_on_error(tmp_path: Any, procs: list[Proc]) -> None:
    """Ctrl-C while a live call waits for keys: the app hangs the call up (on_error), the
    platform sees the app drop it, and the summary counts it."""
    sim, sim_url, token = start_simulator(tmp_path, procs)
    port = free_port()
    app = start_app(tmp_path, procs, sim_url, token, port)
    enter = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
    sim.send(f"call {enter}")
    sim.expect(r"^\[1\] listen\s+xxxx$")
    out = stop_app(app)
    assert "[1] error   ivrscript.errors.IvrError: interrupted from the terminal (Ctrl-C)" in out
    assert "[1] hangup  (on_error)" in out
    assert "Stopped: 1 call: 1 hangup." in out
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")


def test_secret_is_kept_across_restarts(tmp_path: Any, procs: list[Proc]) -> None:
    """Without IVRSCRIPT_SECRET, two runs print the same callback URLs (the secret is kept
    in the config folder), so URLs configured once keep working."""
    _sim, sim_url, token = start_simulator(tmp_path, procs)  # live mode checks the token
    urls = []
    for _ in range(2):
        port = free_port()
        app = start_app(tmp_path, procs, sim_url, token, port, secret=None)
        url = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
        urls.append(url.split(f":{port}/", 1)[1])
        stop_app(app)
    assert urls[0] == urls[1]
    secret = urls[0].split("/")[0]
    kept = tmp_path / "config" / "ivrscript" / "secret"
    assert kept.read_text().strip() == secret and len(secret) >= 22
    assert os.stat(kept).st_mode & 0o077 == 0


def test_callback_urls_from_any_of_them() -> None:
    """The simulator's `call`/`connect` take the on-call-enter URL or the base URL."""
    base = "http://127.0.0.1:8080/s3cret"
    assert callback_urls(base + "/on-call-enter") == callback_urls(base + "/")
    assert callback_urls(base)["on-call-exit"] == base + "/on-call-exit"


def test_standalone_simulator_port_in_use(tmp_path: Any) -> None:
    """The standalone simulator on a taken port: one sentence, exit status 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "ivrscript.simulator", "--port", str(port)],
                              cwd=ROOT, env=clean_env(tmp_path), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=WAIT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (f"simulator: port {port} on 127.0.0.1 is already in use: "
                                   "stop the program using it, or choose another --port (0 "
                                   "picks a free one)")
