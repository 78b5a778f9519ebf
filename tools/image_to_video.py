"""Tool: animate a still image into a short clip (Stable Video Diffusion, or a text+image video model)."""

from __future__ import annotations

import inspect
import time

import numpy as np
from PIL import Image

from tools.context import ToolContext, ToolResult, call_pipeline, generator, to_uint8_frames


def render_segment(ctx: ToolContext, image: np.ndarray, prompt: str, seed: int) -> tuple[np.ndarray, list[str]]:
    """Run the image-to-video pipeline on one conditioning frame; returns (frames, notes)."""
    pipe = ctx.loader.get("image_to_video")
    params = ctx.params("image_to_video")
    call = dict(
        image=Image.fromarray(image),
        height=ctx.profile.height,
        width=ctx.profile.width,
        generator=generator(seed),
        output_type="pt",  # frames stay on the device until they are uint8 (tools.context.to_uint8_frames)
        **params,
    )
    notes = []
    if prompt:
        if "prompt" in inspect.signature(pipe.__call__).parameters:
            call["prompt"] = prompt
        else:
            notes.append(f"{type(pipe).__name__} takes no text: the prompt shaped the image, not the motion")
    out = call_pipeline(ctx, "image_to_video", pipe, "image_to_video", **call)
    frames = to_uint8_frames(out.frames)[0]
    return frames, notes


def image_to_video(ctx: ToolContext, image_id: str, prompt: str = "", seed: int | None = None) -> ToolResult:
    """Turn a still image into a short video clip that starts from that image. Use it after an image exists.

    Args:
        image_id: the artifact id of the starting image (e.g. img-0001).
        prompt: the motion or scene description (used by models that take text; optional).
        seed: random seed for reproducible results (optional).

    Returns:
        The new clip's artifact id (e.g. clip-0001) and a one-line description.
    """
    source = ctx.store.get(image_id, "image")
    seed = ctx.next_seed(seed)
    start = time.perf_counter()
    frames, notes = render_segment(ctx, ctx.store.image(source.id), prompt, seed)
    art = ctx.store.add_video(
        frames,
        ctx.profile.fps,
        tool="image_to_video",
        parents=[source.id],
        params={"prompt": prompt, **ctx.params("image_to_video")},
        seed=seed,
        seconds=time.perf_counter() - start,
        description=f"animated from {source.id}",
    )
    return ToolResult(outputs=[art.id], text=art.summary(), notes=notes)
