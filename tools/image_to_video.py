"""Tool: animate a still image into a short clip (Stable Video Diffusion, or a text+image video model)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from openmora.tools.context import (
    HostCopy,
    ToolContext,
    ToolResult,
    call_pipeline,
    generating,
    generator,
    to_uint8_frames,
    uint8_channels_last,
)


def render_segment(
    ctx: ToolContext,
    image: np.ndarray,
    prompt: str,
    seed: int,
    on_frames: Callable[[np.ndarray, int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Run the image-to-video pipeline on one conditioning frame; returns (frames, notes).

    ``on_frames(frames, first_index)`` receives the frames as soon as they are decoded: for Stable Video Diffusion
    one VAE decode chunk at a time (``decode_chunk_size``), so a clip's encoding starts while the rest of it decodes;
    for other pipelines (and offloaded ones) once, with every frame. The frames are the same either way.
    """
    pipe = ctx.loader.get("image_to_video")
    params = ctx.params("image_to_video")
    call = dict(
        image=Image.fromarray(image),
        height=ctx.profile.height,
        width=ctx.profile.width,
        generator=generator(seed),
        output_type="pt",  # frames stay on the device until they are uint8 (openmora.tools.context.to_uint8_frames)
        **params,
    )
    notes = []
    if "prompt" in inspect.signature(pipe.__call__).parameters:
        # Text-conditioned models (Wan) refuse a call without a prompt: none given (an extend of an uploaded clip)
        # is the empty prompt, the unconditional branch they were trained with.
        call["prompt"] = ctx.model_prompt(prompt) if prompt else ""
    elif prompt:
        notes.append(f"{type(pipe).__name__} takes no text: the prompt shaped the image, not the motion")
    chunked = on_frames is not None and _decodes_in_chunks(pipe)
    if not chunked:
        out = call_pipeline(ctx, "image_to_video", pipe, "image_to_video", **call)
        frames = to_uint8_frames(out.frames)[0]
        if on_frames is not None:
            on_frames(frames, 0)
        return frames, notes
    vae_dtype = pipe.vae.dtype
    call["output_type"] = "latent"
    latents = call_pipeline(ctx, "image_to_video", pipe, "image_to_video", **call).frames
    # diffusers casts an fp16 VAE whose config asks for it to fp32 to encode the image, and back only on its own
    # decode path: back here too, so the decode runs (and compiles) as the pipeline's would.
    if pipe.vae.dtype != vae_dtype:
        pipe.vae.to(dtype=vae_dtype)
    with ctx.loader.runtime.using(pipe), generating(ctx):
        frames = decode_streamed(pipe, latents, params.get("decode_chunk_size"), on_frames)
    return frames, notes


def _decodes_in_chunks(pipe: Any) -> bool:
    """Stable Video Diffusion, with its VAE not under accelerate's offload hooks (a decode after the pipeline's
    call would leave the VAE on the GPU outside the memory manager's accounting)."""
    from diffusers import StableVideoDiffusionPipeline

    return isinstance(pipe, StableVideoDiffusionPipeline) and getattr(pipe.vae, "_hf_hook", None) is None


def decode_streamed(
    pipe: Any, latents: torch.Tensor, chunk: int | None, on_frames: Callable[[np.ndarray, int], None]
) -> np.ndarray:
    """Decode SVD latents ``(1, frames, C, h, w)`` one chunk at a time with the pipeline's own decode and
    post-processing, handing each chunk's uint8 frames to ``on_frames`` as it lands. The chunks are the pipeline's
    (its temporal decoder mixes frames within a chunk only), so the frames equal its single call's, bit for bit.

    A chunk's frames travel to the host while the next chunk decodes: the GPU does not wait for the copy or for
    ``on_frames``."""
    total = latents.shape[1]
    chunk = chunk or total  # the pipeline's default: every frame in one decode
    parts: list[np.ndarray] = []
    pending: tuple[HostCopy, int] | None = None

    def hand_over(copy: HostCopy, start: int) -> None:
        part = copy.numpy()
        on_frames(part, start)
        parts.append(part)

    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        video = pipe.decode_latents(latents[:, start : start + count], count, count)
        video = pipe.video_processor.postprocess_video(video=video, output_type="pt")
        copy = HostCopy(uint8_channels_last(video)[0])
        if pending is not None:
            hand_over(*pending)
        pending = (copy, start)
    if pending is not None:
        hand_over(*pending)
    return np.concatenate(parts)


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
    # encoded while it decodes: the frames go to the encoders chunk by chunk
    stream = ctx.store.open_video(ctx.profile.fps)
    try:
        _, notes = render_segment(ctx, ctx.store.image(source.id), prompt, seed, lambda f, _i: stream.append(f))
    except BaseException:
        stream.abort()
        raise
    art = stream.close(
        tool="image_to_video",
        parents=[source.id],
        params={"prompt": prompt, **ctx.params("image_to_video")},
        seed=seed,
        seconds=time.perf_counter() - start,
        description=f"animated from {source.id}",
    )
    return ToolResult(outputs=[art.id], text=art.summary(), notes=notes)
