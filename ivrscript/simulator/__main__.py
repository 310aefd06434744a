"""``python -m ivrscript.simulator``: the standalone simulator (see :mod:`ivrscript.simserver`)."""

import sys

from ..simserver import main

sys.exit(main())
