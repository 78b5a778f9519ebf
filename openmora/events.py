"""The events a run emits, as types: one ``TypedDict`` per kind, told apart by ``type`` (and by ``phase`` for the two
that start and end), and :data:`EventSink`, a listener's type (``Orchestrator(on_event=...)``, ``arun(on_event=...)``).

| ``type`` | emitted | keys |
|---|---|---|
| ``load`` | by the loader: a pipeline loads | ``phase``, ``role``, ``model``; at the end ``seconds``, ``placement`` |
| ``progress`` | by a pipeline call: step 0, then each denoising step | ``stage``, ``role``, ``step``, ``total`` |
| ``encode`` | by the artifact store: a clip's files start / end being written | ``phase``, ``id``; start: ``frames`` |
| ``transcript`` | by the transcript, for every line it appends | ``event``: the :class:`TranscriptLine` |
| ``chat`` | by the group chat, for every message and agent event | ``source``, ``text`` (at most 500 characters) |
| ``result`` | by ``Orchestrator.run_stream`` only, last | ``result``: the :class:`~openmora.chat.RunResult` |

Importing this module is light (no torch, no AutoGen): type annotations only.

Example:
    >>> def show(event: Event) -> None:
    ...     if event["type"] == "progress":
    ...         print(f"{event['stage']}: {event['step']}/{event['total']}")
    >>> show({"type": "progress", "stage": "text_to_image", "role": "text_to_image", "step": 3, "total": 4})
    text_to_image: 3/4
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from openmora.chat import RunResult

__all__ = [
    "EVENT_TYPES",
    "ChatEvent",
    "CompileEndEvent",
    "CompileQueuedEvent",
    "EncodeEndEvent",
    "EncodeStartEvent",
    "Event",
    "EventSink",
    "LoadEndEvent",
    "LoadStartEvent",
    "ProgressEvent",
    "ResultEvent",
    "RunStatus",
    "StreamEvent",
    "TranscriptEvent",
    "TranscriptKind",
    "TranscriptLine",
]

# The kinds of transcript lines (``transcript.jsonl``'s ``type``).
TranscriptKind = Literal[
    "run_start", "run_resume", "run_end", "input", "message", "tool_call", "note", "planner", "plan"
]
# A run's status, in the manifest's ``run.status`` and a ``run_end`` line's ``status``.
RunStatus = Literal["running", "done", "failed", "interrupted"]


class _TranscriptLineBase(TypedDict):
    step: int
    type: TranscriptKind
    agent: str
    tool: str | None
    inputs: list[str]
    outputs: list[str]
    seconds: float
    time: str


class TranscriptLine(_TranscriptLineBase, total=False):
    """One line of ``transcript.jsonl``: the keys every line has, then those of some kinds (readers use ``.get``)."""

    text: str  # message, note
    error: str | bool  # tool_call: the failure's first line; message: True when it reports a failure; run_end
    result: str  # tool_call, input: the one-line result
    arguments: dict[str, Any]  # tool_call: the arguments that are not artifact ids (all of them on a failure)
    plan_step: bool  # tool_call in a group chat: whether it completed a plan step
    fallback_for: str  # tool_call by plan_runner: the agent it stood in for
    shot: int  # tool_call in a story: the shot
    source: str  # input: the file it came from
    task: str  # run_start
    prompt: str  # run_start
    profile: str  # run_start
    seed: int  # run_start
    llm: str  # run_start
    pending: list[str]  # run_resume: the tools left to run
    status: RunStatus  # run_end
    final: str  # run_end
    timings: dict[str, float]  # run_end
    decision: str  # planner: next_speaker | retry | fallback | revision
    candidates: list[str]  # planner
    raw_choice: str | None  # planner: the LLM's first answer (None: the plan decided without asking)
    retry_choice: str | None  # planner
    valid: bool  # planner
    first_choice_valid: bool  # planner
    fallback_used: bool  # planner
    chosen: str  # planner
    reason: str  # planner
    request: int  # planner, message: 0 for the first request, n for the nth revision


class LoadStartEvent(TypedDict):
    type: Literal["load"]
    phase: Literal["start"]
    role: str
    model: str


class LoadEndEvent(TypedDict):
    type: Literal["load"]
    phase: Literal["end"]
    role: str
    model: str
    seconds: float
    placement: str  # resident, model, sequential, ...


class ProgressEvent(TypedDict):
    type: Literal["progress"]
    stage: str
    role: str
    step: int  # 0 before the first denoising step
    total: int  # 0 when the call does not say


class EncodeStartEvent(TypedDict):
    type: Literal["encode"]
    phase: Literal["start"]
    id: str
    frames: int


class EncodeEndEvent(TypedDict):
    type: Literal["encode"]
    phase: Literal["end"]
    id: str


class CompileQueuedEvent(TypedDict):
    """A region's compile started: queued on the background compiler (the region runs eagerly until it is ready), or
    in the foreground for a region compiled on this machine before."""

    type: Literal["compile"]
    phase: Literal["queued"]
    name: str  # e.g. UNetSpatioTemporalConditionModel.down_blocks.0
    background: bool  # False: compiled here before, so from the compile cache, in the caller's thread (seconds)
    pending: int  # compiles queued or running, this one included
    estimate_s: float | None  # what this region's compile took last time on this machine, if it ran here before


class CompileEndEvent(TypedDict):
    type: Literal["compile"]
    phase: Literal["end"]
    name: str
    seconds: float
    ok: bool  # False: the region stays eager for that input (the log says why)
    pending: int  # compiles still queued or running


class TranscriptEvent(TypedDict):
    type: Literal["transcript"]
    event: TranscriptLine


class ChatEvent(TypedDict):
    type: Literal["chat"]
    source: str
    text: str


class ResultEvent(TypedDict):
    type: Literal["result"]
    result: RunResult


# What a sink hears.
Event = (
    LoadStartEvent
    | LoadEndEvent
    | ProgressEvent
    | EncodeStartEvent
    | EncodeEndEvent
    | CompileQueuedEvent
    | CompileEndEvent
    | TranscriptEvent
    | ChatEvent
)
# What ``Orchestrator.run_stream`` yields: every event of the run, then its result.
StreamEvent = Event | ResultEvent
EventSink = Callable[[Event], None]

# Every event kind a sink can hear, for code and tests that enumerate them.
EVENT_TYPES: tuple[type, ...] = (
    LoadStartEvent,
    LoadEndEvent,
    ProgressEvent,
    EncodeStartEvent,
    EncodeEndEvent,
    CompileQueuedEvent,
    CompileEndEvent,
    TranscriptEvent,
    ChatEvent,
)
