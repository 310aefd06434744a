"""Every cassette under recordings/ replays against its example with the same transcript."""

from __future__ import annotations

import os

import pytest

from ivrscript.recorder import load_recording
from ivrscript.testing import cassettes

from .conftest import EXAMPLES, ROOT, example

RECORDINGS = os.path.join(ROOT, "recordings")
ALL = cassettes(RECORDINGS)


@pytest.mark.parametrize("path", ALL, ids=[os.path.basename(p) for p in ALL])
def test_recording_replays(ivr_replay, path):
    """A recorded call replays against the example that made it, to the same transcript."""
    name = load_recording(path).meta["script"]["file"]
    assert os.path.isfile(os.path.join(EXAMPLES, name)), f"{path} names no example: {name}"
    transcript = ivr_replay(path, example(name))
    assert transcript.lines()[-1].startswith("exit")


def test_every_example_has_recordings():
    """Each example has recorded calls, including a failure path of each."""
    by_example: dict[str, list[str]] = {}
    for path in ALL:
        by_example.setdefault(load_recording(path).meta["script"]["file"], []).append(
            os.path.basename(path))
    examples = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))
    assert sorted(by_example) == examples
    assert len(ALL) >= 12
    ends = {load_recording(p).meta["end_reason"] for p in ALL}
    assert ends == {"hangup", "forwarded", "caller-hangup"}


@pytest.mark.parametrize("path", ALL, ids=[os.path.basename(p) for p in ALL])
def test_recording_holds_no_credentials(path):
    """No committed cassette carries an Authorization header, a Bearer token or a token
    field; the masked one has no caller number."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for word in ("authorization", "bearer", "access_token", "refresh_token"):
        assert word not in text.lower(), f"{path} contains {word!r}"
    if load_recording(path).meta["numbers_masked"]:
        assert "+15550100" not in text and "5550100" not in text
