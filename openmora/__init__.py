"""OpenMora: a team of AutoGen agents that makes videos with diffusers pipelines (Mora's six tasks and more).

Example:
    >>> from openmora import Orchestrator
    >>> r = Orchestrator(profile="tiny").run("text-to-video", prompt="a fox running through snow at dusk")  # doctest: +SKIP
    >>> r.final_video.exists()  # doctest: +SKIP
    True

Importing this package is light: the engine (torch, diffusers, AutoGen) loads on first use of ``Orchestrator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["ChatSession", "Orchestrator", "RunResult", "__version__"]

if TYPE_CHECKING:
    from openmora.chat import ChatSession, RunResult
    from openmora.engine import Orchestrator


def __getattr__(name: str) -> Any:
    if name == "Orchestrator":
        from openmora.engine import Orchestrator

        return Orchestrator
    if name in ("ChatSession", "RunResult"):
        from openmora import chat

        return getattr(chat, name)
    raise AttributeError(f"module 'openmora' has no attribute {name!r}")
