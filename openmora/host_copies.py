"""Page-locked host copies for the memory manager's evictions: weights cross PCIe at pinned speed both ways.

An evicted pipeline's weights go to the CPU and come back when it runs again (low-VRAM mode moves SDXL out for SVD
and back for the next shot). ``module.to("cpu")`` allocates fresh pageable memory on every eviction and copies
through a staging buffer; loading back from pageable memory is staged again. :class:`PinnedMover` keeps one
page-locked copy per tensor, allocated at the first eviction and reused after: an eviction copies the weights into
it and points the parameters at it, a reload copies from it with non-blocking transfers. Every eviction copies the
current GPU values, so a weight changed on the GPU is never lost to a stale copy.

Pinned memory comes from torch's host allocator, which rounds each allocation up to a power of two; tensors are
therefore packed into chunks of 256 MiB (a power of two: nothing wasted; a module's last chunk is the smallest power
of two that holds what is left) and only tensors larger than a chunk get their own allocation. When the host's free memory is short of a module's size plus :data:`HOST_MARGIN` the mover falls back
to plain ``module.to`` for that module, as does any non-CUDA device.

Example:
    >>> from openmora.host_copies import PinnedMover
    >>> mover = PinnedMover()
    >>> mover(unet, torch.device("cuda"))  # doctest: +SKIP
    >>> mover(unet, torch.device("cpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator

import torch

logger = logging.getLogger(__name__)

CHUNK = 256 << 20  # bytes per pinned chunk: a power of two, so the host allocator's rounding wastes nothing
HOST_MARGIN = 4 << 30  # free host memory to leave to everything else
_ALIGN = 64  # cache-line alignment of each buffer in a chunk


def _span_bytes(t: torch.Tensor) -> int:
    """Bytes of the storage a tensor's elements occupy (strided tensors included)."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True))
    return span * t.element_size()


def _slots(module: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str, bool, torch.Tensor]]:
    """(owner, name, is_parameter, tensor) for every parameter and buffer under ``module``, each tensor once."""
    seen: set[int] = set()
    for owner in module.modules():
        for is_param, slots in ((True, owner._parameters), (False, owner._buffers)):
            for name, t in slots.items():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield owner, name, is_param, t


def _pinned(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def _pow2(n: int) -> int:
    """The power of two torch's pinned allocator actually reserves for ``n`` bytes."""
    return 1 << max(0, (n - 1).bit_length())


class HostPool:
    """Pinned host buffers of one module, one per tensor slot, carved out of chunks of at most ``chunk`` bytes.

    Args:
        chunk: bytes per chunk; tensors larger than this get an allocation of their own.
        alloc: ``alloc(nbytes)`` returns a uint8 CPU tensor (default: pinned); tests pass plain memory.
        expected: the module's bytes, if known: the last chunk is sized to what is left (a power of two), so a small
            module does not pin a whole chunk.
    """

    def __init__(
        self, chunk: int = CHUNK, alloc: Callable[[int], torch.Tensor] = _pinned, expected: int | None = None
    ) -> None:
        self.chunk = chunk
        self.alloc = alloc
        self.buffers: dict[tuple[int, str], torch.Tensor] = {}
        self._chunk: torch.Tensor | None = None
        self._used = 0
        self._left = expected
        self.pinned_bytes = 0

    def buffer_like(self, key: tuple[int, str], t: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is not None and buf.shape == t.shape and buf.stride() == t.stride() and buf.dtype == t.dtype:
            return buf
        nbytes = _span_bytes(t)
        if nbytes > self.chunk:
            raw = self.alloc(nbytes)
            self.pinned_bytes += _pow2(nbytes)
            offset = 0
        else:
            start = -(-self._used // _ALIGN) * _ALIGN
            if self._chunk is None or start + nbytes > self._chunk.numel():
                size = self.chunk if self._left is None else min(self.chunk, _pow2(max(nbytes, self._left)))
                self._chunk = self.alloc(size)
                self.pinned_bytes += size
                start = 0
            raw, offset = self._chunk, start
            self._used = start + nbytes
        if self._left is not None:
            self._left = max(0, self._left - nbytes)
        flat = raw.narrow(0, offset, max(nbytes, t.element_size())).view(t.dtype)
        buf = flat.as_strided(t.shape, t.stride(), flat.storage_offset())
        self.buffers[key] = buf
        return buf


class PinnedMover:
    """``mover(module, device)`` for :class:`openmora.memory.MemoryManager` through pinned host copies.

    Args:
        host_available: returns the host's free bytes (None: unknown, pin anyway); tests pass their own.
    """

    def __init__(self, host_available: Callable[[], int | None] | None = None) -> None:
        if host_available is None:
            from openmora.memory import host_available_bytes

            host_available = host_available_bytes
        self.host_available = host_available
        self.pin_new = True  # False: modules without pinned copies yet are evicted to pageable memory
        self._pools: weakref.WeakKeyDictionary[torch.nn.Module, HostPool] = weakref.WeakKeyDictionary()
        self._pageable: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
        self._lock = threading.Lock()

    def __call__(self, module: torch.nn.Module, device: torch.device) -> None:
        device = torch.device(device)
        if device.type == "cuda":
            self.to_gpu(module, device)
        elif device.type == "cpu":
            self.to_host(module)
        else:
            module.to(device)

    def pinned_bytes(self) -> int:
        return sum(p.pinned_bytes for p in list(self._pools.values()))

    def to_gpu(self, module: torch.nn.Module, device: torch.device) -> None:
        """Copy the module onto ``device``: non-blocking from its pinned copies, plain copies for the rest."""
        with torch.no_grad():
            for owner, name, is_param, t in _slots(module):
                if t.device == device:
                    continue
                moved = t.to(device, non_blocking=t.is_pinned())
                self._set(owner, name, is_param, moved)
        torch.cuda.synchronize(device)

    def to_host(self, module: torch.nn.Module) -> None:
        """Copy the module's GPU tensors into its pinned copies (made at the first eviction) and point it there."""
        pool = self._pool_for(module)
        if pool is None:
            module.to("cpu")
            return
        pending: list[tuple[torch.nn.Module, str, bool, torch.Tensor]] = []
        devices: set[torch.device] = set()
        with torch.no_grad():
            for owner, name, is_param, t in _slots(module):
                if t.device.type != "cuda":
                    continue
                buf = pool.buffer_like((id(owner), name), t)
                buf.copy_(t, non_blocking=True)
                devices.add(t.device)
                pending.append((owner, name, is_param, buf))
            for dev in devices:  # the copies must land before the GPU memory is let go
                torch.cuda.synchronize(dev)
            for owner, name, is_param, buf in pending:
                self._set(owner, name, is_param, buf)

    def _pool_for(self, module: torch.nn.Module) -> HostPool | None:
        with self._lock:
            pool = self._pools.get(module)
            if pool is not None:
                return pool
            if module in self._pageable or not self.pin_new:
                return None
            need = sum(_span_bytes(t) for *_, t in _slots(module))
            free = self.host_available()
            if free is not None and free < need + HOST_MARGIN:
                logger.info(
                    "memory: %.1f GB free on the host for a %.1f GB module: evicting it to pageable memory",
                    free / 2**30,
                    need / 2**30,
                )
                self._pageable.add(module)
                return None
            pool = self._pools[module] = HostPool(expected=need)
            return pool

    @staticmethod
    def _set(owner: torch.nn.Module, name: str, is_param: bool, value: torch.Tensor) -> None:
        if is_param:
            owner._parameters[name].data = value
        else:
            owner._buffers[name] = value
