"""``python -m taskfit.cli``."""

import sys

from taskfit.cli import main

sys.exit(main())
