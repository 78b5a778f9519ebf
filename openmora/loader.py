"""The one loader of diffusion pipelines: lazy, once per process, with device, dtype and thread policy.

Every tool asks ``loader.get(role)``; the first ask loads the role's pipeline with ``from_pretrained`` (the tiny
models are first built into the cache, then loaded the same way), later asks return the same object, across runs
that share the loader's :class:`~openmora.runtime.Runtime` too. Device ``auto`` means CUDA when present, else CPU; dtype ``auto`` means float16 on CUDA and
float32 on CPU. A pipeline is either moved to its device or set to CPU offload, never both.

Example:
    >>> from openmora.profiles import load_profile
    >>> from openmora.loader import PipelineLoader
    >>> loader = PipelineLoader(load_profile("tiny"))
    >>> pipe = loader.get("text_to_image")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from openmora.errors import InputError, ModelLoadError
from openmora.profiles import Profile, RoleConfig
from openmora.runtime import Runtime

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available here; use auto or cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; else the named dtype."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _model_path(cfg: RoleConfig) -> str:
    if cfg.model.startswith("tiny:"):
        from openmora.tiny_models import ensure_tiny_model

        return str(ensure_tiny_model(cfg.model.removeprefix("tiny:")))
    return cfg.model


def _pipeline_class(name: str):
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise InputError(
            f"unknown pipeline class {name!r}; use a diffusers pipeline class name such as StableDiffusionPipeline"
        )
    return cls


class PipelineLoader:
    """Loads the pipelines of one profile on first use and keeps them in its runtime.

    Args:
        profile: the profile whose roles to load.
        on_event: called with ``{"type": "load", ...}`` dicts when loading starts and ends (for progress display).
        runtime: where loaded pipelines and memory managers live; default: a new one of this loader's own.
    """

    def __init__(
        self, profile: Profile, on_event: Callable[[dict], None] | None = None, runtime: Runtime | None = None
    ) -> None:
        self.profile = profile
        self.on_event = on_event
        self.runtime = runtime if runtime is not None else Runtime()
        self.load_seconds = 0.0

    def device_for(self, role: str) -> torch.device:
        """The role's device: as configured, or for ``auto`` with several GPUs the one the runtime placed it on."""
        cfg = self.profile.role(role)
        spec = cfg.device or self.profile.device
        if spec == "auto":
            placed = self.runtime.placement(self.profile).get(role)
            if placed is not None:
                return torch.device(placed)
        return resolve_device(spec)

    def dtype_for(self, role: str) -> torch.dtype:
        cfg = self.profile.role(role)
        return resolve_dtype(cfg.dtype or self.profile.dtype, self.device_for(role))

    def _emit(self, event: dict) -> None:
        if self.on_event:
            self.on_event(event)

    def get(self, role: str, part: str = "main") -> Any:
        """The pipeline of ``role`` (``part="refiner"`` for its refiner), loaded once per process.

        On CUDA (or when the profile sets ``vram_budget_gb``) the device's memory manager places it: resident within
        the budget (least recently used pipelines evicted to the CPU), or offloaded when it cannot fit.
        """
        cfg = self.profile.role(role)
        if part == "refiner":
            if cfg.refiner is None:
                raise InputError(f"profile {self.profile.name!r}: role {role!r} has no refiner")
            cfg = cfg.refiner
        device = self.device_for(role)
        dtype = self.dtype_for(role)
        key = (
            cfg.pipeline,
            cfg.model,
            cfg.variant,
            str(dtype),
            str(device),
            cfg.offload,
            cfg.vae_tiling,
            tuple(cfg.speedups),
            self.profile.vram_budget_gb,
            repr(cfg.cache),
            cfg.storage_dtype,
        )
        rt = self.runtime
        with rt.lock:
            pipe = rt.pipelines.get(key)
            if pipe is None:
                if not rt.load_counts:
                    rt.configure_torch()
                shared = {}
                if part == "refiner":
                    base = self.get(role)
                    # SDXL's refiner uses the base's VAE and second text encoder: load them once.
                    shared = {
                        name: getattr(base, name)
                        for name in ("vae", "text_encoder_2", "tokenizer_2")
                        if getattr(base, name, None) is not None
                    }
                pipe = self._load(role, cfg, device, dtype, shared, key)
                rt.pipelines[key] = pipe
                rt.load_counts[key] += 1
            manager = self._manager(device)
            if manager is not None and key in manager.units:
                return manager.activate(key)
            return pipe

    def _manager(self, device: torch.device) -> Any:
        """The device's memory manager, or None where pipelines are simply moved (CPU without a budget)."""
        if device.type != "cuda" and self.profile.vram_budget_gb is None:
            return None
        return self.runtime.manager_for(device, self.profile.vram_budget_gb)

    def _load(
        self, role: str, cfg: RoleConfig, device: torch.device, dtype: torch.dtype, shared: dict, key: tuple = ()
    ) -> Any:
        self._emit({"type": "load", "phase": "start", "role": role, "model": cfg.model})
        start = time.perf_counter()
        cls = _pipeline_class(cfg.pipeline)  # diffusers imports pipeline modules lazily: count that as loading
        manager = self._manager(device)
        if cfg.model.startswith("fullsize:"):
            pipe = self._build_full_size(cfg, device, dtype, shared, manager)
        else:
            path = _model_path(cfg)
            kwargs: dict[str, Any] = {"dtype": dtype, **shared}
            if cfg.variant:
                kwargs["variant"] = cfg.variant
            try:
                pipe = cls.from_pretrained(path, **kwargs)
            except (OSError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ModelLoadError(
                    f"could not load {cfg.pipeline} from {cfg.model!r} for role {role!r}: {first} "
                    "(download the weights first, or point the profile at a local folder)"
                ) from err
        apply_speedups(pipe, speedups_for(cfg, role))
        apply_output_changing(pipe, cfg, role, dtype)
        if manager is not None:
            from openmora.memory import reserve_bytes

            # The manager decides: resident (moved on activate) or one kind of offload -- never both.
            unit = manager.add(key, pipe, reserve_bytes(cfg.pipeline, cfg.reserve_gb), cfg.offload)
            if cfg.vae_tiling and hasattr(getattr(pipe, "vae", None), "enable_tiling"):
                pipe.vae.enable_tiling()
            for note in unit.notes:
                logger.info("%s: %s", role, note)
            placement = unit.placement
            if placement == "resident" and device.type == "cuda":
                install_graphs(pipe, cfg.speedups)
        else:
            if cfg.offload == "model" and device.type == "cuda":
                pipe.enable_model_cpu_offload(device=device)
            elif cfg.offload == "sequential" and device.type == "cuda":
                pipe.enable_sequential_cpu_offload(device=device)
            else:
                pipe.to(device)
            if cfg.vae_tiling and hasattr(getattr(pipe, "vae", None), "enable_tiling"):
                pipe.vae.enable_tiling()
            placement = "resident" if cfg.offload in ("none", "auto") else cfg.offload
        pipe.set_progress_bar_config(disable=True)
        seconds = time.perf_counter() - start
        self.load_seconds += seconds
        logger.info(
            "loaded %s for %s from %s in %.2fs on %s (%s)", cfg.pipeline, role, cfg.model, seconds, device, placement
        )
        self._emit(
            {
                "type": "load",
                "phase": "end",
                "role": role,
                "model": cfg.model,
                "seconds": seconds,
                "placement": placement,
            }
        )
        return pipe

    def _build_full_size(
        self, cfg: RoleConfig, device: torch.device, dtype: torch.dtype, shared: dict, manager: Any
    ) -> Any:
        """``fullsize:<hub id>``: the architecture at full size with random weights, built in-process (no disk)."""
        from bench.full_size import build_pipeline, estimate_bytes

        hub_id = cfg.model.removeprefix("fullsize:")
        build_on = device
        if manager is not None and device.type == "cuda":
            # Random init is fast on the GPU; make room for it first, then hand the CPU copy to the manager.
            manager.make_room(estimate_bytes(hub_id, dtype))
        try:
            pipe = build_pipeline(hub_id, dtype, build_on, **shared)
        except ValueError as err:
            raise ModelLoadError(str(err)) from err
        if manager is not None and device.type == "cuda":
            pipe.to("cpu")  # the manager places it (resident or offloaded)
            torch.cuda.empty_cache()
        return pipe


def speedups_for(cfg: RoleConfig, role: str) -> list[str]:
    """The role's speedups, less ``compile`` where a diffusers cache (the fast mode's) is on: the cache's hooks decide
    on the host, per step, whether the remaining blocks run, which breaks a compiled block's graph."""
    names = list(cfg.speedups)
    if cfg.cache and "compile" in names:
        names.remove("compile")
        logger.info(
            "%s: compile off while the %s cache is on (its hooks decide per step which blocks run)",
            role,
            cfg.cache.get("type"),
        )
    return names


ENCODERS = ("text_encoder", "text_encoder_2", "image_encoder")


def install_graphs(pipe: Any, speedups: list[str] | tuple[str, ...]) -> list[str]:
    """CUDA-graph replay (``tools/cuda_graphs.py``) of a resident pipeline's launch-bound modules; returns their names.

    ``cuda_graphs``: the denoiser (SDXL's UNet: 2,350 kernels in 28 ms of GPU time, 76 ms eager).
    ``encoder_graphs``: the prompt and image encoders (CLIP text and vision transformers at batch 1: ~15 small kernels
    per layer, the GPU idle between them -- 0.2-0.3 s per text-to-video at Mora's settings on an H100). A module
    shared by two pipelines (SDXL's second text encoder) gets one graph set.
    """
    from openmora.speedups.cuda_graphs import install_cuda_graphs

    names = []
    if "cuda_graphs" in speedups:
        names += [n for n in ("unet", "transformer") if getattr(pipe, n, None) is not None][:1]
    if "encoder_graphs" in speedups:
        names += [n for n in ENCODERS if isinstance(getattr(pipe, n, None), torch.nn.Module)]
    for name in names:
        install_cuda_graphs(getattr(pipe, name))
    return names


def apply_speedups(pipe: Any, names: list[str] | tuple[str, ...]) -> None:
    """Apply output-preserving speed options (see bench/SPEED_NOTES.md for what each one measured).

    ``channels_last``: conv weights channels-last (4-D NHWC, 5-D NDHWC) so cuDNN runs its tensor-core kernels
    without layout transposes.
    ``cudnn_attention``: prefer cuDNN's fused attention (Hopper kernels) for the denoiser's SDPA calls.
    ``fused_qkv``: one matmul for q, k, v in self-attention (where the denoiser supports it).
    ``compile``: regional ``torch.compile`` of the denoiser's blocks (down/mid/up blocks, or repeated transformer
    blocks), so compile time stays in seconds per distinct block and shapes stay static.
    ``vae_compile``: ``torch.compile`` of the VAE decoder.
    ``cl_group_norm``: GroupNorm statistics as per-channel sums first (``tools/group_norm.py``), in the modules that
    are compiled (the denoiser with ``compile``, the VAE decoder with ``vae_compile``): compiled, channels-last
    GroupNorm reads memory along its order instead of with a stride. Eager, it would only add kernels.
    ``lean_attention``: single-token cross-attention as its value projection, short self-attention on the
    memory-efficient kernel (``tools/attention.py``).
    ``gpu_image_prep``: SVD's CLIP input (a blur and bicubic resize of the full conditioning frame to 224x224) made on
    the GPU instead of the CPU (``install_gpu_image_prep``).
    ``no_step_sync``: Stable Video Diffusion's loop asks twice per step whether to batch CFG, reading its per-frame
    guidance tensor on the GPU: the host waits for the GPU at every step. Answered once per call instead
    (``install_no_step_sync``).
    ``batched_cfg``: one transformer call of batch 2 per step instead of a cond and an uncond call of batch 1, for
    pipelines that make two (Wan; ``tools/batched_cfg.py``).
    ``cuda_graphs`` and ``encoder_graphs`` are applied by the loader after placement, to resident pipelines only
    (:func:`install_graphs`).
    """
    if not names:
        return
    den = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    vae = getattr(pipe, "vae", None)
    if "channels_last" in names:
        for module in (den, vae):
            if module is not None:
                to_channels_last(module)
    if "fused_qkv" in names and den is not None and hasattr(den, "fuse_qkv_projections"):
        try:
            den.fuse_qkv_projections()
        except (ValueError, AttributeError, NotImplementedError) as err:  # not every denoiser supports it
            logger.info("fused_qkv not applied to %s: %s", type(den).__name__, err)
    if "lean_attention" in names and den is not None:
        from openmora.speedups.attention import install_lean_attention

        install_lean_attention(den)
    if "cudnn_attention" in names and den is not None:
        _prefer_cudnn_attention(den)
    if "gpu_image_prep" in names and not install_gpu_image_prep(pipe):
        logger.info("gpu_image_prep not applied to %s: it has no CLIP image preparation", type(pipe).__name__)
    if "no_step_sync" in names and not install_no_step_sync(pipe):
        logger.info("no_step_sync not applied to %s: not a Stable Video Diffusion pipeline", type(pipe).__name__)
    if "batched_cfg" in names:
        from openmora.speedups.batched_cfg import install_batched_cfg

        if not install_batched_cfg(pipe):
            logger.info(
                "batched_cfg not applied to %s: it does not make separate cond/uncond calls", type(pipe).__name__
            )
    if "cl_group_norm" in names:
        from openmora.speedups.group_norm import install_cl_group_norm

        compiled = {"compile": den, "vae_compile": getattr(vae, "decoder", None)}
        if sum(install_cl_group_norm(m) for name, m in compiled.items() if name in names and m is not None) == 0:
            logger.info("cl_group_norm not applied to %s: no compiled module with GroupNorm", type(pipe).__name__)
    if ("compile" in names and den is not None) or ("vae_compile" in names and vae is not None):
        persistent_compile_cache()
    if "compile" in names and den is not None:
        compile_regions(den)
    if "vae_compile" in names and vae is not None and hasattr(vae, "decoder"):
        vae.decoder.compile(dynamic=False)


def install_gpu_image_prep(pipe: Any) -> bool:
    """Make Stable Video Diffusion's CLIP image input on the GPU: the ``gpu_image_prep`` speedup.

    For a PIL conditioning frame, diffusers blurs and resizes the full frame (1024x576) to 224x224 on the CPU before
    the CLIP image encoder: 80 ms per segment on the H100 host, with the GPU idle (bench/SPEED_NOTES.md row 31). Here the same diffusers function runs on the execution device, in fp32 with TF32
    off (the blur is a convolution), and the 224x224 result goes on through the pipeline's own ``_encode_image``
    (which takes a prepared tensor as is). Other devices, and tensor inputs, take the original path. Returns whether
    the pipeline has this preparation (False: left unchanged).
    """
    original = getattr(pipe, "_encode_image", None)
    processor = getattr(pipe, "video_processor", None)
    if original is None or processor is None or getattr(original, "gpu_image_prep", False):
        return False
    try:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )
    except ImportError:  # a diffusers without the helper: keep the pipeline's own path
        return False

    def _encode_image(image: Any, device: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(image, torch.Tensor) and torch.device(device).type == "cuda":
            x = processor.numpy_to_pt(processor.pil_to_numpy(image)).to(device)
            cudnn = torch.backends.cudnn
            with cudnn.flags(cudnn.enabled, cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False):
                x = _resize_with_antialiasing(x * 2.0 - 1.0, (224, 224))
            image = ((x + 1.0) / 2.0).cpu()  # the CLIP processor normalises on the host, as on the original path
        return original(image, device, *args, **kwargs)

    _encode_image.gpu_image_prep = True
    pipe._encode_image = _encode_image
    return True


_NO_SYNC_CLASSES: dict[type, type] = {}


def _cfg_once_per_call(self: Any) -> bool:
    """``do_classifier_free_guidance`` evaluated once per guidance tensor (one per pipeline call), not per step."""
    scale = self.guidance_scale
    if not isinstance(scale, torch.Tensor):
        return scale > 1
    cached = self.__dict__.get("_openmora_cfg")
    if cached is None or cached[0] is not scale:  # the tensor is held here, so a new call's is another object
        cached = (scale, bool(scale.max() > 1))
        self.__dict__["_openmora_cfg"] = cached
    return cached[1]


def install_no_step_sync(pipe: Any) -> bool:
    """Stop Stable Video Diffusion's denoising loop from waiting for the GPU at every step: the ``no_step_sync`` speedup.

    Its ``do_classifier_free_guidance`` property reads the per-frame guidance tensor on the device (``max() > 1``),
    twice per step, so the host waits for the previous UNet pass before it queues the next one, and the GPU then
    idles while the host launches the step's small kernels (~2.7 ms per step on the H100 host, 0.2 s per
    text-to-video: bench/SPEED_NOTES.md). The pipeline gets a subclass (same name) whose property answers once per
    call. The same operations run: the frames are the same. Returns False for other pipelines (left unchanged).
    """
    try:
        from diffusers import StableVideoDiffusionPipeline
    except ImportError:  # pragma: no cover - diffusers is a requirement
        return False
    cls = type(pipe)
    if not isinstance(pipe, StableVideoDiffusionPipeline) or cls in _NO_SYNC_CLASSES.values():
        return False
    if cls not in _NO_SYNC_CLASSES:
        body = {"do_classifier_free_guidance": property(_cfg_once_per_call), "__module__": cls.__module__}
        _NO_SYNC_CLASSES[cls] = type(cls.__name__, (cls,), body)
        _NO_SYNC_CLASSES[cls].__qualname__ = cls.__qualname__
    pipe.__class__ = _NO_SYNC_CLASSES[cls]
    return True


def to_channels_last(module: torch.nn.Module) -> None:
    """Conv weights in channels-last order: 2-D convs NHWC, 3-D convs NDHWC.

    The 3-D ones matter as much: SVD's temporal (3, 1, 1) convolutions with NCDHW weights made cuDNN convert every
    input to NDHWC and every output back, 252 conversion kernels and 88 ms of a 0.80 s compiled VAE decode of 25
    frames; with NDHWC weights the compiled decoder keeps NDHWC activations and ran 0.73 s (H100, bench/SPEED_NOTES.md
    row 24)."""
    for p in module.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
        elif p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)


