"""Where a run stands against its plan: which steps are done, what they made, which are ready, what can be reused.

Every step that ran is remembered by a content key (its tool, its arguments with every input artifact replaced by
that artifact's sha256, its seed, the profile): a revision's new plan reuses a step whose key is unchanged and
re-runs one whose inputs changed, and with it everything downstream. Saved as ``plan_state.json`` (atomically)
after every step, so a resumed run continues with the same seeds and the same frames.

Example:
    >>> from openmora.group_chat.plan import template_plan
    >>> s = PlanState.new("text-to-video", "a fox", template_plan("text-to-video", "a fox", segments=2), seed=0)
    >>> [step.id for step in s.ready()]
    ['s1']
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from openmora.fileio import atomic_write_text
from openmora.group_chat.plan import REF, TOOLS, Plan, PlanStep

StepStatus = Literal["pending", "done", "reused", "failed"]
FINISHED = ("done", "reused")


@dataclass
class StepRun:
    """A step's execution in the current request."""

    status: StepStatus = "pending"
    outputs: list[str] = field(default_factory=list)
    text: str = ""  # an enhance_prompt step's prompt
    by: str = ""  # the agent that ran it
    attempts: int = 0
    key: str = ""
    error: str = ""
    takes: list[dict[str, Any]] = field(default_factory=list)  # best-of-N: every take's seed, outputs, scores


