"""Fast tier: the GPU benchmark script end to end on the tiny profile (its CPU check), so a broken phase shows up in
CI rather than in a scarce device call. Numbers mean nothing here; the shape of the results does."""

from __future__ import annotations

import json
from pathlib import Path

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
