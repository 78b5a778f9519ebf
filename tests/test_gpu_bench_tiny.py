"""Fast tier: the GPU benchmark script end to end on the tiny profile (its CPU check), so a broken phase shows up in
CI rather than in a scarce device call. Numbers mean nothing here; the shape of the results does."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.gpu_bench import main


def test_gpu_bench_phases_on_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    phases = "baseline,optimized,fast,precision"
    assert main(["--tiny", "--out", str(out), "--phases", phases, "--tasks", "text-to-video"]) == 0
    res = json.loads((out / "bench.json").read_text())
    # 3 tiny segments of 8 frames: Mora keeps each segment's repeated first frame (24), OpenMora drops it (8 + 7 + 7)
    for phase, frames in (("baseline", 24), ("optimized", 22), ("fast", 22)):
        run = res[phase]["text-to-video"]
        assert run["wall_s"] > 0 and run["frames"] == frames, (phase, run)
    assert (
        res["fast"]["text-to-video"]["denoiser_calls"]["svd.unet"]
        < res["optimized"]["text-to-video"]["denoiser_calls"]["svd.unet"]
    )
    svd = res["precision"]["svd"]
    assert {"fp16_vs_fp32", "optimized_vs_fp32", "fast_vs_fp32", "keeps_output"} <= set(svd)
    assert svd["fast_vs_fp32"] > svd["optimized_vs_fp32"]  # fewer steps: further from the reference
    summary = res["summary"]["text-to-video"]
    assert summary["baseline_s"] > 0 and summary["speedup"] > 0
    assert (out / "precision_ref.pt").is_file()
    # A second run reuses that fp32 reference once its own fp16 latents reproduce the saved ones; a reference from
    # other weights (here: altered fp16 latents) is not trusted and the fp32 run happens again.
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


def test_conv_study_phase_on_tiny(tmp_path: Path) -> None:
    from bench.ablation import TemporalConvAs2d

    assert main(["--tiny", "--out", str(tmp_path), "--phases", "convs"]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())["convs"]
    kinds = {row["kind"] for row in res["convs"]["per_config"]}
    assert kinds == {"Conv2d", "Conv3d"}  # SVD's UNet: spatial and temporal convolutions
    assert all(row.get("block_s", 0) > 0 for row in res["block"]), res["block"]
    # the temporal conv rewritten as a 2-D conv computes the same function
    conv = torch.nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(2, 4, 5, 3, 7)
    assert torch.allclose(TemporalConvAs2d(conv)(x), conv(x), atol=1e-5)


def test_wan_cfg_phase_on_tiny(tmp_path: Path) -> None:
    assert main(["--tiny", "--out", str(tmp_path), "--phases", "wan_cfg", "--wan-cfg-steps", "2"]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())["wan_cfg"]
    assert res["steps"] == 2 and res["separate_s_per_step"] > 0 and res["batched_s_per_step"] > 0
    # fp32 on the CPU: batching changes only the rounding, and the "reference" is the separate run itself
    assert res["batched_vs_separate"] < 1e-4 and res["separate_vs_fp32"] == 0.0
