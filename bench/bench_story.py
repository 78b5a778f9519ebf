"""Multi-shot story: serial vs stage-overlapped rendering, in the same run, with the same frames.

    python -m bench.bench_story            # tiny profile on this machine (CPU: the two stages use two cores)
    python -m bench.bench_story --profile mora --shots 4   # on a GPU machine with the weights

Prints a table and writes bench/results/story_<profile>.json.
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

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OPENMORA_TORCH_THREADS", "1")

SHOTS = [
    "a fox wakes in its den",
    "it runs across the snow",
    "it stops at a frozen river",
    "at dusk it curls up under a pine",
    "the moon rises over the forest",
    "snow starts to fall again",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from openmora import Orchestrator
    from openmora.artifacts import ArtifactStore

    prompt = "; ".join(SHOTS[: args.shots])
    orch = Orchestrator(profile=args.profile)
    rows, frames = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        orch.run("story", prompt=prompt, segments=args.segments, out=Path(tmp) / "warmup")  # loads every pipeline
        for mode in ("serial", "overlap"):
            orch.story_overlap = mode == "overlap"
            best = None
            for i in range(args.repeat):
                start = time.perf_counter()
                r = orch.run("story", prompt=prompt, segments=args.segments, out=Path(tmp) / f"{mode}{i}")
                wall = time.perf_counter() - start
                best = wall if best is None else min(best, wall)
                frames[mode] = ArtifactStore(r.run_dir).frames(r.final_id)
            rows[mode] = best
    same = bool(np.array_equal(frames["serial"], frames["overlap"]))
    result = {
        "serial_s": round(rows["serial"], 3),
        "overlap_s": round(rows["overlap"], 3),
        "speedup": round(rows["serial"] / rows["overlap"], 3),
        "same_frames": same,
        "shots": args.shots,
        "segments": args.segments,
        "_meta": {"command": "python -m bench.bench_story " + " ".join(sys.argv[1:]), "cores": os.cpu_count()},
    }
    out = ROOT / "bench" / "results" / f"story_{args.profile}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Command: `{result['_meta']['command'].strip()}` ({os.cpu_count()} cores, best of {args.repeat})\n")
    print("| shots | segments/shot | serial s | overlapped s | speedup | same frames |")
    print("|---:|---:|---:|---:|---:|---|")
    print(
        f"| {args.shots} | {args.segments} | {rows['serial']:.2f} | {rows['overlap']:.2f} | {result['speedup']:.2f}x | {same} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
