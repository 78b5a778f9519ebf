"""Checks a plan before any GPU work, and an agent's tool call against its pending step before the call runs.

Problems are sentences the planner LLM can act on ("s3: image_id is $s1, the output of enhance_prompt (text); it
needs an image: $image or an image step's id"), so a repair round can fix them.

Example:
    >>> from openmora.group_chat.plan import Plan, PlanStep
    >>> check_plan(Plan([PlanStep("s1", "image_to_video", {"image_id": "$image"})]), has_image=False)
    ['s1: image_id is $image, but the request has no input image; make a picture with text_to_image instead']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openmora.errors import InputError
from openmora.group_chat.plan import HIDDEN_ARGS, MAX_STEPS, REF, TOOLS, Plan, PlanStep
from openmora.tools.enhance_prompt import MAX_PROMPT_CHARS
from openmora.tools.extend_video import MAX_SEGMENTS

ID = re.compile(r"^s\d{1,3}$")
# The longest video a plan may make, in segments of image-to-video (one chain of segments is at most MAX_SEGMENTS).
MAX_TOTAL_SEGMENTS = 4 * MAX_SEGMENTS
_KIND_WORD = {"image": "an image", "video": "a clip", "text": "a prompt"}
# Words that ask to change the look of a picture or clip (style, era, season painted on): such a request needs an
# edit_image step. A pronoun after the verb ("turn it into", "make it look like") points at something already there.
_LOOK_VERB = re.compile(
    r"\b(?:(?:look|looks|looking)\s+like|in\s+the\s+style\s+of|(?:turn|change|convert|transform|make)s?\s+"
    r"(?P<what>it|this|that|them|(?:the|this|that|these|those|my|our)(?:\s+\w+){1,4}?)\s+into|restyle|stylize|"
    r"stylise|repaint)\b",
    re.I,
)
_LOOK_WORD = re.compile(
    r"\b(?:water\s*colou?rs?|oil\s+paint(?:ing)?|(?:pencil\s+)?sketch|charcoal|anime|cartoon|comic\s+book|"
    r"pixel\s+art|black\s+and\s+white|sepia|film\s+noir|vintage|painting|\d{3}0s)\b",
    re.I,
)
_SHOT_COUNT = re.compile(r"^\s*(?:(\w+)\s+(?:shots|scenes)\s*:)", re.I)


class PlanError(InputError):
    """A plan that cannot run: the problems, in words."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the plan cannot run: " + "; ".join(problems))


@dataclass(frozen=True)
class Inputs:
    """What a plan may refer to besides its own steps: the request's inputs and this run's artifacts by id."""

    has_image: bool = False
    n_videos: int = 0
    known: Mapping[str, str] | None = None  # artifact id -> kind ("image" / "video"), for revisions

    def kind_of_literal(self, value: str) -> str | None:
        return (self.known or {}).get(value)


def _type_ok(value: Any, type_name: str) -> bool:
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_name == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return False


def _ref_problem(step: PlanStep, arg: str, value: str, want: str, kinds: dict[str, str], inputs: Inputs) -> str | None:
    """What is wrong with ``value`` where ``arg`` needs ``want`` (a kind), or None."""
    where = f"{step.id}: {arg} is {value}"
    if not REF.match(value):
        if want == "text":
            return None  # plain words are a prompt
        kind = inputs.kind_of_literal(value)
        if kind is None:
            return (
                f"{where}, which is not an input, a step or an artifact of this run; "
                f"it needs {_KIND_WORD[want]}: {_ref_hint(want, inputs, kinds)}"
            )
        if kind != want:
            return f"{where}, {_KIND_WORD[kind]}; it needs {_KIND_WORD[want]}: {_ref_hint(want, inputs, kinds)}"
        return None
    name = value[1:]
    if name == "image":
        if not inputs.has_image:
            return f"{where}, but the request has no input image; make a picture with text_to_image instead"
        kind = "image"
    elif name.startswith("video"):
        n = int(name[5:])
        if n > inputs.n_videos:
            if inputs.n_videos == 0:
                return f"{where}, but the request has no input video; make a clip with text_to_image and image_to_video"
            return f"{where}, but the request has {inputs.n_videos} input video(s)"
        kind = "video"
    else:
        if name not in kinds:
            return f"{where}, which is not an earlier step (a step may only use steps listed before it)"
        kind = kinds[name]
    if kind != want:
        return f"{where}, {_KIND_WORD[kind]}; it needs {_KIND_WORD[want]}: {_ref_hint(want, inputs, kinds)}"
    return None


