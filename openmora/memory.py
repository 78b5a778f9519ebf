"""GPU memory for pipelines: keep what a task needs resident within a budget, evict the least recently used, fall
back to offloading when a pipeline cannot fit, and place roles on several GPUs.

One :class:`MemoryManager` per device. The loader hands it every pipeline it loads (a *unit*: a role's pipeline, with
its refiner as a second unit that shares modules with the first). For each unit the manager picks one placement:

* ``resident``  -- weights on the GPU (``pipe.to(device)``), after evicting least-recently-used units to the CPU
  until weights + the unit's run-time reserve fit the budget;
* ``model``     -- ``enable_model_cpu_offload``: one component at a time on the GPU; needs the largest component
  plus the reserve to fit;
* ``group``     -- ``enable_group_offload`` (block level, prefetching on a CUDA stream): needs a block or two at a
  time; for models whose largest component alone is over the budget (a 14B transformer within 24 GB);
* ``sequential`` only when a profile asks for it (leaf-level, slowest).

A pipeline is either moved to its device or offloaded, never both (``.to("cuda")`` after
``enable_model_cpu_offload()`` silently undoes the first, a bug in Mora's code). Modules shared between units (SDXL's
VAE and second text encoder, used by the refiner too) are counted once and stay on the GPU while any resident unit
uses them. VAE tiling is switched on for offloaded units whose VAE has it, so decoding stays inside the budget.

Example:
    >>> mm = MemoryManager(budget_bytes=10 * GB, device="cpu")
    >>> decide_offload(weights=4 * GB, largest=3 * GB, reserve=2 * GB, budget=10 * GB)
    'resident'
    >>> decide_offload(weights=40 * GB, largest=28 * GB, reserve=6 * GB, budget=24 * GB)
    'group'
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openmora.speedups.compile import wait_for_regions

logger = logging.getLogger(__name__)

GB = 1024**3
# Activation headroom a pipeline class needs beyond its weights at the sizes our profiles use (peaks measured on an
# H100 at Mora's settings; a profile's reserve_gb overrides it).
DEFAULT_RESERVE_GB = {
    "StableVideoDiffusionPipeline": 14.0,  # temporal VAE decode of 12 frames at 1024x576 peaks near 13.7 GB
    "StableDiffusionXLPipeline": 4.0,
    "StableDiffusionXLImg2ImgPipeline": 4.0,
    "StableDiffusionInstructPix2PixPipeline": 4.0,
    "WanImageToVideoPipeline": 8.0,
}
FALLBACK_RESERVE_GB = 3.0
# Weights in GB at 16-bit, from each pipeline's parameter count (SDXL base: 2.57B UNet + 0.82B CLIP-L/bigG + VAE;
# the refiner shares the base's bigG and VAE; SVD-XT: 1.52B UNet + 0.63B image encoder; InstructPix2Pix: SD 1.5's
# 0.86B UNet + 0.12B CLIP-L; Wan 2.1 FLF2V 14B: 14B transformer + 5.7B umT5-XXL + 0.63B CLIP-H). Used only to spread
# roles over several GPUs before anything is loaded; the manager measures the real sizes once loaded.
DEFAULT_WEIGHTS_GB = {
    "StableDiffusionXLPipeline": 6.9,
    "StableDiffusionXLImg2ImgPipeline": 4.6,
    "StableVideoDiffusionPipeline": 4.3,
    "StableDiffusionInstructPix2PixPipeline": 2.1,
    "WanImageToVideoPipeline": 41.0,
}
FALLBACK_WEIGHTS_GB = 4.0
# Kept free on a card when no budget is configured: CUDA context, allocator fragmentation, other processes.
CARD_MARGIN_GB = 4.0
PLACEMENTS = ("resident", "model", "group", "sequential")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in _tensors(module))


def _tensors(module: torch.nn.Module) -> Iterable[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def pipeline_modules(pipe: Any) -> dict[str, torch.nn.Module]:
    """The ``torch.nn.Module`` components of a diffusers pipeline, by name."""
    components = getattr(pipe, "components", None) or {}
    return {name: m for name, m in components.items() if isinstance(m, torch.nn.Module)}


def decide_offload(weights: int, largest: int, reserve: int, budget: int) -> str:
    """The cheapest placement that fits: resident if all weights + reserve fit, else model offload if the largest
    component + reserve fits, else block-level group offload."""
    if weights + reserve <= budget:
        return "resident"
    if largest + reserve <= budget:
        return "model"
    return "group"


@dataclass
class Unit:
    """A pipeline the manager looks after."""

    key: Any
    pipe: Any
    modules: dict[str, torch.nn.Module]
    reserve: int
    placement: str = "resident"  # resident | model | group | sequential
    on_device: bool = False  # resident units only: weights currently on the GPU
    kept_bytes: int = 0  # offloaded units: bytes their offload keeps on the device for good (not evictable)
    notes: list[str] = field(default_factory=list)


class MemoryManager:
    """Keeps pipelines on one device within ``budget_bytes``; least recently used are evicted to the CPU.

    Args:
        budget_bytes: memory the units' weights plus the active unit's reserve may use.
        device: the device the units run on (``cuda:N``; ``cpu`` in tests, where moves are no-ops).
        mover: ``mover(module, device)`` moves one module; tests pass a recorder. Default on CUDA: through pinned
            host copies (:class:`openmora.host_copies.PinnedMover`), elsewhere ``module.to(device)``.
        pinned: ``False`` evicts to plain host memory instead (the runtime passes ``OPENMORA_PINNED_EVICTIONS``).
    """

    def __init__(
        self,
        budget_bytes: int,
        device: str | torch.device,
        mover: Callable[[torch.nn.Module, torch.device], None] | None = None,
        pinned: bool = True,
    ) -> None:
        self.budget = int(budget_bytes)
        self.device = torch.device(device)
        if mover is None and self.device.type == "cuda" and pinned:
            from openmora.host_copies import PinnedMover

            mover = PinnedMover()
        self.mover = mover or (lambda m, d: m.to(d))
        self.move_seconds = 0.0  # time spent moving weights between the CPU and the device (evictions, reloads)
        self.moved_bytes = 0
        self.units: OrderedDict[Any, Unit] = OrderedDict()  # least recently used first
        self.evictions: list[Any] = []
        self._lock = threading.RLock()
        # Bytes per module, measured when its pipeline is added: walking a UNet's ~1,700 parameters costs ~5 ms, and
        # every activation sums all resident modules several times (60-120 ms per tool call at Mora's sizes, with the
        # GPU idle). A pipeline whose weights change size later (a LoRA fused in, a dtype change) is added again.
        self._sizes: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()

    def size(self, module: torch.nn.Module) -> int:
        """``module_bytes(module)``, measured once per module (see ``_sizes``)."""
        n = self._sizes.get(module)
        if n is None:
            n = self._sizes[module] = module_bytes(module)
        return n

    # ----- bookkeeping ---------------------------------------------------------------------------------------------
    def _module_owners(self, module: torch.nn.Module, on_device_only: bool = True) -> list[Any]:
        return [
            u.key
            for u in self.units.values()
            if (u.on_device or not on_device_only) and any(m is module for m in u.modules.values())
        ]

    def resident_bytes(self) -> int:
        """Bytes of distinct modules currently on the device through resident units (shared modules once), plus what
        offloaded units keep there."""
        seen: dict[int, torch.nn.Module] = {}
        for u in self.units.values():
            if u.on_device:
                for m in u.modules.values():
                    seen[id(m)] = m
        return sum(self.size(m) for m in seen.values()) + sum(u.kept_bytes for u in self.units.values())

    def _new_bytes(self, unit: Unit) -> int:
        """Bytes a unit adds when made resident: its modules not already on the device through another unit."""
        return sum(self.size(m) for m in unit.modules.values() if not self._module_owners(m))

    def resident_keys(self) -> list[Any]:
        return [k for k, u in self.units.items() if u.on_device]

    # ----- the API the loader uses ---------------------------------------------------------------------------------
    def add(self, key: Any, pipe: Any, reserve_bytes: int, placement: str = "auto") -> Unit:
        """Take charge of a freshly loaded pipeline (on the CPU) and place it; returns its :class:`Unit`.

        ``placement`` is the profile's ``offload`` setting: ``auto``/``none`` let the manager decide (``none`` means
        "resident if it can fit at all"), ``model``/``group``/``sequential`` force that offload.
        """
        with self._lock:
            modules = pipeline_modules(pipe)
            unit = Unit(key=key, pipe=pipe, modules=modules, reserve=int(reserve_bytes))
            for m in modules.values():  # (re)measured on every add
                self._sizes[m] = module_bytes(m)
            weights = sum(self.size(m) for m in modules.values())
            largest = max((self.size(m) for m in modules.values()), default=0)
            if placement in ("auto", "none"):
                unit.placement = decide_offload(weights, largest, unit.reserve, self.budget)
            else:
                unit.placement = placement
            owners = {k for m in modules.values() for k in self._module_owners(m, on_device_only=False)}
            if owners and unit.placement != "resident":
                # Shares modules with a loaded unit (SDXL refiner + base): offload hooks on a shared module would
                # pull it off the card under the other unit, so both use the same placement.
                first = self.units[next(iter(owners))]
                if first.placement == "resident":
                    unit.notes.append(f"kept resident: shares modules with {first.key!r}")
                    unit.placement = "resident"
            self.units[key] = unit
            if unit.placement != "resident":
                self._apply_offload(unit)
            logger.info(
                "memory: %s -> %s (weights %.1f GB, largest %.1f GB, reserve %.1f GB, budget %.1f GB)",
                key,
                unit.placement,
                weights / GB,
                largest / GB,
                unit.reserve / GB,
                self.budget / GB,
            )
            return unit

    def activate(self, key: Any) -> Any:
        """Make ``key``'s pipeline ready to run: resident units are moved onto the device after evicting least
        recently used ones; offloaded units need nothing (their hooks move weights). Returns the pipeline."""
        with self._lock:
            unit = self.units[key]
            self.units.move_to_end(key)
            if unit.placement == "resident":
                # Room for the new weights and for this run's activations (also when already on the device).
                self._make_room(unit)
                if not unit.on_device:
                    start = time.perf_counter()
                    for m in unit.modules.values():
                        if not self._module_owners(m):  # a shared module already on the device stays
                            self.moved_bytes += self.size(m)
                            self.mover(m, self.device)
                    unit.on_device = True
                    self.move_seconds += time.perf_counter() - start
            else:
                self.make_room(unit.reserve + self._largest_bytes(unit), keep=unit.key)
            return unit.pipe

    def make_room(self, nbytes: int, keep: Any = None) -> None:
        """Evict least-recently-used resident units until ``nbytes`` more fit in the budget."""
        with self._lock:
            for other in list(self.units.values()):
                if self.resident_bytes() + nbytes <= self.budget:
                    return
                if other.on_device and other.key != keep:
                    self.evict(other.key)

    def _largest_bytes(self, unit: Unit) -> int:
        return 0 if unit.placement == "group" else max((self.size(m) for m in unit.modules.values()), default=0)

    def evict(self, key: Any) -> None:
        """Move a resident unit's modules to the CPU, except modules another on-device unit still uses."""
        with self._lock:
            unit = self.units[key]
            if not unit.on_device:
                return
            unit.on_device = False
            cpu = torch.device("cpu")
            start = time.perf_counter()
            for m in unit.modules.values():
                if not self._module_owners(m):
                    wait_for_regions(m)  # a background compile's trial call still reads these weights
                    release = getattr(m.forward, "release", None)
                    if callable(release):  # CUDA graphs hold a GPU memory pool of activations: free it too
                        release()
                    self.moved_bytes += self.size(m)
                    self.mover(m, cpu)
            self.move_seconds += time.perf_counter() - start
            self.evictions.append(key)
            logger.info("memory: evicted %s to the CPU", key)

    def evict_all(self) -> None:
        """Every resident unit to the CPU (modules shared between units move with the last of their users)."""
        with self._lock:
            for key in list(self.units):
                self.evict(key)

    def forget(self, key: Any) -> None:
        with self._lock:
            if key in self.units:
                self.evict(key)
                self.release_kept(key)
                del self.units[key]

    def release_kept(self, key: Any) -> None:
        """What an offloaded unit keeps on the device for good (:func:`keep_top_level_on_device`) back to the host."""
        with self._lock:
            unit = self.units[key]
            if unit.kept_bytes:
                for module in unit.modules.values():
                    release_top_level(module)
                unit.kept_bytes = 0

    def _make_room(self, unit: Unit) -> None:
        need = self._new_bytes(unit) + unit.reserve
        for other in list(self.units.values()):  # least recently used first
            if self.resident_bytes() + need <= self.budget:
                break
            if other.key == unit.key or not other.on_device:
                continue
            self.evict(other.key)
            need = self._new_bytes(unit) + unit.reserve
        if self.resident_bytes() + need > self.budget:
            logger.warning(
                "memory: %s needs %.1f GB beyond %.1f GB resident; budget %.1f GB",
                unit.key,
                need / GB,
                self.resident_bytes() / GB,
                self.budget / GB,
            )

    def _apply_offload(self, unit: Unit) -> None:
        pipe, dev = unit.pipe, self.device
        self.make_room(self._largest_bytes(unit) + unit.reserve)
        if dev.type != "cuda":
            unit.notes.append(f"{unit.placement} offload needs CUDA; running on {dev}")
            return
        if unit.placement == "model":
            pipe.enable_model_cpu_offload(device=dev)
        elif unit.placement == "sequential":
            pipe.enable_sequential_cpu_offload(device=dev)
        elif unit.placement == "group":
            unit.kept_bytes = apply_group_offload(pipe, dev)
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_tiling") and not _is_temporal_vae(vae):
            vae.enable_tiling()
            unit.notes.append("VAE tiling on")


