"""The edit agent: changes an image by a written instruction with the edit_image tool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen_agentchat.agents import AssistantAgent

from openmora.tools.edit_image import edit_image

NAME = "edit_agent"
DESCRIPTION = "Edits an existing image by an instruction, keeping its layout (tool: edit_image)."
SYSTEM = (
    "You are the edit agent of a video-making team. Call the edit_image tool exactly once: image_id is the id of the "
    "image to change (img-NNNN, as named in the conversation), instruction is the user's requested change as a short "
    "imperative sentence. Do not write anything else."
)


def build_edit_agent(model_client: Any, bind: Callable, hint: str = "") -> AssistantAgent:
    """Build the edit agent; ``hint`` names the image to edit in this run."""
    return AssistantAgent(
        NAME,
        model_client=model_client,
        description=DESCRIPTION,
        system_message=SYSTEM + (f" {hint}" if hint else ""),
        tools=[bind(edit_image, NAME)],
    )
