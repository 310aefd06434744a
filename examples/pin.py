"""Ask for a 4-digit PIN, three tries, with a reusable sub-flow.

    echo 1234 | python -m ivrscript examples/pin.py

`ask_pin` is an ordinary generator: yielding it runs it as a sub-flow and resumes with what
it returns. `collect(..., prompt=...)` plays the prompt with barge-in: the first key stops it.
"""

import ivrscript as ivr

PIN = "1234"  # in real life: look the caller up with call.caller


def ask_pin(call, tries=3):
    for attempt in range(1, tries + 1):
        pin = yield ivr.collect("xxxx", timeout=8, prompt="prompts/enter-pin.wav")
        if pin.matched and pin == PIN:
            return True
        call.data["failed_attempts"] = attempt
        if pin.status == "Timeout" and not pin:
            yield ivr.play("prompts/no-input.wav")
        else:
            yield ivr.play("prompts/wrong-pin.wav")
    return False


def main(call):
    yield ivr.play("prompts/welcome.wav")
    if (yield ask_pin(call)):
        yield ivr.play("prompts/pin-accepted.wav")
    else:
        yield ivr.play("prompts/too-many-tries.wav")
    yield ivr.play("prompts/goodbye.wav")