def _is_temporal_vae(vae: Any) -> bool:
    # SVD's temporal decoder has no tiling; its decode_chunk_size bounds memory instead.
    return type(vae).__name__ == "AutoencoderKLTemporalDecoder"


def apply_group_offload(pipe: Any, device: torch.device) -> int:
    """Block-level group offload with stream prefetching for the big denoiser, model-level offload hooks for the rest.

    The transformer/UNet streams its blocks from pinned CPU memory while the previous block computes; text and image
    encoders and the VAE are moved whole when used (they fit). ``record_stream`` lets a block's GPU copy be released
    without waiting for the compute stream (diffusers otherwise synchronizes after every block): Wan 2.15 -> 1.99 s
    per step on the main thread, same latents. Pinned copies are made up front, so while they are made the host holds
    the weights twice: where its free memory is short of that, blocks are pinned as they move
    (``low_cpu_mem_usage``, slower transfers) instead of failing the machine.

    The parts of a denoiser outside its block lists stay on the device (:func:`keep_top_level_on_device`). Returns
    the bytes kept there for good.
    """
    from diffusers.hooks import apply_group_offloading

    weights = sum(module_bytes(m) for m in pipeline_modules(pipe).values())
    available = host_available_bytes()
    low_cpu = available is not None and available < weights * 1.2
    if low_cpu:
        logger.info(
            "group offload: %.1f GB free on the host for %.1f GB of weights: pinning per transfer",
            available / GB,
            weights / GB,
        )
    denoisers = [n for n in ("transformer", "transformer_2", "unet") if getattr(pipe, n, None) is not None]
    kept = 0
    for name, module in pipeline_modules(pipe).items():
        if name in denoisers:
            apply_group_offloading(
                module,
                onload_device=device,
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
                record_stream=True,
                low_cpu_mem_usage=low_cpu,
            )
            kept += keep_top_level_on_device(module)
        else:
            apply_group_offloading(
                module,
                onload_device=device,
                offload_type="leaf_level",
                use_stream=True,
                record_stream=True,
                low_cpu_mem_usage=low_cpu,
            )
    return kept


