"""Tool: join two clips with a generated transition from A's last frame to B's first frame."""

from __future__ import annotations

import time

from PIL import Image

from openmora.artifacts import piece_joins
from openmora.errors import ToolArgumentError
from openmora.tools.context import ToolContext, ToolResult, call_pipeline, generator, to_uint8_frames
from openmora.video_io import concatenate


def connect_clips(
    ctx: ToolContext,
    first_clip_id: str,
    second_clip_id: str,
    prompt: str = "",
    transition_only: bool = False,
    seed: int | None = None,
) -> ToolResult:
    """Connect two videos: generate a transition that starts at the first clip's last frame and ends at the
    second clip's first frame, then join first clip + transition + second clip into one video.

    Args:
        first_clip_id: artifact id of the clip that plays first (e.g. clip-0001).
        second_clip_id: artifact id of the clip that plays second (e.g. clip-0002).
        prompt: a description of the transition (optional).
        transition_only: return only the frames between the two clips (for join_clips), not the joined video.
        seed: random seed for reproducible results (optional).

    Returns:
        Two artifact ids: the transition clip and the joined clip (the main result, last), and a description;
        with transition_only, one: the in-between frames.
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
        prompt=ctx.model_prompt(prompt) if prompt else "a smooth continuous transition between two scenes",
        height=fa.shape[1],
        width=fa.shape[2],
        generator=generator(seed),
        output_type="np",
        **params,
    )
    transition = to_uint8_frames(out.frames)[0]
    seconds = time.perf_counter() - start
    if transition_only:
        # The transition's end frames re-draw A's last and B's first frame: only the frames in between are new.
        art = ctx.store.add_video(
            transition[1:-1],
            ctx.profile.fps,
            tool="connect_clips",
            parents=[a.id, b.id],
            params={"prompt": prompt, "transition_only": True, **params},
            seed=seed,
            seconds=seconds,
            description=f"frames from the end of {a.id} to the start of {b.id}",
        )
        return ToolResult(outputs=[art.id], text=art.summary())
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
        joins=piece_joins(
            [(a.id, len(fa), a.joins), (trans.id, len(transition) - 2, []), (b.id, len(fb), b.joins)], "transition"
        ),
    )
    return ToolResult(outputs=[trans.id, art.id], text=f"{art.summary()}; transition alone: {trans.id}")


def join_clips(ctx: ToolContext, clip_ids: list[str]) -> ToolResult:
    """Join clips end to end into one video, in the order given (no model runs; for shots and their transitions).

    Args:
        clip_ids: artifact ids of the clips, in playing order (at least two, e.g. clip-0001, clip-0003, clip-0002).

    Returns:
        The joined clip's artifact id and a one-line description.
    """
    if not isinstance(clip_ids, list) or len(clip_ids) < 2:
        raise ToolArgumentError(f"join_clips needs a list of at least two clip ids, got {clip_ids!r}")
    arts = [ctx.store.get(c, "video") for c in clip_ids]
    frames = [ctx.store.frames(a.id) for a in arts]
    shape = frames[0].shape[1:]
    for a, f in zip(arts, frames, strict=True):
        if f.shape[1:] != shape:
            raise ToolArgumentError(f"{a.id} is {f.shape[2]}x{f.shape[1]}, not {shape[1]}x{shape[0]} like {arts[0].id}")
    start = time.perf_counter()
    art = ctx.store.add_video(
        concatenate(frames),
        ctx.profile.fps,
        tool="join_clips",
        parents=[a.id for a in arts],
        params={},
        seconds=time.perf_counter() - start,
        description=" + ".join(a.id for a in arts),
        joins=piece_joins(
            [(a.id, len(f), a.joins) for a, f in zip(arts, frames, strict=True)],
            [
                "transition" if "connect_clips" in (x.tool, y.tool) else "shot"
                for x, y in zip(arts, arts[1:], strict=False)
            ],
        ),
    )
    return ToolResult(outputs=[art.id], text=art.summary())
