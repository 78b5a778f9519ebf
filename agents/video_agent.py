"""The video agent: animates an image (image_to_video) and makes clips longer (extend_video)."""

from __future__ import annotations

from openmora.agents.binding import StepAgent, StepRunner

NAME = "video_agent"
DESCRIPTION = (
    "Turns an image into a video clip (image_to_video) and extends clips from their last frame (extend_video)."
)
TOOLS = ("image_to_video", "extend_video")


def build_video_agent(runner: StepRunner) -> StepAgent:
    return StepAgent(NAME, DESCRIPTION, TOOLS, runner)
