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
import time
from typing import Any

import torch

from openmora.errors import InputError, ModelLoadError, first_line
from openmora.events import Event, EventSink
from openmora.profiles import Profile, RoleConfig
from openmora.runtime import Runtime
from openmora.speedups import apply_speedups, speedups_for
from openmora.speedups.compile import compile_in_foreground, compiler, regions_of
from openmora.speedups.output_changing import apply_output_changing

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
    if cfg.model.startswith("toy:"):
        from openmora.toy import weights_folder

        return str(weights_folder(cfg.model.removeprefix("toy:")))
    return cfg.model


def _modules(pipe: Any) -> list[torch.nn.Module]:
    return [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]


def compile_in_foreground_all(pipe: Any) -> None:
    """An offloaded pipeline's compiled regions compile at first use, not in the background (see
    :func:`~openmora.speedups.compile.compile_in_foreground`)."""
    for module in _modules(pipe):
        compile_in_foreground(module)


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

    def __init__(self, profile: Profile, on_event: EventSink | None = None, runtime: Runtime | None = None) -> None:
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

    def _emit(self, event: Event) -> None:
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
                rt.configure_torch()  # before the first load of this runtime, and again should torch's count drift
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
                first = first_line(err)
                raise ModelLoadError(
                    f"could not load {cfg.pipeline} from {cfg.model!r} for role {role!r}: {first} "
                    "(download the weights first, or point the profile at a local folder)"
                ) from err
        speedups = speedups_for(cfg, role)
        apply_speedups(pipe, speedups)  # the registry's "load" speedups (openmora.speedups)
        if self.on_event and any(regions_of(m) for m in _modules(pipe)):
            compiler().add_listener(self._emit)  # "compile" events: what compiles in the background, how long
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
            if placement != "resident":
                compile_in_foreground_all(pipe)  # offload hooks move weights during calls: no background compiles
            if placement == "resident" and device.type == "cuda":
                apply_speedups(pipe, speedups, when="resident")  # CUDA graphs need the weights in place
        else:
            if cfg.offload == "model" and device.type == "cuda":
                pipe.enable_model_cpu_offload(device=device)
            elif cfg.offload == "sequential" and device.type == "cuda":
                pipe.enable_sequential_cpu_offload(device=device)
            else:
                pipe.to(device)
            if cfg.offload in ("model", "sequential") and device.type == "cuda":
                compile_in_foreground_all(pipe)
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
