"""Tool: make a still image from a text prompt (Stable Diffusion / SDXL, with SDXL's refiner when configured)."""

from __future__ import annotations

import time

from openmora.tools.context import ToolContext, ToolResult, call_pipeline, generator, require_text, to_uint8_frames


def text_to_image(ctx: ToolContext, prompt: str, negative_prompt: str = "", seed: int | None = None) -> ToolResult:
    """Create one image from a detailed visual description. Use it to make the first frame of a new video.

    Args:
        prompt: what the picture shows: subject, setting, lighting, style, camera. One or two sentences.
        negative_prompt: what the picture must not show (optional).
        seed: random seed for reproducible results (optional; the run's seed is used when omitted).

    Returns:
        The new image's artifact id (e.g. img-0001) and a one-line description.
    """
    prompt = require_text(prompt, "prompt")
    seed = ctx.next_seed(seed)
    start = time.perf_counter()
    role = ctx.profile.role("text_to_image")
    pipe = ctx.loader.get("text_to_image")
    params = ctx.params("text_to_image")
    text = ctx.model_prompt(prompt)  # the profile's vocabulary, where it has one
    call = dict(prompt=text, height=ctx.profile.height, width=ctx.profile.width, generator=generator(seed), **params)
    if negative_prompt:
        call["negative_prompt"] = negative_prompt
    if role.refiner is not None:
        # SDXL base denoises the first part of the schedule and hands its latents to the refiner.
        call.update(denoising_end=role.refiner_split, output_type="latent")
        latents = call_pipeline(ctx, "text_to_image", pipe, "text_to_image", **call).images
        refiner = ctx.loader.get("text_to_image", part="refiner")
        rcall = dict(prompt=text, image=latents, denoising_start=role.refiner_split, generator=generator(seed))
        rcall.update({k: v for k, v in params.items() if k in ("num_inference_steps", "guidance_scale")})
        rcall.update(ctx.params("text_to_image", "refiner"))
        if negative_prompt:
            rcall["negative_prompt"] = negative_prompt
        images = call_pipeline(ctx, "text_to_image", refiner, "refine_image", output_type="np", **rcall).images
    else:
        images = call_pipeline(ctx, "text_to_image", pipe, "text_to_image", output_type="np", **call).images
    image = to_uint8_frames(images)[0]
    art = ctx.store.add_image(
        image,
        tool="text_to_image",
        params={"prompt": prompt, "negative_prompt": negative_prompt, **params}
        | ({"model_prompt": text} if text != prompt else {}),
        seed=seed,
        seconds=time.perf_counter() - start,
        description=f"from text: {prompt[:80]}",
    )
    return ToolResult(outputs=[art.id], text=art.summary())
