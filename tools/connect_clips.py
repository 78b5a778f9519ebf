"""Tool: join two clips with a generated transition from A's last frame to B's first frame."""

from __future__ import annotations

import time

from PIL import Image

from openmora.errors import ToolArgumentError
from openmora.tools.context import ToolContext, ToolResult, call_pipeline, generator, to_uint8_frames
from openmora.video_io import concatenate


def connect_clips(
    ctx: ToolContext, first_clip_id: str, second_clip_id: str, prompt: str = "", seed: int | None = None
) -> ToolResult:
    """Connect two videos: generate a transition that starts at the first clip's last frame and ends at the
    second clip's first frame, then join first clip + transition + second clip into one video.

    Args:
        first_clip_id: artifact id of the clip that plays first (e.g. clip-0001).
        second_clip_id: artifact id of the clip that plays second (e.g. clip-0002).
        prompt: a description of the transition (optional).
        seed: random seed for reproducible results (optional).

    Returns:
        Two artifact ids: the transition clip and the joined clip (the main result, last), and a description.
    """
    a = ctx.store.get(first_clip_id, "video")
    b = ctx.store.get(second_clip_id, "video")
    if a.id == b.id:
        raise ToolArgumentError(f"connect_clips needs two different clips, got {a.id} twice")
    fa, fb = ctx.store.frames(a.id), ctx.store.frames(b.id)
    if fa.shape[1:] != fb.shape[1:]:
        raise ToolArgumentError(f"{a.id} is {fa.shape[2]}x{fa.shape[1]} but {b.id} is {fb.shape[2]}x{fb.shape[1]}")
    seed = ctx.next_seed(seed)
    start = time.perf_counter()
    pipe = ctx.loader.get("connect_frames")
    params = ctx.params("connect_frames")
    out = call_pipeline(
        ctx,
        "connect_frames",
        pipe,
        "connect_frames",
        image=Image.fromarray(fa[-1]),
        last_image=Image.fromarray(fb[0]),
        prompt=prompt or "a smooth continuous transition between two scenes",
        height=fa.shape[1],
        width=fa.shape[2],
        generator=generator(seed),
        output_type="np",
        **params,
    )
    transition = to_uint8_frames(out.frames)[0]
    seconds = time.perf_counter() - start
    trans = ctx.store.add_video(
        transition,
        ctx.profile.fps,
        tool="connect_clips",
        parents=[a.id, b.id],
        params={"prompt": prompt, **params},
        seed=seed,
        seconds=seconds,
        description=f"transition from the end of {a.id} to the start of {b.id}",
    )
    # The transition's end frames re-draw A's last and B's first frame: keep the originals, not the copies.
    joined = concatenate([fa, transition[1:-1], fb])
    art = ctx.store.add_video(
        joined,
        ctx.profile.fps,
        tool="connect_clips",
        parents=[a.id, trans.id, b.id],
        params={"prompt": prompt},
        seed=seed,
        seconds=time.perf_counter() - start,
        description=f"{a.id} + transition {trans.id} + {b.id}",
    )
    return ToolResult(outputs=[trans.id, art.id], text=f"{art.summary()}; transition alone: {trans.id}")
