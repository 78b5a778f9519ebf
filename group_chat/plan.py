"""The typed plan: steps (id, agent, tool, typed args) that the agents carry out, and the templates of Mora's tasks.

A step's args are the tool's own keyword arguments (its signature is the schema). An argument may name an input or
an earlier step's output instead of a value:

| reference | means |
|---|---|
| ``$image`` | the request's input image |
| ``$video1``, ``$video2`` | the request's input videos, in order |
| ``$s3`` | what step ``s3`` made: its text (a prompt), its image, or its clip |

The planner LLM writes a plan as JSON (:func:`planner_schema`): either a template with its few parameters
(``{"template": "text-to-video", "prompt": ..., "seconds": 4}``) or the steps themselves. Seeds are not the LLM's to
choose: the run assigns each step one when the plan is adopted (:meth:`Plan.assign_seeds`), so the same request and
seed give the same frames, in any order of execution.

Example:
    >>> plan = template_plan("text-to-video", "a fox in the snow", segments=2)
    >>> [(s.id, s.tool) for s in plan.steps]
    [('s1', 'enhance_prompt'), ('s2', 'text_to_image'), ('s3', 'image_to_video'), ('s4', 'extend_video')]
    >>> plan.steps[2].args
    {'image_id': '$s2', 'prompt': '$s1'}
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from openmora.errors import InputError
from openmora.tools.connect_clips import connect_clips, join_clips
from openmora.tools.edit_image import edit_image, take_frame
from openmora.tools.enhance_prompt import DIGITAL_WORLD_EDIT, enhance_prompt
from openmora.tools.extend_video import MAX_SEGMENTS, extend_video
from openmora.tools.image_to_video import image_to_video
from openmora.tools.text_to_image import text_to_image

OutputKind = Literal["text", "image", "video"]
PlanSource = Literal["llm", "repaired", "template"]
MAX_STEPS = 40
from openmora.story import MAX_SHOTS  # noqa: E402 - one limit, stated with the stories

REF = re.compile(r"^\$(image|video[12]|s\d{1,3})$")
# Arguments the run fills in, never the planner: seeds (assigned when the plan is adopted).
HIDDEN_ARGS = ("seed",)


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: str  # "str", "int", "bool", "float", "list[str]"
    required: bool
    default: Any
    ref: OutputKind | None  # the kind of artifact a reference here must name (text: a prompt step's output)
    doc: str


@dataclass(frozen=True)
class ToolSpec:
    name: str
    agent: str
    output: OutputKind
    fn: Callable[..., Any]
    args: dict[str, ArgSpec]
    doc: str
    takes_ctx: bool = True

    @property
    def gpu(self) -> bool:
        """Whether a call runs a diffusion model (the prompt tool and joining clips do not)."""
        return self.name not in ("enhance_prompt", "join_clips", "take_frame")


def _arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    docs: dict[str, str] = {}
    in_args = False
    for line in inspect.cleandoc(fn.__doc__ or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if in_args:
            m = re.match(r"^\s{4}(\w+):\s*(.*)$", line)
            if m:
                docs[m.group(1)] = m.group(2)
            elif line and not line.startswith(" "):
                in_args = False
    return docs


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _type_name(inner[0])
    if typing.get_origin(hint) is list:
        return "list[str]"
    return {str: "str", int: "int", bool: "bool", float: "float"}[hint]


def _ref_kind(name: str, type_name: str) -> OutputKind | None:
    if name == "image_id":
        return "image"
    if name.endswith("clip_id") or name == "clip_ids":
        return "video"
    if name in ("prompt", "instruction") and type_name == "str":
        return "text"
    return None


def _spec(fn: Callable[..., Any], agent: str, output: OutputKind) -> ToolSpec:
    hints = typing.get_type_hints(fn)
    docs = _arg_docs(fn)
    params = inspect.signature(fn).parameters
    args = {}
    for name, p in params.items():
        if name == "ctx":
            continue
        t = _type_name(hints[name])
        required = p.default is inspect.Parameter.empty
        args[name] = ArgSpec(name, t, required, None if required else p.default, _ref_kind(name, t), docs.get(name, ""))
    summary = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    summary = summary.split(": ")[0].split(". ")[0].rstrip(".")  # the first sentence: the planner reads every tool
    return ToolSpec(fn.__name__, agent, output, fn, args, summary, takes_ctx="ctx" in params)


TOOLS: dict[str, ToolSpec] = {
    s.name: s
    for s in (
        _spec(enhance_prompt, "prompt_agent", "text"),
        _spec(text_to_image, "image_agent", "image"),
        _spec(take_frame, "edit_agent", "image"),
        _spec(edit_image, "edit_agent", "image"),
        _spec(image_to_video, "video_agent", "video"),
        _spec(extend_video, "video_agent", "video"),
        _spec(connect_clips, "connection_agent", "video"),
        _spec(join_clips, "connection_agent", "video"),
    )
}
AGENTS = ("prompt_agent", "image_agent", "edit_agent", "video_agent", "connection_agent")


@dataclass
class PlanStep:
    """One step: ``agent`` calls ``tool`` with ``args`` (values, or references to inputs and earlier steps)."""

    id: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    agent: str = ""
    shot: int | None = None  # a story's shot (1-based), for revisions that name one
    best_of: int | None = None  # takes to render and score, the best kept (None: the profile's / command's)

    def __post_init__(self) -> None:
        if not self.agent and self.tool in TOOLS:
            self.agent = TOOLS[self.tool].agent

    def refs(self) -> list[str]:
        """The references among the args (in argument order)."""
        found: list[str] = []
        for value in self.args.values():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and REF.match(v):
                    found.append(v)
        return found

    def deps(self) -> list[str]:
        """Ids of the earlier steps this one needs."""
        return [r[1:] for r in self.refs() if r[1] == "s"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "agent": self.agent, "tool": self.tool, "args": dict(self.args)}
        if self.shot is not None:
            out["shot"] = self.shot
        if self.best_of is not None:
            out["best_of"] = self.best_of
        return out


@dataclass
class Plan:
    """Steps in order, what the request asked for (``intent``), where the plan came from, and the final step."""

    steps: list[PlanStep]
    intent: str = "auto"
    source: PlanSource = "template"
    final: str = ""  # the step whose clip is the result (default: the last video step)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.final:
            videos = [s.id for s in self.steps if TOOLS.get(s.tool) and TOOLS[s.tool].output == "video"]
            self.final = videos[-1] if videos else (self.steps[-1].id if self.steps else "")

    def step(self, step_id: str) -> PlanStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def new_id(self) -> str:
        used = {int(s.id[1:]) for s in self.steps if re.fullmatch(r"s\d+", s.id)}
        return f"s{max(used, default=0) + 1}"

    def assign_seeds(self, next_seed: Callable[[int], int]) -> None:
        """Give every step that runs a model and has no seed one: ``next_seed(n)`` hands out ``n`` consecutive seeds
        (an extension takes one per segment) and returns the first."""
        for s in self.steps:
            spec = TOOLS.get(s.tool)
            if spec is None or "seed" not in spec.args or s.args.get("seed") is not None:
                continue
            n = int(s.args.get("segments", 1)) if s.tool == "extend_video" else 1
            s.args["seed"] = next_seed(max(1, n))

    def copy(self) -> Plan:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "source": self.source,
            "final": self.final,
            "steps": [s.to_dict() for s in self.steps],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        steps = [
            PlanStep(s["id"], s["tool"], dict(s.get("args", {})), s.get("agent", ""), s.get("shot"), s.get("best_of"))
            for s in data.get("steps", [])
        ]
        return cls(
            steps,
            intent=data.get("intent", "auto"),
            source=data.get("source", "template"),
            final=data.get("final", ""),
            notes=list(data.get("notes", [])),
        )

    def describe(self) -> str:
        """The plan in a few lines, for the chat and ``openmora plan``."""
        lines = [f"plan ({self.source}, {self.intent}):"]
        for s in self.steps:
            shown = {k: v for k, v in s.args.items() if k != "seed"}
            args = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
            mark = "  <- final" if s.id == self.final else ""
            lines.append(f"  {s.id} {s.agent}: {s.tool}({args}){mark}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----- durations ------------------------------------------------------------------------------------------------
def segments_for_seconds(seconds: float, fps: int, frames_per_segment: int) -> int:
    """Segments of image-to-video needed for ``seconds`` of video: the first gives ``frames_per_segment`` frames,
    each extension ``frames_per_segment - 1`` more (its first frame repeats the last one)."""
    frames = max(1, math.ceil(seconds * fps))
    if frames <= frames_per_segment:
        return 1
    return 1 + math.ceil((frames - frames_per_segment) / max(1, frames_per_segment - 1))


def seconds_for_segments(segments: int, fps: int, frames_per_segment: int) -> float:
    return (frames_per_segment + (segments - 1) * (frames_per_segment - 1)) / fps


# ----- templates: Mora's six tasks and stories -------------------------------------------------------------------
TEMPLATES = ("text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world", "story")


def _video_steps(plan: list[PlanStep], image: str, prompt: str, segments: int, shot: int | None) -> str:
    """Append image_to_video (and extend_video for more segments) on ``image``; returns the last clip's id."""
    sid = f"s{len(plan) + 1}"
    plan.append(PlanStep(sid, "image_to_video", {"image_id": image, "prompt": prompt}, shot=shot))
    return _extend_steps(plan, sid, prompt, segments - 1, shot)


