"""OpenMora's public facade: the engine and its command line, importable from a checkout.

Python (installed, or from this folder):
    >>> from orchestrator import Orchestrator  # the same object as ``openmora.Orchestrator``
    >>> result = Orchestrator(profile="tiny").run("text-to-video", prompt="a fox running through snow at dusk")  # doctest: +SKIP

Command line (the same as the ``openmora`` command):
    python orchestrator.py run text-to-video --prompt "a fox running through snow at dusk"
"""

from __future__ import annotations

import sys

from openmora.chat import ChatSession, RunResult
from openmora.cli import build_parser, main
from openmora.engine import Orchestrator

__all__ = ["ChatSession", "Orchestrator", "RunResult", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
