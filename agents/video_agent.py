"""The video agent: animates an image (image_to_video) and makes clips longer (extend_video)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen_agentchat.agents import AssistantAgent

from openmora.tools.extend_video import extend_video
from openmora.tools.image_to_video import image_to_video

NAME = "video_agent"
DESCRIPTION = (
    "Turns an image into a video clip (image_to_video) and extends clips from their last frame (extend_video)."
)
SYSTEM = (
    "You are the video agent of a video-making team. Make exactly one tool call per turn. If no clip exists yet for "
    "the newest image, call image_to_video with that image's id (img-NNNN). If a clip exists and the plan needs it "
    "longer, call extend_video with the clip's id (clip-NNNN). Use the ids exactly as they appear in the conversation."
)


def build_video_agent(model_client: Any, bind: Callable, hint: str = "") -> AssistantAgent:
    """Build the video agent; ``hint`` says how many segments this run wants."""
    return AssistantAgent(
        NAME,
        model_client=model_client,
        description=DESCRIPTION,
        system_message=SYSTEM + (f" {hint}" if hint else ""),
        tools=[bind(image_to_video, NAME), bind(extend_video, NAME)],
    )
