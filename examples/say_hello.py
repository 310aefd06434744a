"""Every prompt spoken from text: no recording session needed to prototype a flow.

    echo 1 | python -m ivrscript examples/say_hello.py

`ivr.say(text)` speaks text (eSpeak NG, local and offline, by default; `App(speech=...)` plugs
in another engine); `ivr.speech(text)` is the same spoken text as a media item, for a collect
or menu prompt. `as_=` reads digits, numbers, money, dates and times in English. The audio is
an 8 kHz WAV cached on disk and served by the app, so a collect's timeout counts from the end
of the spoken prompt.
"""

import ivrscript as ivr

ACCOUNT = "40721"  # in real life: look the caller up with call.caller
BALANCE = "1250.75"


def main(call):
    yield ivr.say("Hello, and thank you for calling Acme.")
    choice = yield ivr.menu(
        ivr.speech("For your account balance, press 1. To speak to someone, press 0."),
        ["1", "0"], tries=3,
        invalid=ivr.speech("Sorry, that is not one of the choices."),
        no_input=ivr.speech("Sorry, I did not hear a key."))
    if choice == "1":
        yield ivr.play(ivr.speech("The balance of account"), ivr.speech(ACCOUNT, as_="digits"),
                       ivr.speech("is"), ivr.speech(BALANCE, as_="money"))
    elif choice == "0":
        yield ivr.say("Please hold while I transfer you.")
        yield ivr.forward(extension="0")
    yield ivr.say("Goodbye.")
