"""``python -m funcnet``: the same command line as ``funcnet``."""

import sys

from funcnet.apps.cli import main

sys.exit(main())
