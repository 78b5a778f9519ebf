"""The memory manager's decisions, LRU eviction, shared modules and multi-GPU placement, on tiny real
pipelines on the CPU (moves are recorded, not performed), plus the loader running the tiny profile under a budget."""

from __future__ import annotations

import pytest
import torch

from bench.full_size import FULL_SIZE_MODELS, build_component, estimate_bytes
from openmora.memory import (
    GB,
    MemoryManager,
    decide_offload,
    module_bytes,
    pipeline_modules,
    place_roles,
)

torch.set_num_threads(1)


def _recorder():
    moves: list[tuple[str, str]] = []

    def mover(module: torch.nn.Module, device: torch.device) -> None:
        moves.append((type(module).__name__, str(device)))

    return moves, mover


def _notional_gpu(moved: list[int]) -> MemoryManager:
    """A manager of a notional GPU: moves are recorded (ids of modules sent to the CPU), never performed, so the
    tests run on a CPU-only machine."""
    return MemoryManager(
        budget_bytes=1 << 40, device="cuda:0", mover=lambda m, d: moved.append(id(m)) if str(d) == "cpu" else None
    )


def _sharing_refiner(base):
    """A second pipeline sharing the base's VAE and text encoder, like SDXL's refiner."""
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=_tiny("edit_image").unet,
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny(name: str):
    from openmora import tiny_models

    return tiny_models.BUILDERS[name]()


def _weights(pipe) -> int:
    return sum(module_bytes(m) for m in pipeline_modules(pipe).values())


@pytest.mark.unit
def test_decide_offload_picks_cheapest_fit():
    assert decide_offload(weights=10 * GB, largest=6 * GB, reserve=4 * GB, budget=24 * GB) == "resident"
    assert decide_offload(weights=30 * GB, largest=6 * GB, reserve=4 * GB, budget=24 * GB) == "model"
    # Wan 14B in 24 GB: even its transformer alone does not fit -> stream blocks
    assert decide_offload(weights=44 * GB, largest=30 * GB, reserve=8 * GB, budget=24 * GB) == "group"


