"""Multi-shot stories: a long prompt split into shots, each rendered (image, then motion), then joined with
generated transitions. Shots render with stage overlap: shot k+1's text-to-image runs while shot k's image-to-video
runs, each pipeline used by one thread at a time (a pipeline's scheduler is not thread-safe). When roles sit on
different devices (the loader's "auto" placement on several GPUs), the stages run on different cards at once; on
one device the overlap still hides the smaller stage (and on a CPU the two stages use two cores).

Seeds are fixed per shot, not per call order, so a parallel render gives exactly the frames of a serial one.

Example:
    >>> split_shots("A fox wakes in its den. It runs across the snow. At dusk it reaches the river.")
    ['A fox wakes in its den', 'It runs across the snow', 'At dusk it reaches the river']
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from openmora.errors import InputError
from openmora.group_chat.plans import check_prompt_length
from openmora.group_chat.transcript import Transcript, record_tool_call
from openmora.tools.connect_clips import connect_clips
from openmora.tools.context import ToolContext, ToolResult
from openmora.tools.enhance_prompt import enhance_prompt
from openmora.tools.extend_video import extend_video
from openmora.tools.image_to_video import image_to_video
from openmora.tools.text_to_image import text_to_image

MAX_SHOTS = 8
# Shot k uses seeds seed + k * stride + step, independent of scheduling: its image +0, its clip +1, the transition
# into it +2, its extension +3 on (one seed per segment, at most 12: never into the next shot's block).
SHOT_SEED_STRIDE = 1000


def split_shots(prompt: str) -> list[str]:
    """Shots from a story: one per line, else per ';', else per sentence."""
    text = (prompt or "").strip()
    for pattern in (r"\n+", r";", r"(?<=[.!?])\s+"):
        parts = [p.strip().rstrip(".!?").strip() for p in re.split(pattern, text)]
        parts = [p for p in parts if p]
        if len(parts) > 1:
            return parts
    return [text.rstrip(".!?").strip()] if text else []


def check_story(prompt: str | None) -> list[str]:
    shots = split_shots(prompt or "")
    if len(shots) < 2:
        raise InputError(
            "story needs --prompt with at least two shots: one per line, separated by ';', or one per sentence"
        )
    if len(shots) > MAX_SHOTS:
        raise InputError(f"story has {len(shots)} shots; at most {MAX_SHOTS} are accepted")
    for k, shot in enumerate(shots, 1):
        check_prompt_length(shot, f"story shot {k}")
    return shots


@dataclass
class ShotResult:
    index: int
    prompt: str
    image_id: str
    clip_id: str


class StoryRenderer:
    """Renders a story's shots with stage overlap and joins them.

    Args:
        overlap: run the image and video stages in two worker threads (True), or one after the other (False).
    """

    def __init__(self, ctx: ToolContext, transcript: Transcript, overlap: bool = True) -> None:
        self.ctx = ctx
        self.transcript = transcript
        self.overlap = overlap

    def _call(self, agent: str, fn: Callable[..., ToolResult], seed: int, shot: int, **kwargs: Any) -> ToolResult:
        start = time.perf_counter()
        try:
            result = fn(self.ctx, seed=seed, **kwargs)
        except BaseException as err:
            record_tool_call(
                self.transcript, agent, fn.__name__, kwargs, error=err, seconds=time.perf_counter() - start, shot=shot
            )
            raise
        record_tool_call(
            self.transcript, agent, fn.__name__, kwargs, result=result, seconds=time.perf_counter() - start, shot=shot
        )
        return result

    def _image(self, k: int, prompt: str) -> tuple[str, str]:
        start = time.perf_counter()
        text = enhance_prompt(prompt)
        record_tool_call(
            self.transcript,
            "prompt_agent",
            "enhance_prompt",
            {"prompt": prompt},
            result=text,
            seconds=time.perf_counter() - start,
            shot=k,
        )
        base = self.ctx.seed + k * SHOT_SEED_STRIDE
        return text, self._call("image_agent", text_to_image, base, k, prompt=text).main

    def _video(self, k: int, text: str, image_id: str, segments: int) -> str:
        base = self.ctx.seed + k * SHOT_SEED_STRIDE
        clip = self._call("video_agent", image_to_video, base + 1, k, image_id=image_id, prompt=text).main
        if segments > 1:
            clip = self._call(
                "video_agent", extend_video, base + 3, k, clip_id=clip, prompt=text, segments=segments - 1
            ).main
        return clip

    def render(self, shots: list[str], segments: int = 1) -> tuple[str, list[ShotResult]]:
        """Render every shot, then join them in order with transitions; returns (final clip id, shots)."""
        start = time.perf_counter()
        if self.overlap:
            with ThreadPoolExecutor(1, "openmora-image") as images, ThreadPoolExecutor(1, "openmora-video") as videos:
                image_jobs = [images.submit(self._image, k, p) for k, p in enumerate(shots)]
                video_jobs: list[Future] = []
                for k, job in enumerate(image_jobs):
                    text, image_id = job.result()  # the image stage moves on to shot k+1 meanwhile
                    video_jobs.append(videos.submit(self._video, k, text, image_id, segments))
                clips = [j.result() for j in video_jobs]
                images_done = [j.result()[1] for j in image_jobs]
        else:
            images_done, clips = [], []
            for k, p in enumerate(shots):
                text, image_id = self._image(k, p)
                images_done.append(image_id)
                clips.append(self._video(k, text, image_id, segments))
        render_s = time.perf_counter() - start
        results = [ShotResult(k, shots[k], images_done[k], clips[k]) for k in range(len(shots))]
        joined = clips[0]
        for k in range(1, len(clips)):
            seed = self.ctx.seed + k * SHOT_SEED_STRIDE + 2
            joined = self._call(
                "connection_agent",
                connect_clips,
                seed,
                k,
                first_clip_id=joined,
                second_clip_id=clips[k],
                prompt=f"{shots[k - 1]}, then {shots[k]}",
            ).main
        self.transcript.record(
            "note",
            agent="planner",
            text=f"{len(shots)} shots rendered in {render_s:.1f}s ({'stage overlap' if self.overlap else 'serial'}), joined with {len(shots) - 1} transitions",
        )
        return joined, results
