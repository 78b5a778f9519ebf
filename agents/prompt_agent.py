"""The prompt agent: Mora's "prompt selection and generation" role. It writes the visual prompt the others use.

On its turn it takes its ready ``enhance_prompt`` step and asks its LLM for one detailed visual prompt from the
step's words (a revision's rewritten prompt, a story's shot). A step whose words did not change since an earlier
request is reused without asking the LLM. Without an LLM the deterministic ``enhance_prompt`` tool writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import SystemMessage, UserMessage

from openmora.agents.binding import StepRunner
from openmora.tools.enhance_prompt import DIGITAL_WORLD_STYLE, MAX_PROMPT_CHARS

NAME = "prompt_agent"
DESCRIPTION = "Writes the detailed visual prompt for the images and video from the user's request (no tools)."
TOOLS = ("enhance_prompt",)
# A visual prompt is at most ~50 words (~70 tokens; the image models read 77): cap the reply so a rambling small
# model cannot take longer (on 2 CPU cores the 1.5B model writes ~17 tokens/s).
MAX_TOKENS = 80


def system_message(digital_world: bool = False, motion: bool = False) -> str:
    parts = [
        "You are the prompt agent of a video-making team. Rewrite the user's words as ONE detailed visual prompt "
        "for an image and video model: subject, action, setting, lighting, colours, camera. At most 50 words, one sentence or two. "
        "Keep every detail the user gave. Reply with the prompt only: no preamble, no quotes, no list.",
    ]
    if digital_world:
        parts.append(f"End the prompt with this style cue, word for word: '{DIGITAL_WORLD_STYLE}'.")
    if motion:
        parts.append("The video starts from a given picture: describe the motion that should happen in it.")
    return " ".join(parts)


def clean_prompt(text: str, digital_world: bool) -> str:
    """The LLM's reply as a prompt: one line, no quotes, within the length limit, the style cue kept."""
    text = " ".join(str(text).strip().strip('"').split())[:MAX_PROMPT_CHARS]
    if text and digital_world and DIGITAL_WORLD_STYLE not in text:
        text = f"{text.rstrip('.')}, {DIGITAL_WORLD_STYLE}"
    return text


class PromptAgent(BaseChatAgent):
    def __init__(self, model_client: Any, runner: StepRunner) -> None:
        super().__init__(NAME, description=DESCRIPTION)
        self._client = model_client
        self._runner = runner

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def write(self, words: str, digital_world: bool, motion: bool) -> str:
        """One LLM call: the visual prompt for ``words`` ("" when the reply is empty)."""
        result = await self._client.create(
            [SystemMessage(content=system_message(digital_world, motion)), UserMessage(content=words, source="user")],
            extra_create_args={"max_tokens": MAX_TOKENS},
        )
        return clean_prompt(result.content if isinstance(result.content, str) else "", digital_world)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        step = self._runner.ready_step_for(self.name)
        if step is None:
            return Response(chat_message=TextMessage(content="(no prompt to write)", source=self.name))
        text, _failed = await self._runner.run_agent_step(self.name, step, self._runner.call_for(step))
        return Response(chat_message=TextMessage(content=text, source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass


def build_prompt_agent(model_client: Any, runner: StepRunner) -> PromptAgent:
    """Build the prompt agent for one run (``model_client``: its own LLM client)."""
    return PromptAgent(model_client, runner)
