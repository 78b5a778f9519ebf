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
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from openmora.errors import first_line
from openmora.events import EventSink, TranscriptKind, TranscriptLine

if TYPE_CHECKING:
    from openmora.tools.context import ToolResult


class Transcript:
    """Append-only event log of a run. Continues numbering when the file already exists (resume)."""

    def __init__(self, path: str | Path, on_event: EventSink | None = None) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self._lock = threading.Lock()
        self._step = len(self.read(self.path)) if self.path.exists() else 0

    def record(
        self,
        type: TranscriptKind,
        *,
        agent: str,
        tool: str | None = None,
        inputs: list[str] | tuple[str, ...] = (),
        outputs: list[str] | tuple[str, ...] = (),
        seconds: float = 0.0,
        **extra: Any,
    ) -> TranscriptLine:
        """Append one event and return it."""
        with self._lock:
            self._step += 1
            line = {
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
                f.write(json.dumps(line, default=str) + "\n")
                f.flush()
        event = cast(TranscriptLine, line)
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


def record_tool_call(
    transcript: Transcript,
    agent: str,
    tool: str,
    arguments: Mapping[str, Any],
    result: ToolResult | str | None = None,
    error: BaseException | None = None,
    seconds: float = 0.0,
    **extra: Any,
) -> TranscriptLine:
    """Record one tool call -- the fixed plan's, a group chat agent's, the fallback's, a story's -- the same way.

    A success records ``inputs`` (the arguments that name artifacts: ``*_id``), ``outputs``, ``arguments`` (the
    rest), ``result`` (the tool's line) and then one ``note`` line per note of the result. A failure records
    ``error`` (the message's first line) and every argument as given (an id may be the very thing that was wrong),
    no inputs. ``extra`` keys (``fallback_for``, ``plan_step``, ``shot``) go on the call's line.

    Example:
        >>> import tempfile, pathlib
        >>> t = Transcript(pathlib.Path(tempfile.mkdtemp()) / "transcript.jsonl")
        >>> line = record_tool_call(t, "prompt_agent", "enhance_prompt", {"prompt": "a fox"}, result="a red fox")
        >>> line["arguments"], line["result"]
        ({'prompt': 'a fox'}, 'a red fox')
    """
    if error is not None:
        return transcript.record(
            "tool_call",
            agent=agent,
            tool=tool,
            seconds=seconds,
            arguments={k: _jsonable(v) for k, v in arguments.items()},
            error=first_line(error),
            **extra,
        )
    if isinstance(result, str) or result is None:
        text, outputs, notes = result or "", [], []
    else:
        text, outputs, notes = result.text, result.outputs, result.notes
    line = transcript.record(
        "tool_call",
        agent=agent,
        tool=tool,
        inputs=[
            i
            for k, v in arguments.items()
            if k.endswith(("_id", "_ids"))
            for i in (v if isinstance(v, list) else [v])
            if isinstance(i, str)
        ],
        outputs=outputs,
        seconds=seconds,
        arguments={k: _jsonable(v) for k, v in arguments.items() if not k.endswith(("_id", "_ids"))},
        result=text,
        **extra,
    )
    for note in notes:
        transcript.record("note", agent=agent, tool=tool, text=note)
    return line


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it, else its ``str`` (an argument of the wrong type from an LLM)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
