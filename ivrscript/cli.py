"""``python -m ivrscript SCRIPT.py[:function]``: run a call script from the terminal.

Simulator mode (the default without RingCentral credentials, or ``--sim``): the built-in
simulator plays the platform and the terminal is the phone. Live mode (``--live``, or
credentials in the environment): the listener behind an ngrok tunnel (or ``--public-url``),
printing the callback URLs to configure and each call's transcript as it happens.

Every user mistake is one sentence on stderr and exit status 2; Ctrl-C ends the calls in
progress through ``on_error`` (the app hangs up), closes the tunnel, prints a summary and exits
with status 130.
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TextIO

from .call import Call, TranscriptEvent, sensitive_collect
from .errors import ConfigError, IvrError, PlatformError, ReplayMismatch
from .loader import ScriptWarning, load_script_file
from .netutil import check_port_free
from .text import clean, terminal
from .tts import heard

__all__ = ["main", "build_parser", "check_port_free"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s yes
OUTPUT_CLOSED = "the terminal's output was closed (piped to a program that stopped reading)"
KEYS = frozenset("0123456789*#")
HANG_UP = "h"  # a typed line that hangs up (in the queue of typed lines)
HANG_UP_WORDS = ("h", "hangup", "hang up")
INTERRUPTED = "interrupted from the terminal (Ctrl-C)"

_EPILOG = """\
modes:
  simulator  the default when no RingCentral credentials are set (or --sim): the terminal is
             the phone. Type keys and Enter: lines are used in order, a line goes to the
             collect still waiting for digits (one key per line works), else to the next one;
             'h' hangs up after the lines before it. Piped input works: at its end the call
             is hung up the next time the app listens, and the transcript is printed.
  live       --live, or RINGCENTRAL_TOKEN (or RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET
             and RINGCENTRAL_JWT) set: serves the callbacks behind an ngrok tunnel
             (NGROK_AUTHTOKEN) or --public-url, prints the four callback URLs to configure and
             each call's transcript. The secret in those URLs is kept across restarts
             (IVRSCRIPT_SECRET, else ~/.config/ivrscript/secret). The credentials are checked
             with one request first; --reload swaps in an edited script for new calls.

examples:
  echo 1234 | python -m ivrscript examples/pin.py
  python -m ivrscript examples/support_menu.py --speed 5
  python -m ivrscript examples/pin.py --live --domain my-app.ngrok.app
  python -m ivrscript examples/pin.py --live --call +15550123
  python -m ivrscript examples/pin.py --replay recordings/call.yaml
  python -m ivrscript.simulator     # a fake RingCentral to point live mode at (see README)

exit status: 0 done, 1 the script raised (or a prompt was missing) on the simulator, a
replay mismatch or a failed --call, 2 bad input or set-up (with --strict also a warning
about the script), 130 interrupted (Ctrl-C or SIGTERM), 141 the output was closed (piped to a
program that stopped reading, such as head: the calls are ended, quietly).
"""


class _Usage(Exception):
    """A user mistake found by the CLI itself: one sentence, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ivrscript",
        description="Run a call script: on the built-in simulator with the terminal as the "
                    "phone, or live on RingCentral behind a tunnel.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", metavar="SCRIPT.py[:function]",
                        help="the file and the generator function to run (default: main)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sim", action="store_true",
                      help="run on the built-in simulator even if credentials are set")
    mode.add_argument("--live", action="store_true",
                      help="run on RingCentral (credentials from RINGCENTRAL_* variables)")
    parser.add_argument("--speed", type=_positive_float, default=1.0, metavar="S",
                        help="simulator speed factor: 10 plays and times out 10 times faster "
                             "(default 1, real time)")
    parser.add_argument("--call", metavar="NUMBER",
                        help="place an outbound call to NUMBER by RingOut (live mode needs "
                             "RINGCENTRAL_EXTENSION_NUMBER, the app's extension)")
    parser.add_argument("--public-url", metavar="URL",
                        help="live mode: the public base URL that reaches --host/--port; no "
                             "tunnel is opened")
    parser.add_argument("--domain", metavar="DOMAIN",
                        help="live mode: a fixed ngrok domain (so callback URLs stay the same)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the listener's address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0,
                        help="the listener's port (default 0: any free port)")
    parser.add_argument("--store", metavar="URL",
                        help="where calls' logs live, so calls survive a restart: "
                             "sqlite:///path/calls.db, redis://host:6379/0 or memory: (default: "
                             "live mode $XDG_STATE_HOME/ivrscript/calls.db, else memory:)")
    parser.add_argument("--record", metavar="DIR",
                        help="write a cassette per finished call into DIR")
    parser.add_argument("--replay", metavar="CASSETTE",
                        help="re-run the script against a recorded call and print its "
                             "transcript, or the mismatch (exit 1)")
    parser.add_argument("--strict", action="store_true",
                        help="a warning about the script (a sub-flow or command not yielded, "
                             "a missing prompt, ...) is an error: exit 2 before any call")
    parser.add_argument("--reload", action="store_true",
                        help="live mode: watch the script file and its prompt files; new calls "
                             "run the new version (a version that does not load is refused, "
                             "and the one running is kept)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what the app does (INFO) on stderr")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        return _main(argv, stdin, out, err)
    except BrokenPipeError:
        # Output piped to a program that stopped reading (`... | head -1`): stop quietly, as a
        # program killed by SIGPIPE does (exit 141), with no traceback. Python's docs: point
        # stdout at devnull, so the flush at exit does not fail again.
        _discard(out)
        return EXIT_BROKEN_PIPE


