"""Instruction following on the ``toy`` profile, measured at the pixels: every task on prompts held out of training.

Each case is drawn from the held-out (shape, colour, background) triples of :mod:`openmora.toy.scenes` (no model saw
them in training), run through :class:`~openmora.Orchestrator` exactly as a user's request runs (the fixed plan of
the task, ``--llm none``), and its result read back by :mod:`openmora.toy.detect`:

* ``text-to-video``: the scene's prompt; shape, colour, background, size and motion of the final video;
* ``image-to-video``: the scene's first frame and its prompt; the clip keeps the picture and moves the named way;
* ``extend``: a 9-frame clip of the scene, one segment more; same object, direction and speed, no jump;
* ``edit``: a clip of the scene and an edit instruction ("make it green"); the asked change, the rest kept;
* ``connect``: two clips of one moving object; the transition starts as A ends, ends as B starts, no jump;
* ``digital-world``: the scene's prompt as a digital world; pixel-art style, colour, background, size and motion.

Per task: the share of cases that pass every check, the share of each check, and seconds per case (the run's own
``generate`` time and the whole call). For text-to-video also the accuracy per attribute (each named attribute right)
and per pair of attributes (both right).

``--requests LLM`` also runs free-form requests in the toy vocabulary (:func:`requests`: plain and composite
requests, durations, a digital world, uploads to animate, extend and edit) with ``task="auto"``, so the planner
(``LLM``: ``none`` for the word templates, ``local`` for the embedded model) chooses the tools, and scores each final
video against what the request asked for: the tools in order and each attribute the request implies.

Prints Markdown tables and writes JSON.

    python -m bench.bench_toy                       # 8 cases a task, bench/results/toy.json
    python -m bench.bench_toy --cases 3 --tasks text-to-video,edit --out /tmp/toy.json
    python -m bench.bench_toy --tasks text-to-video --cases 1 --requests local
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world")
ATTRS = ("shape", "colour", "background", "size", "motion")
FRAMES = 9  # one toy segment


def cases(task: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` held-out cases of ``task``, the same for the same ``seed``: a scene (and, for edit, an edit)."""
    from openmora.toy.scenes import sample_edit, sample_scene

    rng = np.random.default_rng([seed, TASKS.index(task)])
    out: list[dict[str, Any]] = []
    while len(out) < n:
        frames = 20 if task == "connect" else FRAMES
        scene = sample_scene(rng, "heldout", frames=frames)
        if task in ("image-to-video", "extend", "connect") and scene.motion == "still":
            continue  # these tasks are about motion: a still object has nothing to continue or join
        case: dict[str, Any] = {"scene": scene}
        if task == "edit":
            case["edit"] = sample_edit(rng, scene)
        out.append(case)
    return out


def requests() -> list[dict[str, Any]]:
    """The free-form requests: words, an optional upload (a scene drawn as an image or a clip), the tools the plan
    must call in order, and the attributes the final video must show."""
    from openmora.toy.scenes import Scene

    # Every scene here is a held-out (shape, colour, background) triple: no model saw it in training.
    upload = Scene("circle", "orange", "gray", "small", "down", speed=1.5)
    return [
        {"name": "plain", "text": "a small orange square moving down on a white background",
         "tools": ("text_to_image", "image_to_video"),
         "want": {"shape": "square", "colour": "orange", "background": "white", "size": "small", "motion": "down"}},
        {"name": "duration", "text": "a 2 second clip of a large yellow triangle moving right on a black background",
         "tools": ("text_to_image", "image_to_video", "extend_video"),
         "want": {"shape": "triangle", "colour": "yellow", "background": "black", "size": "large", "motion": "right"}},
        {"name": "composite", "text": "a blue circle moving left on a white background, then make the background black",
         "tools": ("text_to_image", "edit_image"), "want": {"shape": "circle", "colour": "blue", "background": "black"}},
        {"name": "digital-world", "text": "a large purple square moving up on a black background as a video game world",
         "tools": ("text_to_image", "image_to_video"),
         "want": {"colour": "purple", "background": "black", "motion": "up", "style": "pixel-art"}},
        {"name": "animate", "text": "animate this picture: the circle moves right", "upload": (upload, "image"),
         "tools": ("image_to_video",), "want": upload.attributes() | {"motion": "right", "style": "plain"}},
        {"name": "extend", "text": "make this clip longer", "upload": (upload, "video"),
         "tools": ("extend_video",), "want": upload.attributes() | {"style": "plain"}},
        {"name": "edit-upload", "text": "make it green", "upload": (upload, "video"),
         "tools": ("edit_image",), "want": upload.attributes() | {"colour": "green", "style": "plain"}},
    ]  # fmt: skip


