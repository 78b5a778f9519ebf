"""The group chat: role-playing agents in an AutoGen ``SelectorGroupChat`` whose next speaker the planner LLM picks.

The task plan (:mod:`openmora.group_chat.plan_state`) narrows the candidates; the planner LLM chooses among them. An invalid
or unparsable choice is asked again once, then the plan decides (``fallback_used`` in the transcript). An agent whose
turn did not complete its step gets one retry; after that the ``plan_runner`` agent runs the step with the plan's own
arguments, in the chat for everyone to see. The chat ends when the plan's final video exists, or at the turn limit.

Example:
    >>> # see Orchestrator.run(..., llm="local") and Orchestrator.chat_session() for the public entry points
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response, TaskResult, TerminatedException, TerminationCondition
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    StopMessage,
    TextMessage,
    ToolCallSummaryMessage,
)
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import CancellationToken
from autogen_core.models import UserMessage

from openmora.agents.binding import bind_tool
from openmora.agents.connection_agent import build_connection_agent
from openmora.agents.edit_agent import build_edit_agent
from openmora.agents.image_agent import build_image_agent
from openmora.agents.prompt_agent import build_prompt_agent
from openmora.agents.video_agent import build_video_agent
from openmora.errors import OpenMoraError, first_line
from openmora.events import EventSink
from openmora.fileio import atomic_write_json
from openmora.group_chat.executor import PlanExecutor
from openmora.group_chat.plan_state import INTENTS, PlanState, Step, guess_intent
from openmora.group_chat.transcript import Transcript, record_tool_call
from openmora.llm.clients import ExtraArgsClient, supports_choices
from openmora.tools.context import ToolContext, ToolResult

logger = logging.getLogger(__name__)
PLAN_RUNNER = "plan_runner"
DEFAULT_MAX_TURNS = 24
PROMPT_MAX_TOKENS = 120
TEAM_FILE = "team_state.json"


class RunIncomplete(RuntimeError):
    """The chat stopped (turn limit, cancellation) before the plan's final video existed."""