def _discard(stream: TextIO) -> None:
    """Send what is still to be written to ``stream`` (a closed pipe) nowhere."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a StringIO in a test)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None, stdin: TextIO | None, out: TextIO,
          err: TextIO) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prompts"]:  # prompt audio tools: ivrscript.prompts
        from . import prompts

        return prompts.main(argv[1:], out=out, err=err)
    if argv[:1] == ["serve"]:  # production serving under gunicorn: its own module and options
        from .serve import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    unlog = _configure_logging(args.verbose, err)
    restore = _sigterm_as_interrupt()
    try:
        return _run(args, stdin or sys.stdin, out, err)
    except (ConfigError, _Usage) as error:
        print(f"ivrscript: {error}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before any call: nothing to end
        print("ivrscript: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    finally:
        restore()
        unlog()


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    script = _load(args.script, err, strict=args.strict)
    if args.replay:
        return _replay(args.replay, script, out, err)
    from .ringcentral import RingCentral

    live = args.live or (not args.sim and RingCentral.credentials_in_env())
    if not live:
        for flag, value in (("--public-url", args.public_url), ("--domain", args.domain),
                            ("--reload", args.reload)):
            if value:
                raise _Usage(f"{flag} is for live mode: add --live (and RingCentral "
                             "credentials)")
    if args.domain and args.public_url:
        raise _Usage("--domain names the ngrok tunnel's domain, and --public-url opens no "
                     "tunnel: give one of them")
    if args.record:
        _check_recording()
    check_port_free(args.host, args.port)
    if live:
        return _LiveMode(args, script, out, err).run()
    return _SimulatorMode(args, script, stdin, out, err).run()


def _configure_logging(verbose: bool, err: TextIO) -> Callable[[], None]:
    """Log ivrscript's warnings (INFO with -v) as one line each on ``err``; returns the undo
    (main() may run inside another program, a test for one)."""
    import logging

    logger = logging.getLogger("ivrscript")
    engine = logging.getLogger("ivrscript.engine")
    saved = (logger.level, logger.propagate, engine.level)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("ivrscript: %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    # A script's traceback is in the transcript the terminal prints; no second copy.
    engine.setLevel(logging.INFO if verbose else logging.CRITICAL)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        engine.setLevel(saved[2])

    return undo


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C (calls end through on_error); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _load(spec: str, err: TextIO, strict: bool = False) -> Any:
    """Load and check the script; print warnings (unyielded commands) as readable lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        script, _module = load_script_file(spec)
    for warning in caught:
        if issubclass(warning.category, ScriptWarning):
            print(f"warning: {warning.message}", file=err, flush=True)
        else:
            print(f"warning: {warning.filename}:{warning.lineno}: {warning.message}", file=err,
                  flush=True)
    if strict and any(issubclass(w.category, ScriptWarning) for w in caught):
        raise _Usage("--strict: the warnings above about the script are errors")
    return script


def _make_app(script: Any, **kwargs: Any) -> Any:
    from .app import App

    with warnings.catch_warnings():  # already reported by _load
        warnings.simplefilter("ignore", ScriptWarning)
        return App(script, **kwargs)