def run_request(orch: Any, req: dict[str, Any], work: Path, seed: int = 0) -> dict[str, Any]:
    """One free-form request with ``task="auto"``: the planner's tools, and the final video against ``want``."""
    from PIL import Image

    from openmora.artifacts import ArtifactStore
    from openmora.toy import detect
    from openmora.toy.scenes import PromptAttributes, render

    work.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if req.get("upload"):
        scene, kind = req["upload"]
        if kind == "image":
            Image.fromarray(render(scene, frames=1)[0]).save(work / "in.png")
            kwargs["image"] = work / "in.png"
        else:
            kwargs["videos"] = [_write_clip(render(scene, frames=FRAMES), work / "in.mp4")]
    t0 = time.perf_counter()
    try:
        result = orch.run("auto", prompt=req["text"], seed=seed, out=work / "run", **kwargs)
    except Exception as err:  # a request the planner could not plan is a failed case, not a failed bench
        return {"name": req["name"], "passed": False, "error": f"{type(err).__name__}: {err}"[:300]}
    wall = time.perf_counter() - t0
    tools = [a.tool for a in result.artifacts if a.tool not in ("input", "join_clips")]
    with ArtifactStore(result.run_dir) as store:
        final = store.frames(result.final_id)
    score = detect.score_text_to_video(final, PromptAttributes(**req["want"]))
    it = iter(tools)
    in_order = all(any(t == want for t in it) for want in req["tools"])
    checks = {"tools": in_order} | score.checks
    return {"name": req["name"], "passed": all(checks.values()), "checks": checks, "tools": tools,
            "wall_s": round(wall, 3), "llm_s": round(float(result.timings.get("llm_s", 0.0)), 3)}  # fmt: skip


def evaluate_requests(profile: str = "toy", llm: str = "none", work: Path | None = None) -> dict[str, Any]:
    """Every request of :func:`_requests` through the planner ``llm``; per request and overall figures."""
    from openmora import Orchestrator

    orch = Orchestrator(profile=profile, llm=llm, report=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_request(orch, r, Path(work or tmp) / r["name"]) for r in requests()]
    checked = [r for r in rows if "checks" in r]
    return {
        "llm": llm,
        "requests": len(rows),
        "passed": round(float(np.mean([r["passed"] for r in rows])), 3),
        "tools_right": round(float(np.mean([r.get("checks", {}).get("tools", False) for r in rows])), 3),
        "attributes_right": round(
            float(np.mean([v for r in checked for k, v in r["checks"].items() if k in ATTRS + ("style",)] or [0])), 3
        ),
        "rows": rows,
    }


def _write_clip(frames: np.ndarray, path: Path, fps: float = 8.0) -> Path:
    from openmora.video_io import write_video

    return write_video(frames, fps, path)


def run_case(orch: Any, task: str, case: dict[str, Any], work: Path, seed: int) -> tuple[Any, dict[str, float]]:
    """Run one case through ``orch``; returns (the detector's :class:`~openmora.toy.detect.Score`, timings)."""
    from PIL import Image

    from openmora.artifacts import ArtifactStore
    from openmora.toy import detect
    from openmora.toy.scenes import render

    scene = case["scene"]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if task == "text-to-video" or task == "digital-world":
        result = orch.run(task, prompt=scene.prompt(), seed=seed, out=work / "run")
    elif task == "image-to-video":
        first = render(scene, frames=1)[0]
        Image.fromarray(first).save(work / "first.png")
        result = orch.run(task, image=work / "first.png", prompt=scene.prompt(), seed=seed, out=work / "run")
    elif task == "extend":
        source = render(scene, frames=FRAMES)
        clip = _write_clip(source, work / "source.mp4")
        result = orch.run(task, videos=[clip], segments=1, seed=seed, out=work / "run")
    elif task == "edit":
        source = render(scene, frames=FRAMES)
        clip = _write_clip(source, work / "source.mp4")
        result = orch.run(task, videos=[clip], prompt=case["edit"].instruction, seed=seed, out=work / "run")
    else:  # connect: A is the object's first frames, B its last: the transition must carry it across the gap
        full = render(scene, frames=20)
        a, b = _write_clip(full[:6], work / "a.mp4"), _write_clip(full[14:], work / "b.mp4")
        result = orch.run(task, videos=[a, b], seed=seed, out=work / "run")
    wall = time.perf_counter() - t0
    with ArtifactStore(result.run_dir) as store:
        final = store.frames(result.final_id)
        if task == "text-to-video":
            score = detect.score_text_to_video(final, scene)
        elif task == "digital-world":
            score = detect.score_digital_world(final, scene)
        elif task == "image-to-video":
            score = detect.score_image_to_video(first, final, motion=scene.motion)
        elif task == "extend":
            score = detect.score_extend(_decoded(store, result), final)
        elif task == "edit":
            score = detect.score_edit(source, final, case["edit"])
        else:
            made = [x for x in result.artifacts if x.kind == "video" and x.tool == "connect_clips"]
            transition = store.frames(made[-1].id)
            score = detect.score_connect(full[:6], full[14:], transition)
    return score, {"wall_s": wall, "generate_s": float(result.timings["generate_s"])}


