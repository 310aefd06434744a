"""A recorded call that crossed a restart: ``python -m ivrscript SCRIPT --live --store
sqlite:///... --record DIR`` against the standalone simulator, killed with SIGKILL mid-collect
and started again; the restarted process ends the call and writes its one cassette, from the
call's log, with the whole call in it; ``ivrscript.testing.replay`` of it passes (and does not
run the effects again)."""

from __future__ import annotations

import glob
import os
from typing import Any

from ivrscript.loader import load_script_file
from ivrscript.recorder import load_recording
from ivrscript.testing import replay

from .test_cli import Proc, clean_env
from .test_durable_live import (
    SECRET,
    WAIT,
    deadline_wait,
    kill9,
    platform_lines,
    procs,  # noqa: F401 - the fixture
    wait_until_logged,
    write_flow,
)
from .test_live import free_port, start_simulator


def start_recording_app(tmp_path: Any, procs: list[Proc], script: str, sim_url: str,  # noqa: F811 - the fixture, passed on
                        token: str, port: int, folder: str) -> Proc:
    env = clean_env(tmp_path, RINGCENTRAL_SERVER_URL=sim_url, RINGCENTRAL_TOKEN=token,
                    RINGCENTRAL_EXTENSION_NUMBER="201", IVRSCRIPT_SECRET=SECRET)
    app = Proc(["-m", "ivrscript", script, "--live", "--port", str(port), "--public-url",
                f"http://127.0.0.1:{port}", "--store", f"sqlite:///{tmp_path}/calls.db",
                "--record", folder, "-v"], env)
    procs.append(app)
    app.expect(r"Waiting for calls")
    return app


def test_a_call_killed_mid_collect_gets_one_whole_cassette_that_replays(
        tmp_path: Any, procs: list[Proc]) -> None:  # noqa: F811
    sim, sim_url, token = start_simulator(tmp_path, procs)
    script = write_flow(tmp_path)
    folder = str(tmp_path / "cassettes")
    port = free_port()
    app = start_recording_app(tmp_path, procs, script, sim_url, token, port, folder)
    sim.send(f"call http://127.0.0.1:{port}/{SECRET}/on-call-enter")
    sim.expect(r"^\[1\] listen\s+xxxx$")
    wait_until_logged(tmp_path, "collect")
    kill9(app)
    assert glob.glob(os.path.join(folder, "*.yaml")) == [], "the killed process wrote none"
    start_recording_app(tmp_path, procs, script, sim_url, token, port, folder)
    sim.send("1234")
    sim.expect(r"^\[1\] hangup\s+the app dropped the call$")
    assert platform_lines(sim) == [
        "play https://example.com/welcome.wav", "listen xxxx",
        "play https://example.com/ok-1234-1.wav", "hangup the app dropped the call"]

    deadline_wait(lambda: glob.glob(os.path.join(folder, "*.yaml")), "the cassette")
    cassettes = glob.glob(os.path.join(folder, "*.yaml"))
    assert len(cassettes) == 1, cassettes
    recording = load_recording(cassettes[0])
    # The whole call: the enter and the commands from before the kill, the keys after it.
    assert [cb["kind"] for cb in recording.callbacks][0] == "on-call-enter"
    paths = [(r.method, r.path.rsplit("/", 1)[-1]) for r in recording.requests]
    assert paths[0] == ("POST", "play") and ("POST", "collect") in paths
    assert paths[-2:] == [("POST", "play"), ("DELETE", recording.requests[-1].path
                                              .rsplit("/", 1)[-1])]
    assert len(paths) == 4, paths  # play, collect, play, drop: each once
    assert any(cb["body"].get("parameters", {}).get("digits") == "1234"
               for cb in recording.callbacks)
    assert [e["value"] for e in recording.meta["effects"]] == [1]
    assert recording.meta["transcript"][0].startswith("enter")
    assert recording.meta["transcript"][-1].startswith("exit")

    main, _ = load_script_file(script)
    lines = replay(cassettes[0], main).lines()
    assert lines == recording.transcript
    assert "play    https://example.com/ok-1234-1.wav" in lines
    assert (tmp_path / "once.count").read_text() == "1", "replay ran no effect"
    deadline_wait(lambda: any("recorded:" in line for line in procs[-1].out),
                  "the restarted app to say where the cassette is", WAIT)