def _start(app: Any) -> None:
    try:
        app.start()
    except ImportError as error:  # --record without vcrpy, say
        app.stop()
        raise ConfigError(f"recording needs an optional package ({error.name or error}): "
                          "pip install 'ivrscript[record]'") from None


def _check_recording() -> None:
    import importlib.util

    if importlib.util.find_spec("ivrscript.recorder") is None:
        raise ConfigError("recording is not available in this install (no "
                          "ivrscript.recorder): --record cannot be used")


def _replay(path: str, script: Any, out: TextIO, err: TextIO) -> int:
    try:
        from . import testing
    except ImportError:  # pytest is not installed
        testing = None  # type: ignore[assignment]
    replay = getattr(testing, "replay", None)
    if replay is None:
        raise ConfigError("recording is not available in this install "
                          "(no ivrscript.testing.replay): --replay cannot be used")
    if not os.path.isfile(path):
        raise ConfigError(f"no such cassette: {path}")
    try:
        transcript = replay(path, script)
    except ReplayMismatch as error:
        # it names the cassette, the step and the diff
        print(terminal(str(error)), file=err, flush=True)
        return EXIT_FAILED
    except IvrError as error:
        raise ConfigError(f"cannot replay {path}: {error}") from None
    print(terminal(str(transcript)), file=out, flush=True)
    return EXIT_OK


# -- reading stdin ---------------------------------------------------------------------------


def _read_lines(stdin: TextIO, inbox: queue.Queue[tuple[Any, ...]]) -> threading.Thread:
    """Feed stdin's lines into ``inbox`` as ("line", text), then ("eof",), from a daemon
    thread (a blocked read must never keep the process alive)."""

    def run() -> None:
        try:
            for line in stdin:
                inbox.put(("line", line.strip()))
        except (OSError, ValueError):  # stdin closed under us
            pass
        inbox.put(("eof",))

    thread = threading.Thread(target=run, name="ivrscript-stdin", daemon=True)
    thread.start()
    return thread


def _summary(calls: Sequence[Call]) -> str:
    if not calls:
        return "no calls"
    reasons = collections.Counter(call.end_reason or "in progress" for call in calls)
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    return f"{len(calls)} call{'s' if len(calls) != 1 else ''}: {parts}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _say_recorded(app: Any, call: Call, say: Callable[[str], None], prefix: str = "",
                  timeout: float = 10.0) -> bool:
    """With --record, say where the call's cassette was written (once it is); True if said."""
    recorder = getattr(app, "_recorder", None)
    if recorder is None:
        return False
    try:
        path = recorder.wait_for(call.session_id, timeout)
    except TimeoutError:
        say(f"{prefix}(not recorded: no cassette for call {call.session_id})")
        return False
    say(f"{prefix}Recorded: {path}")
    return True


# -- --reload --------------------------------------------------------------------------------

_PROMPT_SUFFIXES = (".wav", ".mp3")
_SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "recordings"}


