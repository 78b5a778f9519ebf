"""Cost and known answers of the weight-free quality metrics (openmora/quality/metrics.py).

    python -m bench.bench_metrics             # timings at 1024x576 (75 frames) and 8x64x64, then every known answer
    python -m bench.bench_metrics --repeat 1  # one timed run per metric (default: best of 3, after a warm-up)

Timings: seconds per clip frame for each metric on a 75-frame 1024x576 clip (Mora's frame size, a textured square
moving 10 px/frame; brisque scores 4 of its frames) and on an 8-frame 64x64 clip, best of ``--repeat`` runs after
one warm-up run (the first call also imports libsvm and loads the BRISQUE model: ``first_call_s``). Known answers:
each synthetic case (openmora/quality/synthetic.py) with what the metric must give and what it gave.
Results go to bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "metrics.json"


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def timings(repeat: int) -> dict[str, Any]:
    """Seconds per frame of each metric at 1024x576 (75 frames) and 64x64 (8 frames), and the 75-frame total."""
    from openmora.quality import metrics as M
    from openmora.quality import synthetic as S

    pixel = M.PixelFeatures()
    t0 = time.perf_counter()
    big = S.moving_square(75, 576, 1024, 10.0)
    make_s = time.perf_counter() - t0
    tiny = S.moving_square(8, 64, 64, 3.0)
    metric_fns: dict[str, Callable[[np.ndarray], Any]] = {
        "temporal_flickering": M.temporal_flickering,
        "motion_smoothness": M.motion_smoothness,
        "dynamic_degree": lambda c: M.dynamic_degree(c, 24.0),
        "brisque_4_frames": lambda c: M.brisque(c, max_frames=4),
        "pixel_features": pixel,
    }
    t0 = time.perf_counter()
    for fn in metric_fns.values():
        fn(big)
    first_call = time.perf_counter() - t0
    per_frame: dict[str, dict[str, float]] = {}
    per_clip: dict[str, dict[str, float]] = {}
    for name, fn in metric_fns.items():
        sb, st = _best(functools.partial(fn, big), repeat), _best(functools.partial(fn, tiny), repeat)
        per_frame[name] = {"1024x576": float(f"{sb / len(big):.3g}"), "64x64": float(f"{st / len(tiny):.3g}")}
        per_clip[name] = {"75x1024x576": round(sb, 4), "8x64x64": round(st, 5)}
    seam_s = _best(lambda: M.seam(big[:38], big[38:]), repeat)
    return {
        "seconds_per_frame": per_frame,
        "seconds_per_clip": per_clip,
        "clip_75x1024x576_s": round(sum(v["75x1024x576"] for v in per_clip.values()), 3),
        "clip_8x64x64_s": round(sum(v["8x64x64"] for v in per_clip.values()), 4),
        "clip_75x1024x576_first_call_s": round(first_call, 3),
        "seam_1024x576_s": round(seam_s, 4),
        "make_75x1024x576_square_s": round(make_s, 3),
    }


def run_timings(repeat: int) -> dict[str, Any]:
    """A tiny text-to-video run (3 segments, made here with report=False), then `openmora score` on it as a fresh
    command would (frames read from the run folder) and its report: seconds, the fastest of ``repeat``."""
    import tempfile

    import torch

    from openmora import Orchestrator
    from openmora.quality.report import write_report
    from openmora.quality.score import score_run

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = Orchestrator(profile="tiny", report=False).run(
            "text-to-video", prompt="a fox", segments=3, out=Path(tmp) / "run"
        )
        t0 = time.perf_counter()
        scores = score_run(run.run_dir, write=False)
        first = time.perf_counter() - t0
        score_s = _best(lambda: score_run(run.run_dir, write=False), repeat)
        report_s = _best(lambda: write_report(run.run_dir, scores), repeat)
        frames = sum(c["frames"] for c in scores["clips"])
    return {
        "tiny_run": {
            "what": "text-to-video, tiny profile, 3 segments: 2 clips, 8 + 22 frames at 96x64",
            "frames_scored": frames,
            "score_s": round(score_s, 3),
            "score_first_call_s": round(first, 3),
            "report_s": round(report_s, 3),
        }
    }


def known_answers() -> list[dict[str, Any]]:
    """Every synthetic case: metric, what it must give (a sentence or a value/range), what it gave, pass."""
    from openmora.quality import metrics as M
    from openmora.quality import synthetic as S

    rows: list[dict[str, Any]] = []

    def row(case: str, metric: str, expected: str, measured: Any, ok: bool) -> None:
        if isinstance(measured, float):
            measured = round(measured, 4)
        rows.append({"case": case, "metric": metric, "expected": expected, "measured": measured, "pass": bool(ok)})

    # temporal flickering
    row(
        "static 8x64x64",
        "temporal_flickering",
        "exactly 1.0",
        M.temporal_flickering(S.static(8, 64, 64)).value,
        M.temporal_flickering(S.static(8, 64, 64)).value == 1.0,
    )
    flick = {}
    for amp in (5, 20, 40):
        v = M.temporal_flickering(S.flicker(8, 64, 64, 1, amp)).value
        flick[amp] = v
        row(
            f"flicker period 1 amplitude {amp}",
            "temporal_flickering",
            f"(255 - {amp}) / 255 = {1 - amp / 255:.4f}",
            v,
            abs(v - (1 - amp / 255)) < 1e-9,
        )
    row(
        "flicker amplitudes 5 > 20 > 40",
        "temporal_flickering",
        "falls with amplitude",
        [round(flick[a], 4) for a in (5, 20, 40)],
        flick[5] > flick[20] > flick[40],
    )
    v = M.temporal_flickering(S.flicker(9, 64, 64, 2, 20)).value
    row(
        "flicker period 2 amplitude 20",
        "temporal_flickering",
        f"half the pairs toggle: {1 - 10 / 255:.4f}",
        v,
        abs(v - (1 - 10 / 255)) < 1e-9,
    )

    # motion smoothness
    sq = S.moving_square(17, 64, 64, 3.0)
    jerky = sq.copy()
    jerky[1::2] = sq[np.minimum(np.arange(1, 17, 2) + 3, 16)]
    sm = {
        "static": M.motion_smoothness(S.static(9, 64, 64)).value,
        "square 3 px/frame": M.motion_smoothness(sq).value,
        "square, odd frames 3 ahead": M.motion_smoothness(jerky).value,
        "noise": M.motion_smoothness(S.noise(9, 64, 64)).value,
    }
    row("static 9x64x64", "motion_smoothness", "> 0.999", sm["static"], sm["static"] > 0.999)
    row(
        "square 3 px/frame 17x64x64",
        "motion_smoothness",
        "> 0.97",
        sm["square 3 px/frame"],
        sm["square 3 px/frame"] > 0.97,
    )
    vals = list(sm.values())
    row(
        "static >= square > jerky square > noise",
        "motion_smoothness",
        "this ranking",
        {k: round(x, 4) for k, x in sm.items()},
        vals[0] >= vals[1] > vals[2] > vals[3],
    )

    # dynamic degree
    for case, clip, want in (
        ("static 16x64x64", S.static(16, 64, 64), False),
        ("square 0.5 px/frame 16x64x64", S.moving_square(16, 64, 64, 0.5), False),
        ("square 4 px/frame 16x64x64", S.moving_square(16, 64, 64, 4.0), True),
        ("pan astronaut 3 px/frame (512x256)", S.pan(S.photo(), 10, 3.0), False),
        ("pan astronaut 8 px/frame (512x256)", S.pan(S.photo(), 10, 8.0), True),
    ):
        d = M.dynamic_degree(clip, 8.0)
        row(case, "dynamic_degree", f"dynamic={want} (threshold {d.threshold:.2f} px)", d.dynamic, d.dynamic == want)
    for case, clip, speed, fps in (
        ("square 2 px/frame 12x64x64", S.moving_square(12, 64, 64, 2.0), 2.0, 8.0),
        ("square 6 px/frame 12x64x64", S.moving_square(12, 64, 64, 6.0), 6.0, 8.0),
        ("square 3 px/frame 12x144x256", S.moving_square(12, 144, 256, 3.0), 3.0, 8.0),
        ("square 8 px/frame 12x144x256", S.moving_square(12, 144, 256, 8.0), 8.0, 8.0),
        ("square 5 px/frame 12x576x1024", S.moving_square(12, 576, 1024, 5.0), 5.0, 8.0),
        ("square 20 px/frame 12x576x1024", S.moving_square(12, 576, 1024, 20.0), 20.0, 8.0),
        ("square 1 px/frame 25x64x64 at 24 fps (interval 3)", S.moving_square(25, 64, 64, 1.0), 1.0, 24.0),
        ("pan astronaut 3 px/frame", S.pan(S.photo(), 10, 3.0), 3.0, 8.0),
        ("pan astronaut 6 px/frame", S.pan(S.photo(), 10, 6.0), 6.0, 8.0),
        ("pan coffee down 8 px/frame", S.pan(S.photo("coffee"), 10, 8.0, direction="down"), 8.0, 8.0),
    ):
        d = M.dynamic_degree(clip, fps)
        row(case, "dynamic_degree.speed_px", f"{speed} +/- 15%", d.speed_px, abs(d.speed_px - speed) <= 0.15 * speed)

    # seams
    st = S.static(12, 64, 64)
    s = M.seam(st[:6], st[6:])
    row(
        "static continued",
        "seam",
        "not a cut, psnr 100, flow_jump 0",
        f"cut={s.cut} psnr={s.psnr:.1f} flow_jump={s.flow_jump:.2f}",
        not s.cut and s.psnr == 100.0 and s.flow_jump == 0.0,
    )
    s = M.seam(sq[:8], sq[8:])
    row(
        "square 3 px/frame continued",
        "seam",
        "not a cut, flow_jump ~1",
        f"cut={s.cut} flow_jump={s.flow_jump:.2f} ratio={s.seam_diff_ratio:.2f}",
        not s.cut and abs(s.flow_jump - 1) < 0.3,
    )
    pan = S.pan(S.photo(), 12, 8.0)
    s = M.seam(pan[:6], pan[6:])
    row(
        "pan 8 px/frame continued",
        "seam",
        "not a cut, flow_jump < 1.5",
        f"cut={s.cut} flow_jump={s.flow_jump:.2f} ratio={s.seam_diff_ratio:.2f}",
        not s.cut and s.flow_jump < 1.5,
    )
    s = M.seam(S.static(6, 64, 64, 0), S.static(6, 64, 64, 5))
    row(
        "hard cut, two static pictures",
        "seam",
        "a cut",
        f"cut={s.cut} flow_jump={s.flow_jump:.2f} ratio={s.seam_diff_ratio:.2f} psnr={s.psnr:.1f}",
        s.cut,
    )
    pa = S.pan(S.photo("astronaut"), 8, 3.0, crop=(300, 256))
    pb = S.pan(S.photo("chelsea"), 8, 3.0, crop=(300, 256))
    s = M.seam(pa, pb)
    row(
        "hard cut, astronaut pan to chelsea pan",
        "seam",
        "a cut",
        f"cut={s.cut} flow_jump={s.flow_jump:.2f} ratio={s.seam_diff_ratio:.2f} hist={s.hist_distance:.2f}",
        s.cut,
    )
    ts = S.ffmpeg_testsrc(16, 256, 144)
    sqb = S.moving_square(16, 144, 256, 6.0)
    s = M.seam(ts[:8], sqb[8:])
    row(
        "hard cut, testsrc2 to square",
        "seam",
        "a cut",
        f"cut={s.cut} flow_jump={s.flow_jump:.2f} ratio={s.seam_diff_ratio:.2f}",
        s.cut,
    )
    s = M.seam(ts[:8], ts[8:])
    row("testsrc2 continued", "seam", "not a cut", f"cut={s.cut} flow_jump={s.flow_jump:.2f}", not s.cut)
    fade = S.cross_fade(pa, pb, 6)
    seams = [M.seam(fade[:k], fade[k:]) for k in range(1, len(fade))]
    row(
        "cross-fade astronaut -> chelsea over 6 frames, every join",
        "seam",
        "no join is a cut",
        f"cuts={sum(x.cut for x in seams)} max ratio={max(x.seam_diff_ratio for x in seams):.2f}",
        not any(x.cut for x in seams),
    )
    row(
        "hard cut vs its continuation",
        "seam_diff_ratio",
        "cut > 2.5 > continuation",
        [round(M.seam_diff_ratio(pa, pb), 2), round(M.seam_diff_ratio(pa[:4], pa[4:]), 2)],
        M.seam_diff_ratio(pa, pb) > 2.5 > M.seam_diff_ratio(pa[:4], pa[4:]),
    )

    # BRISQUE
    img = S.photo("astronaut")
    noisy = (img.astype(np.int16) + np.random.default_rng(0).normal(0, 40, img.shape)).clip(0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(img, (0, 0), 4)
    b = {k: M.brisque_score(x) for k, x in (("clean", img), ("noise sigma 40", noisy), ("blur sigma 4", blurred))}
    row(
        "astronaut vs + noise vs + blur",
        "brisque",
        "clean lowest (lower is better)",
        {k: round(x, 2) for k, x in b.items()},
        b["clean"] < min(b["noise sigma 40"], b["blur sigma 4"]),
    )
    for name in ("coffee", "chelsea"):
        v = M.brisque_score(S.photo(name))
        row(f"photo {name}", "brisque", "0..40 (a clean photo)", v, 0 <= v <= 40)

    # subject consistency and TCON on pixel features
    fx = M.PixelFeatures()
    v = M.subject_consistency(fx(S.static(5, 64, 64))).value
    row("static", "subject_consistency (pixel-stats)", "1.0", v, abs(v - 1) < 1e-5)
    same = M.subject_consistency(fx(pa)).value
    cut = M.subject_consistency(fx(np.concatenate([pa[:4], pb[:4]]))).value
    row(
        "astronaut pan vs pan cut to chelsea",
        "subject_consistency (pixel-stats)",
        "same > 0.9 > cut",
        [round(same, 4), round(cut, 4)],
        same > 0.9 > cut,
    )
    fa, fb = fx(pa), fx(pb)
    row(
        "same clip / different clips",
        "tcon (pixel-stats)",
        "1.0 / < 0.9",
        [round(M.tcon(fa, fa), 4), round(M.tcon(fa, fb), 4)],
        abs(M.tcon(fa, fa) - 1) < 1e-5 and M.tcon(fa, fb) < 0.9,
    )

    # real footage
    for case, clip, fps in (
        ("ffmpeg testsrc2 24x240x320", S.ffmpeg_testsrc(24, 320, 240), 24.0),
        ("pan coffee 5 px/frame", S.pan(S.photo("coffee"), 12, 5.0), 8.0),
    ):
        d = M.dynamic_degree(clip, fps)
        res = {
            "flicker": round(M.temporal_flickering(clip).value, 4),
            "smoothness": round(M.motion_smoothness(clip).value, 4),
            "speed_px": round(d.speed_px, 2),
            "brisque": round(M.brisque(clip, max_frames=2).value, 2),
        }
        ok = all(np.isfinite(list(res.values()))) and d.speed_px > 0.5
        row(case, "all (real footage)", "scored without error, moving (speed_px > 0.5)", res, ok)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per metric; the fastest counts")
    parser.add_argument("--out", default=str(OUT), help="the JSON to write")
    args = parser.parse_args()
    cmd = ("python -m bench.bench_metrics " + " ".join(sys.argv[1:])).strip()
    times = timings(max(1, args.repeat))
    times.update(run_timings(max(1, args.repeat)))
    rows = known_answers()
    result = {
        "command": cmd,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
        },
        "repeat": args.repeat,
        **times,
        "known_answers": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    print(f"Command: `{cmd}` ({m['platform']}, {m['cpu_count']} cores, best of {args.repeat})\n")
    print("| metric | ms/frame 1024x576 | ms/frame 64x64 | s per 75x1024x576 clip | s per 8x64x64 clip |")
    print("|---|---:|---:|---:|---:|")
    for name, pf in times["seconds_per_frame"].items():
        pc = times["seconds_per_clip"][name]
        print(
            f"| {name} | {1e3 * pf['1024x576']:.3f} | {1e3 * pf['64x64']:.3f} | {pc['75x1024x576']:.3f} "
            f"| {pc['8x64x64']:.4f} |"
        )
    print(
        f"| **total** | | | {times['clip_75x1024x576_s']:.3f} (first call {times['clip_75x1024x576_first_call_s']:.2f})"
        f" | {times['clip_8x64x64_s']:.4f} |\n"
    )
    tr = times["tiny_run"]
    print(
        f"Scoring a run ({tr['what']}): {tr['score_s']:.3f} s (first call in the process {tr['score_first_call_s']:.2f} s,"
        f" imports included); its report.html {tr['report_s']:.3f} s\n"
    )
    print("| case | metric | expected | measured | pass |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['metric']} | {r['expected']} | {r['measured']} | {'yes' if r['pass'] else 'NO'} |")
    passed = sum(r["pass"] for r in rows)
    out = Path(args.out).resolve()
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\n{passed}/{len(rows)} known answers pass; wrote {shown}")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
