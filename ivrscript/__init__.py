"""ivrscript: script phone calls on RingCentral's IVR app API as plain Python generators.

    import ivrscript as ivr

    def main(call):
        yield ivr.play("prompts/welcome.wav")
        pin = yield ivr.collect("xxxx", timeout=8, prompt="prompts/enter-pin.wav")
        ...

Run it on the built-in simulator (``python -m ivrscript script.py``), live behind a tunnel,
in a notebook, or replay a recorded call in pytest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .call import Call, Transcript, TranscriptEvent
from .commands import (
    Collect,
    Digits,
    Effect,
    Forward,
    Hangup,
    Menu,
    Play,
    PlayResult,
    collect,
    effect,
    forward,
    hangup,
    menu,
    play,
)
from .errors import (
    CallEnded,
    CommandFailed,
    ConfigError,
    IvrError,
    PlatformError,
    ReplayMismatch,
    ScriptChanged,
)
from .loader import NotYieldedWarning, check_script
from .tts import Speech, Synthesizer, say, speech

if TYPE_CHECKING:
    from .app import App
    from .ringcentral import RingCentral
    from .simulator import Phone, Simulator
    from .wsgiapp import wsgi

__version__ = "0.1.0"

# A library configures no output of its own: without this, Python's last-resort handler prints
# warnings from the app's and simulator's background threads into whichever notebook cell ran
# last. The CLI and the notebook widgets show them; elsewhere, configure logging to see them.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# In a notebook: re-running the cell that built an App or a Simulator stops the old ones
# (see ivrscript/notebook.py; does nothing outside an IPython kernel).
from .notebook import install as _install_notebook_hooks  # noqa: E402

_install_notebook_hooks()

__all__ = [
    # commands and results
    "play",
    "collect",
    "forward",
    "hangup",
    "menu",
    "say",
    "speech",
    "Speech",
    "Synthesizer",
    "effect",
    "Effect",
    "Play",
    "Collect",
    "Forward",
    "Hangup",
    "Menu",
    "Digits",
    "PlayResult",
    # the call
    "Call",
    "Transcript",
    "TranscriptEvent",
    # running
    "App",
    "RingCentral",
    "Simulator",
    "Phone",
    "check_script",
    "NotYieldedWarning",
    "wsgi",
    # errors
    "IvrError",
    "CallEnded",
    "CommandFailed",
    "PlatformError",
    "ReplayMismatch",
    "ScriptChanged",
    "ConfigError",
]

# The engine's names import nothing beyond the standard library; the edges (werkzeug,
# requests) load on first use so `import ivrscript` stays cheap and a script file that only
# builds commands needs none of them.
_LAZY = {
    "App": ".app",
    "RingCentral": ".ringcentral",
    "Simulator": ".simulator",
    "Phone": ".simulator",
    "wsgi": ".wsgiapp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ivrscript' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