def _extend_steps(plan: list[PlanStep], clip: str, prompt: str, segments: int, shot: int | None) -> str:
    """Append extend_video steps adding ``segments`` to step ``clip``'s video (at most MAX_SEGMENTS per step)."""
    last = clip
    while segments > 0:
        n = min(segments, MAX_SEGMENTS)
        nid = f"s{len(plan) + 1}"
        plan.append(PlanStep(nid, "extend_video", {"clip_id": f"${last}", "prompt": prompt, "segments": n}, shot=shot))
        last, segments = nid, segments - n
    return last


def template_plan(
    task: str,
    prompt: str = "",
    *,
    segments: int = 1,
    has_image: bool = False,
    n_videos: int = 0,
    shots: list[str] | None = None,
    digital_world: bool | None = None,
) -> Plan:
    """The plan of one of Mora's tasks (or a story), with references to the inputs."""
    steps: list[PlanStep] = []
    dw = task == "digital-world" if digital_world is None else digital_world
    if task == "story":
        shots = list(shots or [])
        if len(shots) < 2:
            raise InputError("a story needs at least two shots")
        clips = []
        for k, shot in enumerate(shots, start=1):
            p = f"s{len(steps) + 1}"
            steps.append(PlanStep(p, "enhance_prompt", {"prompt": shot, "digital_world": dw}, shot=k))
            i = f"s{len(steps) + 1}"
            steps.append(PlanStep(i, "text_to_image", {"prompt": f"${p}"}, shot=k))
            clips.append(_video_steps(steps, f"${i}", f"${p}", segments, k))
        parts = [f"${clips[0]}"]
        for k in range(1, len(clips)):
            t = f"s{len(steps) + 1}"
            steps.append(
                PlanStep(
                    t,
                    "connect_clips",
                    {
                        "first_clip_id": f"${clips[k - 1]}",
                        "second_clip_id": f"${clips[k]}",
                        "prompt": f"{shots[k - 1]}, then {shots[k]}",
                        "transition_only": True,
                    },
                )
            )
            parts += [f"${t}", f"${clips[k]}"]
        steps.append(PlanStep(f"s{len(steps) + 1}", "join_clips", {"clip_ids": parts}))
        return Plan(steps, intent="story")
    if task in ("text-to-video", "digital-world") and not has_image and not n_videos:
        steps.append(PlanStep("s1", "enhance_prompt", {"prompt": prompt, "digital_world": dw}))
        steps.append(PlanStep("s2", "text_to_image", {"prompt": "$s1"}))
        _video_steps(steps, "$s2", "$s1", segments, None)
    elif task == "image-to-video":
        motion = ""
        if prompt.strip():
            steps.append(PlanStep("s1", "enhance_prompt", {"prompt": prompt, "digital_world": False}))
            motion = "$s1"
        _video_steps(steps, "$image", motion, segments, None)
    elif task == "extend":
        first = min(segments, MAX_SEGMENTS)
        steps.append(PlanStep("s1", "extend_video", {"clip_id": "$video1", "prompt": prompt, "segments": first}))
        _extend_steps(steps, "s1", prompt, segments - first, None)
    elif task in ("edit", "digital-world"):
        # A video is edited through its first frame: edit the frame, then make the motion again.
        instruction = prompt
        if task == "digital-world":
            instruction = DIGITAL_WORLD_EDIT + (f"; {prompt}" if prompt.strip() else "")
        image = "$image"
        if n_videos:
            steps.append(PlanStep("s1", "take_frame", {"clip_id": "$video1"}))
            image = "$s1"
        e = f"s{len(steps) + 1}"
        steps.append(PlanStep(e, "edit_image", {"image_id": image, "instruction": instruction}))
        _video_steps(steps, f"${e}", prompt, segments, None)
    elif task == "connect":
        steps.append(
            PlanStep("s1", "connect_clips", {"first_clip_id": "$video1", "second_clip_id": "$video2", "prompt": prompt})
        )
    else:
        raise InputError(f"unknown template {task!r}; use one of: {', '.join(TEMPLATES)}")
    return Plan(steps, intent=task)


