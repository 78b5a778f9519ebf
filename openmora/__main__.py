"""``python -m openmora``: the same command line as ``openmora`` and ``python orchestrator.py``."""

import sys

from openmora.cli import main

sys.exit(main())
