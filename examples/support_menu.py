"""A support line: a menu that forwards the caller to the right team.

    echo 2 | python -m ivrscript examples/support_menu.py

`menu()` asks up to three times: a wrong key plays `invalid`, silence plays `no_input`.
Forwarding ends the call for the app: `CallEnded("forwarded")` is raised at that yield, so a
`finally` block runs (here: a line in the call's data that a dashboard can show).
"""

import ivrscript as ivr

TEAMS = {"1": "101", "2": "102", "0": "0"}  # key -> extension: sales, support, operator


def main(call):
    try:
        choice = yield ivr.menu("prompts/support-menu.wav", list(TEAMS), tries=3,
                                invalid="prompts/invalid-choice.wav",
                                no_input="prompts/no-input.wav")
        if choice is None:
            yield ivr.play("prompts/goodbye.wav")
            return
        call.data["team"] = TEAMS[choice]
        yield ivr.play("prompts/transferring.wav")
        yield ivr.forward(extension=TEAMS[choice])
    finally:
        call.data["done"] = True
