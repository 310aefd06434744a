"""``python -m ivrscript SCRIPT.py[:function]``: see :mod:`ivrscript.cli`."""

import sys

from .cli import main

sys.exit(main())