@pytest.mark.unit
def test_lru_eviction_keeps_budget_and_evicts_least_recently_used():
    a, b, c = _tiny("text_to_image"), _tiny("edit_image"), _tiny("image_to_video")
    size = max(_weights(p) for p in (a, b, c))
    moves, mover = _recorder()
    mm = MemoryManager(budget_bytes=2 * size + size // 2, device="cpu", mover=mover)
    for key, pipe in (("a", a), ("b", b), ("c", c)):
        unit = mm.add(key, pipe, reserve_bytes=0)
        assert unit.placement == "resident"
    mm.activate("a")
    mm.activate("b")
    assert mm.resident_keys() == ["a", "b"]
    mm.activate("a")  # a is now the most recently used
    mm.activate("c")  # needs room: b (least recently used) goes, a stays
    assert mm.evictions == ["b"]
    assert sorted(mm.resident_keys()) == ["a", "c"]
    assert mm.resident_bytes() <= mm.budget
    assert any(dev == "cpu" for _, dev in moves)


@pytest.mark.unit
def test_reserve_counts_for_the_active_unit_even_when_resident():
    a, b = _tiny("text_to_image"), _tiny("edit_image")
    size = max(_weights(a), _weights(b))
    mm = MemoryManager(budget_bytes=3 * size, device="cpu", mover=lambda m, d: None)
    mm.add("a", a, reserve_bytes=0)
    mm.add("b", b, reserve_bytes=int(1.5 * size))
    mm.activate("a")
    mm.activate("b")  # b's activations need room beyond both weights: a is evicted
    assert mm.resident_keys() == ["b"]


@pytest.mark.unit
def test_shared_modules_counted_once_and_not_evicted_under_a_user():
    base = _tiny("text_to_image")
    refiner = _sharing_refiner(base)
    moved: list[int] = []
    mm = _notional_gpu(moved)
    mm.add("base", base, 0)
    mm.add("refiner", refiner, 0)
    mm.activate("base")
    mm.activate("refiner")
    shared = module_bytes(base.vae) + module_bytes(base.text_encoder)
    assert mm.resident_bytes() == _weights(base) + _weights(refiner) - shared
    mm.evict("base")
    # The VAE and text encoder stay: the refiner is still on the device and uses them.
    assert id(base.vae) not in moved and id(base.text_encoder) not in moved
    assert id(base.unet) in moved


@pytest.mark.unit
def test_runtime_clear_moves_every_resident_pipeline_off_the_device():
    from openmora.runtime import Runtime

    base, video = _tiny("text_to_image"), _tiny("image_to_video")
    moved: list[int] = []
    mm = _notional_gpu(moved)
    mm.add("base", base, 0)
    mm.add("video", video, 0)
    mm.activate("base")
    mm.activate("video")
    rt = Runtime()
    rt._managers[("cuda:0", None)] = mm
    rt.clear()  # the pipelines stay referenced here, as a finished run's objects can keep them
    assert rt.managers() == []
    assert mm.resident_keys() == []
    assert sorted(moved) == sorted(id(m) for p in (base, video) for m in pipeline_modules(p).values())


@pytest.mark.unit
def test_refiner_sharing_with_resident_base_stays_resident():
    base = _tiny("text_to_image")
    refiner = _sharing_refiner(base)
    mm = MemoryManager(budget_bytes=_weights(base) + 1, device="cpu", mover=lambda m, d: None)
    assert mm.add("base", base, 0).placement == "resident"
    # Alone the refiner would not fit beside its reserve; offload hooks on the shared VAE would break the base.
    unit = mm.add("refiner", refiner, reserve_bytes=_weights(base))
    assert unit.placement == "resident"
    assert any("shares modules" in n for n in unit.notes)


@pytest.mark.unit
def test_offload_is_never_combined_with_a_move():
    pipe = _tiny("image_to_video")
    moves, mover = _recorder()
    mm = MemoryManager(budget_bytes=_weights(pipe) // 2, device="cpu", mover=mover)
    unit = mm.add("svd", pipe, reserve_bytes=0)
    assert unit.placement in ("model", "group")
    mm.activate("svd")
    assert moves == []  # an offloaded pipeline is never .to(device)-ed


@pytest.mark.unit
def test_place_roles_spreads_over_any_number_of_gpus():
    sizes = {"connect_frames": 52, "image_to_video": 18, "text_to_image": 15, "edit_image": 6}
    one = place_roles(sizes, ["cuda:0"])
    assert set(one.values()) == {"cuda:0"}
    two = place_roles(sizes, ["cuda:0", "cuda:1"])
    assert two["connect_frames"] != two["image_to_video"]
    four = place_roles(sizes, [f"cuda:{i}" for i in range(4)])
    assert len(set(four.values())) == 4
    eight = place_roles(sizes, [f"cuda:{i}" for i in range(8)])
    assert len(set(eight.values())) == 4  # one role per GPU, the rest idle
    pinned = place_roles(sizes, ["cuda:0", "cuda:1"], pinned={"connect_frames": "cuda:1"})
    assert pinned["connect_frames"] == "cuda:1" and pinned["image_to_video"] == "cuda:0"


@pytest.mark.integration
def test_loader_under_a_budget_runs_the_tiny_profile(tmp_path, monkeypatch):
    """The loader hands pipelines to the manager when a budget is set; a tiny task still runs end to end."""
    from openmora import Orchestrator
    from openmora.profiles import load_profile

    profile = load_profile("tiny")
    profile.vram_budget_gb = 0.0005  # ~0.5 MB: nothing fits beside another, so the manager must evict
    orch = Orchestrator(profile=profile, llm="none", runs_dir=tmp_path)
    try:
        res = orch.run("edit", prompt="make it blue", videos=[_write_clip(tmp_path)], segments=1)
        assert res.final_video.exists()
        (mm,) = orch.runtime.managers()
        assert mm.device == torch.device("cpu") and len(mm.units) == 2  # edit_image + image_to_video
    finally:
        orch.runtime.clear()


@pytest.mark.integration
def test_two_orchestrators_with_different_budgets_share_no_manager(tmp_path):
    """Each orchestrator owns its runtime: pipelines, managers and budgets of one never reach the other."""
    from openmora import Orchestrator
    from openmora.profiles import load_profile

    small, large = load_profile("tiny"), load_profile("tiny")
    small.vram_budget_gb, large.vram_budget_gb = 0.0005, 100.0
    a = Orchestrator(profile=small, runs_dir=tmp_path / "a")
    b = Orchestrator(profile=large, runs_dir=tmp_path / "b")
    clip = _write_clip(tmp_path)
    a.run("edit", prompt="make it blue", videos=[clip], segments=1)
    b.run("edit", prompt="make it red", videos=[clip], segments=1)
    (ma,), (mb,) = a.runtime.managers(), b.runtime.managers()
    assert ma is not mb and ma.budget < mb.budget
    assert not set(map(id, a.runtime.loaded().values())) & set(map(id, b.runtime.loaded().values()))
    # Placement follows each one's own budget: nothing fits in 0.5 MB, everything (with its reserve) in 100 GB.
    assert {u.placement for u in ma.units.values()} != {"resident"}
    assert {u.placement for u in mb.units.values()} == {"resident"}


def _write_clip(tmp_path):
    import numpy as np

    from openmora.video_io import write_video

    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 96, 3), dtype=np.uint8)
    return write_video(frames, 7, tmp_path / "in.mp4")


@pytest.mark.unit
def test_full_size_configs_build_on_meta():
    """Every committed config builds at full size (on the meta device: no memory) with the published sizes."""
    gib = {h: estimate_bytes(h) / 2**30 for h in FULL_SIZE_MODELS}
    assert 6.0 < gib["stabilityai/stable-diffusion-xl-base-1.0"] < 7.0
    assert 4.0 < gib["stabilityai/stable-video-diffusion-img2vid-xt"] < 4.5
    assert 40 < gib["Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"] < 46
    unet = build_component("stabilityai--stable-video-diffusion-img2vid-xt/unet", torch.float16, "meta")
    assert 1.4e9 < sum(p.numel() for p in unet.parameters()) < 1.6e9


