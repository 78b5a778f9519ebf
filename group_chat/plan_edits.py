"""Revisions as plan edits: a :class:`~openmora.group_chat.revisions.Revision` applied to the current plan gives the
next request's plan. The edit touches only the steps the change is about; the content-addressed step cache then
reuses every step whose inputs did not change, and re-runs the changed ones with everything downstream.

| change | the edit |
|---|---|
| ``edit`` | an ``edit_image`` step on the picture the (shot's) motion starts from; the motion re-runs on the edit |
| ``rewrite`` | the (shot's) image prompt replaced by the rewritten one: new picture, new motion, same seeds |
| ``extend`` | an ``extend_video`` step after the final clip, as many segments as the seconds asked |
| ``animate`` | new seeds for the (shot's) motion steps: same picture, new motion |
| ``regenerate`` | new seeds for every model step of the (shot): a new take |

Example:
    >>> from openmora.group_chat.plan import template_plan
    >>> from openmora.group_chat.revisions import Revision
    >>> plan = template_plan("text-to-video", "a fox", segments=1)
    >>> edited = apply_revision(plan, Revision("edit", "make it look like the 1920s"), fps=7, frames_per_segment=8)
    >>> [s.tool for s in edited.steps]
    ['enhance_prompt', 'text_to_image', 'edit_image', 'image_to_video']
"""

from __future__ import annotations

import math

from openmora.errors import InputError
from openmora.group_chat.plan import REF, TOOLS, Plan, PlanStep, _extend_steps
from openmora.group_chat.revisions import Revision


def _scope(plan: Plan, shot: int | None) -> list[PlanStep]:
    if shot is None:
        return list(plan.steps)
    steps = [s for s in plan.steps if s.shot == shot]
    if not steps:
        shots = sorted({s.shot for s in plan.steps if s.shot is not None})
        if not shots:
            raise InputError(f"this video has no shots; shot {shot} cannot be changed (say what to change instead)")
        raise InputError(f"there is no shot {shot}; this story has shots {shots[0]} to {shots[-1]}")
    return steps


def _motion_steps(plan: Plan, scope: list[PlanStep]) -> list[PlanStep]:
    """The steps that animate a picture in scope (the first of each chain is an image_to_video)."""
    return [s for s in scope if s.tool == "image_to_video"]


def _source_of(plan: Plan, ref: str) -> PlanStep | None:
    return plan.step(ref[1:]) if isinstance(ref, str) and REF.match(ref) and ref[1] == "s" else None


def _image_maker(plan: Plan, motion: PlanStep) -> PlanStep | None:
    """The text_to_image step behind a motion step's picture (through any edits), or None (an input picture)."""
    step = _source_of(plan, motion.args.get("image_id", ""))
    while step is not None and step.tool == "edit_image":
        step = _source_of(plan, step.args.get("image_id", ""))
    return step if step is not None and step.tool == "text_to_image" else None


def apply_revision(plan: Plan, rev: Revision, *, fps: int, frames_per_segment: int) -> Plan:
    """The plan of the next request: ``plan`` edited by ``rev`` (``plan`` itself is not changed). Steps whose seed is
    cleared get new ones when the plan is adopted."""
    new = plan.copy()
    scope = _scope(new, rev.shot)
    motions = _motion_steps(new, scope)
    change = rev.change
    if change == "rewrite" and not any(_image_maker(new, m) for m in motions):
        change = "edit"  # the picture came from an input: change it by editing
    if not motions:  # nothing was animated from a picture: the run joins or extends given clips
        if change in ("edit", "rewrite"):
            raise InputError("this video has no picture to change (it joins or extends given clips); try 'extend it'")
        if change == "animate":
            change = "regenerate"  # new motion here is a new take of the model steps
    if change == "edit":
        for motion in motions[:1] if rev.shot is None else motions:
            eid = new.new_id()
            edit = PlanStep(
                eid, "edit_image", {"image_id": motion.args["image_id"], "instruction": rev.text}, shot=motion.shot
            )
            new.steps.insert(new.steps.index(motion), edit)
            motion.args["image_id"] = f"${eid}"
        new.notes.append(f"edit the picture: {rev.text}")
    elif change == "rewrite":
        for motion in motions:
            maker = _image_maker(new, motion)
            if maker is None:
                continue
            source = _source_of(new, maker.args.get("prompt", ""))
            if source is not None and source.tool == "enhance_prompt":
                old = source.args.get("prompt", "")
                source.args["prompt"] = rev.text
            else:
                old = maker.args.get("prompt", "")
                maker.args["prompt"] = rev.text
            for s in scope:  # motion prompts that repeated the old words
                if s.tool in ("image_to_video", "extend_video") and s.args.get("prompt") == old and old:
                    s.args["prompt"] = rev.text
        new.notes.append(f"new prompt: {rev.text}")
    elif change == "animate":
        for s in scope:
            if s.tool in ("image_to_video", "extend_video"):
                s.args["seed"] = None
        new.notes.append("new motion")
    elif change == "regenerate":
        for s in scope:
            if "seed" in TOOLS[s.tool].args:
                s.args["seed"] = None
        if rev.text.strip():
            for motion in motions:
                maker = _image_maker(new, motion)
                if maker is not None:
                    src = _source_of(new, maker.args.get("prompt", ""))
                    (src if src is not None and src.tool == "enhance_prompt" else maker).args["prompt"] = rev.text
        new.notes.append("a new take")
    if change == "extend":
        final = new.step(new.final)
        seconds = rev.seconds if rev.seconds and rev.seconds > 0 else None
        per = max(1, frames_per_segment - 1)  # an extension adds one segment less its repeated first frame
        segments = 1 if seconds is None else max(1, math.ceil(seconds * fps / per))
        prompt = final.args.get("prompt", "") if final.tool in ("image_to_video", "extend_video") else ""
        if rev.text.strip():
            prompt = rev.text
        steps = list(new.steps)
        last = _extend_steps(steps, final.id, prompt, segments, final.shot if rev.shot else None)
        # _extend_steps numbers by position; renumber the new steps after the plan's highest id.
        added = steps[len(new.steps) :]
        renamed: dict[str, str] = {}
        for step in added:
            fresh = new.new_id()
            renamed[step.id] = fresh
            step.id = fresh
            step.args["clip_id"] = "$" + renamed.get(step.args["clip_id"][1:], step.args["clip_id"][1:])
            new.steps.append(step)
        new.final = renamed[last]
        new.notes.append(f"extend by {segments} segment{'s' if segments > 1 else ''}")
    return new
