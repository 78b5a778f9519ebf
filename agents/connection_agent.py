"""The connection agent: joins clips with a generated transition (connect_clips) and end to end (join_clips)."""

from __future__ import annotations

from openmora.agents.binding import StepAgent, StepRunner

NAME = "connection_agent"
DESCRIPTION = (
    "Joins two clips with a generated transition from the first's last frame to the second's first (connect_clips), "
    "and joins clips end to end (join_clips)."
)
TOOLS = ("connect_clips", "join_clips")


def build_connection_agent(runner: StepRunner) -> StepAgent:
    return StepAgent(NAME, DESCRIPTION, TOOLS, runner)
