"""The GPU benchmark script end to end on the tiny profile (its CPU check), so a broken phase shows up in CI rather
than on a GPU machine. Numbers mean nothing here; the shape of the results does. One harness run with every
phase checked here is shared by the tests; only the reuse of a saved precision reference needs runs of its own."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.gpu_bench import main

pytestmark = pytest.mark.slow

# sdxl is left out of the precision phase: the tiny profile has no refiner, so that stage would load and drop
# pipelines without computing a latent.
PHASES = ["--phases", "baseline,optimized,fast,precision,convs,wan_cfg", "--precision-stages", "svd,ip2p"]


@pytest.fixture(scope="module")
def frozen_gc() -> Iterator[None]:
    """The harness collects garbage between phases and stages (about 20 times a run) to free GPU memory; in a test
    process each full collection walks every object torch, diffusers and pytest made (0.3 s each here, a third of the
    run). Frozen, those are skipped and the harness's own pipelines are still collected."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, frozen_gc: None) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--tiny", "--out", str(out), *PHASES, "--tasks", "text-to-video", "--wan-cfg-steps", "2"]) == 0
    return out, json.loads((out / "bench.json").read_text())


def test_gpu_bench_phases_on_tiny(bench: tuple[Path, dict]) -> None:
    _, res = bench
    assert not [p for p in res["phases"] if "error" in res[p]], {p: res[p].get("error") for p in res["phases"]}
    # 3 tiny segments of 8 frames: Mora keeps each segment's repeated first frame (24), OpenMora drops it (8 + 7 + 7)
    for phase, frames in (("baseline", 24), ("optimized", 22), ("fast", 22)):
        run = res[phase]["text-to-video"]
        assert run["wall_s"] > 0 and run["frames"] == frames, (phase, run)
    assert (
        res["fast"]["text-to-video"]["denoiser_calls"]["svd.unet"]
        < res["optimized"]["text-to-video"]["denoiser_calls"]["svd.unet"]
    )
    summary = res["summary"]["text-to-video"]
    assert summary["baseline_s"] > 0 and summary["speedup"] > 0


def test_precision_phase_on_tiny(bench: tuple[Path, dict]) -> None:
    out, res = bench
    prec = res["precision"]
    svd = prec["svd"]
    assert {"fp16_vs_fp32", "optimized_vs_fp32", "fast_vs_fp32", "keeps_output"} <= set(svd)
    assert svd["fast_vs_fp32"] > svd["optimized_vs_fp32"]  # fewer steps: further from the reference
    assert {"fp16_vs_fp32", "optimized_vs_fp32", "fast_vs_fp32", "keeps_output"} <= set(prec["ip2p"])
    assert "sdxl" not in prec and prec["fp32_s"] > 0
    assert (out / "precision_ref.pt").is_file()


def test_saved_precision_reference_is_reused_only_for_the_same_weights(
    bench: tuple[Path, dict], tmp_path: Path
) -> None:
    # A second run reuses that fp32 reference once its own fp16 latents reproduce the saved ones; a reference from
    # other weights (here: altered fp16 latents) is not trusted and the fp32 run happens again.
    out, res = bench
    svd = res["precision"]["svd"]
    again = tmp_path / "again"
    ref = out / "precision_ref.pt"
    args = ["--tiny", "--phases", "precision", "--precision-stages", "svd", "--precision-ref"]
    assert main([*args, str(ref), "--out", str(again)]) == 0
    prec = json.loads((again / "bench.json").read_text())["precision"]
    assert prec["saved_reference"]["fp16_rel_diff"]["svd"] == 0.0 and prec["fp32_s"] == 0.0
    assert prec["svd"]["fp16_vs_fp32"] == svd["fp16_vs_fp32"]
    saved = torch.load(ref)
    saved["fp16"]["svd"] = saved["fp16"]["svd"] * 1.01
    torch.save(saved, tmp_path / "other.pt")
    assert main([*args, str(tmp_path / "other.pt"), "--out", str(tmp_path / "other")]) == 0
    prec = json.loads((tmp_path / "other" / "bench.json").read_text())["precision"]
    assert prec["saved_reference"]["fp16_rel_diff"]["svd"] > 1e-3 and prec["fp32_s"] > 0


def test_conv_study_phase_on_tiny(bench: tuple[Path, dict]) -> None:
    from bench.ablation import TemporalConvAs2d

    res = bench[1]["convs"]
    kinds = {row["kind"] for row in res["convs"]["per_config"]}
    assert kinds == {"Conv2d", "Conv3d"}  # SVD's UNet: spatial and temporal convolutions
    assert all(row.get("block_s", 0) > 0 for row in res["block"]), res["block"]
    # the temporal conv rewritten as a 2-D conv computes the same function
    conv = torch.nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(2, 4, 5, 3, 7)
    assert torch.allclose(TemporalConvAs2d(conv)(x), conv(x), atol=1e-5)


def test_wan_cfg_phase_on_tiny(bench: tuple[Path, dict]) -> None:
    res = bench[1]["wan_cfg"]
    assert res["steps"] == 2 and res["separate_s_per_step"] > 0 and res["batched_s_per_step"] > 0
    # fp32 on the CPU: batching changes only the rounding, and the "reference" is the separate run itself
    assert res["batched_vs_separate"] < 1e-4 and res["separate_vs_fp32"] == 0.0
