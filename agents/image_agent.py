"""The image agent: makes a still image from a prompt (text_to_image)."""

from __future__ import annotations

from openmora.agents.binding import StepAgent, StepRunner

NAME = "image_agent"
DESCRIPTION = "Makes a still image from a text prompt (tool: text_to_image)."
TOOLS = ("text_to_image",)


def build_image_agent(runner: StepRunner) -> StepAgent:
    return StepAgent(NAME, DESCRIPTION, TOOLS, runner)
