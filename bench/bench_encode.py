"""Video I/O cost per clip at Mora's frame size (1024x576), old settings vs current, in the same run.

    python -m bench.bench_encode            # 49 frames (two chained SVD segments), smooth moving content + noise

Old: libx264 preset medium on one thread for the MP4, zlib-compressed NumPy for the lossless copy.
Current (openmora/video_io.py): preset veryfast on all threads; lossless RGB H.264 (qp 0) in Matroska, bit-exact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

from openmora.artifacts import write_clip_files
from openmora.video_io import read_frames, write_lossless, write_video

ROOT = Path(__file__).resolve().parent.parent


def clip(frames: int, h: int = 576, w: int = 1024) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(frames):
        base = (np.sin((xx + 8 * t) / 40.0) + np.cos(yy / 30.0)) * 60 + 128 + rng.normal(0, 6, (h, w))
        out.append(np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1))
    return np.stack(out)


def old_mp4(frames: np.ndarray, path: Path) -> None:
    _, h, w, _ = frames.shape
    with FFMPEG_VideoWriter(
        str(path),
        size=(w, h),
        fps=7,
        codec="libx264",
        preset="medium",
        threads=1,
        ffmpeg_params=["-crf", "18"],
        pixel_format="yuv420p",
    ) as writer:
        for f in frames:
            writer.write_frame(f)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "encode_cpu.json"), help="results file")
    args = parser.parse_args()
    frames = clip(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        r = {
            "old_mp4_s": timed(lambda: old_mp4(frames, d / "old.mp4")),
            "new_mp4_s": timed(lambda: write_video(frames, 7, d / "new.mp4")),
            "old_lossless_s": timed(lambda: np.savez_compressed(d / "old.npz", frames=frames)),
            "new_lossless_s": timed(lambda: write_lossless(frames, 7, d / "new.mkv")),
            "new_both_parallel_s": timed(lambda: write_clip_files(frames, 7, d / "par.mp4", d / "par.mkv")),
        }
        exact = bool(np.array_equal(read_frames(d / "new.mkv"), frames))
        sizes = {k: round((d / k).stat().st_size / 1e6, 1) for k in ("old.mp4", "new.mp4", "old.npz", "new.mkv")}
    old, new = r["old_mp4_s"] + r["old_lossless_s"], r["new_mp4_s"] + r["new_lossless_s"]
    res = {
        **{k: round(v, 3) for k, v in r.items()},
        "speedup": round(old / new, 2),
        "parallel_vs_serial": round(new / r["new_both_parallel_s"], 2),
        "lossless_exact": exact,
        "mb": sizes,
    }
    res["_meta"] = {
        "command": "python -m bench.bench_encode " + " ".join(sys.argv[1:]),
        "cores": os.cpu_count(),
        "frames": args.frames,
    }
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"Command: `{res['_meta']['command'].strip()}` ({os.cpu_count()} cores, {args.frames} frames of 1024x576)\n")
    print("| | MP4 (s) | lossless copy (s) | total (s) | MP4 MB | lossless MB |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| old: medium, 1 thread; zlib npz | {r['old_mp4_s']:.2f} | {r['old_lossless_s']:.2f} | {old:.2f} | {sizes['old.mp4']} | {sizes['old.npz']} |"
    )
    print(
        f"| new: veryfast, all threads; x264rgb qp0 | {r['new_mp4_s']:.2f} | {r['new_lossless_s']:.2f} | {new:.2f} | {sizes['new.mp4']} | {sizes['new.mkv']} |"
    )
    print(f"| new, both at once (ArtifactStore.add_video) | | | {r['new_both_parallel_s']:.2f} | | |")
    print(
        f"\nspeedup {old / new:.1f}x; both at once vs one after the other {new / r['new_both_parallel_s']:.2f}x;"
        f" lossless copy bit-exact: {exact}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