def _decoded(store: Any, result: Any) -> np.ndarray:
    """The source clip as the run read it (the input decoded and fitted): the frames the result must begin with."""
    inputs = [x for x in result.artifacts if x.kind == "video" and x.tool == "input"]
    return store.frames(inputs[0].id)


def evaluate(
    profile: str = "toy", n: int = 8, seed: int = 0, tasks: tuple[str, ...] = TASKS, work: Path | None = None
) -> dict[str, Any]:
    """Every task of ``tasks`` on ``n`` held-out cases; the per-task figures the module docstring lists."""
    from openmora import Orchestrator

    orch = Orchestrator(profile=profile, llm="none", report=False)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work or tmp)
        for task in tasks:
            drawn = cases(task, n, seed)
            runs = [run_case(orch, task, case, base / task / str(i), seed + i) for i, case in enumerate(drawn)]
            results[task] = summarise(task, [c["scene"] for c in drawn], [r[0] for r in runs], [r[1] for r in runs])
    return results


def summarise(task: str, scenes: list[Any], scores: list[Any], times: list[dict[str, float]]) -> dict[str, Any]:
    """A task's accuracy (all checks), each check's share, seconds per case; for text-to-video per attribute and
    per pair of attributes."""
    names = sorted({k for s in scores for k in s.checks})
    out: dict[str, Any] = {
        "cases": len(scores),
        "accuracy": round(float(np.mean([s.passed for s in scores])), 3),
        "checks": {k: round(float(np.mean([s.checks.get(k, False) for s in scores])), 3) for k in names},
        "seconds_per_case": round(float(np.mean([t["wall_s"] for t in times])), 3),
        "generate_s_per_case": round(float(np.mean([t["generate_s"] for t in times])), 3),
        "prompts": [s.prompt() for s in scenes],
        "failed": [s.failed for s in scores],
    }
    if task == "text-to-video":
        per = {a: [s.checks.get(a, False) for s in scores] for a in ATTRS}
        out["single_attribute"] = round(float(np.mean([v for a in ATTRS for v in per[a]])), 3)
        pairs = [a and b for x, y in itertools.combinations(ATTRS, 2) for a, b in zip(per[x], per[y], strict=True)]
        out["two_attributes"] = round(float(np.mean(pairs)), 3)
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| task | cases | all checks pass | per check | s per case (generate) |", "|---|---:|---:|---|---:|"]
    for task, r in results.items():
        checks = ", ".join(f"{k} {v:.0%}" for k, v in r["checks"].items())
        lines.append(
            f"| {task} | {r['cases']} | {r['accuracy']:.0%} | {checks} | "
            f"{r['seconds_per_case']:.2f} ({r['generate_s_per_case']:.2f}) |"
        )
    return "\n".join(lines)


def request_table(res: dict[str, Any]) -> str:
    lines = [f"requests planned by `{res['llm']}`: {res['passed']:.0%} pass, tools right {res['tools_right']:.0%}, "
             f"attributes right {res['attributes_right']:.0%}", "",
             "| request | passes | tools run | checks failed |", "|---|---|---|---|"]  # fmt: skip
    for r in res["rows"]:
        failed = r.get("error") or ", ".join(k for k, v in r["checks"].items() if not v) or "-"
        lines.append(f"| {r['name']} | {'yes' if r['passed'] else 'no'} | {' '.join(r.get('tools', []))} | {failed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--cases", type=int, default=8, help="held-out cases per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, from " + ", ".join(TASKS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "toy.json")
    parser.add_argument("--requests", metavar="LLM", help="also the free-form requests, planned by LLM (none, local)")
    args = parser.parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        parser.error(f"--tasks {args.tasks!r}: accepted are comma-separated names from {', '.join(TASKS)}")
    if args.cases < 1:
        parser.error(f"--cases {args.cases}: accepted is a whole number >= 1")
    import torch

    t0 = time.perf_counter()
    results = evaluate(args.profile, args.cases, args.seed, tasks)
    doc: dict[str, Any] = {
        "command": "python -m bench.bench_toy " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"CPU, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "tasks": results,
    }
    if args.requests:
        doc["requests"] = evaluate_requests(args.profile, args.requests)
        doc["seconds"] = round(time.perf_counter() - t0, 1)
    training = ROOT / "training" / "results" / "toy_summary.json"
    if training.is_file():
        doc["training"] = json.loads(training.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(results))
    if args.requests:
        print(request_table(doc["requests"]))
    print(f"\n{doc['command']}: {doc['seconds']} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
