"""The group chat: role-playing agents in an AutoGen ``SelectorGroupChat`` managed by the planner.

The plan (checked before the chat starts) says which steps are ready; AutoGen's own selection then chooses the next
speaker among the agents whose steps are ready (``candidate_func`` narrows the candidates; with one candidate AutoGen
asks no model, with several the planner LLM picks, forced to a candidate's name on the embedded model). The planner
is a participant too: it opens each request by showing the plan and its estimate, and speaks again when a step
fails, to retry it with another seed, re-plan, or finish. Steps whose content key is unchanged are reused without a
turn. The chat ends when the plan's final video exists, at the turn limit, or when the planner finishes.

Example:
    >>> # see Orchestrator.run(..., llm="local") and Orchestrator.chat_session() for the public entry points
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response, TaskResult, TerminatedException, TerminationCondition
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StopMessage, TextMessage
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage

from openmora.agents.connection_agent import build_connection_agent
from openmora.agents.edit_agent import build_edit_agent
from openmora.agents.image_agent import build_image_agent
from openmora.agents.prompt_agent import PromptAgent, build_prompt_agent
from openmora.agents.video_agent import build_video_agent
from openmora.errors import OpenMoraError, first_line
from openmora.events import EventSink
from openmora.fileio import atomic_write_json
from openmora.group_chat.checker import check_plan
from openmora.group_chat.executor import PlanExecutor
from openmora.group_chat.plan import PlanStep
from openmora.group_chat.plan_state import PlanState
from openmora.group_chat.planner import Planner
from openmora.group_chat.transcript import Transcript
from openmora.llm.clients import supports_choices
from openmora.quality.gate import Take
from openmora.tools.context import ToolContext

logger = logging.getLogger(__name__)
PLANNER = "planner"
DEFAULT_MAX_TURNS = 0  # 0: enough for the plan (two turns per step and a few for the planner)
TEAM_FILE = "team_state.json"
SELECTOR_ATTEMPTS = 2  # AutoGen asks the planner again once when its reply names no candidate
SELECTOR_PROMPT = """You are the planner of a video-making team. The agents:
{roles}

The conversation so far:
{history}

Several steps of the plan are ready. Which agent should act next? Reply with only its name, one of: {participants}."""


class RunIncomplete(RuntimeError):
    """The chat stopped (turn limit, cancellation, the planner finished) before the plan's final video existed."""


