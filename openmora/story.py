"""Multi-shot stories: a long prompt split into shots. The story template
(:func:`openmora.group_chat.plan.template_plan`) renders each shot (image, then motion), makes a transition between
neighbouring shots and joins them end to end. With ``--llm none`` the executor overlaps steps of different stages
(shot k+1's text-to-image while shot k's image-to-video runs; each pipeline is used by one thread at a time). Seeds
are fixed in the plan, so a parallel render gives exactly the frames of a serial one.

Example:
    >>> split_shots("A fox wakes in its den. It runs across the snow. At dusk it reaches the river.")
    ['A fox wakes in its den', 'It runs across the snow', 'At dusk it reaches the river']
"""

from __future__ import annotations

import re

from openmora.errors import InputError
from openmora.group_chat.plans import check_prompt_length

MAX_SHOTS = 8


def split_shots(prompt: str) -> list[str]:
    """Shots from a story: one per line, else per ';', else per sentence."""
    text = (prompt or "").strip()
    for pattern in (r"\n+", r";", r"(?<=[.!?])\s+"):
        parts = [p.strip().rstrip(".!?").strip() for p in re.split(pattern, text)]
        parts = [p for p in parts if p]
        if len(parts) > 1:
            return parts
    return [text.rstrip(".!?").strip()] if text else []


def check_story(prompt: str | None) -> list[str]:
    shots = split_shots(prompt or "")
    if len(shots) < 2:
        raise InputError(
            "story needs --prompt with at least two shots: one per line, separated by ';', or one per sentence"
        )
    if len(shots) > MAX_SHOTS:
        raise InputError(f"story has {len(shots)} shots; at most {MAX_SHOTS} are accepted")
    for k, shot in enumerate(shots, 1):
        check_prompt_length(shot, f"story shot {k}")
    return shots
