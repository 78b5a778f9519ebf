"""The tasks a run can be asked for and the checks of their inputs, before anything is planned or written.

Mora's six tasks and ``story`` are templates (:func:`openmora.group_chat.plan.template_plan`); ``auto`` lets the
planner plan the request.

Example:
    >>> check_task_inputs("connect", None, None, ["a.mp4"], None)
    Traceback (most recent call last):
    ...
    openmora.errors.InputError: connect takes --video twice (first clip, then second clip), got 1
"""

from __future__ import annotations

from typing import Any

from openmora.errors import InputError
from openmora.tools.enhance_prompt import MAX_PROMPT_CHARS
from openmora.tools.extend_video import MAX_SEGMENTS

TASKS = ("auto", "text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world", "story")
TASK_HELP = {
    "auto": "the planner plans --prompt (with any --image/--video): one task, several, or a story",
    "text-to-video": "make a video from --prompt",
    "image-to-video": "animate --image, guided by --prompt (optional)",
    "extend": "continue --video for --segments more segments",
    "edit": "edit --video by the instruction in --prompt (edits the first frame, regenerates the motion)",
    "connect": "join two clips (--video A --video B) with a generated transition",
    "digital-world": "a video in Mora's digital-world style, from --prompt, or restyling --image or --video",
    "story": "several shots from --prompt (one per line, ';' or sentence), rendered with stage overlap and joined",
}


def check_task_inputs(task: str, prompt: str | None, image: Any, videos: list | tuple, segments: int | None) -> None:
    """Refuse a task/input combination that cannot work, with a one-line :class:`InputError`."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
    has_prompt = bool(prompt and prompt.strip())
    if prompt is not None and not has_prompt and task in ("text-to-video", "edit"):
        raise InputError(
            f"--prompt is empty; {task} needs words describing {'the video' if task == 'text-to-video' else 'the edit'}"
        )
    if has_prompt and task != "story":  # a story's limit is per shot (check_story)
        check_prompt_length(prompt, "--prompt")
    if task == "auto":
        if not has_prompt and image is None and not videos:
            raise InputError("auto needs --prompt TEXT saying what to make (and any --image/--video it is about)")
        if len(videos) > 2:
            raise InputError(f"at most two --video inputs are accepted, got {len(videos)}")
        _check_segments(segments)
        return
    needs = {
        "text-to-video": (True, 0, 0),
        "image-to-video": (False, 1, 0),
        "extend": (False, 0, 1),
        "edit": (True, 0, 1),
        "connect": (False, 0, 2),
        "story": (True, 0, 0),
    }
    if task in needs:
        need_prompt, n_images, n_videos = needs[task]
        if need_prompt and not has_prompt:
            raise InputError(f"{task} needs --prompt TEXT ({TASK_HELP[task]})")
        if n_images and image is None:
            raise InputError(f"{task} needs --image PATH ({TASK_HELP[task]})")
        if not n_images and image is not None:
            raise InputError(f"{task} takes no --image; use image-to-video or digital-world for an image")
        if len(videos) != n_videos:
            want = {0: "no --video", 1: "one --video", 2: "--video twice (first clip, then second clip)"}[n_videos]
            raise InputError(f"{task} takes {want}, got {len(videos)}")
    else:  # digital-world
        if image is not None and videos:
            raise InputError("digital-world takes --image or one --video, not both")
        if len(videos) > 1:
            raise InputError(f"digital-world takes at most one --video, got {len(videos)}")
        if not has_prompt and image is None and not videos:
            raise InputError("digital-world needs --prompt TEXT, --image PATH or --video PATH")
    if task == "story":
        from openmora.story import check_story

        check_story(prompt)
    _check_segments(segments)


def _check_segments(segments: int | None) -> None:
    if segments is not None and (
        isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS
    ):
        raise InputError(f"--segments must be a whole number from 1 to {MAX_SEGMENTS}, got {segments!r}")


def check_prompt_length(prompt: str, what: str) -> None:
    """Refuse a prompt over :data:`MAX_PROMPT_CHARS` (counted as the prompt tool counts: whitespace runs as one) with
    an :class:`InputError`, before a run folder or a pipeline exists; inside a run the tool's own check is a message
    the planner can react to."""
    length = len(" ".join(prompt.split()))
    if length > MAX_PROMPT_CHARS:
        raise InputError(f"{what} is {length} characters; at most {MAX_PROMPT_CHARS} are accepted")
