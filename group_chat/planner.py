"""The planner: free-form requests become checked plans; revisions become plan edits; failed steps get a decision.

With an LLM the planner writes the plan as structured output (a JSON schema derived from the tools' signatures,
sent as ``response_format``: a grammar on the embedded llama.cpp model, structured output on OpenAI-compatible
servers, scripted on replay). The checker reads it
before any GPU work; a plan with problems goes back once with the problems in words (the repair round), and if it
still cannot run the request's template is used instead. Every step of that is in the transcript (``plan`` lines).
Without an LLM the request's template is chosen by its words and inputs (the reproducible batch mode).

Example:
    >>> import asyncio
    >>> from openmora.profiles import load_profile
    >>> plan = asyncio.run(Planner(None, load_profile("tiny")).plan("a fox in the snow"))
    >>> plan.source, [s.tool for s in plan.steps][:2]
    ('template', ['enhance_prompt', 'text_to_image'])
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openmora.errors import InputError, first_line
from openmora.group_chat.checker import MAX_TOTAL_SEGMENTS, asks_look_change, check_plan, listed_shots
from openmora.group_chat.plan import (
    MAX_SHOTS,
    TEMPLATES,
    Plan,
    PlanStep,
    planner_schema,
    seconds_for_segments,
    segments_for_seconds,
    template_plan,
    tool_catalog,
)
from openmora.group_chat.plan_edits import apply_revision
from openmora.group_chat.revisions import Revision, guess_revision, parse_seconds
from openmora.llm.structured import response_format_for
from openmora.profiles import Profile
from openmora.quality.gate import GateSettings, Take, gate_rule

PLAN_MAX_TOKENS = 700
_TEMPLATE_PROMPT_CHARS = 300
_DW = re.compile(r"\b(digital[- ]world|minecraft|voxel|video game)\b", re.I)
_EXTEND = re.compile(r"\b(extend|continue|longer|keep going|more seconds)\b", re.I)
_JOIN = re.compile(r"\b(join|connect|link|merge|transition)\b", re.I)
_SHOTS = re.compile(r"^\s*(?:(\w+)\s+(?:shots|scenes)\s*:)", re.I)
# The templates a request's inputs can run (the grammar offers no other): each uses every input it is given.
_FITTING = {
    (False, 0): ("text-to-video", "digital-world", "story"),
    (True, 0): ("image-to-video", "edit", "digital-world"),
    (False, 1): ("edit", "extend", "digital-world"),
    (False, 2): ("connect",),
}

PLANNER_SYSTEM = """You are the planner of a video-making team. You turn a request into a plan. Reply with JSON only.