def apply_output_changing(pipe: Any, cfg: RoleConfig, role: str, dtype: torch.dtype) -> None:
    """The fast mode's options: fp8 weight storage (layerwise casting) and a diffusers cache on the denoiser."""
    den = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if cfg.storage_dtype and den is not None:
        den.enable_layerwise_casting(storage_dtype=getattr(torch, cfg.storage_dtype), compute_dtype=dtype)
    if cfg.cache:
        import diffusers

        kind = cfg.cache["type"]
        config_cls = getattr(diffusers, kind, None)
        if config_cls is None or not kind.endswith("Config"):
            raise ModelLoadError(
                f"role {role!r}: unknown cache type {kind!r}; use a diffusers cache config class, "
                "e.g. FirstBlockCacheConfig, FasterCacheConfig, PyramidAttentionBroadcastConfig"
            )
        if den is None or not hasattr(den, "enable_cache"):
            raise ModelLoadError(
                f"role {role!r}: {type(den).__name__} does not support diffusers caches "
                f"(cache {kind}); remove 'cache' or pick a transformer model"
            )
        try:
            config = config_cls(**{k: v for k, v in cfg.cache.items() if k != "type"})
        except TypeError as err:
            raise ModelLoadError(f"role {role!r}: bad {kind} settings: {err}") from None
        den.enable_cache(config)


