"""Runs plan steps: the whole plan with ``--llm none``, and each agent's step inside the group chat.

A step is checked, its references resolved, and its content key looked up first: a step whose tool, arguments,
input artifacts, seed and profile are unchanged is reused (no model runs), so a revision re-runs only what changed.
With ``--llm none`` independent steps of different roles run side by side (a story's shot k+1 image while shot k
animates); seeds are fixed in the plan, so the frames are those of a serial run.

Example:
    >>> # PlanExecutor(ctx, transcript, state).run_all() runs every pending step; see Orchestrator.run
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmora.errors import OpenMoraError, ToolArgumentError, first_line
from openmora.group_chat.checker import check_call
from openmora.group_chat.plan import TOOLS, PlanStep
from openmora.group_chat.plan_state import PlanState, write_state
from openmora.group_chat.transcript import Transcript, record_tool_call
from openmora.quality.gate import GATED_TOOLS, GateSettings, Take, best_take, gate_rule, take_seed
from openmora.tools.context import ToolContext, ToolResult
from openmora.tools.enhance_prompt import enhance_prompt

logger = logging.getLogger(__name__)
STATE_FILE = "plan_state.json"
# A role's pipeline runs one call at a time; steps of these groups may overlap (they use different pipelines).
_LANES = {
    "enhance_prompt": "prompt",
    "text_to_image": "image",
    "edit_image": "image",
    "take_frame": "image",
    "image_to_video": "video",
    "extend_video": "video",
    "connect_clips": "connect",
    "join_clips": "connect",
}


@dataclass
class StepOutcome:
    step: PlanStep
    outputs: list[str]
    text: str  # the line the chat shows
    reused: bool = False
    seconds: float = 0.0
    takes: list[Take] = field(default_factory=list)


# The planner's decision on a step whose best take is under the gate: (step, takes so far, retakes so far) ->
# ("retake" | "accept", reason).
Judge = Callable[[PlanStep, list[Take], int], tuple[str, str]]


class PlanExecutor:
    """Executes plan steps and records them in the transcript and the plan state.

    Args:
        context: what else a step's output depends on (e.g. the LLM that writes prompts), part of its content key.
        gate: how many takes each step renders and the quality under which the planner is asked for another.
        judge: the planner's decision on a step under the gate (default: the rule of
            :func:`openmora.quality.gate.gate_rule`).
        remote_shots: an :class:`openmora.scale.RayShots`: :meth:`run_all` renders a story's shots on its actors.
        score_steps: score a single take as it finishes, for a planner LLM that reads the step's line. Takes that
            are compared or gated are always scored; otherwise the run's report scores each clip once, at the end,
            so a batch run's GPU never waits for the CPU's metrics between steps.
    """

    def __init__(
        self,
        ctx: ToolContext,
        transcript: Transcript,
        state: PlanState,
        context: dict[str, Any] | None = None,
        gate: GateSettings | None = None,
        judge: Judge | None = None,
        remote_shots: Any = None,
        score_steps: bool = True,
    ) -> None:
        self.ctx = ctx
        self.transcript = transcript
        self.state = state
        self.context = {"profile": ctx.profile.name, **(context or {})}
        self.gate = gate or GateSettings()
        self.score_steps = score_steps
        self.scored: dict[str, Any] = {}  # artifact id -> (metrics, features): the run's report reuses them
        self.judge: Judge = judge or (lambda _step, takes, retakes: gate_rule(takes, self.gate, retakes))
        self._lock = threading.RLock()  # steps of different lanes finish in worker threads
        self.remote_shots = remote_shots  # openmora.scale.RayShots: a story's shots render on Ray actors

    @property
    def state_path(self) -> Path:
        return self.ctx.store.run_dir / STATE_FILE

    def save_state(self) -> None:
        """Save the plan state as it is now, once every artifact it names is on disk (the store writes files in the
        background): an interruption never leaves a state that names a missing file, nor re-runs a step whose files
        were written."""
        text, path = self.state.to_json(), self.state_path
        self.ctx.store.on_written(lambda: write_state(path, text))

    def _digest(self, artifact_id: str) -> str:
        return self.ctx.store.digest(artifact_id)

    def step_key(self, step: PlanStep, resolved: dict[str, Any]) -> str:
        context = dict(self.context)
        if step.tool != "enhance_prompt":
            context.pop("prompt_writer", None)  # only prompts depend on who writes them
        takes = self.gate.takes_for(step.tool, step.best_of)
        if takes > 1 or (step.tool in GATED_TOOLS and self.gate.min_quality is not None):
            # the kept take depends on how many were rendered and on the gate (keys of single takes stay as they were)
            context["takes"] = [takes, self.gate.min_quality, self.gate.max_retakes]
        return self.state.key(step, resolved, self._digest, context)

    def reuse(self, step: PlanStep, by: str = "") -> StepOutcome | None:
        """Complete ``step`` from the step cache when a step with the same content key ran before (its outputs
        still in the run); None when it must run."""
        by = by or step.agent
        with self._lock:
            resolved = self.state.resolve(step)
            key = self.step_key(step, resolved)
            hit = self.state.cached(key)
            if hit is None or not all(self.ctx.store.has(i) for i in hit["outputs"]):
                return None
            self.state.record_done(step, hit["outputs"], hit.get("text", ""), by=by, key=key, reused=True)
            self.save_state()
        shown = hit.get("text") or ", ".join(hit["outputs"])
        reused = ToolResult(outputs=list(hit["outputs"]), text=f"reused {shown} (inputs unchanged)")
        record_tool_call(
            self.transcript, by, step.tool, resolved, result=reused, seconds=0.0, **_step_fields(step), reused=True
        )
        return StepOutcome(step, list(hit["outputs"]), f"{step.id} {step.tool}: {reused.text}", reused=True)

    def _record_cost(self, step: PlanStep, seconds: float) -> None:
        """This machine's measured seconds of a step (pipeline loading left out), for ``openmora plan``'s estimate.
        A figure that cannot be written is logged, never a failure of the run."""
        try:
            from openmora.estimates import StepCosts

            segments = int(step.args.get("segments", 1)) if step.tool == "extend_video" else 1
            with self._lock:
                StepCosts().record(self.ctx.profile.name, step.tool, max(0.0, seconds), segments=segments)
        except Exception as err:  # noqa: BLE001 - an estimate is a nicety; the run goes on
            logger.warning("could not record the cost of %s: %s", step.tool, first_line(err))

    def reuse_ready(self) -> list[StepOutcome]:
        """Complete every ready step the cache holds, and the ones that become ready through them."""
        done: list[StepOutcome] = []
        progress = True
        while progress:
            progress = False
            for step in self.state.ready():
                outcome = self.reuse(step)
                if outcome is not None:
                    done.append(outcome)
                    progress = True
        return done

    def run_step(
        self, step: PlanStep, by: str = "", call: dict[str, Any] | None = None, prompt_text: str | None = None
    ) -> StepOutcome:
        """Run one step (``by``: the agent, default the step's), reusing it when its content key is cached.

        ``call``: the arguments an agent's call gave, checked against the step before anything runs.
        ``prompt_text``: an enhance_prompt step's prompt as the prompt agent's LLM wrote it (default: the
        deterministic tool).
        """
        by = by or step.agent
        with self._lock:
            resolved = self.state.resolve(step)
        if call is not None:
            problem = check_call(step, step.tool, call, resolved)
            if problem:
                raise ToolArgumentError(problem)
        outcome = self.reuse(step, by)
        if outcome is not None:
            return outcome
        key = self.step_key(step, resolved)
        loads_before = self.ctx.loader.load_seconds
        start = time.perf_counter()
        args = dict(resolved)
        takes: list[Take] = []
        try:
            if step.tool == "enhance_prompt":
                text = prompt_text if prompt_text else enhance_prompt(**args)
                outputs: list[str] = []
                result: Any = text
            else:
                result, takes = self._render(step, args, by)
                outputs, text = list(result.outputs), ""
        except BaseException as err:
            seconds = time.perf_counter() - start
            record_tool_call(self.transcript, by, step.tool, args, error=err, seconds=seconds, **_step_fields(step))
            if isinstance(err, OpenMoraError):
                with self._lock:
                    self.state.record_failed(step, first_line(err))
                    self.save_state()
            raise
        seconds = time.perf_counter() - start
        self._record_cost(step, seconds - (self.ctx.loader.load_seconds - loads_before))
        # Plan state first (saved once the outputs are on disk): an interruption after that never re-runs the step.
        kept = next((t for t in takes if t.kept), None)
        with self._lock:
            self.state.record_done(step, outputs, text, by=by, key=key, takes=[t.to_dict() for t in takes])
            self.save_state()
        if len(takes) > 1 and kept is not None:
            self.ctx.store.update_meta(
                takes={**self.ctx.store.meta.get("takes", {}), outputs[-1]: [t.to_dict() for t in takes]}
            )
        fields = _step_fields(step)
        if kept is not None and kept.scores:
            fields["scores"] = kept.scores
        if len(takes) > 1:
            fields["takes"] = [t.to_dict() for t in takes]
        record_tool_call(
            self.transcript,
            by,
            step.tool,
            args | {"seed": kept.seed} if kept else args,
            result=result,
            seconds=seconds,
            **fields,
        )
        line = f"prompt: {text}" if step.tool == "enhance_prompt" else result.text
        if kept is not None and kept.scores:
            line += (
                f" (quality {kept.overall:.2f}" + (f", the best of {len(takes)} takes" if len(takes) > 1 else "") + ")"
            )
        return StepOutcome(step, outputs, f"{step.id} {step.tool}: {line}", seconds=seconds, takes=takes)

    # ----- takes and the quality gate ------------------------------------------------------------------------
    def _render(self, step: PlanStep, args: dict[str, Any], by: str) -> tuple[ToolResult, list[Take]]:
        """Run a step's tool: once, or as best-of-N takes with seeds ``take_seed(seed, k)``, each scored, the best
        kept; a best take under the gate goes to the planner (``judge``), which may ask for another."""
        fn = TOOLS[step.tool].fn
        if step.tool not in GATED_TOOLS or args.get("seed") is None:
            return fn(self.ctx, **args), []
        n = self.gate.takes_for(step.tool, step.best_of)
        if n == 1 and self.gate.min_quality is None and not self.score_steps:
            return fn(self.ctx, **args), []
        takes: list[Take] = []
        results: list[ToolResult] = []
        retakes = 0
        while True:
            for _ in range(n if not takes else 1):
                k = len(takes)
                seed = take_seed(args["seed"], k)
                result = fn(self.ctx, **{**args, "seed": seed})
                scores = self.score(result.outputs[-1])
                takes.append(Take(k, seed, list(result.outputs), scores.get("overall", 0.0), scores))
                results.append(result)
                if n > 1 or self.gate.min_quality is not None:  # takes the planner weighs
                    self.transcript.record(
                        "take",
                        agent=by,
                        tool=step.tool,
                        plan_step=step.id,
                        take=k,
                        seed=seed,
                        outputs=list(result.outputs),
                        scores=scores,
                        result=result.text,
                    )
            if self.gate.min_quality is None or max(t.overall for t in takes) >= self.gate.min_quality:
                break
            action, reason = self.judge(step, takes, retakes)
            self.transcript.record(
                "planner",
                agent="planner",
                decision="quality",
                candidates=["retake", "accept"],
                chosen=action,
                reason=reason,
                step_id=step.id,
                scores=[t.overall for t in takes],
                request=self.state.request,
            )
            if action != "retake" or retakes >= self.gate.max_retakes:
                break
            retakes += 1
        best = best_take(takes)
        return results[best.index], takes

    def score(self, artifact_id: str) -> dict[str, float]:
        """An artifact's quality summary (``overall`` and each metric's value), recorded on it in the manifest. A
        failure to score is logged and gives ``{}`` (the take then ranks last): scoring never fails a run."""
        from openmora.quality.score import score_frames, score_image, summary

        store = self.ctx.store
        try:
            art = store.get(artifact_id)
            if art.kind == "image":
                scored = score_image(store.image(artifact_id))
            else:
                fps = float(art.fps or self.ctx.profile.fps)
                scored = score_frames(store.frames(artifact_id), fps, art.joins, known=self.scored, key=artifact_id)
            values = summary(scored)
        except Exception as err:  # noqa: BLE001 - a metric's failure must not lose the render
            logger.warning("could not score %s: %s", artifact_id, first_line(err))
            return {}
        store.set_scores(artifact_id, values)
        return values

    def run_all(self, overlap: bool = True) -> str | None:
        """Run every pending step; steps of different lanes (prompt, image, video, connect) whose inputs exist run
        side by side when ``overlap``. Returns the final artifact id."""
        if self.remote_shots is not None:
            self.remote_shots.run(self)  # a story's shots on Ray actors first; transitions and the join below
        if not overlap:
            while ready := self.state.ready():
                self.run_step(ready[0])
            return self._final()
        running: dict[Future, PlanStep] = {}
        with ThreadPoolExecutor(4, "openmora-step") as pool:
            while True:
                busy = {_LANES[s.tool] for s in running.values()}
                started = {s.id for s in running.values()}
                with self._lock:
                    ready = self.state.ready()
                for step in ready:
                    lane = _LANES[step.tool]
                    if step.id not in started and lane not in busy:
                        running[pool.submit(self.run_step, step)] = step
                        busy.add(lane)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    running.pop(fut)
                    fut.result()  # a failure stops the run (the other lanes finish their step first)
        return self._final()

    def _final(self) -> str | None:
        if self.state.pending():
            left = ", ".join(f"{s.id} {s.tool}" for s in self.state.pending())
            raise OpenMoraError(f"the plan could not finish: {left} left")
        return self.state.final_id


def _step_fields(step: PlanStep) -> dict[str, Any]:
    """What a tool call's transcript line says about its plan step."""
    return {"plan_step": step.id} | ({"shot": step.shot} if step.shot is not None else {})