def keep_top_level_on_device(module: torch.nn.Module) -> int:
    """Keep the parts of a block-offloaded model that lie outside its block lists on the device it runs on; returns
    their bytes (0 where the module has no such group).

    diffusers gathers them (Wan 14B: patch and condition embedders, output projection -- 0.45 GB of 28) into one group
    that it moves without a stream: in from pageable memory before every pass and back out after it, synchronously
    (``Memcpy DtoH (Device -> Pageable)`` at ~1.2 GB/s on the H100 host: 1.8 s of copies per two Wan steps). With the
    group's offload device set to the device its moves are no-ops; the blocks still stream as before.
    """
    group = _top_level_group(module)
    if group is None:
        return 0
    if getattr(group, "_openmora_host", None) is None:
        group._openmora_host = group.offload_device  # where release_top_level sends it back
    group.offload_device = group.onload_device
    group.onload_()
    # Counted from the module: the group's own buffer list can hold stale tensors (``Module.to`` replaces buffers).
    blocks = [c for c in module.children() if isinstance(c, (torch.nn.ModuleList, torch.nn.Sequential))]
    in_blocks = {id(t) for b in blocks for t in _tensors(b)}
    return sum(t.numel() * t.element_size() for t in _tensors(module) if id(t) not in in_blocks)