@pytest.mark.unit
def test_block_offload_keeps_the_top_level_group_on_the_device():
    """diffusers moves a block-offloaded model's non-block parts (Wan: embedders, output projection) in and out of
    pageable memory around every pass; the helper pins that group to the device and reports exactly its bytes."""
    from diffusers.hooks import apply_group_offloading

    from openmora import tiny_models
    from openmora.memory import Unit, keep_top_level_on_device

    transformer = tiny_models.build_connect_frames().transformer
    assert keep_top_level_on_device(transformer) == 0  # no group offload: nothing to keep
    # On this CPU-only machine the blocks "offload" to a notional second device so the two can be told apart.
    apply_group_offloading(
        transformer, onload_device="cpu", offload_device="cpu:1", offload_type="block_level", num_blocks_per_group=1
    )
    named = [*transformer.named_parameters(), *transformer.named_buffers()]
    outside_blocks = sum(t.numel() * t.element_size() for n, t in named if not n.startswith("blocks."))
    group = transformer._diffusers_hook.get_hook("group_offloading").group
    assert group.stream is None and group.offload_device == torch.device("cpu:1")
    kept = keep_top_level_on_device(transformer)
    assert kept == outside_blocks > 0
    assert group.offload_device == group.onload_device  # its offload moves to where it runs: a no-op
    # The manager counts those bytes as on the device until the unit is forgotten (clear_cache), which sends them back.
    manager = MemoryManager(budget_bytes=1 << 40, device="cpu")
    manager.units["wan"] = Unit(
        "wan", None, {"transformer": transformer}, reserve=0, placement="group", kept_bytes=kept
    )
    assert manager.resident_bytes() == kept
    manager.forget("wan")
    assert group.offload_device == torch.device("cpu:1") and manager.resident_bytes() == 0


@pytest.mark.unit
def test_sizes_are_measured_when_added_not_on_every_activation(monkeypatch):
    # Walking a full-size UNet's parameters costs milliseconds and activation sums every resident module several
    # times: the manager measures each module when its pipeline is added, and again only if it is added again.
    import openmora.memory as mmod

    a, b = _tiny("text_to_image"), _tiny("image_to_video")
    walks: list[int] = []
    real = mmod.module_bytes
    monkeypatch.setattr(mmod, "module_bytes", lambda m: walks.append(id(m)) or real(m))
    moves, mover = _recorder()
    wa, wb = _weights(a), _weights(b)
    mm = MemoryManager(budget_bytes=max(wa, wb) + min(wa, wb) // 2, device="cpu", mover=mover)  # one at a time
    mm.add("a", a, reserve_bytes=0)
    mm.add("b", b, reserve_bytes=0)
    added = len(walks)
    assert added == len(pipeline_modules(a)) + len(pipeline_modules(b))
    for key in ("a", "b", "a", "b"):  # each activation evicts the other: sizes needed all the time
        mm.activate(key)
    assert len(walks) == added
    # a in, (a out, b in), (b out, a in), (a out, b in): the byte counts still come out right
    assert mm.moved_bytes == 4 * wa + 3 * wb
    mm.add("a", a, reserve_bytes=0)  # added again (its weights may have changed): measured again
    assert len(walks) == added + len(pipeline_modules(a))


@pytest.mark.unit
def test_auto_roles_spread_over_several_gpus_through_the_runtime():
    """device: auto with several GPUs: the loader asks its runtime, which spreads mora's roles by estimated size
    (simulated device lists: nothing is loaded, so no GPU is needed)."""
    from openmora.loader import PipelineLoader
    from openmora.profiles import load_profile
    from openmora.runtime import Runtime

    mora = load_profile("mora")
    roles = sorted(mora.roles)
    two = PipelineLoader(mora, runtime=Runtime(gpus=["cuda:0", "cuda:1"]))
    placed = {r: str(two.device_for(r)) for r in roles}
    assert set(placed.values()) == {"cuda:0", "cuda:1"}
    # Wan's 41 GB connection model gets a card to itself; SDXL, SVD and InstructPix2Pix share the other.
    assert [r for r in roles if placed[r] == placed["connect_frames"]] == ["connect_frames"]
    four = PipelineLoader(mora, runtime=Runtime(gpus=[f"cuda:{i}" for i in range(4)]))
    assert len({str(four.device_for(r)) for r in roles}) == min(4, len(roles))
    # A role pinned in the profile stays where it is pinned; the others are placed around it.
    mora.roles["image_to_video"].device = "cuda:1"
    pinned = PipelineLoader(mora, runtime=Runtime(gpus=["cuda:0", "cuda:1"]))
    assert str(pinned.device_for("connect_frames")) == "cuda:0"
    # One GPU (or none): auto resolves as before, to the only device there is.
    one = PipelineLoader(load_profile("mora"), runtime=Runtime(gpus=[]))
    assert one.device_for("connect_frames").type == ("cuda" if torch.cuda.is_available() else "cpu")
