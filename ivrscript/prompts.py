"""``python -m ivrscript prompts check|convert|say``: prompt audio the platform can play.

    python -m ivrscript prompts check DIR_OR_FILES...
    python -m ivrscript prompts convert FILES... [--out DIR]
    python -m ivrscript prompts say "Welcome to Acme." -o welcome.wav [--voice en-gb] [--rate 1.1]

``check`` lists each audio file with its format, sample rate, channels and length, and what is
wrong for the platform (it plays 8 kHz mono 16-bit PCM WAV); exit 1 if anything is.
``convert`` writes such WAVs from WAV, MP3, FLAC or Ogg Vorbis files, into DIR or beside each
file (``NAME.wav``; a WAV is replaced in place); a file it cannot read is one line on stderr,
the others are still converted, and the exit status is 1.
``say`` writes a spoken prompt to ship with the script.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .errors import ConfigError
from .text import clean

__all__ = ["main"]

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".oga")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ivrscript prompts",
                                     description="Check, convert and synthesise prompt audio "
                                     "(8 kHz mono 16-bit PCM WAV).")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="list audio files and what is wrong for the platform")
    check.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    convert = sub.add_parser("convert", help="write 8 kHz mono WAVs from WAV/MP3/FLAC/OGG")
    convert.add_argument("files", nargs="+", metavar="FILE")
    convert.add_argument("--out", default=None, metavar="DIR",
                         help="folder to write to (default: beside each file; a WAV is "
                         "replaced)")
    say = sub.add_parser("say", help="write a spoken prompt (eSpeak NG) to a WAV file")
    say.add_argument("text")
    say.add_argument("-o", "--output", required=True, metavar="FILE.wav")
    say.add_argument("--voice", default=None, help="eSpeak NG voice (default en-us)")
    say.add_argument("--rate", type=float, default=None, help="speed relative to normal (1.0)")
    return parser


def _audio_files(paths: Sequence[str]) -> list[str]:
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for folder, _dirs, names in sorted(os.walk(path)):
                found += [os.path.join(folder, n) for n in sorted(names)
                          if n.lower().endswith(AUDIO_EXTENSIONS)]
        else:
            found.append(path)
    return found


def _check(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    from .audio import probe

    files = _audio_files(paths)
    if not files:
        print(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {' '.join(paths)}", file=err)
        return 1
    bad = 0
    for path in files:
        try:
            info = probe(path)
        except ValueError as error:
            print(clean(str(error), 400), file=out)
            bad += 1
            continue
        channels = "mono" if info.channels == 1 else f"{info.channels} channels"
        problems = info.problems()
        verdict = "ok" if not problems else "NOT PLAYABLE AS IS: " + "; ".join(problems)
        print(f"{clean(path, 400)}: {info.format.upper()} {info.sample_rate} Hz {channels} "
              f"{info.sample_format}, {info.seconds:.2f} s: {verdict}", file=out)
        bad += bool(problems)
    if bad:
        print(f"{bad} of {len(files)} files need converting: python -m ivrscript prompts "
              "convert FILES... [--out DIR]", file=out)
    return 1 if bad else 0


def _convert(files: Sequence[str], folder: str | None, out: TextIO, err: TextIO) -> int:
    from .audio import convert

    if folder is not None:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            print(f"cannot create {clean(folder, 400)}: {error.strerror or error}", file=err)
            return 1
    failed = 0
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(folder if folder is not None else os.path.dirname(path),
                              stem + ".wav")
        try:
            seconds = convert(path, target)  # read whole, written atomically: in place is safe
        except (ValueError, OSError) as error:
            print(clean(str(error), 400), file=err)
            failed += 1
            continue
        replaced = " (replaced)" if os.path.abspath(target) == os.path.abspath(path) else ""
        print(f"{clean(target, 400)}: 8000 Hz mono 16-bit PCM, {seconds:.2f} s{replaced}",
              file=out)
    return 1 if failed else 0


def _say(text: str, output: str, voice: str | None, rate: float | None, out: TextIO,
         err: TextIO) -> int:
    from .audio import to_platform_wav
    from .tts import Synthesizer, speech

    try:
        item = speech(text, voice=voice, rate=rate)
        audio = to_platform_wav(Synthesizer().engine(item.text, item.voice, item.rate))
    except (ValueError, TypeError, ConfigError) as error:
        print(str(error), file=err)
        return 1
    try:
        with open(output, "wb") as handle:
            handle.write(audio)
    except OSError as error:
        print(f"cannot write {clean(output, 400)}: {error.strerror or error}", file=err)
        return 1
    from .wav import wav_seconds

    print(f"{clean(output, 400)}: {wav_seconds(audio) or 0:.2f} s", file=out)
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run a ``prompts`` command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.paths, out, err)
        if args.command == "convert":
            return _convert(args.files, args.out, out, err)
        return _say(args.text, args.output, args.voice, args.rate, out, err)
    except ConfigError as error:  # miniaudio not installed
        print(str(error), file=err)
        return 1
