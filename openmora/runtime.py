"""The one object that owns process resources: loaded pipelines, GPU memory managers and torch's thread setting.

An :class:`~openmora.engine.Orchestrator` makes its own :class:`Runtime` unless given one, so two orchestrators with
different profiles or budgets never share pipelines or memory managers. Pass one runtime to several orchestrators
to share what they load (and one GPU budget): ``Orchestrator(profile="mora", runtime=rt)``.

Nothing happens at construction: torch's thread count is set when the first pipeline loads, managers are made
when a device first needs one.

Example:
    >>> from openmora.runtime import Runtime
    >>> rt = Runtime()
    >>> rt.loaded()
    {}
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from openmora.settings import Settings

if TYPE_CHECKING:
    import torch

    from openmora.memory import MemoryManager

logger = logging.getLogger(__name__)


class Runtime:
    """Pipelines loaded so far (keyed by everything that shapes them), one memory manager per device and budget,
    and the torch settings, all read from one :class:`~openmora.settings.Settings`.

    Args:
        settings: the configuration; default: read from the environment now (``Settings.from_env()``).
        gpus: the GPUs roles with ``device: auto`` may use, e.g. ``["cuda:0", "cuda:1"]``; default: every visible one
            (asked on first need). With two or more, roles are spread over them (:meth:`placement`).
    """

    def __init__(self, settings: Settings | None = None, gpus: list[str] | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._gpus = list(gpus) if gpus is not None else None
        self.pipelines: dict[tuple, Any] = {}
        # How many times each key was actually loaded by this runtime (a second ask returns the cached pipeline).
        self.load_counts: Counter = Counter()
        self.lock = threading.RLock()
        self._managers: dict[tuple[str, float | None], MemoryManager] = {}
        # A pipeline's scheduler keeps per-call state (its step index): two runs sharing this runtime take turns.
        self._in_use: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()

    def loaded(self) -> dict[tuple, Any]:
        """A copy of the pipelines loaded so far, by key."""
        with self.lock:
            return dict(self.pipelines)

    def using(self, pipe: Any) -> threading.RLock:
        """The lock a call of ``pipe`` holds (``with runtime.using(pipe): pipe(...)``): concurrent runs on one
        runtime (two ``run_stream`` calls, a story's overlapped stages) never step one pipeline's scheduler at once."""
        with self.lock:
            lock = self._in_use.get(pipe)
            if lock is None:
                lock = self._in_use[pipe] = threading.RLock()
            return lock

    def gpus(self) -> list[str]:
        if self._gpus is None:
            from openmora.memory import visible_gpus

            self._gpus = visible_gpus()
        return list(self._gpus)

    def placement(self, profile: Any) -> dict[str, str]:
        """Role -> GPU for a profile's ``device: auto`` roles when there are several GPUs (empty with one or none).

        Roles whose config names a device stay there; the rest go largest first to the GPU with the most room left
        (:func:`openmora.memory.place_roles`), so on two GPUs Wan's 41 GB transformer and SDXL land on different
        cards and a task's pipelines stay resident instead of evicting each other. A few roles: computed each ask.
        """
        from openmora.memory import place_roles, role_bytes

        gpus = self.gpus()
        if len(gpus) < 2:
            return {}
        auto = [r for r, c in profile.roles.items() if (c.device or profile.device) == "auto"]
        pinned = {r: c.device or profile.device for r, c in profile.roles.items() if r not in auto}
        placed = place_roles({r: role_bytes(c) for r, c in profile.roles.items()}, gpus, pinned=pinned)
        return {r: placed[r] for r in auto}

    def configure_torch(self) -> int:
        """Set torch's CPU thread count (``OPENMORA_TORCH_THREADS``, else half the cores); returns it.

        On small shared machines more threads than cores-under-load was 10-50x slower, so the default is
        conservative. Called before each load of this runtime (cheap), never at construction or import.
        """
        import os

        import torch

        n = self.settings.torch_threads or max(1, (os.cpu_count() or 2) // 2)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def manager_for(self, device: torch.device, budget_gb: float | None) -> MemoryManager:
        """This runtime's memory manager of ``device`` under ``budget_gb`` (one per device and budget)."""
        from openmora.memory import MemoryManager, card_budget_bytes

        key = (str(device), budget_gb)
        with self.lock:
            mm = self._managers.get(key)
            if mm is None:
                mm = MemoryManager(card_budget_bytes(device, budget_gb), device, pinned=self.settings.pinned_evictions)
                self._managers[key] = mm
            return mm

    def managers(self) -> list[MemoryManager]:
        with self.lock:
            return list(self._managers.values())

    def clear(self) -> None:
        """Forget every pipeline and manager, moving every resident pipeline off its GPU first.

        Dropping the references is not enough to free the GPU: a finished run's objects or compiled graphs can still
        reference a pipeline (62 GB stayed allocated on an H100 before pipelines were evicted here). Evicted, such a
        pipeline holds host memory only, and its CUDA-graph pools are released.
        """
        with self.lock:
            managers = list(self._managers.values())
            self._managers.clear()
            self.pipelines.clear()
        for mm in managers:
            # No new pinned copies: pinning memory for pipelines on their way out would only hold host RAM locked.
            if hasattr(mm.mover, "pin_new"):
                mm.mover.pin_new = False
            mm.evict_all()
            for key in list(mm.units):  # group-offloaded units: their top-level parts leave the GPU too
                mm.release_kept(key)
        _reset_compiled_code()
        _release_cuda_memory()


def _release_cuda_memory() -> None:
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()  # pinned host copies of dropped pipelines go back to torch's host cache...
        empty_host = getattr(torch._C, "_host_emptyCache", None)
        if empty_host is not None:
            empty_host()  # ...and from there to the OS
        torch.cuda.empty_cache()


def _reset_compiled_code() -> None:
    """Drop torch.compile's code for dropped pipelines: a model loaded again after a clear otherwise ran eager
    (measured on an H100: 88.1 s instead of 69.9 s for Wan's connect), its compiled entries still held by dynamo."""
    import sys

    if "torch._dynamo" in sys.modules:
        import torch._dynamo

        torch._dynamo.reset()
