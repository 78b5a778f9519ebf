"""Tool: edit an image by a written instruction (InstructPix2Pix or another instruction editor)."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from openmora.tools.context import ToolContext, ToolResult, call_pipeline, generator, require_text, to_uint8_frames


def edit_image(ctx: ToolContext, image_id: str, instruction: str, seed: int | None = None) -> ToolResult:
    """Change an existing image following an instruction, keeping its layout. Use it for video editing (edit the
    first frame, then animate it) and for restyling ("make it 1920s", "turn it into a pixel-art digital world").

    Args:
        image_id: the artifact id of the image to edit (e.g. img-0001).
        instruction: the change to make, as an imperative sentence ("make the sky stormy").
        seed: random seed for reproducible results (optional).

    Returns:
        The edited image's artifact id and a one-line description.
    """
    instruction = require_text(instruction, "instruction")
    source = ctx.store.get(image_id, "image")
    pixels = ctx.store.image(source.id)
    seed = ctx.next_seed(seed)
    start = time.perf_counter()
    pipe = ctx.loader.get("edit_image")
    params = ctx.params("edit_image")
    out = call_pipeline(
        ctx,
        "edit_image",
        pipe,
        "edit_image",
        prompt=ctx.model_prompt(instruction, "edit"),
        image=Image.fromarray(pixels),
        generator=generator(seed),
        output_type="np",
        **params,
    )
    image = to_uint8_frames(out.images)[0]
    if image.shape != pixels.shape:  # some editors round the size: keep the run's size
        image = np.asarray(Image.fromarray(image).resize(pixels.shape[1::-1], Image.Resampling.LANCZOS))
    art = ctx.store.add_image(
        image,
        tool="edit_image",
        parents=[source.id],
        params={"instruction": instruction, **params},
        seed=seed,
        seconds=time.perf_counter() - start,
        description=f"{source.id} edited: {instruction[:80]}",
    )
    return ToolResult(outputs=[art.id], text=art.summary())


def take_frame(ctx: ToolContext, clip_id: str, last: bool = False) -> ToolResult:
    """Take a clip's first frame (or its last) as an image, to edit it and re-animate it (video editing).

    Args:
        clip_id: the artifact id of the clip (e.g. clip-0001).
        last: take the last frame instead of the first.

    Returns:
        The frame's image artifact id and a one-line description.
    """
    if not isinstance(last, bool):
        from openmora.errors import ToolArgumentError

        raise ToolArgumentError(f"last must be true or false, got {last!r}")
    source = ctx.store.get(clip_id, "video")
    which = "last" if last else "first"
    frame = ctx.store.frames(source.id)[-1 if last else 0]
    art = ctx.store.add_image(
        frame,
        tool="take_frame",
        parents=[source.id],
        params={"last": last},
        description=f"{which} frame of {source.id}",
    )
    return ToolResult(outputs=[art.id], text=art.summary())