# ----- the planner's JSON schema -----------------------------------------------------------------------------------
_JSON_TYPES = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}


def _arg_schema(a: ArgSpec) -> dict[str, Any]:
    if a.type == "list[str]":
        return {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2 * MAX_SHOTS}
    if a.name == "segments":
        return {"type": "integer", "minimum": 1, "maximum": MAX_SEGMENTS}
    return {"type": _JSON_TYPES[a.type]}


def step_schema(tool: str) -> dict[str, Any]:
    spec = TOOLS[tool]
    args = {n: a for n, a in spec.args.items() if n not in HIDDEN_ARGS}
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "tool": {"const": tool},
            "args": {
                "type": "object",
                "properties": {n: _arg_schema(a) for n, a in args.items()},
                "required": [n for n, a in args.items() if a.required],
            },
        },
        "required": ["id", "tool", "args"],
    }


def planner_schema() -> dict[str, Any]:
    """The JSON schema of a plan as the planner LLM writes it: a template with its parameters, or the steps."""
    template = {
        "type": "object",
        "properties": {
            "template": {"enum": [t for t in TEMPLATES]},
            "prompt": {"type": "string"},
            "seconds": {"type": "number", "minimum": 0},
            "shots": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_SHOTS},
        },
        "required": ["template", "prompt"],
    }
    steps = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"anyOf": [step_schema(t) for t in TOOLS]},
                "minItems": 1,
                "maxItems": MAX_STEPS,
            },
        },
        "required": ["steps"],
    }
    return {"anyOf": [template, steps]}


def tool_catalog() -> str:
    """The tools as the planner reads them: name, agent, what it makes, arguments."""
    lines = []
    for spec in TOOLS.values():
        args = ", ".join(
            f"{n}: {a.type}{'' if a.required else ' (optional)'}" for n, a in spec.args.items() if n not in HIDDEN_ARGS
        )
        lines.append(f"- {spec.name}({args}) -> {spec.output} [{spec.agent}]: {spec.doc}")
    return "\n".join(lines)