class PlannerAgent(BaseChatAgent):
    """The planner in the chat: shows the plan, reviews failed steps (retry, re-plan or finish)."""

    def __init__(self, session: GroupChatSession) -> None:
        super().__init__(PLANNER, description="Plans the work, shows the plan and decides after a failed step.")
        self._session = session

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        text = await self._session.planner_turn()
        return Response(chat_message=TextMessage(content=text, source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass


class PlanDone(TerminationCondition):
    """Stops the chat when the plan's final video exists, the planner finished, our own code failed, or the turn
    limit of the request is reached."""

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
        s.observe(messages)
        s.turns += sum(1 for m in messages if isinstance(m, BaseChatMessage) and m.source != "user")
        reason = None
        if s.fatal is not None:
            reason = f"stopped: internal error: {first_line(s.fatal)}"
        elif s.state.complete and s.announced:
            reason = f"done: the final video is {s.state.final_id}"
        elif s.finished is not None:
            reason = f"stopped by the planner: {s.finished}"
        elif s.turns >= s.turn_limit():
            reason = f"stopped: the turn limit ({s.turn_limit()}) was reached"
        if reason is None:
            return None
        self._terminated = True
        s.stop_reason = reason
        return StopMessage(content=reason, source=PLANNER)

    async def reset(self) -> None:
        self._terminated = False


class _SelectionClient:
    """The planner's model client as AutoGen's speaker selection uses it: the reply is forced to a candidate's name
    where the client can do that (the embedded model), and every selection is recorded in the transcript."""

    def __init__(self, inner: Any, session: GroupChatSession) -> None:
        self.inner = inner
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, messages: Sequence[Any], **kwargs: Any) -> Any:
        s = self._session
        candidates = list(s.current_candidates)
        extra = dict(kwargs.pop("extra_create_args", None) or {})
        if supports_choices(self.inner) and candidates:
            extra["choices"] = candidates
        start = time.perf_counter()
        result = await self.inner.create(messages, extra_create_args=extra, **kwargs)
        raw = result.content if isinstance(result.content, str) else str(result.content)
        found = _mentioned(raw, candidates)
        # AutoGen accepts any participant's name (not only a candidate's) and, after its last attempt, keeps the
        # previous speaker (often one with no ready step): the reply it reads names one candidate, or no one (it asks
        # again), or after the last attempt the first candidate (the earliest ready step).
        last_attempt = 1 + sum(isinstance(m, AssistantMessage) for m in messages) >= SELECTOR_ATTEMPTS
        chosen = found[0] if len(found) == 1 else (candidates[0] if last_attempt and candidates else None)
        s.transcript.record(
            "planner",
            agent=PLANNER,
            seconds=time.perf_counter() - start,
            decision="next_speaker",
            candidates=candidates,
            raw_choice=raw,
            valid=len(found) == 1,
            fallback_used=len(found) != 1,
            chosen=chosen,
            request=s.state.request,
        )
        return result.model_copy(update={"content": chosen or ""}) if candidates else result

    async def create_stream(self, messages: Sequence[Any], **kwargs: Any) -> AsyncIterator[Any]:
        yield await self.create(messages, **kwargs)


class GroupChatSession:
    """One run's team: the planner, the agents, and the plan state they share.

    Args:
        ctx: the run's tool context (store, loader, profile, seed).
        transcript: where every message, tool call and planner decision is recorded.
        client: ``client(role)`` returns the AutoGen model client for the planner (``"planner"``) or an agent.
        state: the plan state (adopted plan; new, or loaded for resume).
        planner: plans, revisions and reviews (its client is the planner's).
        max_turns: the turn limit of one request (0: two per step plus a few).
        executor: runs the steps (its context keys prompts by the LLM that writes them); default: a new one.
    """

    def __init__(
        self,
        ctx: ToolContext,
        transcript: Transcript,
        client: Callable[[str], Any],
        state: PlanState,
        planner: Planner,
        max_turns: int = DEFAULT_MAX_TURNS,
        on_event: EventSink | None = None,
        executor: PlanExecutor | None = None,
        describe_plan: Callable[[], str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.transcript = transcript
        self.client = client
        self.state = state
        self.planner = planner
        self.max_turns = max_turns
        self.on_event = on_event
        self.describe_plan = describe_plan or (lambda: state.plan.describe())
        self.fatal: BaseException | None = None
        self.finished: str | None = None
        self.stop_reason = ""
        self.announced = False
        self.turns = 0
        self.current_candidates: list[str] = []
        self._seen: set[str] = set()
        self.executor = executor or PlanExecutor(ctx, transcript, state)
        self.team = self._build_team()

    # ----- building -----------------------------------------------------------------------------------------
    def _build_team(self) -> SelectorGroupChat:
        self.prompt_agent: PromptAgent = build_prompt_agent(self.client("prompt_agent"), self)
        participants = [
            PlannerAgent(self),
            self.prompt_agent,
            build_image_agent(self),
            build_edit_agent(self),
            build_video_agent(self),
            build_connection_agent(self),
        ]
        return SelectorGroupChat(
            participants,
            model_client=_SelectionClient(self.client(PLANNER), self),
            termination_condition=PlanDone(self),
            candidate_func=self._candidates,
            selector_prompt=SELECTOR_PROMPT,
            max_selector_attempts=SELECTOR_ATTEMPTS,
            allow_repeated_speaker=True,
            emit_team_events=False,
        )

    def turn_limit(self) -> int:
        return self.max_turns or 2 * len(self.state.plan.steps) + 6

    # ----- selection ----------------------------------------------------------------------------------------
    def _candidates(self, thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> list[str]:
        """AutoGen's candidates for the next turn: the planner when it has something to say, else the agents whose
        steps are ready (steps the cache holds are completed first, without a turn)."""
        self.observe(thread)
        if self.fatal is None and self.announced:
            try:
                self.executor.reuse_ready()
            except Exception as err:  # noqa: BLE001 - our bug: stop the chat and raise it after
                self.fatal = err
        state = self.state
        if self.fatal is not None or not self.announced or state.failed() or not state.ready():
            names = [PLANNER]
        else:
            names = state.candidates()
        self.current_candidates = names
        if len(names) == 1:
            step = state.ready_step_for(names[0]) if names[0] != PLANNER else None
            self.transcript.record(
                "planner",
                agent=PLANNER,
                decision="next_speaker",
                candidates=names,
                raw_choice=None,
                valid=True,
                fallback_used=False,
                chosen=names[0],
                reason=f"the only ready step: {step.id} {step.tool}" if step else "the planner's turn",
                request=state.request,
            )
        return names

    # ----- observing the chat -------------------------------------------------------------------------------
    def observe(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> None:
        """Record every new chat message of the agents and the planner in the transcript."""
        for msg in messages:
            if not isinstance(msg, BaseChatMessage) or msg.id in self._seen:
                continue
            self._seen.add(msg.id)
            if msg.source == "user" or isinstance(msg, StopMessage):
                continue
            self.transcript.record("message", agent=msg.source, text=msg.to_text()[:2000], request=self.state.request)

    # ----- the agents' steps (StepRunner) -------------------------------------------------------------------
    def ready_step_for(self, agent: str) -> PlanStep | None:
        return self.state.ready_step_for(agent)

    def call_for(self, step: PlanStep) -> dict[str, Any]:
        """The tool call an agent makes for its step: the step's arguments, references resolved."""
        return self.state.resolve(step)

    async def run_agent_step(self, agent: str, step: PlanStep, call: dict[str, Any]) -> tuple[str, bool]:
        try:
            text = None
            if step.tool == "enhance_prompt":
                reused = self.executor.reuse(step, agent)
                if reused is not None:
                    return reused.text, False
                text = await self._write_prompt(step, call)
            outcome = await asyncio.to_thread(self.executor.run_step, step, agent, call, text)
        except OpenMoraError as err:
            return f"{step.id} {step.tool} failed: {first_line(err)}", True
        except BaseException as err:
            self.fatal = err
            return f"{step.id} {step.tool} failed: internal error: {first_line(err)}", True
        return outcome.text, False

    async def _write_prompt(self, step: PlanStep, call: dict[str, Any]) -> str | None:
        """The prompt agent's LLM writes the step's prompt (None: the deterministic tool, for an empty reply)."""
        motion = any(
            s.tool == "image_to_video" and s.args.get("prompt") == f"${step.id}" for s in self.state.plan.steps
        )
        motion = motion and not any(
            s.tool == "text_to_image" and s.args.get("prompt") == f"${step.id}" for s in self.state.plan.steps
        )
        text = await self.prompt_agent.write(str(call.get("prompt", "")), bool(call.get("digital_world")), motion)
        return text or None

    # ----- the planner's turns ------------------------------------------------------------------------------
    async def planner_turn(self) -> str:
        state = self.state
        if self.fatal is not None:
            return f"stopping: internal error: {first_line(self.fatal)}"
        if not self.announced:
            self.announced = True
            reused = self.executor.reuse_ready()
            line = self.describe_plan()
            if reused:
                line += f"\nreused {len(reused)} step(s) whose inputs did not change: " + ", ".join(
                    o.step.id for o in reused
                )
            return line
        failed = state.failed()
        if failed:
            step = failed[0]
            run = state.run_of(step.id)
            action, reason = await self.planner.review(step, run.error, run.attempts)
            self.transcript.record(
                "planner",
                agent=PLANNER,
                decision="review",
                candidates=["retry", "replan", "finish"],
                raw_choice=None,
                valid=True,
                fallback_used=False,
                chosen=action,
                reason=reason,
                step_id=step.id,
                request=state.request,
            )
            if action == "retry":
                state.retry(step)
                self.executor.save_state()
                return f"retry {step.id} {step.tool} with another seed ({reason})"
            if action == "replan":
                feedback = f"{state.prompt} (the previous plan failed at {step.id} {step.tool}: {run.error})"
                inputs = state.inputs
                plan = await self.planner.plan(
                    feedback, has_image="$image" in inputs, n_videos=sum(k.startswith("$video") for k in inputs)
                )
                problems = check_plan(
                    plan, has_image="$image" in inputs, n_videos=sum(k.startswith("$video") for k in inputs)
                )
                if problems:
                    self.finished = "the new plan cannot run: " + "; ".join(problems)
                    return self.finished
                state.adopt(plan)
                self.executor.save_state()
                return "new plan:\n" + self.describe_plan()
            self.finished = f"{step.id} {step.tool} failed: {run.error} ({reason})"
            return f"finish: {self.finished}"
        if state.complete:
            return f"done: the final video is {state.final_id}"
        return "waiting for the next step"

    # ----- running ------------------------------------------------------------------------------------------
    async def run_stream(self, task: str | None) -> AsyncIterator[BaseAgentEvent | BaseChatMessage | TaskResult]:
        """Run the team on ``task`` (``None`` continues the current thread, e.g. after resume)."""
        self.announced, self.finished, self.turns, self.stop_reason = False, None, 0, ""
        loop = asyncio.get_running_loop()

        def judge(step: PlanStep, takes: list[Take], retakes: int) -> tuple[str, str]:
            # the executor runs in a worker thread; the planner's LLM call belongs to the chat's event loop
            future = asyncio.run_coroutine_threadsafe(
                self.planner.review_takes(step, takes, self.executor.gate, retakes), loop
            )
            return future.result()

        self.executor.judge = judge
        async for item in self.team.run_stream(task=task):
            if isinstance(item, BaseChatMessage | BaseAgentEvent) and self.on_event:
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
            left = ", ".join(f"{s.id} {s.tool}" for s in self.state.pending())
            raise RunIncomplete(f"the chat stopped before the final video existed ({self.stop_reason}); left: {left}")
        return result  # type: ignore[return-value]

    # ----- persistence --------------------------------------------------------------------------------------
    async def save(self) -> None:
        """Save the plan state and the team's conversation (both atomically) for resume."""
        self.executor.save_state()
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
