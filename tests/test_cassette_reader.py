"""The fast cassette reader gives exactly what ``yaml.safe_load`` gives, or steps aside: on
every committed recording, and on thousands of generated documents written the way cassettes
are written (``yaml.dump`` with the recorder's settings, and vcrpy's serializer)."""

from __future__ import annotations

import glob
import os
import random

import pytest
import yaml
from vcr.serializers import yamlserializer

from ivrscript import recorder

from .conftest import ROOT

PIECES = ["a", "b", "Z", "0", "7", "42", " ", "  ", "'", "''", '"', ":", ": ", " #", "#", "-",
          "- ", "?", "!", "&", "*", "|", ">", "%", "@", "`", ",", "[", "]", "{", "}", "\\",
          "\n", "\n\n", "\t", "é", "😀", "\x85", "\u2028", "yes", "no", "on", "null", "~",
          "true", "1e3", "0x1F", "0o17", "1_000", ".5", "-3", "+4", ".inf", "2020-01-02",
          "2020-01-02 03:04:05", "<<", "=", "http://x.invalid/a?b=c&d", " trailing ",
          "word " * 30]


def text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))


def value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 4 and roll < 0.2:
        return {text(rng) if rng.random() < 0.8 else rng.randint(-5, 5): value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    if depth < 4 and roll < 0.35:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice([text(rng), text(rng), text(rng), rng.randint(-10**6, 10**6),
                       rng.random() * 1e3, True, False, None])


def same_or_declined(document: str) -> bool:
    """True if the reader declined (the full loader reads it); asserts it equals otherwise."""
    expected = yaml.safe_load(document)
    try:
        got = recorder._simple_yaml(document)
    except recorder._NotSimple:
        return False
    except (ValueError, RecursionError):  # the caller falls back to the full loader too
        return False
    assert got == expected, document
    return True


def test_every_committed_recording_is_read_fast_and_the_same():
    paths = sorted(glob.glob(os.path.join(ROOT, "recordings", "*.yaml")))
    assert paths
    for path in paths:
        with open(path, encoding="utf-8") as f:
            assert same_or_declined(f.read()), f"{path} was not read by the fast reader"


@pytest.mark.parametrize("seed", range(8))
def test_generated_documents_are_read_the_same_or_declined(seed):
    rng = random.Random(seed)
    read = 0
    for _ in range(250):
        data = {"ivrscript": value(rng), "interactions": [value(rng) for _ in range(3)],
                "version": 1}
        for document in (
                yaml.dump(data, Dumper=recorder._YAML_DUMPER, sort_keys=False,
                          allow_unicode=True, width=100),
                yamlserializer.serialize(data)):
            read += same_or_declined(document)
    assert read > 100, "the fast reader declined nearly everything: it reads nothing real"


@pytest.mark.parametrize("document", [
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: [1, 2]\n", "a: {b: 1}\n", "a: |\n  text\n",
    "a: 1 # note\n", "--- \na: 1\n", "a:\n\tb: 1\n", "? a\n: 1\n", "a: 1\na: 2\n",
    "a: b: c\n", "- - 1\n", 'a: "x\n  y"\n', "a: 'open\n", "a: 1\n  b: 2\n",
])
def test_what_the_fast_reader_does_not_know_it_leaves_to_the_full_loader(document):
    with pytest.raises(recorder._NotSimple):
        recorder._simple_yaml(document)


@pytest.mark.parametrize("name", ["greeting-caller-hangs-up.yaml", "say-balance.yaml"])
def test_a_cassette_cut_anywhere_is_read_the_same_or_declined(name):
    """Every prefix of a cassette (a copy interrupted): what the fast reader accepts the full
    loader reads, and to the same value; it never accepts what the full loader refuses."""
    with open(os.path.join(ROOT, "recordings", name), "rb") as f:
        content = f.read()
    for cut in range(1, len(content), 5):
        try:
            document = content[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            got = recorder._simple_yaml(document)
        except recorder._NotSimple:
            continue
        assert got == yaml.safe_load(document), document[-200:]
