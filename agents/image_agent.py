"""The image agent: makes the first frame from text with the text_to_image tool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen_agentchat.agents import AssistantAgent

from openmora.tools.text_to_image import text_to_image

NAME = "image_agent"
DESCRIPTION = "Makes a still image from a text prompt (tool: text_to_image)."
SYSTEM = (
    "You are the image agent of a video-making team. Call the text_to_image tool exactly once. For its prompt use "
    "the prompt agent's latest prompt if there is one, else the user's request (plus any revision the user asked "
    "for). Do not write anything else."
)


def build_image_agent(model_client: Any, bind: Callable) -> AssistantAgent:
    """Build the image agent; ``bind(fn, agent_name)`` turns a tool function into the run's FunctionTool."""
    return AssistantAgent(
        NAME,
        model_client=model_client,
        description=DESCRIPTION,
        system_message=SYSTEM,
        tools=[bind(text_to_image, NAME)],
    )
