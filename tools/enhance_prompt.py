"""Tool: turn a user's words into a detailed visual prompt without an LLM (the fixed plan's prompt agent).

With an LLM the prompt agent writes the prompt itself; this deterministic version keeps ``--llm none`` runs
reproducible and still adds Mora's style cue for digital worlds.

Example:
    >>> from openmora.tools.enhance_prompt import enhance_prompt
    >>> enhance_prompt("a fox running through snow at dusk").startswith("a fox running through snow at dusk, ")
    True
"""

from __future__ import annotations

from openmora.errors import ToolArgumentError

DIGITAL_WORLD_STYLE = (
    "in digital world style, like a Minecraft video game: blocky voxel world, pixel textures, game-engine lighting"
)
DIGITAL_WORLD_EDIT = (
    "turn this into a digital world, like a Minecraft video game with blocky voxel shapes and pixel textures"
)
_DETAIL = "highly detailed, cinematic lighting, sharp focus, natural colours, smooth camera motion"
MAX_PROMPT_CHARS = 2000


def enhance_prompt(prompt: str, digital_world: bool = False) -> str:
    """Expand a short request into a detailed visual prompt; add the digital-world style cue when asked.

    Args:
        prompt: the user's request in their own words.
        digital_world: append Mora's "digital world" style cue (simulate-digital-worlds task).

    Returns:
        The prompt to give the image and video tools.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ToolArgumentError("prompt is empty; describe the video in a few words")
    text = " ".join(prompt.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise ToolArgumentError(f"prompt is {len(text)} characters; keep it under {MAX_PROMPT_CHARS}")
    parts = [text.rstrip(".")]
    if digital_world and DIGITAL_WORLD_STYLE not in text:
        parts.append(DIGITAL_WORLD_STYLE)
    parts.append(_DETAIL)
    return ", ".join(parts)