If one template fits, reply {"template": NAME, "prompt": PROMPT}; add "seconds": N only when the user says how long:
- text-to-video: a video from words. PROMPT: a detailed visual description.
- image-to-video: animate the input image ($image) as it is. PROMPT: the motion.
- edit: change the look of the input video or image (style, era, season, colours: "make it look like ...", "turn it
  into ..."), then animate it. PROMPT: the edit as an instruction ("make it ...").
- extend: make the input video ($video1) longer, nothing else. PROMPT: what happens next.
- connect: join the two input videos ($video1, $video2) with a transition.
- digital-world: a video in a Minecraft-like game world. PROMPT: the scene.
- story: several shots or scenes in order ("two scenes: A; B", one per line); also give "shots": [one visual
  description per shot].

If no template fits, write the steps: {"steps": [{"id": "s1", "tool": TOOL, "args": {...}}, ...]}.
An argument may be "$image", "$video1", "$video2" (the inputs) or "$s1" (what an earlier step made).
Every step's output must be used by a later step; the last step makes the final video. Tools:
TOOLS

Examples:
request: a green tractor, then a yellow tractor, joined smoothly
{"steps": [{"id": "s1", "tool": "text_to_image", "args": {"prompt": "a green tractor in a wheat field"}}, {"id": "s2", "tool": "image_to_video", "args": {"image_id": "$s1"}}, {"id": "s3", "tool": "text_to_image", "args": {"prompt": "a yellow tractor in a wheat field"}}, {"id": "s4", "tool": "image_to_video", "args": {"image_id": "$s3"}}, {"id": "s5", "tool": "connect_clips", "args": {"first_clip_id": "$s2", "second_clip_id": "$s4"}}]}
request (input video $video1): continue this clip, then make all of it look like a charcoal drawing
{"steps": [{"id": "s1", "tool": "extend_video", "args": {"clip_id": "$video1", "segments": 1}}, {"id": "s2", "tool": "take_frame", "args": {"clip_id": "$s1"}}, {"id": "s3", "tool": "edit_image", "args": {"image_id": "$s2", "instruction": "make it look like a charcoal drawing"}}, {"id": "s4", "tool": "image_to_video", "args": {"image_id": "$s3"}}, {"id": "s5", "tool": "extend_video", "args": {"clip_id": "$s4", "segments": 1}}]}
request (input video $video1): make it look like an old oil painting
{"template": "edit", "prompt": "make it look like an old oil painting"}
request: an 8 second clip of rain on a window at night
{"template": "text-to-video", "prompt": "raindrops running down a window pane at night, city lights blurred behind", "seconds": 8}
request: two scenes: a ship leaving port; the ship in a storm
{"template": "story", "prompt": "a ship's voyage", "shots": ["a sailing ship leaving a sunny port", "the sailing ship in a stormy sea at night"]}"""

REVISION_SYSTEM = """You are the planner of a video-making team. The user has a video and asks for a change.
Reply with JSON only: {"change": CHANGE, "text": TEXT, "shot": N, "seconds": S} (shot and seconds only when said).
CHANGE is one of:
- edit: change something in the picture but keep its composition (style, era, colours, add or remove an object).
  An era or a style ("like the 1950s", "as a watercolor", "vintage") is always edit.
  TEXT: the change as an instruction, e.g. "make it look like a 1950s postcard".
- rewrite: describe the scene differently (time of day, light, weather, another subject).
  TEXT: the new full visual prompt, rewritten as one coherent description (not the old prompt plus words).
- extend: make the video longer. seconds: how much longer. TEXT: what happens next, or "".
- animate: keep the picture, make new motion. TEXT: "".
- regenerate: a completely new take. TEXT: a new prompt, or "".
"shot": the shot number when the user names one shot of a story."""

REVIEW_SYSTEM = """You are the planner of a video-making team. A step of the plan failed.
Reply with JSON only: {"action": ACTION, "reason": "..."} where ACTION is:
- retry: run the step again with another seed (for a failure that may not happen again)
- replan: write a new plan without this problem
- finish: stop; the request cannot be done"""

REVISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "change": {"enum": ["edit", "rewrite", "extend", "animate", "regenerate"]},
        "text": {"type": "string"},
        "shot": {"type": "integer", "minimum": 1, "maximum": MAX_SHOTS},
        "seconds": {"type": "number", "minimum": 0},
    },
    "required": ["change", "text"],
}
QUALITY_SYSTEM = """You are the planner of a video-making team. A step's result scored under the quality gate.
Reply with JSON only: {"action": ACTION, "reason": "..."} where ACTION is:
- retake: render the step again with another seed (when a better take is likely)
- accept: keep the best take so far"""
QUALITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"action": {"enum": ["retake", "accept"]}, "reason": {"type": "string"}},
    "required": ["action", "reason"],
}
REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"action": {"enum": ["retry", "replan", "finish"]}, "reason": {"type": "string"}},
    "required": ["action", "reason"],
}


@dataclass
class Request:
    """What a plan is for: the words, and which inputs the request brings."""

    text: str
    has_image: bool = False
    n_videos: int = 0
    known: dict[str, str] | None = None
    segments: int | None = None  # the user's explicit --segments


class Planner:
    """Plans requests, revises plans and reviews failures, with an LLM client or without one (``client=None``).

    Args:
        client: an AutoGen chat completion client, or None (templates by keyword).
        profile: the model profile (frames per segment and fps turn seconds into segments).
        record: called with each planning event (a transcript line's fields); default: nothing.
    """

    def __init__(self, client: Any, profile: Profile, record: Callable[..., Any] | None = None) -> None:
        self.client = client
        self.profile = profile
        self.record = record or (lambda *a, **k: None)
        self.llm_seconds = 0.0

    # ----- durations ----------------------------------------------------------------------------------------
    @property
    def frames_per_segment(self) -> int:
        return int(self.profile.role("image_to_video").params.get("num_frames", 25))

    def segments_for(self, seconds: float | None, default: int) -> int:
        """Segments for ``seconds`` of video; a length beyond the longest video a plan may make is bad input."""
        if seconds is None or seconds <= 0:
            return default
        segments = segments_for_seconds(seconds, self.profile.fps, self.frames_per_segment)
        if segments > MAX_TOTAL_SEGMENTS:
            longest = seconds_for_segments(MAX_TOTAL_SEGMENTS, self.profile.fps, self.frames_per_segment)
            raise InputError(
                f"{seconds:g} seconds is longer than the longest video a plan makes on profile {self.profile.name} "
                f"(at most {longest:.1f} s); ask for a shorter video"
            )
        return segments

    # ----- a new request ------------------------------------------------------------------------------------
    def template_for(self, req: Request, task: str | None = None) -> Plan:
        """The template plan for ``task`` (default: chosen by the request's words and inputs)."""
        task = task or guess_task(req.text, req.has_image, req.n_videos)
        makes_picture = task in ("text-to-video", "digital-world") and not req.has_image and not req.n_videos
        default = self.profile.segments if makes_picture else 1
        if task == "story":
            from openmora.story import split_shots

            shots = split_shots(_strip_shot_count(req.text))
            return template_plan(
                "story", req.text, segments=req.segments or 1, shots=shots, digital_world=bool(_DW.search(req.text))
            )
        seconds = parse_seconds(req.text)
        segments = req.segments or self.segments_for(seconds, default)
        return template_plan(task, req.text, segments=segments, has_image=req.has_image, n_videos=req.n_videos)

    async def plan(self, text: str, *, has_image: bool = False, n_videos: int = 0, segments: int | None = None) -> Plan:
        """A checked plan for a free-form request: the LLM's, repaired once if needed, else the template."""
        req = Request(text, has_image, n_videos, segments=segments)
        if segments is None:  # a length beyond the longest plan is bad input, whatever length the LLM would write
            self.segments_for(parse_seconds(text), 1)
        if self.client is None:
            plan = self.template_for(req)
            plan.source = "template"
            self._record_plan(plan, [], reason="no LLM: the template chosen by the request's words and inputs")
            return plan
        messages = [("system", PLANNER_SYSTEM.replace("TOOLS", tool_catalog())), ("user", _describe(req))]
        raw, problems = "", []
        for attempt, source in ((1, "llm"), (2, "repaired")):
            if attempt == 2:  # the repair round: the problems, in words
                reason = "; ".join(problems or ["it is not valid JSON of the asked shape"])
                messages += [
                    ("assistant", raw),
                    ("user", f"That plan cannot run: {reason}. Write the corrected plan (JSON only).{self._hint(req)}"),
                ]
            raw, plan, problems = await self._ask_plan(messages, req)
            if plan is not None:
                plan.source = source  # type: ignore[assignment]
            self._record_plan(plan, problems, raw=raw, attempt=attempt)
            if plan is not None and not problems:
                return plan
        fallback = self.template_for(req)
        fallback.source = "template"
        fallback.notes.append("the LLM's plan could not run after one repair: " + "; ".join(problems)[:300])
        self._record_plan(fallback, [], reason="fallback: the request's template")
        return fallback

    def _hint(self, req: Request) -> str:
        """For the repair round: the template the request's words and inputs point to (as with --llm none), named
        only when that template alone would satisfy the request (small models that copied an example's steps often
        take a template once it is named; a template that leaves part of the request out is no help)."""
        try:
            fallback = self.template_for(req)
        except InputError:
            return ""
        if check_plan(fallback, has_image=req.has_image, n_videos=req.n_videos, known=req.known, request=req.text):
            return ""
        return f' If one template fits the whole request, use it: the words and inputs suggest "{fallback.intent}".'

    async def _ask_plan(self, messages: list[tuple[str, str]], req: Request) -> tuple[str, Plan | None, list[str]]:
        raw = await self._complete(messages, _schema_for(req), "plan")
        try:
            plan = self.parse_plan(raw, req)
        except (ValueError, KeyError, TypeError, InputError) as err:
            return raw, None, [first_line(err)]
        return (
            raw,
            plan,
            check_plan(plan, has_image=req.has_image, n_videos=req.n_videos, known=req.known, request=req.text),
        )

    def parse_plan(self, raw: str, req: Request) -> Plan:
        """The LLM's JSON (a template with parameters, or steps) as a :class:`Plan` (not yet checked)."""
        data = _json_object(raw)
        if "template" in data:
            name = data["template"]
            if name not in TEMPLATES:
                raise ValueError(f"unknown template {name!r}; use one of: {', '.join(TEMPLATES)}")
            prompt = str(data.get("prompt") or req.text).strip() or req.text
            if name == "story":
                shots = [str(s).strip() for s in data.get("shots") or [] if str(s).strip()]
                if len(shots) < 2:
                    raise ValueError('a story needs "shots": a list of at least two shot descriptions')
                return template_plan("story", prompt, segments=req.segments or 1, shots=shots[:MAX_SHOTS])
            makes_picture = name in ("text-to-video", "digital-world") and not req.has_image and not req.n_videos
            default = self.profile.segments if makes_picture else 1
            seconds = data.get("seconds")
            seconds = float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None
            said = parse_seconds(req.text)
            # A length counts only when the user's words give one (small models copy the example's seconds); the
            # words decide when the LLM left it out.
            seconds = (seconds or said) if said is not None else None
            segments = req.segments or self.segments_for(seconds, default)
            if name in ("image-to-video", "extend", "edit", "connect") and name != "edit":
                prompt = str(data.get("prompt") or "")
            return template_plan(name, prompt, segments=segments, has_image=req.has_image, n_videos=req.n_videos)
        steps_in = data.get("steps")
        if not isinstance(steps_in, list) or not steps_in:
            raise ValueError('the reply has neither "template" nor a non-empty "steps" list')
        steps = []
        for i, s in enumerate(steps_in, start=1):
            if not isinstance(s, dict):
                raise ValueError(f"step {i} is not an object with id, tool and args")
            tool = str(s.get("tool", ""))
            args = s.get("args") if isinstance(s.get("args"), dict) else {}
            args = {k: v for k, v in args.items() if k != "seed"}  # seeds are the run's
            # a step may ask for several takes, the best kept (checked with the plan)
            steps.append(PlanStep(str(s.get("id") or f"s{i}"), tool, dict(args), best_of=s.get("best_of")))
        return Plan(steps, intent="auto")

    # ----- revisions ----------------------------------------------------------------------------------------
    async def revise(self, plan: Plan, text: str, prompt: str, image: Any = None) -> tuple[Plan, Revision]:
        """The next request's plan for a revision ("make it look like the 1920s"), and how it was read."""
        n_shots = len({s.shot for s in plan.steps if s.shot is not None})
        has_picture = any(s.tool == "image_to_video" for s in plan.steps)
        fallback = guess_revision(text, prompt=prompt, n_shots=n_shots, has_image=has_picture)
        rev, how = fallback, "no LLM: keyword reading"
        if self.client is not None:
            question = (
                f"The video's prompt: {prompt or '(none)'}\nIts plan:\n{plan.describe()}\n"
                + (f"It has {n_shots} shots.\n" if n_shots else "")
                + f"The user asks: {text}"
            )
            raw = await self._complete(
                [("system", REVISION_SYSTEM), ("user", question)], REVISION_SCHEMA, "revision", image
            )
            try:
                data = _json_object(raw)
                change = data["change"]
                if change not in ("edit", "rewrite", "extend", "animate", "regenerate"):
                    raise ValueError(f"unknown change {change!r}")
                shot = data.get("shot") if isinstance(data.get("shot"), int) and n_shots else None
                seconds = data.get("seconds") if isinstance(data.get("seconds"), int | float) else None
                body = str(data.get("text") or "").strip()
                if change == "edit" and not body:
                    body = fallback.text
                if change == "rewrite" and (not body or body == prompt):
                    body = fallback.text if fallback.change == "rewrite" else f"{prompt}, {text}"
                rev = Revision(
                    change, body, shot or fallback.shot, seconds if seconds is not None else fallback.seconds
                )
                how = "LLM"
            except (ValueError, KeyError, TypeError) as err:
                how = f"the LLM's reply could not be read ({first_line(err)}): keyword reading"
                self.record("planner", decision="revision", raw_choice=raw, valid=False, fallback_used=True)
        edited = apply_revision(plan, rev, fps=self.profile.fps, frames_per_segment=self.frames_per_segment)
        self.record(
            "planner",
            decision="revision",
            chosen=rev.change,
            reason=f"{how}: {rev.reason or rev.change}",
            text=rev.text,
            shot=rev.shot,
            duration_s=rev.seconds,
            valid=True,
            fallback_used=how != "LLM",
        )
        return edited, rev

    # ----- the quality gate ---------------------------------------------------------------------------------
    async def review_takes(
        self, step: PlanStep, takes: list[Take], gate: GateSettings, retakes: int
    ) -> tuple[str, str]:
        """A step whose best take scored under the gate: ("retake" | "accept", reason). The LLM decides from the
        takes' scores; without one (or past ``gate.max_retakes``) the rule of :func:`gate_rule` does."""
        if self.client is None or retakes >= gate.max_retakes:
            return gate_rule(takes, gate, retakes)
        lines = [
            f"take {t.index + 1} (seed {t.seed}): " + ", ".join(f"{k} {v:.2f}" for k, v in t.scores.items())
            for t in takes
        ]
        question = (
            f"Step {step.id} ({step.tool}) made {len(takes)} take(s); the gate asks for overall >= "
            f"{gate.min_quality:.2f} (0..1, higher is better); {gate.max_retakes - retakes} retake(s) left.\n"
            + "\n".join(lines)
        )
        raw = await self._complete([("system", QUALITY_SYSTEM), ("user", question)], QUALITY_SCHEMA, "quality")
        try:
            data = _json_object(raw)
            action, reason = str(data["action"]), str(data.get("reason", ""))
            if action not in ("retake", "accept"):
                raise ValueError(action)
        except (ValueError, KeyError, TypeError):
            return gate_rule(takes, gate, retakes)
        return action, reason or f"the planner's call on overall {max(t.overall for t in takes):.2f}"

    # ----- failures -----------------------------------------------------------------------------------------
    async def review(self, step: PlanStep, error: str, attempts: int) -> tuple[str, str]:
        """A failed step: ("retry" | "replan" | "finish", reason)."""
        if self.client is None:
            return ("retry", "no LLM: one retry with another seed") if attempts < 2 else ("finish", "failed twice")
        question = f"Step {step.id} ({step.tool} by {step.agent}) failed ({attempts} attempt(s)): {error}"
        raw = await self._complete([("system", REVIEW_SYSTEM), ("user", question)], REVIEW_SCHEMA, "review")
        try:
            data = _json_object(raw)
            action, reason = str(data["action"]), str(data.get("reason", ""))
            if action not in ("retry", "replan", "finish"):
                raise ValueError(action)
        except (ValueError, KeyError, TypeError):
            action, reason = ("retry" if attempts < 2 else "finish"), "the LLM's reply could not be read"
        if action == "retry" and attempts >= 2:
            action, reason = "replan", f"{reason}; {step.id} already failed twice"
        return action, reason

    # ----- the LLM ------------------------------------------------------------------------------------------
    async def _complete(
        self, messages: list[tuple[str, str]], schema: dict[str, Any], name: str, image: Any = None
    ) -> str:
        from autogen_core.models import AssistantMessage, SystemMessage, UserMessage

        built: list[Any] = []
        for i, (role, text) in enumerate(messages):
            if role == "system":
                built.append(SystemMessage(content=text))
            elif role == "assistant":
                built.append(AssistantMessage(content=text, source="planner"))
            else:
                content: Any = text
                if image is not None and i == len(messages) - 1 and self.client.model_info.get("vision"):
                    content = [text + "\nThe current video's newest picture is shown below.", image]
                built.append(UserMessage(content=content, source="user"))
        extra = {"response_format": response_format_for(schema, name), "max_tokens": PLAN_MAX_TOKENS}
        start = time.perf_counter()
        try:
            result = await self.client.create(built, extra_create_args=extra)
        finally:
            self.llm_seconds += time.perf_counter() - start
        content = result.content
        return content if isinstance(content, str) else json.dumps(str(content))

    def _record_plan(
        self, plan: Plan | None, problems: list[str], raw: str | None = None, attempt: int = 0, reason: str = ""
    ) -> None:
        self.record(
            "plan",
            source=plan.source if plan is not None else None,
            attempt=attempt,
            steps=[s.to_dict() for s in plan.steps] if plan is not None else [],
            problems=problems,
            raw=raw[:4000] if raw is not None else None,
            valid=plan is not None and not problems,
            reason=reason,
        )


# ----- reading requests without an LLM ------------------------------------------------------------------------------
def guess_task(text: str, has_image: bool, n_videos: int) -> str:
    """The template a request's words and inputs point to (no LLM)."""
    if has_image:
        if _DW.search(text):
            return "digital-world"
        return "edit" if asks_look_change(text, has_input=True) else "image-to-video"
    if n_videos >= 2:
        return "connect"
    if n_videos == 1:
        if _EXTEND.search(text) or parse_seconds(text) is not None and not re.search(r"\b(make|turn)\b", text, re.I):
            return "extend"
        return "digital-world" if _DW.search(text) else "edit"
    if _is_story(text):
        return "story"
    return "digital-world" if _DW.search(text) else "text-to-video"


def _is_story(text: str) -> bool:
    return bool(listed_shots(text))


def _schema_for(req: Request) -> dict[str, Any]:
    """The plan schema with only the templates the request's inputs can run (any inputs: the steps only)."""
    schema = planner_schema()
    fitting = _FITTING.get((req.has_image, req.n_videos), ())
    template, steps = schema["anyOf"]
    if not fitting:
        return steps
    template["properties"]["template"]["enum"] = list(fitting)
    # A cap on the words: a small model can repeat a phrase in a description until the token cap (no JSON at all).
    template["properties"]["prompt"]["maxLength"] = _TEMPLATE_PROMPT_CHARS
    template["properties"]["shots"]["items"]["maxLength"] = _TEMPLATE_PROMPT_CHARS
    return schema


def _strip_shot_count(text: str) -> str:
    return _SHOTS.sub("", text, count=1).strip()


def _describe(req: Request) -> str:
    inputs = []
    if req.has_image:
        inputs.append("an input image $image")
    for i in range(1, req.n_videos + 1):
        inputs.append(f"an input video $video{i}")
    head = f"request ({', '.join(inputs)})" if inputs else "request"
    return f"{head}: {req.text}"


def _json_object(raw: str) -> dict[str, Any]:
    text = (raw or "").strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError(f"the reply is not a JSON object: {text[:80]!r}")
    data = json.loads(text[start : end + 1])
    if not isinstance(data, dict):
        raise ValueError("the reply is not a JSON object")
    return data
