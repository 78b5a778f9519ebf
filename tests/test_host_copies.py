"""The pinned host copies behind low-VRAM evictions (``openmora/host_copies.py``). Pinning needs CUDA, so
these tests carve plain memory with the same code; the GPU tier moves real weights through pinned memory."""

from __future__ import annotations

import pytest
import torch

from openmora.host_copies import HostPool, PinnedMover, _slots, _span_bytes

torch.set_num_threads(1)
pytestmark = pytest.mark.unit


def _plain(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8)


def test_pool_buffers_keep_layout_do_not_overlap_and_are_reused():
    pool = HostPool(chunk=4096, alloc=_plain)
    a = torch.randn(3, 5, 4, 4).contiguous(memory_format=torch.channels_last)  # 960 B, NHWC strides
    b = torch.randn(100, dtype=torch.float16)
    big = torch.randn(2000)  # 8000 B: more than a chunk, its own allocation
    bufs = {}
    for name, t in (("a", a), ("b", b), ("big", big)):
        bufs[name] = pool.buffer_like((0, name), t)
        bufs[name].copy_(t)
    for name, t in (("a", a), ("b", b), ("big", big)):
        assert bufs[name].shape == t.shape and bufs[name].stride() == t.stride() and bufs[name].dtype == t.dtype
        assert torch.equal(bufs[name], t)
    # a and b share the first chunk without overlapping; writing one leaves the other intact
    ptrs = sorted((bufs[n].data_ptr(), bufs[n].data_ptr() + _span_bytes(bufs[n])) for n in ("a", "b"))
    assert ptrs[0][1] <= ptrs[1][0]
    bufs["a"].fill_(7)
    assert torch.equal(bufs["b"], b)
    assert pool.pinned_bytes == 4096 + 8192  # torch pins a power of two for the big one
    assert pool.buffer_like((0, "a"), a) is bufs["a"]  # same slot, same layout: the same buffer, no new memory
    assert pool.pinned_bytes == 4096 + 8192
    other = pool.buffer_like((0, "a"), a.contiguous())  # the layout changed: a new buffer with the new strides
    assert other.stride() == a.contiguous().stride() and other is not bufs["a"]


def test_a_small_module_pins_what_it_needs_not_a_whole_chunk():
    lin = torch.nn.Linear(10, 10)  # 440 bytes of weights and bias
    pool = HostPool(chunk=4096, alloc=_plain, expected=440)
    for name, t in (("weight", lin.weight), ("bias", lin.bias)):
        pool.buffer_like((0, name), t.detach()).copy_(t.detach())
    assert pool.pinned_bytes == 512
    assert torch.equal(pool.buffers[(0, "weight")], lin.weight.detach())


def test_slots_name_each_tensor_once_even_when_tied():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.BatchNorm1d(4), lin)  # the same Linear twice: its weights once
    names = [(type(o).__name__, n, p) for o, n, p, _ in _slots(model)]
    assert names.count(("Linear", "weight", True)) == 1
    assert ("BatchNorm1d", "running_mean", False) in names


def test_mover_falls_back_to_pageable_moves_when_the_host_is_short():
    model = torch.nn.Linear(1024, 1024)  # 4 MB
    mover = PinnedMover(host_available=lambda: 1 << 20)
    assert mover._pool_for(model) is None  # 1 MB free: no pinned copy, plain module.to instead
    mover(model, torch.device("cpu"))
    assert model.weight.device.type == "cpu" and mover.pinned_bytes() == 0
    roomy = PinnedMover(host_available=lambda: 1 << 40)
    assert roomy._pool_for(model) is not None and roomy._pool_for(model) is roomy._pool_for(model)
    roomy.pin_new = False  # clear_cache's evictions: modules already pinned keep their copies, others pin nothing
    assert roomy._pool_for(model) is not None and roomy._pool_for(torch.nn.Linear(2, 2)) is None
