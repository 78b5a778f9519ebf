"""Full-size pipelines with random weights, built from the published configs committed under bench/configs.

Hubs are unreachable on these machines and no weights are stored anywhere, so the real model ids of the ``mora``
profile are exercised by building the same architectures at full size (parameter count, memory, FLOPs and speed
are the real ones; pictures are noise). Configs are copies of each hub repo's ``<component>/config.json``;
tokenizers are the byte-level CLIP BPE of ``openmora.tiny_models`` (514 ids, valid for any text encoder whose
vocabulary is larger), which is why the text configs' bos/eos/pad ids are 0/1/1.

Two ways to use a build:
* :func:`ensure_full_size_model` saves it with ``save_pretrained`` into the cache once, so the real
  ``from_pretrained`` path loads it (SDXL, InstructPix2Pix, SVD: a few GB each);
* ``model: fullsize:<hub id>`` in a profile builds it in-process on first use (Wan 14B: 41 GB is too slow to write
  and read back within one benchmark command; building it takes 50-97 s).

Example:
    >>> from bench.full_size import FULL_SIZE_MODELS, estimate_bytes
    >>> "stabilityai/stable-video-diffusion-img2vid-xt" in FULL_SIZE_MODELS
    True
    >>> round(estimate_bytes("stabilityai/stable-video-diffusion-img2vid-xt") / 2**30, 1)  # doctest: +SKIP
    4.3
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openmora.settings import cache_root

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
FULL_SIZE_VERSION = "v1"
_SEED = 0
_TRANSFORMERS_CONFIG = {
    "CLIPTextModel": "CLIPTextConfig",
    "CLIPTextModelWithProjection": "CLIPTextConfig",
    "CLIPVisionModel": "CLIPVisionConfig",
    "CLIPVisionModelWithProjection": "CLIPVisionConfig",
    "UMT5EncoderModel": "UMT5Config",
}


@dataclass
class FullSizeSpec:
    """How to assemble one hub model: its pipeline class, components (name -> fixture folder/component) and extras."""

    pipeline: str
    components: dict[str, str]
    extras: dict[str, Any] = field(default_factory=dict)
    save: bool = True  # False: too big to write and read back within one benchmark command; built in-process


SDXL = "stabilityai--stable-diffusion-xl-base-1.0"
FULL_SIZE_MODELS: dict[str, FullSizeSpec] = {
    "stabilityai/stable-diffusion-xl-base-1.0": FullSizeSpec(
        "StableDiffusionXLPipeline",
        {
            "unet": f"{SDXL}/unet",
            "vae": f"{SDXL}/vae",
            "text_encoder": f"{SDXL}/text_encoder",
            "text_encoder_2": f"{SDXL}/text_encoder_2",
            "scheduler": f"{SDXL}/scheduler",
        },
        {"tokenizer": "clip", "tokenizer_2": "clip", "image_encoder": None, "feature_extractor": None},
    ),
    "stabilityai/stable-diffusion-xl-refiner-1.0": FullSizeSpec(
        "StableDiffusionXLImg2ImgPipeline",
        {
            "unet": "stabilityai--stable-diffusion-xl-refiner-1.0/unet",
            # The refiner repo's VAE and second text encoder are SDXL base's (Mora and diffusers' docs share them).
            "vae": f"{SDXL}/vae",
            "text_encoder_2": f"{SDXL}/text_encoder_2",
            "scheduler": "stabilityai--stable-diffusion-xl-refiner-1.0/scheduler",
        },
        {
            "tokenizer_2": "clip",
            "text_encoder": None,
            "tokenizer": None,
            "requires_aesthetics_score": True,
            "force_zeros_for_empty_prompt": False,
        },
    ),
    "timbrooks/instruct-pix2pix": FullSizeSpec(
        "StableDiffusionInstructPix2PixPipeline",
        {
            "unet": "timbrooks--instruct-pix2pix/unet",
            "vae": "timbrooks--instruct-pix2pix/vae",
            "text_encoder": "timbrooks--instruct-pix2pix/text_encoder",
            "scheduler": "timbrooks--instruct-pix2pix/scheduler",
        },
        {"tokenizer": "clip", "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    ),
    "stabilityai/stable-video-diffusion-img2vid-xt": FullSizeSpec(
        "StableVideoDiffusionPipeline",
        {
            "unet": "stabilityai--stable-video-diffusion-img2vid-xt/unet",
            "vae": "stabilityai--stable-video-diffusion-img2vid-xt/vae",
            "image_encoder": "stabilityai--stable-video-diffusion-img2vid-xt/image_encoder",
            "scheduler": "stabilityai--stable-video-diffusion-img2vid-xt/scheduler",
        },
        {"feature_extractor": "clip_image"},
    ),
    "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers": FullSizeSpec(
        "WanImageToVideoPipeline",
        {
            "transformer": "Wan-AI--Wan2.1-FLF2V-14B-720P-diffusers/transformer",
            "vae": "Wan-AI--Wan2.1-FLF2V-14B-720P-diffusers/vae",
            "text_encoder": "Wan-AI--Wan2.1-FLF2V-14B-720P-diffusers/text_encoder",
            "image_encoder": "Wan-AI--Wan2.1-FLF2V-14B-720P-diffusers/image_encoder",
            "scheduler": "Wan-AI--Wan2.1-FLF2V-14B-720P-diffusers/scheduler",
        },
        {"tokenizer": "clip", "image_processor": "clip_image"},
        save=False,
    ),
}


def _config(rel: str) -> dict[str, Any]:
    return json.loads((CONFIGS / rel / "config.json").read_text(encoding="utf-8"))


@contextmanager
def _default_dtype(dtype: torch.dtype):
    # Create parameters directly in the target dtype: a 14B model built in float32 first would need 56 GB.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_component(rel: str, dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu") -> Any:
    """One component from its committed config: a diffusers model or scheduler, or a transformers model."""
    cfg = _config(rel)
    if "_class_name" in cfg:
        import diffusers

        cls = getattr(diffusers, cfg["_class_name"])
        if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
            return cls.from_config(cfg)  # a scheduler
        torch.manual_seed(_SEED)
        with torch.device(device), _default_dtype(dtype):
            model = cls.from_config(cfg)
    else:
        import transformers

        arch = cfg["architectures"][0]
        conf = getattr(transformers, _TRANSFORMERS_CONFIG[arch])(
            **{k: v for k, v in cfg.items() if k != "architectures"}
        )
        torch.manual_seed(_SEED)
        with torch.device(device), _default_dtype(dtype):
            model = getattr(transformers, arch)(conf)
    # Legacy torch.Tensor([...]) buffers stay on the CPU under torch.device(...): move them.
    model = model.to(device=device).eval().requires_grad_(False)
    # Like from_pretrained: modules a model asks to keep in float32 (Wan's norms, time embedder, rope) stay float32.
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if keep and dtype != torch.float32:
        for name, param in model.named_parameters():
            if any(k in name.split(".") for k in keep):
                param.data = param.data.float()
    return model


def _extra(kind: Any) -> Any:
    if kind == "clip":
        from openmora.tiny_models import _tokenizer

        return _tokenizer()
    if kind == "clip_image":
        from openmora.tiny_models import clip_image_processor

        return clip_image_processor(224)
    return kind


def build_pipeline(
    hub_id: str, dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu", **shared: Any
) -> Any:
    """Build ``hub_id``'s pipeline at full size with random weights (fixed seed) on ``device``.

    ``shared`` components (e.g. ``vae=base.vae, text_encoder_2=base.text_encoder_2`` for SDXL's refiner) are used
    instead of building new ones, so they exist once.
    """
    import diffusers

    if hub_id not in FULL_SIZE_MODELS:
        raise ValueError(f"no full-size config for {hub_id!r}; known: {', '.join(FULL_SIZE_MODELS)}")
    spec = FULL_SIZE_MODELS[hub_id]
    parts: dict[str, Any] = {}
    for name, rel in spec.components.items():
        parts[name] = shared[name] if name in shared else build_component(rel, dtype, device)
    for name, kind in spec.extras.items():
        parts[name] = shared.get(name, _extra(kind))
    pipe = getattr(diffusers, spec.pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def estimate_bytes(hub_id: str, dtype: torch.dtype = torch.float16) -> int:
    """Weight bytes of ``hub_id`` at ``dtype``, from a build on the meta device (no memory, no time)."""
    spec = FULL_SIZE_MODELS[hub_id]
    total = 0
    for rel in spec.components.values():
        m = build_component(rel, dtype, "meta")
        if isinstance(m, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
    return total


def ensure_full_size_model(
    hub_id: str, root: Path | None = None, device: str | torch.device | None = None, dtype: torch.dtype = torch.float16
) -> Path:
    """The folder of ``hub_id``'s full-size random-weight model, built (on ``device``, default CUDA when present)
    and written with ``save_pretrained`` in ``dtype`` the first time; loaded like a real download afterwards."""
    root = Path(root) if root else cache_root() / f"full-{FULL_SIZE_VERSION}"
    target = root / hub_id.replace("/", "--")
    if (target / "model_index.json").is_file():
        return target
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        with torch.no_grad():
            pipe = build_pipeline(hub_id, dtype, device)
            pipe.save_pretrained(tmp, safe_serialization=True)
            del pipe
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return target


def full_size_profile(profile: Any, root: Path | None = None, save: bool | None = None) -> Any:
    """A copy of ``profile`` whose hub ids point at full-size random-weight builds: saved folders for models that are
    saved (``spec.save``, or ``save`` to force), ``fullsize:<hub id>`` (built in-process) for the rest."""
    import copy

    out = copy.deepcopy(profile)

    def swap(cfg: Any) -> None:
        if cfg is None or cfg.model not in FULL_SIZE_MODELS:
            return
        keep = FULL_SIZE_MODELS[cfg.model].save if save is None else save
        cfg.model = str(ensure_full_size_model(cfg.model, root)) if keep else f"fullsize:{cfg.model}"
        cfg.variant = None  # our saved builds have no fp16 variant files

    for cfg in out.roles.values():
        swap(cfg)
        swap(cfg.refiner)
    return out


def param_count(pipe: Any) -> dict[str, int]:
    """Parameters per ``nn.Module`` component (shared modules appear under each name)."""
    return {
        name: sum(p.numel() for p in m.parameters())
        for name, m in pipe.components.items()
        if isinstance(m, torch.nn.Module)
    }
