"""The command line: the terminal phone on the simulator, bad input, Ctrl-C, the kept secret."""

from __future__ import annotations

import importlib.util
import io
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ivrscript import cli
from ivrscript.config import ENV_SECRET, load_secret, secret_path
from ivrscript.errors import ConfigError

from .conftest import EXAMPLES, ROOT

PIN = os.path.join(EXAMPLES, "pin.py")
WAIT = 60.0  # bound on any wait for a subprocess (generous: 2 slow cores)
_SCRUBBED = ("RINGCENTRAL_", "NGROK_", "IVRSCRIPT_")


def clean_env(tmp_path: Any, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no credentials, config under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # live mode's default call store
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Proc:
    """A subprocess whose stdout and stderr lines are read by threads, with bounded waits."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._read, args=(stream, store, tag),
                                          daemon=True)
                         for stream, store, tag in ((self.popen.stdout, self.out, True),
                                                    (self.popen.stderr, self.err, False))]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, store: list[str], to_queue: bool) -> None:
        for line in stream:
            store.append(line.rstrip("\n"))
            if to_queue:
                self._lines.put(line.rstrip("\n"))
        if to_queue:
            self._lines.put(None)

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """Wait for a stdout line matching ``pattern`` (a regex); fail with the output."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s "
                                     f"from {self.args}:\n{self.output()}") from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(f"{self.args} closed stdout before a line matching "
                                     f"{pattern!r}:\n{self.output()}")
            match = regex.search(line)
            if match:
                return match

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} did not exit within {timeout} s:\n"
                                 f"{self.output()}") from None
        for thread in self._threads:
            thread.join(timeout)
        return code

    def output(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class PtyProc(Proc):
    """A subprocess whose stdin is a terminal (a pty), as when a person types at it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.args = args
        self.popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdin=slave,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      bufsize=1)
        os.close(slave)
        self.out, self.err = [], []
        self._lines = queue.Queue()
        self._threads = [threading.Thread(target=self._read, args=(stream, store, tag),
                                          daemon=True)
                         for stream, store, tag in ((self.popen.stdout, self.out, True),
                                                    (self.popen.stderr, self.err, False))]
        for thread in self._threads:
            thread.start()

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close_stdin(self) -> None:
        os.write(self.master, b"\x04")  # Ctrl-D: end of input on a terminal

    def kill(self) -> None:
        super().kill()
        try:
            os.close(self.master)
        except OSError:
            pass


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Subprocesses started by the test, all killed at its end."""
    started: list[Proc] = []
    yield started
    kill_all(started)


def kill_all(started: list[Proc]) -> None:
    for proc in started:
        proc.kill()


def run_cli(tmp_path: Any, *args: str, stdin: str = "", **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivrscript", *args], cwd=ROOT, input=stdin,
                          env=clean_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=WAIT)


def in_process(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    """Run cli.main in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Any, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in list(os.environ):
        if key.startswith(_SCRUBBED):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# -- the terminal phone ----------------------------------------------------------------------


def test_readme_first_command_pipes_a_pin(tmp_path: Any) -> None:
    """`echo 1234 | python -m ivrscript examples/pin.py` (the README's first command, at the
    default real-time speed) shows what the caller hears and when the app listens, then the
    transcript with the digits, and exits 0."""
    done = run_cli(tmp_path, "examples/pin.py", stdin="1234\n")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "hears    welcome.wav" in out
    assert "app listens for xxxx (8 s after the prompt)" in out
    assert "presses  1234" in out
    transcript = out.split("Transcript:", 1)[1]
    assert "collect xxxx" in transcript and "-> '1234' Completed" in transcript
    assert "play    prompts/pin-accepted.wav" in transcript
    assert transcript.strip().endswith("exit    hangup")
    assert "Traceback" not in done.stderr


def test_the_terminal_phone_shows_spoken_prompts_by_their_words(tmp_path: Any) -> None:
    """A spoken prompt (`ivr.say` / `ivr.speech`, played or as a collect's prompt) is shown
    on the terminal with its words, as transcripts show it, not by the file it is served as;
    a local prompt whose name is quoted in its URL is shown by its real name."""
    import shutil

    shutil.copy(os.path.join(EXAMPLES, "prompts", "welcome.wav"), tmp_path / "menu#2 100%.wav")
    script = write(tmp_path, "spoken.py", (
        "import ivrscript as ivr\n\n"
        "def main(call):\n"
        "    yield ivr.say('Welcome to Acme.')\n"
        "    yield ivr.play('menu#2 100%.wav', ivr.speech('1234', as_='digits'))\n"
        "    yield ivr.collect('x', timeout=2, prompt=ivr.speech('Press 1.', voice='en-gb'))\n"))
    done = run_cli(tmp_path, script, "--speed", "10", stdin="1\n")
    assert done.returncode == 0, done.stdout + done.stderr
    heard = [line.strip() for line in done.stdout.split("Transcript:")[0].splitlines()
             if line.strip().startswith("hears")]
    assert heard == ['hears    say "Welcome to Acme."', "hears    menu#2 100%.wav",
                     'hears    say "1 2 3 4"', 'hears    say "Press 1." (voice en-gb)'], \
        done.stdout
    assert "say-" not in done.stdout, done.stdout


def test_pin_typed_one_key_per_line_goes_to_the_waiting_collect(tmp_path: Any,
                                                                procs: list[Proc]) -> None:
    """Keys typed one per line while the collect still waits for digits all go to that collect
    (a person typing a PIN on a real terminal, through a pty): the PIN is accepted."""
    proc = PtyProc(["-m", "ivrscript", "examples/pin.py", "--speed", "2"], clean_env(tmp_path))
    procs.append(proc)
    proc.expect(r"app listens for xxxx \(8 s after the prompt; 4 s at speed 2\)")
    for key in "1234":
        proc.send(key)
        proc.expect(rf"presses  {key}$")
    proc.expect(r"app got  '1234' Completed")
    proc.expect(r"hears    pin-accepted.wav")
    proc.expect(r"Call ended: hangup")
    assert proc.wait() == 0, proc.output()
    assert "Timeout" not in proc.output()


def test_keys_typed_during_a_play_that_does_not_listen_are_discarded_by_reset_input(
        tmp_path: Any, procs: list[Proc]) -> None:
    """On a terminal, keys typed while a prompt plays and nothing listens go to the platform's
    input buffer, as on a real phone; a collect that resets input discards them and says so,
    and the next keys count."""
    path = write(tmp_path, "late.py", "import ivrscript as ivr\n\ndef main(call):\n"
                 "    yield ivr.play('https://example.invalid/long.wav', repeat=4)\n"
                 "    choice = yield ivr.collect('x', timeout=20)\n"
                 "    call.data['choice'] = str(choice)\n")
    proc = PtyProc(["-m", "ivrscript", path, "--speed", "2"], clean_env(tmp_path))
    procs.append(proc)
    proc.expect(r"hears    long.wav")
    proc.send("5")
    proc.expect(r"presses  5$")
    proc.expect(r"app listens for x \(20 s; 10 s at speed 2\)")
    proc.expect(r"\(keys 5 discarded: the collect resets input\)")
    proc.send("7")
    proc.expect(r"app got  '7' Completed")
    assert proc.wait() == 0, proc.output()


def test_lines_are_handled_in_order_and_unused_ones_are_named(no_credentials: None) -> None:
    """'h' after queued keys hangs up after those keys were used; lines left when the call
    ends are named."""
    code, out, err = in_process(PIN, "--speed", "20", stdin="1234\nh\n")
    assert code == 0, out + err
    transcript = out.split("Transcript:", 1)[1]
    assert "-> '1234' Completed" in transcript and "exit    caller-hangup" in transcript
    code, out, err = in_process(PIN, "--speed", "20", stdin="9999\n1234\n5555\nh\n")
    assert code == 0, out + err
    assert "  (not used: 5555, h)" in out
    transcript = out.split("Transcript:", 1)[1]
    assert transcript.index("'9999' Completed") < transcript.index("'1234' Completed")
    assert transcript.strip().endswith("exit    hangup")


def test_an_early_hang_up_is_not_a_warning(tmp_path: Any) -> None:
    """Hanging up before the app's first play arrives makes the platform answer that play
    404; that race is the caller leaving, not a warning on stderr."""
    done = run_cli(tmp_path, "examples/pin.py", "--speed", "20", stdin="h\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "you hung up" in done.stdout
    assert done.stderr == "", done.stderr


def test_keys_wait_for_the_next_collect(no_credentials: None) -> None:
    """Each line is pressed when the app next listens: a wrong PIN, then the right one."""
    code, out, err = in_process(PIN, "--speed", "20", stdin="9999\n1234\n")
    assert code == 0, out + err
    transcript = out.split("Transcript:", 1)[1]
    assert transcript.index("'9999' Completed") < transcript.index("'1234' Completed")
    assert "prompts/wrong-pin.wav" in transcript and "prompts/pin-accepted.wav" in transcript


def test_h_hangs_up(no_credentials: None) -> None:
    """A line 'h' is the caller hanging up; the transcript shows it and the exit is 0."""
    code, out, err = in_process(PIN, "--speed", "20", stdin="h\n")
    assert code == 0, out + err
    assert "you hung up" in out
    assert out.strip().endswith("exit    caller-hangup")


def test_end_of_input_hangs_up_when_the_app_listens(no_credentials: None) -> None:
    """With no keys at all, the end of input hangs up as soon as the app waits for keys."""
    code, out, err = in_process(PIN, "--speed", "20", stdin="")
    assert code == 0, out + err
    assert "(end of input: hanging up)" in out
    transcript = out.split("Transcript:", 1)[1]
    assert "collect xxxx" in transcript and "exit    caller-hangup" in transcript
    assert "wrong-pin" not in transcript


def test_a_line_that_is_not_keys_is_refused_and_the_call_goes_on(no_credentials: None) -> None:
    """A line of other characters gets a sentence on stderr; the next line still counts."""
    code, out, err = in_process(PIN, "--speed", "20", stdin="12ab\n1234\n")
    assert code == 0, out + err
    assert "'12ab' ignored: keys are 0-9, * and #" in err
    assert "-> '1234' Completed" in out


def test_call_dials_out_on_the_simulator(no_credentials: None) -> None:
    """--call NUMBER in simulator mode places the call by RingOut to that number."""
    code, out, err = in_process(PIN, "--speed", "20", "--call", "+15550123", stdin="1234\n")
    assert code == 0, out + err
    assert "enter   from +15550123" in out
    assert "-> '1234' Completed" in out


def test_help_reads_well(tmp_path: Any) -> None:
    """--help names the modes, the flags and the exit statuses."""
    done = run_cli(tmp_path, "--help")
    assert done.returncode == 0
    for text in ("SCRIPT.py[:function]", "--live", "--sim", "--public-url", "--call",
                 "--domain", "--record", "--replay", "--speed", "--port", "--host", "modes:",
                 "130 interrupted"):
        assert text in done.stdout, text


# -- bad input: one sentence, exit status 2 --------------------------------------------------


def assert_one_sentence(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ivrscript: "), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_file(tmp_path: Any) -> None:
    """A script file that does not exist: one sentence naming it."""
    assert_one_sentence(run_cli(tmp_path, "nope/missing.py"),
                        "no such script file: nope/missing.py")


def test_syntax_error_names_file_and_line(tmp_path: Any) -> None:
    """A syntax error: the file and the line."""
    path = write(tmp_path, "broken.py", "import ivrscript as ivr\n\ndef main(call):\n"
                                        "    yield ivr.play('x.wav'\n")
    assert_one_sentence(run_cli(tmp_path, path), "syntax error in", "broken.py", "line 4")


def test_no_such_function(tmp_path: Any) -> None:
    """SCRIPT.py:function that the file does not define."""
    assert_one_sentence(run_cli(tmp_path, "examples/pin.py:nope"), "has no function 'nope'")


def test_not_a_generator_function(tmp_path: Any) -> None:
    """A function without yield is refused before any call."""
    path = write(tmp_path, "plain.py", "def main(call):\n    return 1\n")
    assert_one_sentence(run_cli(tmp_path, path), "is not a generator function")


def test_live_without_credentials_names_the_variables(tmp_path: Any) -> None:
    """--live with no credentials names every variable to set."""
    assert_one_sentence(run_cli(tmp_path, "examples/pin.py", "--live"), "RINGCENTRAL_TOKEN",
                        "RINGCENTRAL_CLIENT_ID", "RINGCENTRAL_CLIENT_SECRET", "RINGCENTRAL_JWT")


def test_live_tunnel_without_ngrok_token(tmp_path: Any) -> None:
    """Live mode without --public-url needs NGROK_AUTHTOKEN, said at once."""
    assert_one_sentence(run_cli(tmp_path, "examples/pin.py", "--live",
                                RINGCENTRAL_TOKEN="t" * 30), "NGROK_AUTHTOKEN", "--public-url")


def test_live_mode_refuses_a_bad_token_before_printing_callback_urls(
        tmp_path: Any, procs: list[Proc]) -> None:
    """Live mode checks the credentials with one authenticated request before it serves: the
    standalone simulator refusing the token is one sentence, exit 2, and no callback URL was
    printed; the right token gets to the callback URLs."""
    from .test_live import free_port, start_simulator

    _sim, url, token = start_simulator(tmp_path, procs)
    port = free_port()
    done = run_cli(tmp_path, "examples/pin.py", "--live", "--port", str(port), "--public-url",
                   f"http://127.0.0.1:{port}", RINGCENTRAL_SERVER_URL=url,
                   RINGCENTRAL_TOKEN="not-the-token-" + "x" * 20)
    assert_one_sentence(done, f"the platform at {url} refused the credentials", "401",
                        "RINGCENTRAL_TOKEN")
    assert "on-call-enter" not in done.stdout, done.stdout
    proc = Proc(["-m", "ivrscript", "examples/pin.py", "--live", "--port", str(port),
                 "--public-url", f"http://127.0.0.1:{port}"],
                clean_env(tmp_path, RINGCENTRAL_SERVER_URL=url, RINGCENTRAL_TOKEN=token))
    procs.append(proc)
    proc.expect(r"^  on-call-enter\s+http://127\.0\.0\.1")
    proc.expect(r"Waiting for calls")


def test_live_mode_names_each_recorded_cassette(tmp_path: Any, procs: list[Proc]) -> None:
    """--record in live mode: once a call has ended, where its cassette was written."""
    from .test_live import free_port, start_app, start_simulator, stop_app

    if importlib.util.find_spec("ivrscript.recorder") is None:
        pytest.skip("no recorder in this install")
    sim, url, token = start_simulator(tmp_path, procs)
    port = free_port()
    recordings = tmp_path / "recordings"
    app = start_app(tmp_path, procs, url, token, port, "--record", str(recordings))
    enter = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
    app.expect(r"Waiting for calls")
    sim.send(f"call {enter}")
    sim.send("1234")
    app.expect(r"^\[1\] exit    hangup$")
    path = app.expect(r"^\[1\] recorded: (\S+\.yaml)$").group(1)
    assert os.path.isfile(path) and path.startswith(str(recordings))
    stop_app(app)


class MergedProc(Proc):
    """A subprocess whose stderr lines are read with its stdout (one stream to expect on)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.out, self.err = [], []
        self._lines = queue.Queue()
        self._threads = [threading.Thread(target=self._read,
                                          args=(self.popen.stdout, self.out, True), daemon=True)]
        self._threads[0].start()


def test_reload_swaps_the_script_for_new_calls_and_keeps_it_on_a_syntax_error(
        tmp_path: Any, procs: list[Proc]) -> None:
    """--reload in live mode: editing the script file makes the next call run the new version
    (one line says so); a version with a syntax error is refused with the reason and calls keep
    the running one; a changed prompt file is named."""
    from .test_live import free_port, start_simulator

    sim, url, token = start_simulator(tmp_path, procs)
    script = tmp_path / "ivr" / "flow.py"
    (script.parent / "prompts").mkdir(parents=True)
    prompt = script.parent / "prompts" / "hello.wav"
    prompt.write_bytes(b"RIFF")
    version = ("import ivrscript as ivr\n\ndef main(call):\n"
               "    yield ivr.play('https://example.invalid/{}.wav')\n")
    script.write_text(version.format("first"))
    port = free_port()
    app = MergedProc(["-m", "ivrscript", str(script), "--live", "--reload", "--port", str(port),
                      "--public-url", f"http://127.0.0.1:{port}"],
                     clean_env(tmp_path, RINGCENTRAL_SERVER_URL=url, RINGCENTRAL_TOKEN=token))
    procs.append(app)
    enter = app.expect(r"^  on-call-enter\s+(\S+)$").group(1)
    app.expect(r"^Watching .*flow\.py and its prompt files")
    sim.send(f"call {enter}")
    app.expect(r"^\[1\] play    https://example\.invalid/first\.wav$")
    app.expect(r"^\[1\] exit    hangup$")

    script.write_text(version.format("second-version"))
    app.expect(r"^Reloaded .*flow\.py: new calls run the new version\.$")
    sim.send(f"call {enter}")
    app.expect(r"^\[2\] play    https://example\.invalid/second-version\.wav$")
    app.expect(r"^\[2\] exit    hangup$")

    script.write_text(version.format("third") + "    yield ivr.play(\n")
    app.expect(r"^ivrscript: .*flow\.py changed but was not loaded \(syntax error in .*flow\.py,"
               r" line \d+: .*\); new calls keep the previous version$")
    sim.send(f"call {enter}")
    app.expect(r"^\[3\] play    https://example\.invalid/second-version\.wav$")

    prompt.write_bytes(b"RIFF-changed")
    app.expect(r"^Prompts changed: prompts/hello\.wav \(new plays use them\)\.$")
    app.popen.send_signal(signal.SIGINT)
    assert app.wait() == 130, app.output()
    assert "Traceback" not in app.output()


def test_live_mode_says_when_the_platform_cannot_be_reached(tmp_path: Any) -> None:
    """No server at RINGCENTRAL_SERVER_URL: "could not reach the platform at URL", not
    "platform answered 0"."""
    from .test_live import free_port

    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli(tmp_path, "examples/pin.py", "--live", "--public-url", "http://127.0.0.1:9",
                   RINGCENTRAL_SERVER_URL=url, RINGCENTRAL_TOKEN="t" * 30)
    assert_one_sentence(done, f"could not reach the platform at {url}: could not connect")
    assert "answered 0" not in done.stderr and "on-call-enter" not in done.stdout


def test_live_call_without_the_extension_number_is_refused_at_start(tmp_path: Any) -> None:
    """--call in live mode needs RINGCENTRAL_EXTENSION_NUMBER (RingOut connects the call to
    it): refused before anything is served."""
    done = run_cli(tmp_path, "examples/pin.py", "--live", "--public-url", "http://127.0.0.1:9",
                   "--call", "+15550123", RINGCENTRAL_SERVER_URL="http://127.0.0.1:9",
                   RINGCENTRAL_TOKEN="t" * 30)
    assert_one_sentence(done, "--call needs RINGCENTRAL_EXTENSION_NUMBER")
    assert done.stdout == ""


def test_port_in_use(tmp_path: Any) -> None:
    """A taken --port is one sentence, not werkzeug's lines and an exit."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_sentence(run_cli(tmp_path, "examples/pin.py", "--port", str(port)),
                            f"port {port} on 127.0.0.1 is already in use")


def test_live_only_flags_need_live_mode(tmp_path: Any) -> None:
    """--public-url in simulator mode says to add --live."""
    assert_one_sentence(run_cli(tmp_path, "examples/pin.py", "--public-url", "http://x.test"),
                        "--public-url is for live mode")
    assert_one_sentence(run_cli(tmp_path, "examples/pin.py", "--reload"),
                        "--reload is for live mode")


def test_unyielded_command_is_a_readable_warning(tmp_path: Any) -> None:
    """A command built but not yielded is one 'warning: file:line: ...' line, and the call
    still runs."""
    path = write(tmp_path, "slip.py", "import ivrscript as ivr\n\ndef main(call):\n"
                                      "    ivr.play('https://media.example/x.wav')\n"
                                      "    yield ivr.hangup()\n")
    done = run_cli(tmp_path, path, "--speed", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == (f"warning: {path}:4: play(...) is built but not yielded, so "
                                   "it never runs: write 'yield ivr.play(...)'")
    assert "hangup" in done.stdout


def test_record_and_replay_flags(tmp_path: Any, no_credentials: None) -> None:
    """--record writes a cassette and --replay re-runs it (or, in an install without the
    recorder, each flag says that recording is not available, exit 2)."""
    recordings = tmp_path / "recordings"
    if importlib.util.find_spec("ivrscript.recorder") is None:
        code, _, err = in_process(PIN, "--record", str(recordings))
        assert code == 2 and "recording is not available" in err
        return
    code, out, err = in_process(PIN, "--speed", "20", "--record", str(recordings),
                                stdin="1234\n")
    assert code == 0, out + err
    cassettes = sorted(recordings.rglob("*.y*ml"))
    assert cassettes, f"no cassette in {recordings}"
    assert f"Recorded: {cassettes[0]}" in out
    code, out, err = in_process(PIN, "--replay", str(cassettes[0]))
    assert code == 0, out + err
    assert "'1234' Completed" in out
    other = write(tmp_path, "other.py", "import ivrscript as ivr\n\ndef main(call):\n"
                                        "    yield ivr.forward(extension='9')\n")
    code, out, err = in_process(other, "--replay", str(cassettes[0]))
    assert code == 1 and str(cassettes[0]) in err and "recorded" in err, err


# -- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_ends_the_call_through_on_error(tmp_path: Any, procs: list[Proc]) -> None:
    """Ctrl-C while the app listens: the call is ended by on_error (the app hangs up), its
    transcript and a summary are printed, exit status 130."""
    proc = Proc(["-m", "ivrscript", "examples/pin.py", "--speed", "2"], clean_env(tmp_path))
    procs.append(proc)
    proc.expect(r"app listens for xxxx")
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait() == 130, proc.output()
    out = "\n".join(proc.out)
    assert "error   ivrscript.errors.IvrError: interrupted from the terminal (Ctrl-C)" in out
    assert "hangup  (on_error)" in out
    assert "Interrupted: 1 call: 1 hangup." in out
    assert "Traceback" not in proc.output()


# -- the kept secret -------------------------------------------------------------------------


def test_secret_from_the_environment() -> None:
    """IVRSCRIPT_SECRET wins; a short one is refused with what to do."""
    secret = "A" * 22
    assert load_secret({ENV_SECRET: secret}) == secret
    with pytest.raises(ConfigError, match="22 or more URL-safe characters"):
        load_secret({ENV_SECRET: "short"})


def test_secret_is_created_once_and_kept_private(tmp_path: Any) -> None:
    """Without IVRSCRIPT_SECRET the secret is made once under XDG_CONFIG_HOME, mode 0600,
    and the same one comes back next time."""
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    first = load_secret(env)
    path = secret_path(env)
    assert path == str(tmp_path / "ivrscript" / "secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) >= 22 and load_secret(env) == first


def test_end_calls_runs_finally_and_on_error(sim: Any, make_app: Any) -> None:
    """App.end_calls (what Ctrl-C uses) closes each script (its finally runs), records the
    reason as the script's error and ends the call with on_error: here a forward."""
    import ivrscript as ivr

    def main(call: Any) -> Any:
        try:
            yield ivr.collect("x", timeout=30)
        finally:
            call.data["cleaned up"] = True

    app = make_app(main, on_error=ivr.forward(extension="0"))
    phone = sim.call(app)
    phone.wait_until_listening(10)
    [call] = app.end_calls("stopping for the test")
    assert call.data["cleaned up"] is True
    assert call.end_reason == "forwarded" and phone.wait_until_ended(10) == "forwarded"
    assert phone.forwarded_to == "0"
    assert "IvrError: stopping for the test" in str(call.transcript)
    assert app.end_calls() == []  # nothing left in progress


# -- output piped to a program that stops reading (`| head -1`) -----------------------------


def read_one_line_and_close(args: list[str], tmp_path: Any, stdin: str = "") -> tuple[str, int,
                                                                                     str]:
    """What `python -m ivrscript ARGS | head -1` does to the CLI: read its first line, close
    the pipe; (that line, exit status, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "ivrscript", *args], cwd=ROOT,
                            env=clean_env(tmp_path), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        first = proc.stdout.readline()
        proc.stdout.close()
        err_text = proc.stderr.read()  # to its end: the process has exited
        return first, proc.wait(WAIT), err_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_prompts_check_piped_to_head_exits_quietly(tmp_path: Any) -> None:
    """`prompts check DIR | head -1` on more output than a pipe holds: no BrokenPipeError
    traceback, exit status 141 (as a program killed by SIGPIPE)."""
    import wave

    folder = tmp_path / "prompts"
    folder.mkdir()
    for n in range(2500):  # ~80 bytes of output each: well over a 64 KiB pipe
        with wave.open(str(folder / f"prompt-{n:04d}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\x00\x00" * 80)
    first, code, err = read_one_line_and_close(["prompts", "check", str(folder)], tmp_path)
    assert first.startswith(str(folder)), first
    assert code == 141, (code, err)
    assert err == "", err


def test_a_call_piped_to_head_exits_quietly(tmp_path: Any) -> None:
    """The terminal phone piped to `head -1`: the call is ended (no warnings about a platform
    that went away under it), no traceback, exit status 141."""
    first, code, err = read_one_line_and_close(
        ["examples/say_hello.py", "--speed", "10"], tmp_path, stdin="1\n")
    assert first.startswith("Simulator: calling main()"), first
    assert code == 141, (code, err)
    assert err == "", err