def _prefer_cudnn_attention(module: torch.nn.Module) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    forward = module.forward

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel(order, set_priority=True):
            return forward(*args, **kwargs)

    module.forward = wrapped


def persistent_compile_cache() -> str:
    """Keep torch.compile's on-disk caches in the OpenMora cache folder, unless ``TORCHINDUCTOR_CACHE_DIR`` is set.

    Inductor's default is a folder under /tmp, which a reboot or a fresh container empties. With its caches kept,
    the SVD UNet's compile warm-up fell from 193 s to 29 s in the next process (H100, bench/SPEED_NOTES.md)."""
    from openmora.tiny_models import cache_root

    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))


def compile_regions(module: torch.nn.Module) -> None:
    """Regional compile: each distinct block compiled once; repeated transformer blocks share one compiled graph."""
    repeated = getattr(module, "_repeated_blocks", None)
    if repeated and type(module).__name__.startswith("Wan"):
        # The blocks' forward, not the module call: offload hooks added later (group offload in mora-lowvram) wrap
        # the compiled forward and move weights outside the graph. One graph serves the 40 identical blocks.
        for sub in module.modules():
            if type(sub).__name__ in repeated:
                sub.forward = torch.compile(sub.forward, fullgraph=True, dynamic=False)
        return
    blocks = [
        *getattr(module, "down_blocks", []),
        getattr(module, "mid_block", None),
        *getattr(module, "up_blocks", []),
    ]
    blocks = [b for b in blocks if b is not None]
    if not blocks:
        module.compile(dynamic=False)
        return
    for block in blocks:
        block.compile(dynamic=False)
