"""The prompt agent: Mora's "prompt selection and generation" role. It writes the visual prompt the others use."""

from __future__ import annotations

from typing import Any

from autogen_agentchat.agents import AssistantAgent

from openmora.tools.enhance_prompt import DIGITAL_WORLD_STYLE

NAME = "prompt_agent"
DESCRIPTION = "Writes the detailed visual prompt for the images and video from the user's request (no tools)."


def system_message(task: str, image_note: str = "") -> str:
    parts = [
        "You are the prompt agent of a video-making team. Rewrite the user's request as ONE detailed visual prompt "
        "for an image and video model: subject, action, setting, lighting, colours, camera. At most 60 words. "
        "Reply with the prompt only: no preamble, no quotes, no list.",
    ]
    if task == "digital-world":
        parts.append(f"End the prompt with this style cue, word for word: '{DIGITAL_WORLD_STYLE}'.")
    if image_note:
        parts.append(f"The video starts from an input image ({image_note}); describe the motion that fits it.")
    return " ".join(parts)


def build_prompt_agent(model_client: Any, task: str, image_note: str = "") -> AssistantAgent:
    """Build the prompt agent for one run.

    Example:
        >>> from openmora.llm.clients import replay_client
        >>> build_prompt_agent(replay_client(["a fox"]), "text-to-video").name
        'prompt_agent'
    """
    return AssistantAgent(
        NAME, model_client=model_client, description=DESCRIPTION, system_message=system_message(task, image_note)
    )
