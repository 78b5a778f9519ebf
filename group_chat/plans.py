"""Mora's six tasks as plans: which agent uses which tool, in what order.

The same plans serve two modes. With no LLM (``--llm none``) :func:`run_fixed_plan` executes them step by step:
a real mode for reproducible batch work. With a planner LLM they narrow the group chat's candidates.

Example:
    >>> [s.tool for s in plan_steps("text-to-video", segments=3)]
    ['enhance_prompt', 'text_to_image', 'image_to_video', 'extend_video']
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from group_chat.transcript import Transcript
from tools.connect_clips import connect_clips
from tools.context import ToolContext, ToolResult
from tools.edit_image import edit_image
from tools.enhance_prompt import DIGITAL_WORLD_EDIT, enhance_prompt
from tools.errors import InputError
from tools.extend_video import MAX_SEGMENTS, extend_video
from tools.image_to_video import image_to_video
from tools.text_to_image import text_to_image

TASKS = ("text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world")
TASK_HELP = {
    "text-to-video": "make a video from --prompt",
    "image-to-video": "animate --image, guided by --prompt (optional)",
    "extend": "continue --video for --segments more segments",
    "edit": "edit --video by the instruction in --prompt (edits the first frame, regenerates the motion)",
    "connect": "join two clips (--video A --video B) with a generated transition",
    "digital-world": "a video in Mora's digital-world style, from --prompt, or restyling --image or --video",
}
AGENT_TOOLS = {
    "prompt_agent": ("enhance_prompt",),
    "image_agent": ("text_to_image",),
    "edit_agent": ("edit_image",),
    "video_agent": ("image_to_video", "extend_video"),
    "connection_agent": ("connect_clips",),
}


@dataclass
class TaskInputs:
    """A task's validated inputs. ``image`` and ``videos`` are artifact ids of the imported inputs."""

    task: str
    prompt: str = ""
    image: str | None = None
    videos: list[str] = field(default_factory=list)
    segments: int | None = None


@dataclass
class PlanStep:
    agent: str
    tool: str


