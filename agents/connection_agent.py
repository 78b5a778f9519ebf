"""The connection agent: joins two clips with a generated transition (connect_clips)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen_agentchat.agents import AssistantAgent

from openmora.tools.connect_clips import connect_clips

NAME = "connection_agent"
DESCRIPTION = "Joins two clips with a generated transition from the first's last frame to the second's first (tool: connect_clips)."
SYSTEM = (
    "You are the connection agent of a video-making team. Call connect_clips exactly once with the first clip's id "
    "and the second clip's id (clip-NNNN, in the order the user gave them). Do not write anything else."
)


def build_connection_agent(model_client: Any, bind: Callable, hint: str = "") -> AssistantAgent:
    """Build the connection agent; ``hint`` names the two clips of this run."""
    return AssistantAgent(
        NAME,
        model_client=model_client,
        description=DESCRIPTION,
        system_message=SYSTEM + (f" {hint}" if hint else ""),
        tools=[bind(connect_clips, NAME)],
    )
