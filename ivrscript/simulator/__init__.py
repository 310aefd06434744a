"""A fake RingCentral platform on loopback, for tests, notebooks and the CLI.

``Simulator`` is a real HTTP server (werkzeug, in a background thread) that serves the REST
paths of RingCentral's IVR app API with the same shapes and error bodies, keeps call sessions,
and POSTs the callbacks to an app's URLs (``requests``, one pooled session, 3 s timeout). Any
RingCentral client can drive it: give it ``sim.url`` as the server and ``sim.token`` as a static
Bearer token, or use the JWT flow at ``/restapi/oauth/token``. ``sim.call(app)`` rings an app and
returns a :class:`Phone`, the simulated caller, which presses keys and hangs up.

The rules follow ``PLATFORM.md`` ("The simulator's rules"). Where the platform guide is silent,
the simulator decides; each module's docstring says how, one concern each:

* :mod:`.core` -- the Simulator: time, calls, lifecycle (``start``/``stop``), RingOut.
* :mod:`.routes` -- the REST side: routes and handlers, auth, validation and error bodies.
* :mod:`.play` -- play rules (media length, replace, interrupt, failure).
* :mod:`.collect` -- collect rules (patterns, terminator, buffer, settle, timeouts) and keys.
* :mod:`.faults` -- seeded fault injection.
* :mod:`.courier` -- callback delivery in order on a fixed pool, the pooled HTTP client.
* :mod:`.phone` -- the simulated caller and its transcript.

``python -m ivrscript.simulator`` runs it as its own process (:mod:`ivrscript.simserver`).
"""

from .common import ACCOUNT_ID
from .core import Simulator
from .phone import Phone, PhoneEvent, PhoneTranscript
from .routes import RestRecord

__all__ = ["Simulator", "Phone", "PhoneEvent", "PhoneTranscript", "RestRecord", "ACCOUNT_ID"]
