"""The HTTP job API (``openmora serve``): a FastAPI app over a persistent SQLite job queue and one worker that keeps
its pipelines loaded between jobs. :func:`create_app` builds the app (tests serve it in-process); :func:`serve` runs
it with uvicorn.

Example:
    >>> from openmora.server import create_app
    >>> app = create_app("server-data", profile="tiny", llm="none")  # doctest: +SKIP
"""

from __future__ import annotations

from openmora.server.app import create_app, serve

__all__ = ["create_app", "serve"]
