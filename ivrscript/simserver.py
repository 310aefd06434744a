"""``python -m ivrscript.simulator``: the simulator as its own process, a fake RingCentral.

Point a live-mode app at it (``RINGCENTRAL_SERVER_URL`` and ``RINGCENTRAL_TOKEN``, both
printed at start) and place calls into the app from this terminal. Commands, one per line:

  call URL [URL ...] [CALLER]
                      ring the app whose callback URL (on-call-enter, or the base URL with the
                      secret) is URL; CALLER defaults to +15550100. Several URLs: processes of
                      one app behind a load balancer, each callback of the call to the next
  connect URL [URL ...] [EXT]
                      register the app (one or several processes) as extension EXT (default
                      201), so its RingOut (``--call`` / ``App.dial``) rings a phone here
  KEYS                press keys (0-9 * #) on the latest call when the app next listens
  h                   the latest call's caller hangs up
  q                   quit

End of input keeps the server running (so it can run in the background); Ctrl-C or SIGTERM
stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from .errors import IvrError
from .listener import CALLBACKS
from .netutil import check_port_free
from .simulator import Phone, PhoneEvent, Simulator

__all__ = ["main", "callback_urls"]

_HELP = ("commands: call URL [URL ...] [CALLER] | connect URL [URL ...] [EXT] | KEYS (0-9*#) | "
         "h (hang up) | q (quit)")


def callback_urls(url: str) -> dict[str, str]:
    """The four callback URLs from one of them, or from their base (``.../SECRET``)."""
    base = url.strip().rstrip("/")
    for kind in CALLBACKS:
        if base.endswith("/" + kind):
            base = base[: -len(kind) - 1]
            break
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return {kind: f"{base}/{kind}" for kind in CALLBACKS}


def _split_urls(words: Sequence[str]) -> tuple[list[dict[str, str]], list[str]]:
    """The leading http(s) words as callback URLs, and the words after them."""
    count = next((i for i, word in enumerate(words)
                  if not word.startswith(("http://", "https://"))), len(words))
    return [callback_urls(word) for word in words[:count]], list(words[count:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ivrscript.simulator",
        description="A fake RingCentral platform on this machine, with a phone in the "
                    "terminal. " + _HELP,
        epilog="Point a live-mode app at it: RINGCENTRAL_SERVER_URL and RINGCENTRAL_TOKEN "
               "as printed, and --public-url http://127.0.0.1:PORT for the app.")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="divides every platform timer (default 1)")
    parser.add_argument("--token", help="the static Bearer token to accept (default: random)")
    parser.add_argument("--callback-retry", type=float, default=10.0, metavar="SECONDS",
                        help="keep trying a callback (update, exit) the app did not take for "
                             "up to this long (default 10; 0: never)")
    parser.add_argument("--connect", metavar="URL", nargs="+", action="append", default=[],
                        help="register an app (callback or base URL) at start, for RingOut; "
                             "several URLs: processes of one app, each callback of a call to "
                             "the next (a load balancer); repeat for more apps (extensions "
                             "201, 202, ...)")
    return parser


class _Console:
    """Reads commands, prints what happens on every call."""

    def __init__(self, sim: Simulator, out: TextIO, err: TextIO) -> None:
        self.sim = sim
        self.out = out
        self.err = err
        self.latest: Phone | None = None
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def complain(self, text: str) -> None:
        with self._lock:
            print(f"simulator: {text}", file=self.err, flush=True)

    def on_event(self, phone: Phone, event: PhoneEvent) -> None:
        if event.kind == "ring":
            self.latest = phone
        self.say(f"[{phone.call_number}] {event}")

    def command(self, line: str) -> bool:
        """Do one command; False to quit."""
        words = line.split()
        if not words:
            return True
        verb = words[0].lower()
        try:
            if verb in ("q", "quit", "exit"):
                return False
            if verb == "call" and len(words) >= 2:
                urls, rest = _split_urls(words[1:])
                if len(rest) > 1 or not urls:
                    raise ValueError(f"usage: call URL [URL ...] [CALLER], got {line.strip()!r}")
                phone = self.sim.call(urls, caller=rest[0] if rest else "+15550100")
                self.latest = phone
                if phone.ended:
                    self.complain(f"the app did not take the call: {phone.error}")
            elif verb == "connect" and len(words) >= 2:
                urls, rest = _split_urls(words[1:])
                if len(rest) > 1 or not urls:
                    raise ValueError(f"usage: connect URL [URL ...] [EXT], got {line.strip()!r}")
                extension = rest[0] if rest else "201"
                self.sim.connect(urls, extension_number=extension)
                self.say(f"connected extension {extension}")
            elif verb in ("h", "hangup"):
                if self.latest is None or self.latest.ended:
                    self.complain("no call in progress")
                else:
                    self.latest.hang_up()
            elif set(verb) <= set("0123456789*#"):
                phone = self.latest
                if phone is None:
                    self.complain("no call yet: 'call URL' first")
                else:
                    phone.press(verb, wait=True, timeout=60.0)
            else:
                self.complain(f"unknown command {line.strip()!r}; {_HELP}")
        except (IvrError, ValueError, TypeError, RuntimeError) as error:
            self.complain(str(error))
        return True


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the standalone simulator until ``q``, Ctrl-C or SIGTERM; returns the exit status."""
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    args = build_parser().parse_args(argv)
    try:
        sim = Simulator(speed=args.speed, host=args.host, port=args.port, token=args.token,
                        callback_retry=args.callback_retry)
    except ValueError as error:
        print(f"simulator: {error}", file=err, flush=True)
        return 2
    console = _Console(sim, out, err)
    sim.add_listener(console.on_event)
    try:
        check_port_free(args.host, args.port)
        sim.start()
    except (IvrError, RuntimeError) as error:
        print(f"simulator: {error}", file=err, flush=True)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        def terminate(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
    try:
        for number, urls in enumerate(args.connect, start=201):
            try:
                sim.connect([callback_urls(url) for url in urls], extension_number=str(number))
            except ValueError as error:
                print(f"simulator: --connect {' '.join(urls)}: {error}", file=err, flush=True)
                return 2
        console.say(f"ivrscript simulator at {sim.url} (speed {sim.speed:g})")
        console.say(f"RINGCENTRAL_SERVER_URL={sim.url}")
        console.say(f"RINGCENTRAL_TOKEN={sim.token}")
        for number, urls in enumerate(args.connect, start=201):
            enters = " ".join(callback_urls(url)["on-call-enter"] for url in urls)
            console.say(f"connected extension {number}: {enters}")
        console.say(_HELP)
        for line in inp:
            if not console.command(line):
                break
        else:
            stop.wait()  # end of input: keep serving until Ctrl-C / SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    calls = len(sim.phones)
    console.say(f"simulator stopped after {calls} call{'s' if calls != 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
