"""The one loader of diffusion pipelines: lazy, once per process, with device, dtype and thread policy.

Every tool asks ``loader.get(role)``; the first ask loads the role's pipeline with ``from_pretrained`` (the tiny
models are first built into the cache, then loaded the same way), later asks return the same object, across runs in
the same process too. Device ``auto`` means CUDA when present, else CPU; dtype ``auto`` means float16 on CUDA and
float32 on CPU. A pipeline is either moved to its device or set to CPU offload, never both.

Example:
    >>> from tools.profiles import load_profile
    >>> from tools.model_loader import PipelineLoader
    >>> loader = PipelineLoader(load_profile("tiny"))
    >>> pipe = loader.get("text_to_image")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from tools.errors import InputError, ModelLoadError
from tools.profiles import Profile, RoleConfig

logger = logging.getLogger(__name__)

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.RLock()
# How many times each (class, model, dtype, device...) key was actually loaded in this process.
LOAD_COUNTS: Counter = Counter()
_THREADS_SET = False
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def configure_torch_threads() -> int:
    """Set torch's CPU thread count once per process, from ``$OPENMORA_TORCH_THREADS`` or half the cores.

    On small shared machines more threads than cores-under-load was 10-50x slower, so the default is conservative.
    """
    global _THREADS_SET
    env = os.environ.get("OPENMORA_TORCH_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"OPENMORA_TORCH_THREADS must be a whole number, got {env!r}") from None
    else:
        n = max(1, (os.cpu_count() or 2) // 2)
    if not _THREADS_SET or torch.get_num_threads() != n:
        torch.set_num_threads(max(1, n))
        _THREADS_SET = True
    return torch.get_num_threads()


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
        from tools.tiny_models import ensure_tiny_model

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
    """Loads the pipelines of one profile on first use and keeps them for the process.

    Args:
        profile: the profile whose roles to load.
        on_event: called with ``{"type": "load", ...}`` dicts when loading starts and ends (for progress display).
    """

    def __init__(self, profile: Profile, on_event: Callable[[dict], None] | None = None) -> None:
        self.profile = profile
        self.on_event = on_event
        self.load_seconds = 0.0
        configure_torch_threads()

    def device_for(self, role: str) -> torch.device:
        cfg = self.profile.role(role)
        return resolve_device(cfg.device or self.profile.device)

    def dtype_for(self, role: str) -> torch.dtype:
        cfg = self.profile.role(role)
        return resolve_dtype(cfg.dtype or self.profile.dtype, self.device_for(role))

    def _emit(self, event: dict) -> None:
        if self.on_event:
            self.on_event(event)

    def get(self, role: str, part: str = "main") -> Any:
        """The pipeline of ``role`` (``part="refiner"`` for its refiner), loaded once per process."""
        cfg = self.profile.role(role)
        if part == "refiner":
            if cfg.refiner is None:
                raise InputError(f"profile {self.profile.name!r}: role {role!r} has no refiner")
            cfg = cfg.refiner
        device = self.device_for(role)
        dtype = self.dtype_for(role)
        key = (cfg.pipeline, cfg.model, cfg.variant, str(dtype), str(device), cfg.offload, cfg.vae_tiling)
        with _LOCK:
            pipe = _CACHE.get(key)
            if pipe is not None:
                return pipe
            shared = {}
            if part == "refiner":
                base = self.get(role)
                # SDXL's refiner uses the base's VAE and second text encoder: load them once.
                shared = {
                    name: getattr(base, name)
                    for name in ("vae", "text_encoder_2", "tokenizer_2")
                    if getattr(base, name, None) is not None
                }
            pipe = self._load(role, cfg, device, dtype, shared)
            _CACHE[key] = pipe
            LOAD_COUNTS[key] += 1
            return pipe

    def _load(self, role: str, cfg: RoleConfig, device: torch.device, dtype: torch.dtype, shared: dict) -> Any:
        self._emit({"type": "load", "phase": "start", "role": role, "model": cfg.model})
        start = time.perf_counter()
        cls = _pipeline_class(cfg.pipeline)  # diffusers imports pipeline modules lazily: count that as loading
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
        if cfg.offload == "model" and device.type == "cuda":
            pipe.enable_model_cpu_offload(device=device)
        elif cfg.offload == "sequential" and device.type == "cuda":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        if cfg.vae_tiling and hasattr(getattr(pipe, "vae", None), "enable_tiling"):
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        seconds = time.perf_counter() - start
        self.load_seconds += seconds
        logger.info("loaded %s for %s from %s in %.2fs on %s", cfg.pipeline, role, cfg.model, seconds, device)
        self._emit({"type": "load", "phase": "end", "role": role, "model": cfg.model, "seconds": seconds})
        return pipe


def clear_cache() -> None:
    """Forget every loaded pipeline (frees memory; the next ``get`` loads again)."""
    with _LOCK:
        _CACHE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