class PlanRunnerAgent(BaseChatAgent):
    """The fallback: runs the plan's next step with the plan's own arguments when an agent could not."""

    def __init__(self, session: GroupChatSession) -> None:
        super().__init__(PLAN_RUNNER, description="Runs the plan's next step itself when an agent failed twice.")
        self._session = session

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        text = await self._session.run_step_directly()
        return Response(chat_message=TextMessage(content=text, source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass


class PlanDone(TerminationCondition):
    """Stops the chat when the plan's final video exists (or our own code failed)."""

    def __init__(self, session: GroupChatSession) -> None:
        self._session = session
        self._terminated = False

    @property
    def terminated(self) -> bool:
        return self._terminated

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        if self._terminated:
            raise TerminatedException("already terminated")
        s = self._session
        if s.fatal is not None:
            self._terminated = True
            return StopMessage(content=f"stopped: internal error: {s.fatal}", source="planner")
        s.observe(messages)
        if s.state.complete:
            self._terminated = True
            return StopMessage(content=f"done: the final video is {s.state.final_id}", source="planner")
        return None

    async def reset(self) -> None:
        self._terminated = False


class GroupChatSession:
    """One run's team: agents, planner, fallback, and the plan state they share.

    Args:
        ctx: the run's tool context (store, loader, profile, seed).
        transcript: where every message, tool call and planner decision is recorded.
        client: ``client(role)`` returns the AutoGen model client for the planner (``"planner"``) or an agent (its name).
        state: the plan state (new, or loaded for resume).
        max_turns: the turn limit of one request.
    """

    def __init__(
        self,
        ctx: ToolContext,
        transcript: Transcript,
        client: Callable[[str], Any],
        state: PlanState,
        max_turns: int = DEFAULT_MAX_TURNS,
        on_event: EventSink | None = None,
    ) -> None:
        self.ctx = ctx
        self.transcript = transcript
        self.client = client
        self.state = state
        self.max_turns = max_turns
        self.on_event = on_event
        self.fatal: BaseException | None = None
        self._seen: set[str] = set()
        self._selected_for: Step | None = None
        self.executor = PlanExecutor(ctx, transcript, state, as_fallback=True)
        self.team = self._build_team()

    # ----- building -----------------------------------------------------------------------------------------
    def _bind(self, fn: Callable[..., ToolResult], agent: str) -> Any:
        return bind_tool(fn, self.ctx, agent, self)

    def _build_team(self) -> SelectorGroupChat:
        s, store = self.state, self.ctx.store
        image_note = store.get(s.image_id).summary() if s.image_id and s.task == "image-to-video" else ""
        video_hint = (
            f"This run wants {s.segments} segment(s): image_to_video once, then extend_video with segments={s.segments - 1}."
            if s.segments > 1
            else "This run wants one segment: call image_to_video once."
        )
        edit_hint = f"Edit {s.image_id}." if s.image_id else ""
        connect_hint = f"Connect {s.clip_ids[0]} then {s.clip_ids[1]}." if len(s.clip_ids) == 2 else ""
        participants = [
            # A visual prompt is at most ~60 words: cap the reply so a rambling small model cannot take minutes.
            build_prompt_agent(
                ExtraArgsClient(self.client("prompt_agent"), max_tokens=PROMPT_MAX_TOKENS), s.task, image_note
            ),
            build_image_agent(self.client("image_agent"), self._bind),
            build_edit_agent(self.client("edit_agent"), self._bind, edit_hint),
            build_video_agent(self.client("video_agent"), self._bind, video_hint),
            build_connection_agent(self.client("connection_agent"), self._bind, connect_hint),
            PlanRunnerAgent(self),
        ]
        termination = PlanDone(self) | MaxMessageTermination(self.max_turns)
        return SelectorGroupChat(
            participants,
            model_client=self.client("planner"),
            termination_condition=termination,
            selector_func=self._select,
            allow_repeated_speaker=True,
            emit_team_events=False,
        )

    # ----- observing the chat -------------------------------------------------------------------------------
    def observe(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> None:
        """Read new chat messages: the prompt agent's text is the prompt; record every message in the transcript."""
        for msg in messages:
            if not isinstance(msg, BaseChatMessage) or msg.id in self._seen:
                continue
            self._seen.add(msg.id)
            text = msg.to_text()
            if isinstance(msg, TextMessage) and msg.source == "prompt_agent":
                if self.state.record_prompt(text, digital_world=self.state.task == "digital-world"):
                    self._save_state()
            if msg.source not in ("user", PLAN_RUNNER) and not isinstance(msg, ToolCallSummaryMessage | StopMessage):
                self.transcript.record("message", agent=msg.source, text=text[:2000])
            elif isinstance(msg, ToolCallSummaryMessage) and "Error" in text:
                self.transcript.record("message", agent=msg.source, text=text[:2000], error=True)

    # ----- tools (ToolObserver) ---------------------------------------------------------------------------
    def tool_succeeded(self, agent: str, tool: str, result: ToolResult, arguments: dict, seconds: float) -> None:
        step = self.state.record_tool(agent, tool, result.outputs)
        self._save_state()
        record_tool_call(
            self.transcript, agent, tool, arguments, result=result, seconds=seconds, plan_step=step is not None
        )

    def tool_failed(self, agent: str, tool: str, error: BaseException, arguments: dict, seconds: float) -> None:
        record_tool_call(self.transcript, agent, tool, arguments, error=error, seconds=seconds)
        if not isinstance(error, OpenMoraError):
            self.fatal = error

    # ----- the planner --------------------------------------------------------------------------------------
    async def _ask(self, question: str, choices: list[str]) -> str:
        planner = self.client("planner")
        extra = {"choices": choices} if supports_choices(planner) else {}
        content: Any = question
        thumb = self._thumbnail() if planner.model_info.get("vision") else None
        if thumb is not None:
            # A vision-capable planner sees the newest picture; only this query holds pixels, never the chat state.
            content = [question + "\nThe newest artifact is shown below.", thumb]
        result = await planner.create([UserMessage(content=content, source="user")], extra_create_args=extra)
        return result.content if isinstance(result.content, str) else json.dumps(str(result.content))

    def _thumbnail(self, size: int = 256) -> Any:
        """The newest image, or the newest clip's last frame, as a small AutoGen image (``None`` if there is none)."""
        from autogen_core import Image as AGImage
        from PIL import Image

        arts = self.ctx.store.artifacts()
        if not arts:
            return None
        art = arts[-1]
        pixels = self.ctx.store.image(art.id) if art.kind == "image" else self.ctx.store.frames(art.id)[-1]
        picture = Image.fromarray(pixels)
        picture.thumbnail((size, size))
        return AGImage.from_pil(picture)

    def _history(self, limit: int = 8) -> str:
        events = [
            e
            for e in Transcript.read(self.transcript.path)
            if e["type"] in ("message", "tool_call", "input")
            and e.get("request", self.state.request) == self.state.request
        ]
        lines = []
        for e in events[-limit:]:
            if e["type"] == "tool_call":
                lines.append(f"{e['agent']}: {e['tool']} -> {e.get('result') or e.get('error')}")
            else:
                lines.append(f"{e['agent']}: {e.get('text') or e.get('result', '')}"[:300])
        return "\n".join(lines) or "(nothing yet)"

    async def _choose(self, question: str, candidates: list[str], default: str, kind: str) -> str:
        """Ask the LLM to pick one of ``candidates``; once more if invalid; then ``default`` (the plan)."""
        raw_choices: list[str] = []
        start = time.perf_counter()
        chosen = None
        for _attempt in range(2):
            raw = await self._ask(
                question if not raw_choices else f"{question}\nReply with exactly one of: {', '.join(candidates)}.",
                candidates,
            )
            raw_choices.append(raw)
            found = _mentioned(raw, candidates)
            if len(found) == 1:
                chosen = found[0]
                break
        fallback = chosen is None
        self.transcript.record(
            "planner",
            agent="planner",
            seconds=time.perf_counter() - start,
            decision=kind,
            candidates=candidates,
            raw_choice=raw_choices[0],
            retry_choice=raw_choices[1] if len(raw_choices) > 1 else None,
            valid=not fallback,
            first_choice_valid=len(raw_choices) == 1 and not fallback,
            fallback_used=fallback,
            chosen=chosen or default,
            request=self.state.request,
        )
        return chosen or default

    def _record_plan_decision(self, decision: str, step: Step, chosen: str, reason: str) -> None:
        """A turn the plan decided without asking the LLM (a retry, or the fallback to plan_runner)."""
        self.transcript.record(
            "planner",
            agent="planner",
            decision=decision,
            candidates=[step.agent],
            raw_choice=None,
            valid=decision != "fallback",
            fallback_used=decision == "fallback",
            chosen=chosen,
            reason=reason,
            request=self.state.request,
        )

    async def _select(self, thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
        self.observe(thread)
        state = self.state
        step = state.next_step()
        if step is None:  # the termination condition stops the chat; pick anyone harmless meanwhile
            return PLAN_RUNNER
        previous = self._selected_for
        if previous is not None and previous.status == "pending" and previous is step:
            # The agent's turn ended without finishing its step.
            if step.attempts >= 2:
                self._record_plan_decision(
                    "fallback",
                    step,
                    PLAN_RUNNER,
                    f"{step.agent} did not complete {step.tool} in {step.attempts} turns; the plan runs it",
                )
                self._selected_for = step
                return PLAN_RUNNER
            self._record_plan_decision(
                "retry", step, step.agent, f"{step.agent} did not complete {step.tool}; one retry"
            )
            step.attempts += 1
            self._selected_for = step
            return step.agent
        candidates = state.candidates()
        if len(candidates) == 1:
            chosen = candidates[0]
            self.transcript.record(
                "planner",
                agent="planner",
                decision="next_speaker",
                candidates=candidates,
                raw_choice=None,
                valid=True,
                fallback_used=False,
                chosen=chosen,
                reason="the plan allows one agent here",
                request=state.request,
            )
        else:
            question = (
                "You are the planner of a video-making team. Agents:\n"
                + "\n".join(f"- {a.name}: {a.description}" for a in self._participants() if a.name in candidates)
                + f"\nTask: {state.task}. Request: {state.prompt or '(none)'}.\nConversation so far:\n{self._history()}\n"
                + f"Which agent should act next? Reply with only its name, one of: {', '.join(candidates)}."
            )
            chosen = await self._choose(question, candidates, state.expected() or candidates[0], "next_speaker")
        picked = state.next_step()
        for s in state.pending():
            if s.agent == chosen:
                picked = s
                break
        picked.attempts += 1
        self._selected_for = picked
        return chosen

    def _participants(self) -> list[Any]:
        return list(self.team._participants)  # noqa: SLF001 - names and descriptions for the planner prompt

    async def choose_intent(self, text: str) -> str:
        """Classify a revision with the planner LLM (keyword reading when there is no LLM or it answers badly)."""
        possible = self.state.intents()
        default = guess_intent(text, possible)
        if len(possible) == 1:
            return possible[0]
        question = (
            "You are the planner of a video-making team. The user asked to revise the video they have:\n"
            f'"{text}"\nOptions:\n'
            + "\n".join(f"- {k}: {INTENTS[k]}" for k in possible)
            + f"\nWhich option re-runs the least while doing what the user asked? Reply with only one of: {', '.join(possible)}."
        )
        return await self._choose(question, possible, default, "revision")

    # ----- the fallback -------------------------------------------------------------------------------------
    async def run_step_directly(self) -> str:
        step = self.state.next_step()
        if step is None:
            return "nothing left to do"
        try:
            text = await self.executor.arun_step(step)
        except BaseException as err:
            if not isinstance(err, OpenMoraError):
                self.fatal = err
            return f"(plan fallback for {step.agent}) {step.tool} failed: {first_line(err)}"
        return f"(plan fallback for {step.agent}) {text}"

    # ----- running ------------------------------------------------------------------------------------------
    async def run_stream(self, task: str | None) -> AsyncIterator[BaseAgentEvent | BaseChatMessage | TaskResult]:
        """Run the team on ``task`` (``None`` continues the current thread, e.g. after resume)."""
        self._selected_for = None
        async for item in self.team.run_stream(task=task):
            if isinstance(item, BaseChatMessage | BaseAgentEvent):
                if self.on_event:
                    self.on_event({"type": "chat", "source": item.source, "text": item.to_text()[:500]})
            yield item
        if self.fatal is not None:
            raise self.fatal

    async def run(self, task: str | None) -> TaskResult:
        result: TaskResult | None = None
        async for item in self.run_stream(task):
            if isinstance(item, TaskResult):
                result = item
        self.observe(result.messages if result else [])
        await self.save()
        if not self.state.complete:
            raise RunIncomplete(
                f"the chat stopped before the final video existed ({result.stop_reason if result else 'no result'}); "
                f"left: {', '.join(s.tool for s in self.state.pending())}"
            )
        return result

    # ----- persistence --------------------------------------------------------------------------------------
    def _save_state(self) -> None:
        self.executor.save_state()

    async def save(self) -> None:
        """Save the plan state and the team's conversation (both atomically) for resume."""
        self._save_state()
        self.ctx.store.flush()  # the conversation names artifacts: their files first
        state = await self.team.save_state()
        atomic_write_json(self.ctx.store.run_dir / TEAM_FILE, state)

    async def load_team(self) -> bool:
        path = self.ctx.store.run_dir / TEAM_FILE
        if not path.is_file():
            return False
        await self.team.load_state(json.loads(path.read_text(encoding="utf-8")))
        return True


def _mentioned(text: str, names: list[str]) -> list[str]:
    found = []
    for name in names:
        pattern = r"(?<![\w])(" + re.escape(name) + "|" + re.escape(name.replace("_", " ")) + r")(?![\w])"
        if re.search(pattern, text or ""):
            found.append(name)
    return found
