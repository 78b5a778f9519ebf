"""Runs plan steps directly, with the plan's own arguments: the whole task with ``--llm none``, and the fallback
(``plan_runner``) inside a group chat when an agent could not do its step.

Example:
    >>> # PlanExecutor(ctx, transcript, state).run_all() runs every pending step; see Orchestrator.run
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from openmora.group_chat.plan_state import PlanState, Step, write_state
from openmora.group_chat.transcript import Transcript, record_tool_call
from openmora.tools.connect_clips import connect_clips
from openmora.tools.context import ToolContext, ToolResult
from openmora.tools.edit_image import edit_image
from openmora.tools.enhance_prompt import enhance_prompt
from openmora.tools.extend_video import extend_video
from openmora.tools.image_to_video import image_to_video
from openmora.tools.text_to_image import text_to_image

TOOLS: dict[str, Callable[..., ToolResult]] = {
    "text_to_image": text_to_image,
    "edit_image": edit_image,
    "image_to_video": image_to_video,
    "extend_video": extend_video,
    "connect_clips": connect_clips,
}
STATE_FILE = "plan_state.json"


class PlanExecutor:
    """Executes pending plan steps and records them in the transcript.

    Args:
        as_fallback: record calls as ``plan_runner`` standing in for the step's agent (group chat fallback);
            otherwise as the step's own agent (the fixed plan).
    """

    def __init__(self, ctx: ToolContext, transcript: Transcript, state: PlanState, as_fallback: bool = False) -> None:
        self.ctx = ctx
        self.transcript = transcript
        self.state = state
        self.as_fallback = as_fallback

    @property
    def state_path(self) -> Path:
        return self.ctx.store.run_dir / STATE_FILE

    def save_state(self) -> None:
        """Save the plan state as it is now, once every artifact it names is on disk (the store writes files in the
        background): an interruption never leaves a state that names a missing file, nor re-runs a step whose files
        were written."""
        text, path = self.state.to_json(), self.state_path
        self.ctx.store.on_written(lambda: write_state(path, text))

    def run_step(self, step: Step) -> str:
        """Run one step with the plan's arguments; returns the line the chat shows."""
        agent = "plan_runner" if self.as_fallback else step.agent
        extra = {"fallback_for": step.agent} if self.as_fallback else {}
        args = self.state.fallback_args(step)
        start = time.perf_counter()
        if step.tool == "enhance_prompt":
            text = enhance_prompt(**args)
            self.state.record_tool(agent, "enhance_prompt", [], text)
            self.save_state()
            record_tool_call(
                self.transcript, agent, step.tool, args, result=text, seconds=time.perf_counter() - start, **extra
            )
            return f"prompt: {text}"
        try:
            result = TOOLS[step.tool](self.ctx, **args)
        except BaseException as err:
            record_tool_call(
                self.transcript, agent, step.tool, args, error=err, seconds=time.perf_counter() - start, **extra
            )
            raise
        # Plan state first (saved once the outputs are on disk): an interruption after that never re-runs the step.
        self.state.record_tool(agent, step.tool, result.outputs)
        self.save_state()
        record_tool_call(
            self.transcript, agent, step.tool, args, result=result, seconds=time.perf_counter() - start, **extra
        )
        return f"{step.tool}: {result.text}"

    async def arun_step(self, step: Step) -> str:
        return await asyncio.to_thread(self.run_step, step)

    def run_all(self) -> str | None:
        """Run every pending step in order; returns the final artifact id."""
        while (step := self.state.next_step()) is not None:
            self.run_step(step)
        return self.state.final_id
