"""Commands are checked when built, so mistakes point at the line that made them."""

from __future__ import annotations

import dataclasses

import pytest

import ivrscript as ivr


def test_commands_are_immutable_values():
    """Commands are frozen: building one does nothing, and it cannot be changed."""
    p = ivr.play("a.wav", "b.wav")
    assert p == ivr.play("a.wav", "b.wav") and p.media == ("a.wav", "b.wav")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.repeat = 3  # type: ignore[misc]


def test_repeat_zero_needs_interrupt():
    """repeat=0 plays until a key, so it needs interrupt_by_dtmf=True."""
    with pytest.raises(ValueError, match="interrupt_by_dtmf"):
        ivr.play("hold.wav", repeat=0)
    assert ivr.play("hold.wav", repeat=0, interrupt_by_dtmf=True).repeat == 0


def test_forward_needs_exactly_one_target():
    """forward() with neither or both targets is a ValueError when built."""
    with pytest.raises(ValueError):
        ivr.forward()
    with pytest.raises(ValueError):
        ivr.forward(extension="1", phone_number="+1555")
    assert ivr.forward(101).extension == "101"


@pytest.mark.parametrize("patterns", ["", [], ["12a"], "1-2"])
def test_bad_patterns(patterns):
    """Patterns are digits, *, # and x."""
    with pytest.raises((ValueError, TypeError)):
        ivr.collect(patterns)


def test_times_are_seconds():
    """Timeouts are seconds; a millisecond-looking value is caught."""
    with pytest.raises(ValueError, match="SECONDS"):
        ivr.collect("x", timeout=8000)
    with pytest.raises(ValueError):
        ivr.collect("x", timeout=0)


def test_digits_is_a_str_with_status():
    """Digits compare as strings and know whether they matched."""
    d = ivr.Digits("1234", "Completed")
    assert d == "1234" and d.matched and isinstance(d, str)
    assert not ivr.Digits("", "Timeout").matched


def test_menu_is_iterable_for_yield_from():
    """menu() can be delegated to with `yield from`."""
    m = ivr.menu("m.wav", ["1", "#"])
    first = next(iter(m))
    assert isinstance(first, ivr.Collect) and first.terminator is None
    assert first.patterns == ("1", "#")


def test_public_names_match_all():
    """Every name in __all__ is importable, including the contract's."""
    for name in ivr.__all__:
        assert getattr(ivr, name) is not None
    contract = ["play", "collect", "forward", "hangup", "menu", "App", "Simulator",
                "RingCentral", "Call", "Transcript", "Digits", "IvrError", "CallEnded",
                "CommandFailed", "PlatformError", "ReplayMismatch", "ConfigError"]
    assert set(contract) <= set(ivr.__all__)