def release_top_level(module: torch.nn.Module) -> None:
    """Undo :func:`keep_top_level_on_device`: the group goes back to where diffusers keeps it (the host)."""
    group = _top_level_group(module)
    host = getattr(group, "_openmora_host", None)
    if host is not None and group.offload_device != host:
        group.offload_device = host
        group.offload_()


def _top_level_group(module: torch.nn.Module) -> Any:
    """diffusers' stream-less group of a block-offloaded module's top-level parts, or None."""
    registry = getattr(module, "_diffusers_hook", None)
    hook = registry.get_hook("group_offloading") if registry is not None else None
    group = getattr(hook, "group", None)
    if group is None or group.stream is not None or group.offload_to_disk_path is not None:
        return None
    return group


def host_available_bytes() -> int | None:
    """The host's available memory (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ----- budgets and placement over several GPUs -------------------------------------------------------------------
def card_budget_bytes(device: torch.device, budget_gb: float | None) -> int:
    """The budget on ``device``: the configured GB, else the card's total memory less :data:`CARD_MARGIN_GB`."""
    if budget_gb is not None:
        return int(budget_gb * GB)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total - CARD_MARGIN_GB * GB)
    return 1 << 62  # CPU: no budget


def role_bytes(cfg: Any) -> int:
    """What a role needs on its device, estimated before loading: weights (base + refiner) plus the reserve."""
    total = DEFAULT_WEIGHTS_GB.get(cfg.pipeline, FALLBACK_WEIGHTS_GB) * GB + reserve_bytes(cfg.pipeline, cfg.reserve_gb)
    if cfg.refiner is not None:
        total += DEFAULT_WEIGHTS_GB.get(cfg.refiner.pipeline, FALLBACK_WEIGHTS_GB) * GB
    return int(total)


