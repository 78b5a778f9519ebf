"""Every `mora` task end to end at Mora's settings with full-size random-weight models (same path as the bench)."""

from __future__ import annotations

import pytest
import torch

from openmora.runtime import Runtime

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
# Shared by this module's tests, as one process's runs would be: the full-size pipelines load once.
RUNTIME = Runtime()

TASKS = ("text-to-video", "image-to-video", "extend", "edit", "digital-world", "connect")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):

    from bench.full_size import full_size_profile
    from bench.gpu_bench import make_inputs
    from openmora.profiles import load_profile

    root = tmp_path_factory.mktemp("full")
    profile = full_size_profile(load_profile("mora"), root=root / "models")
    inputs = make_inputs(root / "inputs", profile.width, profile.height, 25)
    return profile, inputs, root


@pytest.mark.parametrize("task", TASKS)
def test_mora_task_end_to_end(setup, task):
    from bench.gpu_bench import task_kwargs
    from openmora import Orchestrator

    profile, inputs, root = setup
    res = Orchestrator(profile=profile, llm="none", runs_dir=root / "runs", runtime=RUNTIME).run(
        task, seed=0, **task_kwargs(task, inputs, profile.segments)
    )
    assert res.final_video.exists()
    final = res.artifacts[-1]
    assert (final.width, final.height) == (1024, 576)
    if task == "text-to-video":
        assert final.frames == 25 + 2 * 24  # 3 SVD segments chained on the last frame


def test_lowvram_profile_stays_within_24_gb(setup):
    from bench.full_size import full_size_profile
    from bench.gpu_bench import task_kwargs
    from openmora import Orchestrator
    from openmora.host_copies import PinnedMover
    from openmora.profiles import load_profile

    _, inputs, root = setup
    RUNTIME.clear()  # the earlier tests' pipelines (Wan 14B among them) must leave the GPU, referenced or not
    left = torch.cuda.memory_allocated() / 2**30
    assert left < 1.0, f"{left:.1f} GB still allocated after Runtime.clear()"
    profile = full_size_profile(load_profile("mora-lowvram"), root=root / "models")
    torch.cuda.reset_peak_memory_stats()
    # text-to-video: SDXL base + refiner, then SVD, which needs SDXL base evicted (through pinned host copies)
    orch = Orchestrator(profile=profile, llm="none", runs_dir=root / "low", runtime=RUNTIME)
    res = orch.run("text-to-video", seed=0, **task_kwargs("text-to-video", inputs, profile.segments))
    assert torch.cuda.max_memory_allocated() < 24 * 2**30
    assert res.final_video.exists() and res.artifacts[-1].frames == 25 + 2 * 24
    (manager,) = [m for m in orch.runtime.managers() if m.device.type == "cuda"]
    assert manager.evictions and manager.moved_bytes > 0
    assert isinstance(manager.mover, PinnedMover) and manager.mover.pinned_bytes() > 0
