"""The smallest call: greet the caller, say goodbye. Returning ends the call (the app hangs up).

    python -m ivrscript examples/greeting.py
"""

import ivrscript as ivr


def main(call):
    yield ivr.play("prompts/welcome.wav")
    yield ivr.play("prompts/goodbye.wav")