def reserve_bytes(pipeline_class: str, reserve_gb: float | None) -> int:
    gb = reserve_gb if reserve_gb is not None else DEFAULT_RESERVE_GB.get(pipeline_class, FALLBACK_RESERVE_GB)
    return int(gb * GB)


def place_roles(
    sizes: Mapping[str, int],
    devices: list[str],
    pinned: Mapping[str, str] | None = None,
    budgets: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Assign roles to devices: pinned roles where their config says, the rest spread by size ("auto").

    Largest role first, each to the device with the most budget left (ties: lowest index), so on N GPUs the big
    models land on different cards and a task's pipelines stay resident instead of evicting each other.

    Args:
        sizes: role -> bytes it needs (weights + reserve).
        devices: the devices to use, e.g. ``["cuda:0", "cuda:1"]``.
        pinned: role -> device from the profile (anything but ``auto``).
        budgets: device -> bytes; default: equal budgets.

    Example:
        >>> place_roles({"a": 30, "b": 20, "c": 10}, ["cuda:0", "cuda:1"])
        {'a': 'cuda:0', 'b': 'cuda:1', 'c': 'cuda:1'}
    """
    if not devices:
        raise ValueError("place_roles needs at least one device")
    pinned = dict(pinned or {})
    left = {d: (budgets or {}).get(d, 1 << 62) for d in devices}
    out: dict[str, str] = {}
    for role, dev in pinned.items():
        if role in sizes:
            out[role] = dev
            if dev in left:
                left[dev] -= sizes[role]
    for role in sorted((r for r in sizes if r not in out), key=lambda r: (-sizes[r], r)):
        best = max(devices, key=lambda d: (left[d], -devices.index(d)))
        out[role] = best
        left[best] -= sizes[role]
    return {r: out[r] for r in sizes}


def visible_gpus() -> list[str]:
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
