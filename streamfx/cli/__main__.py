"""``python -m streamfx.cli``: the same as the ``streamfx`` command."""

import sys

from . import main

sys.exit(main())