def check_task_inputs(task: str, prompt: str | None, image: Any, videos: list | tuple, segments: int | None) -> None:
    """Refuse a task/input combination that cannot work, with a one-line :class:`InputError`."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
    has_prompt = bool(prompt and prompt.strip())
    if prompt is not None and not has_prompt and task in ("text-to-video", "edit"):
        raise InputError(
            f"--prompt is empty; {task} needs words describing {'the video' if task == 'text-to-video' else 'the edit'}"
        )
    needs = {
        "text-to-video": (True, 0, 0),
        "image-to-video": (False, 1, 0),
        "extend": (False, 0, 1),
        "edit": (True, 0, 1),
        "connect": (False, 0, 2),
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
    if segments is not None and (
        isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS
    ):
        raise InputError(f"--segments must be a whole number from 1 to {MAX_SEGMENTS}, got {segments!r}")


def plan_steps(task: str, segments: int = 1, has_image: bool = False, has_video: bool = False) -> list[PlanStep]:
    """The agents and tools a task uses, in order (``extend_video`` appears when more than one segment is asked)."""
    more = [PlanStep("video_agent", "extend_video")] if segments > 1 else []
    if task == "text-to-video" or (task == "digital-world" and not has_image and not has_video):
        return [
            PlanStep("prompt_agent", "enhance_prompt"),
            PlanStep("image_agent", "text_to_image"),
            PlanStep("video_agent", "image_to_video"),
            *more,
        ]
    if task == "image-to-video":
        return [PlanStep("prompt_agent", "enhance_prompt"), PlanStep("video_agent", "image_to_video"), *more]
    if task == "extend":
        return [PlanStep("video_agent", "extend_video")]
    if task in ("edit", "digital-world"):
        return [PlanStep("edit_agent", "edit_image"), PlanStep("video_agent", "image_to_video"), *more]
    if task == "connect":
        return [PlanStep("connection_agent", "connect_clips")]
    raise InputError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")


class FixedPlanRunner:
    """Runs a task's plan with no LLM, recording each tool call in the transcript as the agent that owns it."""

    def __init__(self, ctx: ToolContext, transcript: Transcript) -> None:
        self.ctx = ctx
        self.transcript = transcript

    def call(self, agent: str, tool: str, fn: Any, inputs: list[str], **kwargs: Any) -> ToolResult:
        start = time.perf_counter()
        result: ToolResult = fn(self.ctx, **kwargs)
        args = {k: v for k, v in kwargs.items() if not k.endswith("_id")}
        self.transcript.record(
            "tool_call",
            agent=agent,
            tool=tool,
            inputs=inputs,
            outputs=result.outputs,
            seconds=time.perf_counter() - start,
            arguments=args,
            result=result.text,
        )
        for note in result.notes:
            self.transcript.record("note", agent=agent, tool=tool, text=note)
        return result

    def prompt(self, text: str, digital_world: bool = False) -> str:
        start = time.perf_counter()
        out = enhance_prompt(text, digital_world=digital_world)
        self.transcript.record(
            "tool_call",
            agent="prompt_agent",
            tool="enhance_prompt",
            seconds=time.perf_counter() - start,
            arguments={"prompt": text, "digital_world": digital_world},
            result=out,
        )
        return out

    def animate(self, image_id: str, prompt: str, segments: int) -> str:
        clip = self.call(
            "video_agent", "image_to_video", image_to_video, [image_id], image_id=image_id, prompt=prompt
        ).main
        if segments > 1:
            clip = self.call(
                "video_agent", "extend_video", extend_video, [clip], clip_id=clip, prompt=prompt, segments=segments - 1
            ).main
        return clip

    def regenerate_like(self, video_id: str, instruction: str, segments: int | None) -> str:
        """Edit the first frame of a video, then regenerate at least the original's length of motion."""
        first = self.ctx.store.frames(video_id)[0]
        n_in = self.ctx.store.get(video_id).frames or 1
        frame = self.ctx.store.add_image(
            first, tool="first_frame", parents=[video_id], description=f"first frame of {video_id}"
        )
        self.transcript.record(
            "tool_call", agent="edit_agent", tool="first_frame", inputs=[video_id], outputs=[frame.id]
        )
        edited = self.call(
            "edit_agent", "edit_image", edit_image, [frame.id], image_id=frame.id, instruction=instruction
        ).main
        clip = self.call(
            "video_agent", "image_to_video", image_to_video, [edited], image_id=edited, prompt=instruction
        ).main
        length = self.ctx.store.get(clip).frames or 1
        if segments is None:
            segments = 1 + (math.ceil((n_in - length) / max(1, length - 1)) if n_in > length else 0)
        segments = min(segments, MAX_SEGMENTS)
        if segments > 1:
            clip = self.call(
                "video_agent",
                "extend_video",
                extend_video,
                [clip],
                clip_id=clip,
                prompt=instruction,
                segments=segments - 1,
            ).main
        return clip

    def run(self, inputs: TaskInputs) -> str:
        """Execute the task; returns the final clip's artifact id."""
        task, profile = inputs.task, self.ctx.profile
        if task == "text-to-video" or (task == "digital-world" and not inputs.image and not inputs.videos):
            prompt = self.prompt(inputs.prompt, digital_world=task == "digital-world")
            image = self.call("image_agent", "text_to_image", text_to_image, [], prompt=prompt).main
            return self.animate(image, prompt, inputs.segments or profile.segments)
        if task == "image-to-video":
            prompt = self.prompt(inputs.prompt) if inputs.prompt.strip() else ""
            return self.animate(inputs.image, prompt, inputs.segments or 1)
        if task == "extend":
            return self.call(
                "video_agent",
                "extend_video",
                extend_video,
                inputs.videos,
                clip_id=inputs.videos[0],
                prompt=inputs.prompt,
                segments=inputs.segments or 1,
            ).main
        if task == "edit":
            return self.regenerate_like(inputs.videos[0], inputs.prompt, inputs.segments)
        if task == "connect":
            a, b = inputs.videos
            return self.call(
                "connection_agent",
                "connect_clips",
                connect_clips,
                [a, b],
                first_clip_id=a,
                second_clip_id=b,
                prompt=inputs.prompt,
            ).main
        # digital-world with an input: restyle it toward the digital world, then animate.
        instruction = DIGITAL_WORLD_EDIT + (f"; {inputs.prompt.strip()}" if inputs.prompt.strip() else "")
        if inputs.image:
            edited = self.call(
                "edit_agent", "edit_image", edit_image, [inputs.image], image_id=inputs.image, instruction=instruction
            ).main
            return self.animate(edited, instruction, inputs.segments or 1)
        return self.regenerate_like(inputs.videos[0], instruction, inputs.segments)