class _Reloader:
    """--reload: polls the script file and the prompt files beside it (every ``interval``
    seconds, on one thread); a changed script is loaded and becomes the script of new calls
    (calls in progress keep theirs), one that does not load is refused with the reason."""

    def __init__(self, spec: str, app: Any, say: Callable[[str], None], err: TextIO, *,
                 interval: float = 0.5, max_files: int = 2000) -> None:
        self.spec = spec
        self.app = app
        self.say = say
        self.err = err
        self.interval = interval
        self.max_files = max_files
        code = getattr(app.script, "__code__", None)
        self.path = os.path.abspath(code.co_filename) if code else spec.partition(":")[0]
        self.folder = os.path.dirname(self.path)
        self.stamps = self._scan()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivrscript-reload", daemon=True)

    def start(self) -> _Reloader:
        self.say(f"Watching {os.path.relpath(self.path)} and its prompt files: new calls run "
                 "the latest version.")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _stamp(self, path: str) -> tuple[int, int] | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _scan(self) -> dict[str, tuple[int, int] | None]:
        stamps = {self.path: self._stamp(self.path)}
        for folder, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith(".")]
            for name in files:
                if name.lower().endswith(_PROMPT_SUFFIXES) and len(stamps) < self.max_files:
                    path = os.path.join(folder, name)
                    stamps[path] = self._stamp(path)
        return stamps

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # the watcher must never take the app down
                print(f"ivrscript: --reload: {error}", file=self.err, flush=True)

    def check(self) -> None:
        """Compare with the last scan; reload the script or name the changed prompts."""
        stamps = self._scan()
        changed = sorted(p for p in set(stamps) | set(self.stamps)
                         if stamps.get(p) != self.stamps.get(p))
        self.stamps = stamps
        if not changed:
            return
        if self.path in changed:
            self._reload()
        prompts = [os.path.relpath(p, self.folder) for p in changed if p != self.path]
        if prompts:
            self.say(f"Prompts changed: {', '.join(prompts)} (new plays use them).")

    def _reload(self) -> None:
        name = os.path.relpath(self.path)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                script, _module = load_script_file(self.spec)
        except ConfigError as error:
            print(f"ivrscript: {name} changed but was not loaded ({error}); new calls keep "
                  "the previous version", file=self.err, flush=True)
            return
        for warning in caught:
            if issubclass(warning.category, ScriptWarning):
                print(f"warning: {warning.message}", file=self.err, flush=True)
        with warnings.catch_warnings():  # reported above
            warnings.simplefilter("ignore", ScriptWarning)
            self.app.script = script
        self.say(f"Reloaded {name}: new calls run the new version.")


# -- simulator mode --------------------------------------------------------------------------


