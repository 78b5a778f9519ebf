"""A specialist agent of the team: an AutoGen chat agent that carries out its pending plan step with its tools.

When the planner's selection gives it the turn, the agent takes its ready step, makes the step's tool call (its
arguments are the checked plan's, references resolved to artifact ids), which is checked against the pending step
before it runs, and answers with one line naming the new artifacts -- never pixels. The call and its result also go
into the chat as AutoGen's tool-call events. A tool error becomes the step's failure, which the planner reviews.
"""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseChatMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import FunctionExecutionResult


class StepRunner(typing.Protocol):
    """What an agent needs from the session: its ready step, and a way to run it (returns the chat line, and
    whether it failed)."""

    def ready_step_for(self, agent: str) -> Any: ...
    async def run_agent_step(self, agent: str, step: Any, call: dict[str, Any]) -> tuple[str, bool]: ...
    def call_for(self, step: Any) -> dict[str, Any]: ...


class StepAgent(BaseChatAgent):
    """A role (image, edit, video, connection agent) that calls its tools for the plan's steps."""

    def __init__(self, name: str, description: str, tools: Sequence[str], runner: StepRunner) -> None:
        super().__init__(name, description=description)
        self.tools = tuple(tools)
        self._runner = runner

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        step = self._runner.ready_step_for(self.name)
        if step is None:
            return Response(chat_message=TextMessage(content="(no step of mine is ready)", source=self.name))
        call = self._runner.call_for(step)
        fc = FunctionCall(id=f"call_{uuid.uuid4().hex[:8]}", name=step.tool, arguments=json.dumps(call, default=str))
        text, failed = await self._runner.run_agent_step(self.name, step, call)
        result = FunctionExecutionResult(call_id=fc.id, content=text, name=step.tool, is_error=failed)
        return Response(
            chat_message=TextMessage(content=text, source=self.name),
            inner_messages=[
                ToolCallRequestEvent(content=[fc], source=self.name),
                ToolCallExecutionEvent(content=[result], source=self.name),
            ],
        )

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass
