"""The edit agent: changes an image by a written instruction (edit_image) and takes frames out of clips
(take_frame), for Mora's video editing: edit the first frame, then animate it again."""

from __future__ import annotations

from openmora.agents.binding import StepAgent, StepRunner

NAME = "edit_agent"
DESCRIPTION = "Edits an image by an instruction, keeping its layout (edit_image); takes a clip's frame (take_frame)."
TOOLS = ("edit_image", "take_frame")


def build_edit_agent(runner: StepRunner) -> StepAgent:
    return StepAgent(NAME, DESCRIPTION, TOOLS, runner)