class _SimulatorMode:
    """The built-in simulator with the terminal as the phone of one call.

    Typed lines are handled in order. A line of keys goes to the collect that is waiting for
    keys, the one listening now if it still waits for more (a PIN typed one key per line), else
    the next one; ``h`` hangs up once the lines before it are used. On a terminal, keys typed
    while a prompt plays and nothing listens go to the platform's input buffer as on a real
    phone (a collect that resets input discards them, and says so).
    """

    def __init__(self, args: argparse.Namespace, script: Any, stdin: TextIO, out: TextIO,
                 err: TextIO) -> None:
        self.args = args
        self.script = script
        self.stdin = stdin
        self.out = out
        self.err = err
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.pending: collections.deque[str] = collections.deque()
        self.eof = False
        self.phone: Any = None
        self.app: Any = None
        self.live_typing = _isatty(stdin)
        self.listens = 0  # "listen" events seen: which collect is the current one
        self.fed = -1  # the collect (by that count) the last typed keys went to
        self.buffered = ""  # keys pressed while nothing listened (the platform's buffer)

    def say(self, text: str) -> None:
        print(terminal(text), file=self.out, flush=True)

    def run(self) -> int:
        from .simulator import Simulator

        sim = Simulator(speed=self.args.speed)
        sim.add_listener(lambda phone, event: self.inbox.put(("event", phone, event)))
        try:
            sim.start()
        except IvrError as error:
            raise ConfigError(str(error)) from None
        app = None
        try:
            app = _make_app(self.script, platform=sim, store=self.args.store,
                            host=self.args.host, port=self.args.port,
                            record=self.args.record)
            _start(app)
            self.app = app
            return self._call(sim, app)
        except KeyboardInterrupt:
            return self._interrupted(app)
        except BrokenPipeError:  # nobody reads what the caller hears: end the call quietly
            self._output_closed(app)
            raise
        finally:
            sim.stop()  # first: a callback still on its way reaches a running app
            if app is not None:
                app.stop()

    def _call(self, sim: Any, app: Any) -> int:
        name = getattr(self.script, "__name__", "main")
        hint = "" if self.live_typing else " (keys from stdin)"
        self.say(f"Simulator: calling {name}() at speed {self.args.speed:g}{hint}. "
                 "Type keys and Enter when the app listens; h hangs up.")
        if self.args.call:
            try:
                call = app.dial(self.args.call, timeout=30.0)
            except IvrError as error:
                print(f"ivrscript: the outbound call failed: {error}", file=self.err, flush=True)
                return EXIT_FAILED
            self.phone = sim.phone(call.session_id)
        else:
            self.phone = sim.call(app)
        _read_lines(self.stdin, self.inbox)
        self._loop()
        call = self._app_call()
        if call is None:  # the app never took the call
            self.say(f"The app did not answer: {self.phone.error or self.phone.end_reason}")
            return EXIT_FAILED
        try:
            call.wait_until_ended(10.0)
        except IvrError as error:
            print(f"ivrscript: {error}", file=self.err, flush=True)
        self._print_transcript(call)
        _say_recorded(app, call, self.say)
        return EXIT_FAILED if call.failed else EXIT_OK

    def _app_call(self) -> Call | None:
        session_id = self.phone.session_id
        return next((c for c in list(self.app.calls) if c.session_id == session_id), None)

    def _loop(self) -> None:
        phone = self.phone
        if phone.ended:  # on-call-enter failed: nothing to press
            return
        while True:
            item = self.inbox.get()
            kind = item[0]
            if kind == "event":
                if item[1] is not phone:
                    continue
                event = item[2]
                if event.kind == "listen":
                    self.listens += 1
                self._show(event)
                if event.kind == "exit":
                    self._say_unused()
                    return
            elif kind == "line":
                self._line(item[1])
            elif kind == "eof":
                self.eof = True
            self._advance()
            self._hang_up_after_input()

    def _line(self, text: str) -> None:
        if not text:
            return
        if text.lower() in HANG_UP_WORDS:
            self.pending.append(HANG_UP)
            return
        keys = text.replace(" ", "")
        bad = sorted(set(keys) - KEYS)
        if bad:
            print(f"ivrscript: {text!r} ignored: keys are 0-9, * and #; h hangs up",
                  file=self.err, flush=True)
            return
        self.pending.append(keys)

    def _advance(self) -> None:
        """Use the typed lines in order, as far as the call lets them go now."""
        phone = self.phone
        while self.pending and not phone.ended:
            head = self.pending[0]
            if head == HANG_UP:
                self.pending.popleft()
                phone.hang_up()
                return
            if not phone.listening:
                if not (self.live_typing and phone.playing):
                    return  # nothing listens: the line waits for the next collect
                self.buffered += head  # a real phone would send it now, into the buffer
            else:
                self.fed = self.listens
            try:
                phone.press(head, wait=False)
            except IvrError:  # the call ended under us
                return
            self.pending.popleft()
            if not phone.listening:
                return  # the keys ended that collect: the next line is for the next one

    def _hang_up_after_input(self) -> None:
        """At the end of input, hang up once the app listens for keys that will not come
        (a collect that already had typed keys may still time out or complete)."""
        phone = self.phone
        if (self.eof and not self.pending and phone.listening and not phone.ended
                and self.fed != self.listens):
            self.say("  (end of input: hanging up)")
            phone.hang_up()

    def _listening(self, patterns: str) -> str:
        """What the app listens for: the patterns and for how long (from the app's side)."""
        call = self._app_call()
        collect = None
        if call is not None:
            for event in reversed(list(call.transcript)):
                if event.kind == "collect":
                    collect = event.data.get("command")
                    break
        text = f"  app listens for {patterns}"
        timeout = getattr(collect, "timeout", None)
        if isinstance(timeout, float | int):
            when = " after the prompt" if getattr(collect, "prompt", ()) else ""
            speed = self.args.speed
            real = f"; {timeout / speed:.3g} s at speed {speed:g}" if speed != 1 else ""
            text += f" ({timeout:g} s{when}{real})"
        if self.buffered:
            if getattr(collect, "reset_input", True):
                text += f"\n  (keys {self.buffered} discarded: the collect resets input)"
            else:
                text += f"\n  (keys {self.buffered} typed before go to this collect)"
            self.buffered = ""
        elif not self.eof and not self.pending:
            text += ": type keys and Enter"
        return text

    def _say_unused(self) -> None:
        unused = [("h" if line == HANG_UP else line) for line in self.pending]
        if self.buffered:
            unused.insert(0, self.buffered)
        if unused:
            self.say(f"  (not used: {', '.join(unused)})")

    def _show(self, event: Any) -> None:
        kind, details = event.kind, event.details
        # (self.listens was counted by _loop: the collects the phone has heard; keys before
        # the first collect: masked if any collect is sensitive)
        index = self.listens - 1 if self.listens else None
        if kind in ("keys", "collected") and sensitive_collect(self._app_call(), index):
            details = "'****' " + details.rsplit(" ", 1)[-1] if kind == "collected" else "****"
        if kind == "ring":
            self.say(f"Ringing the app: {details}")
        elif kind == "play":
            self.say(f"  hears    {self._heard(details)}")
        elif kind == "played" and details != "Completed":
            self.say(f"           ({details.lower()})")
        elif kind == "listen":
            self.say(self._listening(details))
        elif kind == "keys":
            self.say(f"  presses  {details}")
        elif kind == "collected":
            self.say(f"  app got  {details}")
        elif kind == "forward":
            self.say(f"  forwarded to {details}")
        elif kind == "hangup":
            self.say("  the app hung up")
        elif kind == "caller-hangup":
            self.say("  you hung up")
        elif kind in ("error", "rejected"):
            self.say(f"  {kind}: {details}")
        elif kind == "exit":
            self.say(f"Call ended: {details}.")

    def _heard(self, uri: str) -> str:
        """A spoken prompt by its words, a file by its unquoted name (tts.heard)."""
        return heard(uri, self._app_call())

    def _print_transcript(self, call: Call) -> None:
        self.say("\nTranscript:")
        self.say(str(call.transcript))

    def _output_closed(self, app: Any) -> None:
        _discard(self.out)
        if app is not None and app.running:
            app.end_calls(OUTPUT_CLOSED)

    def _interrupted(self, app: Any) -> int:
        if app is not None and app.running:
            ended = app.end_calls(INTERRUPTED)
            for call in ended:
                self._print_transcript(call)
            self.say(f"\nInterrupted: {_summary(app.calls)}.")
        else:
            self.say("\nInterrupted.")
        return EXIT_INTERRUPTED