@dataclass
class PlanState:
    task: str  # the template the request used, or "auto"
    prompt: str  # the first request's words
    plan: Plan
    runs: dict[str, StepRun] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # "$image" / "$video1" -> artifact id
    request: int = 0  # 0: the first request; n: the nth revision
    seed: int = 0  # the run's base seed
    seeds_used: int = 0  # seeds of the run's sequence handed out so far
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)  # content key -> {"outputs", "text"}
    final_id: str | None = None
    finals: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier requests' plans

    # ----- construction -------------------------------------------------------------------------------------
    @classmethod
    def new(cls, task: str, prompt: str, plan: Plan, seed: int = 0, inputs: dict[str, str] | None = None) -> PlanState:
        state = cls(task=task, prompt=prompt, plan=Plan([]), inputs=dict(inputs or {}), seed=seed)
        state.adopt(plan)
        return state

    def next_seeds(self, n: int) -> int:
        """Reserve ``n`` consecutive seeds of the run's sequence; returns the first."""
        first = self.seed + self.seeds_used
        self.seeds_used += n
        return first

    def adopt(self, plan: Plan) -> None:
        """Make ``plan`` the current request's plan: every step pending, seeds assigned to steps without one."""
        if self.plan.steps:
            self.history.append({"request": self.request, "plan": self.plan.to_dict()})
        plan.assign_seeds(self.next_seeds)
        self.plan = plan
        self.runs = {s.id: StepRun() for s in plan.steps}

    def begin_request(self, plan: Plan) -> None:
        """A revision: the next request, with its (edited) plan."""
        self.request += 1
        self.adopt(plan)

    # ----- reading ------------------------------------------------------------------------------------------
    def run_of(self, step_id: str) -> StepRun:
        return self.runs.setdefault(step_id, StepRun())

    def pending(self) -> list[PlanStep]:
        return [s for s in self.plan.steps if self.run_of(s.id).status not in FINISHED]

    def ready(self) -> list[PlanStep]:
        """Pending steps whose inputs exist (every step they refer to is done), in plan order."""
        return [
            s
            for s in self.pending()
            if self.run_of(s.id).status != "failed" and all(self.run_of(d).status in FINISHED for d in s.deps())
        ]

    def failed(self) -> list[PlanStep]:
        return [s for s in self.plan.steps if self.run_of(s.id).status == "failed"]

    @property
    def complete(self) -> bool:
        return bool(self.plan.steps) and not self.pending()

    def candidates(self) -> list[str]:
        """Agents that may act now: those with a ready step, in plan order."""
        names: list[str] = []
        for s in self.ready():
            if s.agent not in names:
                names.append(s.agent)
        return names

    def ready_step_for(self, agent: str) -> PlanStep | None:
        for s in self.ready():
            if s.agent == agent:
                return s
        return None

    def resolve(self, step: PlanStep) -> dict[str, Any]:
        """The step's arguments with references replaced: artifact ids for images and clips, words for prompts."""
        return {k: self._resolve_value(v) for k, v in step.args.items()}

    def _resolve_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._resolve_value(v) for v in value]
        if not isinstance(value, str) or not REF.match(value):
            return value
        name = value[1:]
        if name in ("image", "video1", "video2"):
            return self.inputs[value]
        run = self.run_of(name)
        if run.status not in FINISHED:
            raise KeyError(f"{value} is not done yet")
        spec = TOOLS[self.plan.step(name).tool]
        return run.text if spec.output == "text" else run.outputs[-1]

    def key(self, step: PlanStep, resolved: dict[str, Any], digest: Any, context: dict[str, Any]) -> str:
        """The step's content key: its tool and arguments with each artifact id replaced by ``digest(id)`` (the
        file's sha256), plus ``context`` (profile, LLM)."""
        spec = TOOLS[step.tool]
        shown: dict[str, Any] = {}
        for name, value in resolved.items():
            arg = spec.args.get(name)
            if arg is not None and arg.ref in ("image", "video"):
                shown[name] = [digest(v) for v in value] if isinstance(value, list) else digest(value)
            else:
                shown[name] = value
        blob = json.dumps({"tool": step.tool, "args": shown, **context}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ----- updates ------------------------------------------------------------------------------------------
    def record_done(
        self,
        step: PlanStep,
        outputs: list[str],
        text: str = "",
        by: str = "",
        key: str = "",
        reused: bool = False,
        takes: list[dict[str, Any]] | None = None,
    ) -> None:
        run = self.run_of(step.id)
        run.status = "reused" if reused else "done"
        run.outputs, run.text, run.by, run.key, run.error = list(outputs), text, by or step.agent, key, ""
        if takes is not None:
            run.takes = list(takes)
        if key:
            self.cache[key] = {"outputs": list(outputs), "text": text}
        if step.id == self.plan.final and outputs:
            self.final_id = outputs[-1]
            if not self.finals or self.finals[-1] != self.final_id:
                self.finals.append(self.final_id)

    def record_failed(self, step: PlanStep, error: str) -> None:
        run = self.run_of(step.id)
        run.status, run.error = "failed", error
        run.attempts += 1

    def retry(self, step: PlanStep) -> None:
        """Run a failed step again, with a new seed (when it takes one)."""
        if "seed" in TOOLS[step.tool].args:
            step.args["seed"] = None
            self.plan.assign_seeds(self.next_seeds)
        self.run_of(step.id).status = "pending"

    def cached(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def known_artifacts(self) -> dict[str, str]:
        """Ids this run's plan steps and inputs made, with their kinds (what a revision's plan may name)."""
        known: dict[str, str] = {}
        for ref, art in self.inputs.items():
            known[art] = "image" if ref == "$image" else "video"
        for s in self.plan.steps:
            run = self.run_of(s.id)
            if run.status in FINISHED and run.outputs and TOOLS[s.tool].output != "text":
                known[run.outputs[-1]] = TOOLS[s.tool].output
        return known

    # ----- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "prompt": self.prompt,
            "plan": self.plan.to_dict(),
            "runs": {k: asdict(v) for k, v in self.runs.items()},
            "inputs": self.inputs,
            "request": self.request,
            "seed": self.seed,
            "seeds_used": self.seeds_used,
            "cache": self.cache,
            "final_id": self.final_id,
            "finals": self.finals,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanState:
        data = dict(data)
        plan = Plan.from_dict(data.pop("plan"))
        runs = {k: StepRun(**v) for k, v in data.pop("runs", {}).items()}
        return cls(plan=plan, runs=runs, **data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: Path) -> None:
        write_state(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> PlanState:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_state(path: Path, text: str) -> None:
    """Write a plan state's JSON atomically (a temp file, then a rename)."""
    atomic_write_text(path, text)
