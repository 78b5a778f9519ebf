"""Benchmark: each of the six tasks on a profile (default ``tiny``), wall time split into load / generate / encode /
other (orchestration). Writes ``bench/results/<cpu|gpu>_<profile>.json`` (``cpu_tiny.json`` by default) and prints a
Markdown table.

    python -m bench.bench_tasks                 # tiny profile, CPU, one torch thread
    python -m bench.bench_tasks --repeat 3      # best of 3 per task (the first run of a task also pays for loading)

The goal is "other" under 5% of wall time: the orchestration should cost nothing next to the models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OPENMORA_TORCH_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ("text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world")


def make_inputs(folder: Path) -> dict[str, Path]:
    from PIL import Image

    from openmora.video_io import write_video

    rng = np.random.default_rng(0)
    image = folder / "photo.png"
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(image)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    clips = {}
    for name, n in (("a", 24), ("b", 16)):
        path = folder / f"{name}.mp4"
        write_video(np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)]), 24, path)
        clips[name] = path
    return {"image": image, **clips}


def task_kwargs(task: str, media: dict[str, Path]) -> dict:
    return {
        "text-to-video": {"prompt": "a fox running through snow at dusk"},
        "image-to-video": {"image": media["image"], "prompt": "leaves drift in the wind"},
        "extend": {"videos": [media["a"]], "segments": 2},
        "edit": {"videos": [media["a"]], "prompt": "make it 1920s black and white"},
        "connect": {"videos": [media["a"], media["b"]]},
        "digital-world": {"prompt": "a village by a river"},
    }[task]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--repeat", type=int, default=3, help="runs per task; the table shows the fastest")
    parser.add_argument("--out", help="the JSON to write (default: bench/results/<cpu|gpu>_<profile>.json)")
    args = parser.parse_args()
    if args.out is None:
        import torch

        where = "gpu" if torch.cuda.is_available() else "cpu"
        args.out = str(ROOT / "bench" / "results" / f"{where}_{Path(args.profile).stem}.json")

    from openmora import Orchestrator

    cmd = "python -m bench.bench_tasks " + " ".join(sys.argv[1:])
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        media = make_inputs(tmp_path)
        orch = Orchestrator(profile=args.profile)
        for task in TASKS:
            runs = []
            for i in range(args.repeat):
                r = orch.run(task, out=tmp_path / f"{task}-{i}", **task_kwargs(task, media))
                runs.append(r.timings)
            first, best = runs[0], min(runs, key=lambda t: t["wall_s"])
            results[task] = {k: round(v, 4) for k, v in best.items()}
            results[task]["first_run_wall_s"] = round(first["wall_s"], 4)
            results[task]["first_run_load_s"] = round(first["load_s"], 4)
    import torch

    meta = {
        "command": cmd.strip(),
        "profile": args.profile,
        "repeat": args.repeat,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**results, "_meta": meta}, indent=2) + "\n")

    print(
        f"Command: `{meta['command']}` ({meta['machine']}, {meta['torch_threads']} torch thread(s), best of {args.repeat})\n"
    )
    print("| task | wall s | load s | generate s | encode s | other s | other % | first run wall s (load s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for task, t in results.items():
        pct = 100 * t["other_s"] / t["wall_s"] if t["wall_s"] else 0.0
        print(
            f"| {task} | {t['wall_s']:.2f} | {t['load_s']:.2f} | {t['generate_s']:.2f} | {t['encode_s']:.2f} | "
            f"{t['other_s']:.3f} | {pct:.1f}% | {t['first_run_wall_s']:.2f} ({t['first_run_load_s']:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