# -- live mode -------------------------------------------------------------------------------

# A cheap authenticated GET the real platform serves to any extension's token: the app's own
# extension. (The simulator checks the token before it looks the path up, so there a 404 after
# the check still means the token was accepted.)
CHECK_PATH = "/restapi/v1.0/account/~/extension/~"


def check_credentials(client: Any) -> None:
    """One authenticated request before serving: refused credentials or an unreachable
    platform are one sentence (ConfigError); any other answer means the token was accepted
    (a 403 only says this token may not read its extension, a 404 that the path is unknown)."""
    server = client.server_url
    try:
        client.request("GET", CHECK_PATH)
    except PlatformError as error:
        if error.status == 0:
            raise ConfigError(platform_problem(error, server)) from None
        if error.status in (400, 401):  # a refused token, or a refused JWT grant
            code = f" {error.error_code}" if error.error_code else ""
            raise ConfigError(f"the platform at {server} refused the credentials "
                              f"({error.status}{code}: {error.message}): check "
                              "RINGCENTRAL_TOKEN (or RINGCENTRAL_CLIENT_ID, "
                              "RINGCENTRAL_CLIENT_SECRET and RINGCENTRAL_JWT) and "
                              "RINGCENTRAL_SERVER_URL") from None


def platform_problem(error: BaseException, server: str) -> str:
    """A platform error as a sentence: no answer at all reads "could not reach ...", not
    "platform answered 0"."""
    status = getattr(error, "status", None)
    if status == 0:
        return f"could not reach the platform at {server}: {getattr(error, 'message', error)}"
    return str(error)



