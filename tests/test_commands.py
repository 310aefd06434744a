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


@pytest.mark.parametrize(("build", "text"), [
    (lambda: ivr.collect("x", timeout=3000), "timeout=3000 is in SECONDS, so it means 50 min"),
    (lambda: ivr.collect("x", timeout=601), "more than the 600 s an IVR waits"),
    (lambda: ivr.collect("x", inter_digit_timeout=2000), "inter_digit_timeout=2000 is in SEC"),
    (lambda: ivr.collect("x", inter_digit_timeout=61), "more than the 60 s an IVR waits"),
    (lambda: ivr.menu("m.wav", ["1"], timeout=5000), "timeout=5000 is in SECONDS"),
])
def test_times_no_ivr_means_are_rejected_as_milliseconds(build, text):
    """Over 10 minutes (timeout) or 60 s (between keys) is a ValueError when the command is
    built, asking whether milliseconds were passed; the limits themselves are fine."""
    with pytest.raises(ValueError, match="did you pass milliseconds") as caught:
        build()
    assert text in str(caught.value)
    assert ivr.collect("x", timeout=600, inter_digit_timeout=60).timeout == 600


def test_sensitive_digits_repr_is_masked():
    """repr() of sensitive Digits (a KeyError's message, a log line) shows ****; the value
    is the keys."""
    pin = ivr.Digits("9876", "Completed", sensitive=True)
    assert pin == "9876" and str(pin) == "9876" and "9876" not in repr(pin)
    assert "9876" not in str(KeyError(pin)) and "****" in str(KeyError(pin))
    assert repr(ivr.Digits("12")) == "Digits('12', status='Completed')"
    assert ivr.collect("xxxx", sensitive=True).describe() == "xxxx (sensitive)"


def test_digits_is_a_str_with_status():
    """Digits compare as strings and know whether they matched."""
    d = ivr.Digits("1234", "Completed")
    assert d == "1234" and d.matched and isinstance(d, str)
    assert not ivr.Digits("", "Timeout").matched


def test_menu_is_iterable_for_yield_from():
    """menu() can be delegated to with `yield from`; with '#' as a choice its terminator is
    '*'."""
    m = ivr.menu("m.wav", ["1", "#"])
    first = next(iter(m))
    assert isinstance(first, ivr.Collect) and first.terminator == "*"
    assert first.patterns == ("1", "#")


@pytest.mark.parametrize(("choices", "terminator"), [
    (["1", "2"], "#"), (["1", "*"], "#"), (["#", "0"], "*"), (["1#"], "*")])
def test_menu_terminator_is_not_a_choice_key(choices, terminator):
    """The menu's collect carries '#', else '*' when '#' is a choice's key."""
    assert next(iter(ivr.menu("m.wav", choices))).terminator == terminator


def test_menu_choices_using_both_terminators_are_a_value_error():
    """Choices using both '#' and '*' leave no key to end the input: ValueError when built."""
    with pytest.raises(ValueError, match="both '#' and"):
        ivr.menu("m.wav", ["#", "*"])
    with pytest.raises(ValueError, match="both '#' and"):
        ivr.Menu(("m.wav",), ("1*", "2#"))


def test_public_names_match_all():
    """Every name in __all__ is importable, including the contract's."""
    for name in ivr.__all__:
        assert getattr(ivr, name) is not None
    contract = ["play", "collect", "forward", "hangup", "menu", "App", "Simulator",
                "RingCentral", "Call", "Transcript", "Digits", "IvrError", "CallEnded",
                "CommandFailed", "PlatformError", "ReplayMismatch", "ConfigError"]
    assert set(contract) <= set(ivr.__all__)
