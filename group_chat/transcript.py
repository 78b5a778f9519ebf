"""The run's transcript: ``transcript.jsonl``, one JSON object per event (message, tool call, note, planner turn).

Every line has ``step``, ``type``, ``agent``, ``tool``, ``inputs``, ``outputs``, ``seconds`` and ``time``; other keys
depend on the type. Lines are appended and flushed as they happen, so an interrupted run keeps what it did.

Example:
    >>> import tempfile, pathlib
    >>> t = Transcript(pathlib.Path(tempfile.mkdtemp()) / "transcript.jsonl")
    >>> t.record("note", agent="orchestrator", text="hello")["step"]
    1
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class Transcript:
    """Append-only event log of a run. Continues numbering when the file already exists (resume)."""

    def __init__(self, path: str | Path, on_event: Callable[[dict], None] | None = None) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self._lock = threading.Lock()
        self._step = len(self.read(self.path)) if self.path.exists() else 0

    def record(
        self,
        type: str,
        *,
        agent: str,
        tool: str | None = None,
        inputs: list[str] | tuple[str, ...] = (),
        outputs: list[str] | tuple[str, ...] = (),
        seconds: float = 0.0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append one event and return it."""
        with self._lock:
            self._step += 1
            event = {
                "step": self._step,
                "type": type,
                "agent": agent,
                "tool": tool,
                "inputs": list(inputs),
                "outputs": list(outputs),
                "seconds": round(float(seconds), 4),
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                **extra,
            }
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event, default=str) + "\n")
                f.flush()
        if self.on_event:
            self.on_event({"type": "transcript", "event": event})
        return event

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """All events of a transcript file; a torn last line (a crash mid-write) is ignored."""
        events = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events