class _LiveMode:
    """The listener on RingCentral (or anything that plays it), behind a tunnel."""

    def __init__(self, args: argparse.Namespace, script: Any, out: TextIO,
                 err: TextIO) -> None:
        self.args = args
        self.script = script
        self.out = out
        self.err = err
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.watched: dict[str, int] = {}  # session id -> call number
        self.recorded: set[str] = set()  # session ids whose cassette was named

    def say(self, text: str) -> None:
        print(terminal(text), file=self.out, flush=True)

    def run(self) -> int:
        from .config import load_secret
        from .ringcentral import RingCentral

        if not RingCentral.credentials_in_env():
            raise ConfigError("live mode needs RingCentral credentials: set RINGCENTRAL_TOKEN, "
                              "or RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET and "
                              "RINGCENTRAL_JWT (and RINGCENTRAL_SERVER_URL for a server other "
                              "than production)")
        client = RingCentral.from_env()
        secret = load_secret()
        if not self.args.public_url and not os.environ.get("NGROK_AUTHTOKEN"):
            client.close()
            raise ConfigError("live mode opens an ngrok tunnel, which needs NGROK_AUTHTOKEN: "
                              "set it to your token from the ngrok dashboard, or give "
                              "--public-url if the app is reachable some other way")
        if self.args.call and not client.extension_number:
            client.close()
            raise ConfigError("--call needs RINGCENTRAL_EXTENSION_NUMBER: set it to the IVR "
                              "app's extension number, which RingOut connects the call to")
        try:
            check_credentials(client)
        except ConfigError:
            client.close()
            raise
        from .durable import default_store_url

        app = _make_app(self.script, platform=client, store=self.args.store or
                        default_store_url(), host=self.args.host, port=self.args.port,
                        public_url=self.args.public_url, record=self.args.record,
                        secret=secret)
        tunnel = None
        reloader: _Reloader | None = None
        try:
            _start(app)
            if not self.args.public_url:
                from .tunnel import open_tunnel

                self.say("Opening the ngrok tunnel...")
                tunnel = open_tunnel("ngrok", app.url, domain=self.args.domain)
                app.public_url = tunnel.url
            self._banner(app)
            if self.args.reload:
                reloader = _Reloader(self.args.script, app, self.say, self.err).start()
            return self._serve(app)
        except KeyboardInterrupt:
            return self._interrupted(app)
        except BrokenPipeError:  # nobody reads the transcripts: end the calls, stop quietly
            _discard(self.out)
            if app.running:
                app.end_calls(OUTPUT_CLOSED)
            raise
        finally:
            if reloader is not None:
                reloader.stop()
            app.stop()
            if tunnel is not None:
                tunnel.close()
            client.close()

    def _banner(self, app: Any) -> None:
        self.say(f"Live: {getattr(self.script, '__name__', 'main')}() listening on {app.url}, "
                 f"public {app.public_url}")
        self.say("Configure these callback URLs for the IVR app (keep them private):")
        for kind, url in app.callback_urls.items():
            self.say(f"  {kind:<18} {url}")
        self.say("Waiting for calls; Ctrl-C stops.")

    def _serve(self, app: Any) -> int:
        if self.args.call:
            threading.Thread(target=self._dial, args=(app, self.args.call), daemon=True,
                             name="ivrscript-dial").start()
        while True:
            try:
                item = self.inbox.get(timeout=0.2)
            except queue.Empty:
                item = None
            self._watch_new_calls(app)
            self._say_recorded(app)
            if item is None:
                continue
            if item[0] == "event":
                _, number, event = item
                self.say(f"[{number}] {event.line()}")
            elif item[0] == "dial-failed":
                print(f"ivrscript: the outbound call failed: {item[1]}", file=self.err,
                      flush=True)

    def _say_recorded(self, app: Any) -> None:
        """With --record, say where each finished call's cassette was written."""
        recorder = getattr(app, "_recorder", None)
        if recorder is None:
            return
        for session_id, number in self.watched.items():
            path = recorder.paths.get(session_id)
            if path is not None and session_id not in self.recorded:
                self.recorded.add(session_id)
                self.say(f"[{number}] recorded: {path}")

    def _dial(self, app: Any, number: str) -> None:
        try:
            app.dial(number)
        except IvrError as error:
            self.inbox.put(("dial-failed", platform_problem(error, app.client.server_url)))

    def _watch_new_calls(self, app: Any) -> None:
        for call in list(app.calls):
            if call.session_id in self.watched:
                continue
            number = len(self.watched) + 1
            self.watched[call.session_id] = number
            self.say(f"[{number}] call {clean(call.session_id)} from "
                     f"{clean(call.caller or '?')}")
            seen: set[int] = set()
            lock = threading.Lock()

            def show(event: TranscriptEvent, number: int = number, seen: set[int] = seen,
                     lock: threading.Lock = lock) -> None:
                with lock:
                    if id(event) in seen:
                        return
                    seen.add(id(event))
                self.inbox.put(("event", number, event))

            call.transcript.subscribe(show)
            for event in call.transcript:  # what happened before we subscribed
                show(event)

    def _interrupted(self, app: Any) -> int:
        if app.running:
            app.end_calls(INTERRUPTED)
            self._watch_new_calls(app)
            while True:  # print what the ending added
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item[0] == "event":
                    self.say(f"[{item[1]}] {item[2].line()}")
        self.say(f"\nStopped: {_summary(app.calls)}.")
        return EXIT_INTERRUPTED
