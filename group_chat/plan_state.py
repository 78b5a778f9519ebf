"""Where a run stands against its plan: which steps are done, what they produced, who may act next.

The group chat's planner reads it to narrow the LLM's choice to valid next agents and to fall back to the plan;
the fallback agent reads it to call a step's tool with the plan's own arguments; resume reads it from
``plan_state.json``. Revisions append steps that reuse earlier artifacts, so only what a change touches re-runs.

Example:
    >>> s = PlanState.for_task("text-to-video", prompt="a fox", segments=2)
    >>> s.candidates()
    ['prompt_agent', 'image_agent']
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from openmora.fileio import atomic_write_text
from openmora.group_chat.plans import plan_steps
from openmora.tools.enhance_prompt import DIGITAL_WORLD_EDIT, enhance_prompt

OPTIONAL_TOOLS = ("enhance_prompt",)
INTENTS = {
    "extend": "make the current video longer from its last frame (re-runs only the extension)",
    "edit": "keep the first image's composition and change something in it, then re-animate (reuses the image)",
    "regenerate": "a new look from a changed prompt: new image and new motion (reuses nothing but the inputs)",
    "animate": "keep the image, make new motion (re-runs only the video steps)",
}
_NUMBERS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}


# A plan step's status: pending until its tool succeeds (done), or skipped (an optional step its successor overtook).
StepStatus = Literal["pending", "done", "skipped"]


@dataclass
class Step:
    agent: str
    tool: str
    status: StepStatus = "pending"
    outputs: list[str] = field(default_factory=list)
    attempts: int = 0
    by: str = ""  # who completed it: the agent, or plan_runner (fallback)
    args: dict[str, Any] = field(default_factory=dict)  # the plan's own arguments, used by the fallback


@dataclass
class PlanState:
    task: str
    prompt: str = ""
    segments: int = 1
    steps: list[Step] = field(default_factory=list)
    request: int = 0  # 0: the first request; n: the nth revision
    image_id: str | None = None  # the image the current video starts from
    clip_ids: list[str] = field(default_factory=list)  # input clips
    current_prompt: str = ""
    final_id: str | None = None
    finals: list[str] = field(default_factory=list)

    # ----- construction -------------------------------------------------------------------------------------
    @classmethod
    def for_task(
        cls,
        task: str,
        prompt: str = "",
        segments: int = 1,
        image_id: str | None = None,
        clip_ids: list[str] | None = None,
    ) -> PlanState:
        state = cls(task=task, prompt=prompt, segments=segments, image_id=image_id, clip_ids=list(clip_ids or []))
        steps = plan_steps(task, segments=segments, has_image=image_id is not None, has_video=bool(clip_ids))
        if task == "image-to-video" and not prompt.strip():
            steps = [s for s in steps if s.tool != "enhance_prompt"]
        state.steps = [Step(s.agent, s.tool) for s in steps]
        state.current_prompt = prompt
        return state

    def begin_revision(self, intent: str, text: str, fps: int, frames_per_segment: int) -> list[Step]:
        """Append the steps a revision needs; earlier artifacts stay and are reused."""
        if intent not in self.intents():
            raise ValueError(f"revision {intent!r} does not apply here; possible: {', '.join(self.intents())}")
        self.request += 1
        more = [Step("video_agent", "extend_video")] if self.segments > 1 else []
        if intent == "extend":
            seconds = parse_seconds(text)
            n = 1 if seconds is None else max(1, math.ceil(seconds * fps / max(1, frames_per_segment - 1)))
            new = [Step("video_agent", "extend_video", args={"segments": min(n, 12), "prompt": self.current_prompt})]
        elif intent == "edit":
            new = [
                Step("edit_agent", "edit_image", args={"instruction": text}),
                Step("video_agent", "image_to_video"),
                *more,
            ]
        elif intent == "animate":
            new = [Step("video_agent", "image_to_video"), *more]
        else:  # regenerate
            self.prompt = f"{self.prompt}; {text}" if self.prompt else text
            new = [
                Step("prompt_agent", "enhance_prompt"),
                Step("image_agent", "text_to_image"),
                Step("video_agent", "image_to_video"),
                *more,
            ]
        self.steps.extend(new)
        return new

    def intents(self) -> list[str]:
        """Revisions that make sense for this run (an edit needs an image to start from)."""
        if self.final_id is None:
            return []
        if self.image_id is None:
            return ["extend"]
        return ["extend", "edit", "animate", "regenerate"] if self.task != "connect" else ["extend"]

    # ----- reading ------------------------------------------------------------------------------------------
    def pending(self) -> list[Step]:
        return [s for s in self.steps if s.status == "pending"]

    def next_step(self) -> Step | None:
        pending = self.pending()
        return pending[0] if pending else None

    @property
    def complete(self) -> bool:
        return not self.pending()

    def candidates(self) -> list[str]:
        """Agents that may validly act now: the next step's, and the one after it when the next is optional."""
        pending = self.pending()
        if not pending:
            return []
        names = [pending[0].agent]
        if pending[0].tool in OPTIONAL_TOOLS and len(pending) > 1 and pending[1].agent not in names:
            names.append(pending[1].agent)
        return names

    def expected(self) -> str | None:
        step = self.next_step()
        return step.agent if step else None

    # ----- updates ------------------------------------------------------------------------------------------
    def _step_for(self, agent: str, tool: str) -> Step | None:
        for i, step in enumerate(self.steps):
            if step.status != "pending":
                continue
            if step.tool == tool:  # whoever calls the step's tool (its agent, or plan_runner) completes it
                # An optional step right before is skipped when its successor acts first.
                for earlier in self.steps[:i]:
                    if earlier.status == "pending" and earlier.tool in OPTIONAL_TOOLS:
                        earlier.status = "skipped"
                return step
            if step.tool not in OPTIONAL_TOOLS:
                return None  # a later step cannot be done before this one
        return None

    def record_tool(self, agent: str, tool: str, outputs: list[str], text: str = "") -> Step | None:
        """A tool succeeded: mark its plan step done and remember what it made."""
        step = self._step_for(agent, tool)
        if step is None:
            return None
        step.status, step.outputs, step.by = "done", list(outputs), agent
        if tool == "enhance_prompt":
            self.current_prompt = text
        elif tool in ("text_to_image", "edit_image"):
            self.image_id = outputs[-1]
        if self.complete and outputs:
            self.final_id = outputs[-1]
            self.finals.append(self.final_id)
        return step

    def record_prompt(self, text: str, digital_world: bool) -> bool:
        """The prompt agent spoke: its text is the prompt (Mora's style cue kept for digital worlds)."""
        text = " ".join(text.strip().strip('"').split())
        if not text:
            return False
        if digital_world:
            text = enhance_prompt(text, digital_world=True) if "digital world style" not in text else text
        return self.record_tool("prompt_agent", "enhance_prompt", [], text) is not None

    # ----- the plan's own arguments (for the fallback) -----------------------------------------------------
    def last_clip(self) -> str | None:
        for step in reversed(self.steps):
            if step.status == "done" and step.tool in ("image_to_video", "extend_video", "connect_clips"):
                return step.outputs[-1]
        if self.final_id:
            return self.final_id
        return self.clip_ids[0] if self.clip_ids else None

    def fallback_args(self, step: Step) -> dict[str, Any]:
        """Arguments the fixed plan would use for ``step``, from what the run has made so far."""
        prompt = self.current_prompt or self.prompt
        if step.tool == "enhance_prompt":
            return {"prompt": self.prompt or "a short video", "digital_world": self.task == "digital-world"}
        if step.tool == "text_to_image":
            return {"prompt": prompt or "a short video"}
        if step.tool == "edit_image":
            instruction = step.args.get("instruction") or self.prompt
            if self.task == "digital-world":
                instruction = DIGITAL_WORLD_EDIT + (f"; {instruction}" if instruction else "")
            return {"image_id": self.image_id, "instruction": instruction}
        if step.tool == "image_to_video":
            return {"image_id": self.image_id, "prompt": prompt}
        if step.tool == "extend_video":
            segments = step.args.get("segments", max(1, self.segments - 1))
            return {"clip_id": self.last_clip(), "prompt": step.args.get("prompt", prompt), "segments": segments}
        if step.tool == "connect_clips":
            return {"first_clip_id": self.clip_ids[0], "second_clip_id": self.clip_ids[1], "prompt": self.prompt}
        raise ValueError(f"no plan arguments for tool {step.tool!r}")

    # ----- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanState:
        data = dict(data)
        data["steps"] = [Step(**s) for s in data.get("steps", [])]
        return cls(**data)

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


def parse_seconds(text: str) -> float | None:
    """'extend it by two seconds' -> 2.0; None when no duration is named."""
    m = re.search(
        r"(\d+(?:\.\d+)?|" + "|".join(_NUMBERS) + r")\s*(?:more\s+)?(?:s\b|sec|secs|second|seconds)", text.lower()
    )
    if not m:
        return None
    word = m.group(1)
    return float(_NUMBERS.get(word, word))


def guess_intent(text: str, possible: list[str]) -> str:
    """A keyword reading of a revision, used with no LLM and as the LLM's fallback."""
    t = text.lower()
    if any(w in t for w in ("extend", "longer", "continue", "more seconds", "add ")) or parse_seconds(t) is not None:
        choice = "extend"
    elif any(w in t for w in ("motion", "move", "animate", "camera", "faster", "slower")):
        choice = "animate"
    elif any(w in t for w in ("new ", "instead", "different", "another", "regenerate", "start over")):
        choice = "regenerate"
    else:
        choice = "edit"
    return choice if choice in possible else possible[0]