def _ref_hint(want: str, inputs: Inputs, kinds: Mapping[str, str] | None = None) -> str:
    # The plan's own earlier steps of the wanted kind, newest first: a small model picks the right one from a list.
    own = [f"${sid}" for sid, kind in reversed(list((kinds or {}).items())) if kind == want][:3]
    if want == "image":
        steps = " or ".join(own) if own else "the id of a text_to_image or edit_image step, like $s2"
        return ("$image or " if inputs.has_image else "") + steps
    if want == "video":
        vids = " or ".join(f"$video{i}" for i in range(1, inputs.n_videos + 1))
        steps = " or ".join(own) if own else "the id of a video step, like $s3"
        return (f"{vids} or " if vids else "") + steps
    return "words, or the id of an enhance_prompt step"


def _best_of_problems(step: PlanStep) -> list[str]:
    """A step's own best_of: a number of takes on a step that renders with a seed."""
    from openmora.quality.gate import GATED_TOOLS, MAX_BEST_OF

    n = step.best_of
    if step.tool not in GATED_TOOLS:
        return [f"{step.id}: best_of is for steps that render ({', '.join(GATED_TOOLS)}), not {step.tool}"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BEST_OF:
        return [f"{step.id}: best_of must be a whole number of takes from 1 to {MAX_BEST_OF}, got {n!r}"]
    return []


def check_plan(
    plan: Plan,
    *,
    has_image: bool = False,
    n_videos: int = 0,
    known: Mapping[str, str] | None = None,
    max_total_segments: int = MAX_TOTAL_SEGMENTS,
    request: str | None = None,
) -> list[str]:
    """Every problem of ``plan`` in words (empty: it can run). Checks tools, argument names and types, references
    (earlier steps, right kind, inputs that exist), limits (segments, prompt length, step count), that every step's
    output is used, that the request's inputs are used, and that the final step makes a video. With ``request`` (the
    user's words) also what the plan leaves out of them (:func:`request_problems`)."""
    inputs = Inputs(has_image, n_videos, known)
    problems: list[str] = []
    if not plan.steps:
        return ["the plan has no steps; it needs at least one step that makes a video"]
    if len(plan.steps) > MAX_STEPS:
        problems.append(f"the plan has {len(plan.steps)} steps; at most {MAX_STEPS} are allowed")
    kinds: dict[str, str] = {}
    total_segments = 0
    for step in plan.steps:
        if not isinstance(step.id, str) or not ID.match(step.id):
            problems.append(f"step id {step.id!r} is not like s1, s2, ...")
        elif step.id in kinds:
            problems.append(f"{step.id} is used twice as a step id; give every step its own id")
        spec = TOOLS.get(step.tool)
        if spec is None:
            problems.append(f"{step.id}: unknown tool {step.tool!r}; use one of: {', '.join(TOOLS)}")
            continue
        if step.agent != spec.agent:
            problems.append(f"{step.id}: {step.tool} is {spec.agent}'s tool, not {step.agent}'s")
        if step.best_of is not None:
            problems += _best_of_problems(step)
        for name in step.args:
            if name not in spec.args:
                allowed = ", ".join(n for n in spec.args if n not in HIDDEN_ARGS)
                problems.append(f"{step.id}: {step.tool} has no argument {name!r}; its arguments: {allowed}")
        for name, arg in spec.args.items():
            if name not in step.args:
                if arg.required:
                    problems.append(f"{step.id}: {step.tool} needs {name} ({arg.type}): {arg.doc}")
                continue
            value = step.args[name]
            if name == "seed" and value is None:
                continue
            if not _type_ok(value, arg.type):
                problems.append(f"{step.id}: {name} must be {arg.type}, got {value!r}")
                continue
            if arg.ref is not None:
                for v in value if isinstance(value, list) else [value]:
                    problem = _ref_problem(step, name, v, arg.ref, kinds, inputs)
                    if problem:
                        problems.append(problem)
            if arg.type == "str" and arg.ref == "text" and not REF.match(value):
                if len(" ".join(value.split())) > MAX_PROMPT_CHARS:
                    problems.append(f"{step.id}: {name} is longer than {MAX_PROMPT_CHARS} characters")
                if arg.required and not value.strip():
                    problems.append(f"{step.id}: {name} is empty; {step.tool} needs words")
        if step.tool == "extend_video":
            seg = step.args.get("segments", 1)
            if _type_ok(seg, "int") and not 1 <= seg <= MAX_SEGMENTS:
                problems.append(f"{step.id}: segments is {seg}; give 1 to {MAX_SEGMENTS}")
            total_segments += seg if _type_ok(seg, "int") else 0
        elif step.tool == "image_to_video":
            total_segments += 1
        if step.tool == "join_clips" and isinstance(step.args.get("clip_ids"), list) and len(step.args["clip_ids"]) < 2:
            problems.append(f"{step.id}: join_clips needs at least two clips")
        if step.tool == "connect_clips" and step.args.get("first_clip_id") == step.args.get("second_clip_id"):
            problems.append(f"{step.id}: connect_clips needs two different clips")
        if isinstance(step.id, str):
            kinds[step.id] = spec.output
    if total_segments > max_total_segments:
        problems.append(f"the plan renders {total_segments} segments; at most {max_total_segments} are allowed")
    # The final video, and every step on the way to it.
    ids = [s.id for s in plan.steps]
    if plan.final not in ids:
        problems.append(f"the final step {plan.final!r} is not in the plan")
    elif kinds.get(plan.final) != "video":
        problems.append(
            f"the final step {plan.final} makes {_KIND_WORD.get(kinds.get(plan.final, ''), 'nothing')}, not a video"
        )
    else:
        needed = _ancestors(plan, plan.final)
        for s in plan.steps:
            if s.id not in needed and s.id in kinds:
                problems.append(
                    f"{s.id} ({s.tool}) makes {_KIND_WORD[kinds[s.id]]} that no later step uses; "
                    f"use its output ($" + s.id + ") or drop the step"
                )
    used = {r for s in plan.steps for r in s.refs()}
    if has_image and "$image" not in used:
        problems.append("the request's input image ($image) is not used by any step")
    for i in range(1, n_videos + 1):
        if f"$video{i}" not in used:
            problems.append(f"the request's input video $video{i} is not used by any step")
    if request:
        problems += request_problems(plan, request, has_image=has_image, n_videos=n_videos)
    return problems


def asks_look_change(text: str, *, has_input: bool) -> str | None:
    """The words of ``text`` that ask to change the look of a picture or clip ("make it look like a 1920s film",
    "turn the summer scene into winter", "a watercolor painting"), or None. Without an input (``has_input``
    False) only a verb on a pronoun counts ("turn it into a sketch"): "a watercolor of a fox" is a description."""
    m = _LOOK_VERB.search(text or "")
    if m and (has_input or (m.group("what") or "").lower() in ("it", "this", "that", "them")):
        return m.group(0)
    if has_input and (m := _LOOK_WORD.search(text or "")):
        return m.group(0)
    return None


def listed_shots(text: str) -> list[str]:
    """The shots a request lists ("two scenes: a; b", one per line, or ';'-separated), or [] when it lists none."""
    from openmora.story import split_shots  # openmora.story imports the plan package

    if _SHOT_COUNT.match(text) or "\n" in text.strip() or ";" in text:
        shots = split_shots(_SHOT_COUNT.sub("", text, count=1).strip())
        return shots if len(shots) >= 2 else []
    return []


def request_problems(plan: Plan, text: str, *, has_image: bool = False, n_videos: int = 0) -> list[str]:
    """What ``plan`` leaves out of what the request's words ask for, in words the planner LLM can act on: a look
    change of an input (or of a picture the plan makes) with no edit_image step; shots listed but fewer clips."""
    problems: list[str] = []
    tools = [s.tool for s in plan.steps]
    look = asks_look_change(text, has_input=has_image or n_videos > 0)
    if look and "edit_image" not in tools:
        what = "input video $video1" if n_videos else "input image $image" if has_image else "picture"
        fix = (
            'use {"template": "edit", "prompt": "make it ..."}'
            if (n_videos == 1) != has_image and n_videos <= 1 and not _EXTRA_WORK.search(text)
            else "add edit_image with the change as its instruction on "
            + (
                "a take_frame of the clip"
                if n_videos
                else "$image"
                if has_image
                else "the text_to_image step's picture"
            )
            + ", then image_to_video on the edited picture"
        )
        problems.append(
            f"the request asks to change the look of the {what} ({look!r}), but the plan has no edit_image step; {fix}"
        )
    shots = listed_shots(text) if not has_image and not n_videos else []
    clips = tools.count("image_to_video")
    if shots and clips < len(shots):
        problems.append(
            f"the request lists {len(shots)} shots, but the plan makes {clips} clip(s); use "
            f'{{"template": "story", "prompt": ..., "shots": [{len(shots)} shot descriptions]}}'
        )
    return problems


_EXTRA_WORK = re.compile(r"\b(?:then|extend|continue|longer|connect|join|and\s+then)\b", re.I)


def _ancestors(plan: Plan, step_id: str) -> set[str]:
    by_id = {s.id: s for s in plan.steps}
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in by_id:
            continue
        seen.add(sid)
        todo += by_id[sid].deps()
    return seen


def check_call(step: PlanStep, tool: str, args: Mapping[str, Any], resolved: Mapping[str, Any]) -> str | None:
    """Whether an agent's call is its pending step: the same tool and the step's arguments (references resolved).
    Returns what differs, or None. Arguments the call leaves out are the step's."""
    if tool != step.tool:
        return f"the pending step {step.id} is {step.tool}, not {tool}"
    for name, value in args.items():
        if name not in resolved:
            if name in TOOLS[tool].args and value == TOOLS[tool].args[name].default:
                continue
            return f"{step.id} does not set {name}; call {tool} with the step's arguments"
        if resolved[name] != value:
            return f"{step.id} wants {name}={resolved[name]!r}, the call gave {value!r}"
    return None
