"""OpenMora's engine and its command line: build the team for a task, run it, stream events, save the run.

Python:
    >>> from orchestrator import Orchestrator
    >>> result = Orchestrator(profile="tiny").run("text-to-video", prompt="a fox running through snow at dusk")  # doctest: +SKIP
    >>> result.final_video  # doctest: +SKIP
    PosixPath('runs/20261123-201500-text-to-video-1a2b/final.mp4')

Command line:
    python orchestrator.py run text-to-video --prompt "a fox running through snow at dusk"
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from group_chat.plans import TASK_HELP, TASKS, FixedPlanRunner, TaskInputs, check_task_inputs
from group_chat.transcript import Transcript
from tools.artifacts import Artifact, ArtifactStore
from tools.context import ToolContext
from tools.errors import InputError, ModelLoadError, OpenMoraError
from tools.model_loader import PipelineLoader
from tools.profiles import Profile, available_profiles, load_profile
from tools.video_io import fit_frame, read_image, read_video_info

logger = logging.getLogger("openmora")
LLM_CHOICES = ("none",)
ROOT_DIR = Path(__file__).resolve().parent
DEFAULT_RUNS_DIR = Path(os.environ.get("OPENMORA_RUNS", "runs"))


@dataclass
class RunResult:
    """What a finished run produced. ``timings`` splits wall time into load, generate, encode and other seconds."""

    run_dir: Path
    final_video: Path
    final_id: str
    artifacts: list[Artifact]
    transcript: Path
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _PreparedInput:
    kind: str  # image | video
    source: str
    pixels: np.ndarray
    fps: float | None
    notes: list[str]


def _prepare_image(path: str, profile: Profile) -> _PreparedInput:
    pixels = read_image(path)
    fitted, note = fit_frame(pixels, profile.width, profile.height)
    return _PreparedInput("image", str(path), fitted, None, [note] if note else [])


def _prepare_video(path: str, profile: Profile) -> _PreparedInput:
    frames, src_fps, _ = read_video_info(path, fps=profile.fps)
    notes = []
    if abs(src_fps - profile.fps) > 1e-3:
        notes.append(f"resampled {src_fps:g} fps to the profile's {profile.fps} fps ({len(frames)} frames)")
    fitted = []
    note = ""
    for frame in frames:
        out, note = fit_frame(frame, profile.width, profile.height)
        fitted.append(out)
    if note:
        notes.append(note)
    return _PreparedInput("video", str(path), np.stack(fitted), float(profile.fps), notes)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder path (new, or empty)")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"--out {out} already holds files; give a new or empty folder so no earlier run is overwritten"
        )


class Orchestrator:
    """Builds and runs OpenMora tasks.

    Args:
        profile: a profile name (``tiny``, ``mora``, ``modern``), a YAML path, or a :class:`Profile`.
        llm: the planner LLM backend; ``none`` runs the task's fixed plan.
        runs_dir: where run folders go when ``run(out=...)`` is not given.
        on_event: called with every event (transcript lines, model loading, denoising progress, encoding).

    Example:
        >>> orch = Orchestrator(profile="tiny")
        >>> r = orch.run("text-to-video", prompt="a red kite over the sea", segments=2)  # doctest: +SKIP
        >>> r.final_video.exists()  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        profile: str | Path | Profile = "tiny",
        llm: str = "none",
        runs_dir: str | Path | None = None,
        on_event: Callable[[dict], None] | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        if llm not in LLM_CHOICES:
            raise InputError(f"unknown --llm {llm!r}; use one of: {', '.join(LLM_CHOICES)}")
        self.llm = llm
        self.runs_dir = Path(runs_dir) if runs_dir else DEFAULT_RUNS_DIR
        self.on_event = on_event

    def _emit(self, event: dict) -> None:
        if self.on_event:
            self.on_event(event)

    def run(
        self,
        task: str,
        *,
        prompt: str | None = None,
        image: str | Path | None = None,
        videos: Sequence[str | Path] = (),
        seed: int = 0,
        segments: int | None = None,
        out: str | Path | None = None,
    ) -> RunResult:
        """Run one task to its final video.

        Inputs are checked before anything is written: bad input raises :class:`InputError` and leaves ``out``
        untouched. Images and videos of any ordinary size are fitted to the profile's size (the transcript says how).
        """
        wall_start = time.perf_counter()
        videos = list(videos)
        check_task_inputs(task, prompt, image, videos, segments)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"--seed must be a whole number >= 0, got {seed!r}")
        prepared: list[_PreparedInput] = []
        decode_start = time.perf_counter()
        if image is not None:
            prepared.append(_prepare_image(str(image), self.profile))
        prepared += [_prepare_video(str(v), self.profile) for v in videos]
        decode_seconds = time.perf_counter() - decode_start
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = self.runs_dir / f"{stamp}-{task}-{uuid.uuid4().hex[:4]}"
        out = Path(out)
        _check_out_dir(out)

        meta = {
            "task": task,
            "prompt": prompt or "",
            "profile": self.profile.name,
            "llm": self.llm,
            "seed": seed,
            "segments": segments,
            "inputs": [p.source for p in prepared],
            "status": "running",
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        store = ArtifactStore(out, meta=meta)
        store.on_event = self._emit
        transcript = Transcript(out / "transcript.jsonl", on_event=self._emit)
        loader = PipelineLoader(self.profile, on_event=self._emit)
        ctx = ToolContext(store=store, loader=loader, profile=self.profile, seed=seed, on_event=self._emit)
        transcript.record(
            "run_start", agent="user", task=task, prompt=prompt or "", profile=self.profile.name, seed=seed
        )
        try:
            inputs = TaskInputs(task=task, prompt=prompt or "", segments=segments)
            for p in prepared:
                if p.kind == "image":
                    art = store.add_image(p.pixels, tool="input", description=f"input image {Path(p.source).name}")
                    inputs.image = art.id
                else:
                    art = store.add_video(
                        p.pixels, p.fps, tool="input", description=f"input video {Path(p.source).name}"
                    )
                    inputs.videos.append(art.id)
                transcript.record(
                    "input", agent="user", tool="input", outputs=[art.id], source=p.source, result=art.summary()
                )
                for note in p.notes:
                    transcript.record("note", agent="orchestrator", inputs=[art.id], text=f"{art.id}: {note}")
            final_id = FixedPlanRunner(ctx, transcript).run(inputs)
            final = out / "final.mp4"
            tmp = out / ".final.mp4.tmp"
            shutil.copyfile(store.path(final_id), tmp)
            os.replace(tmp, final)
        except BaseException as err:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            transcript.record("run_end", agent="orchestrator", status=status, error=message)
            store.update_meta(status=status, error=message)
            raise
        wall = time.perf_counter() - wall_start
        timings = {
            "wall_s": wall,
            "load_s": loader.load_seconds,
            "generate_s": ctx.timings.get("generate", 0.0),
            # Video I/O: encoding every clip, and decoding + fitting the inputs.
            "encode_s": store.encode_seconds + decode_seconds,
        }
        timings["other_s"] = max(0.0, wall - timings["load_s"] - timings["generate_s"] - timings["encode_s"])
        transcript.record(
            "run_end",
            agent="orchestrator",
            outputs=[final_id],
            seconds=wall,
            status="done",
            final="final.mp4",
            timings=timings,
        )
        store.update_meta(status="done", final=final_id, final_video="final.mp4", timings=timings)
        return RunResult(
            run_dir=out,
            final_video=out / "final.mp4",
            final_id=final_id,
            artifacts=store.artifacts(),
            transcript=out / "transcript.jsonl",
            timings=timings,
        )


# ----- command line -----------------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (and exit code 2) instead of usage + message."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="orchestrator.py",
        description="OpenMora: a team of AutoGen agents makes videos with diffusers pipelines (Mora's six tasks).",
        epilog="Example: python orchestrator.py run text-to-video --prompt 'a fox running through snow at dusk'",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log at INFO level (DEBUG with -vv)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    run = sub.add_parser(
        "run",
        help="run one task to a final MP4",
        description="Run one task and write final.mp4, manifest.json and transcript.jsonl into the run folder.",
        epilog="Tasks: " + "; ".join(f"{t}: {h}" for t, h in TASK_HELP.items()),
    )
    run.add_argument("task", choices=TASKS, metavar="TASK", help=f"one of: {', '.join(TASKS)}")
    run.add_argument("--prompt", help="what to make, or for edit the instruction (required by text-to-video and edit)")
    run.add_argument("--image", help="input image (PNG/JPEG/WebP) for image-to-video or digital-world")
    run.add_argument(
        "--video",
        action="append",
        default=[],
        help="input video; extend/edit/digital-world take one, connect takes two",
    )
    run.add_argument(
        "--profile",
        default="tiny",
        help=f"model profile: {', '.join(available_profiles())} or a YAML file (default: tiny, the embedded models)",
    )
    run.add_argument("--out", help="run folder to create (new or empty); default: runs/<time>-<task>-<id>")
    run.add_argument(
        "--seed", type=int, default=0, help="base random seed; same seed and inputs give the same frames (default 0)"
    )
    run.add_argument(
        "--segments",
        type=int,
        help="image-to-video segments chained on the last frame (default: the profile's, 1 for extend)",
    )
    run.add_argument("--llm", default="none", help="planner LLM backend; 'none' runs the task's fixed plan (default)")
    return parser


class _CliProgress:
    """Renders events in the terminal: one line per transcript event, live bars for loading, denoising, encoding."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _CliProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def _bar(self, key: str, description: str, total: int | None) -> None:
        if key in self.tasks:
            self.progress.remove_task(self.tasks.pop(key))
        self.tasks[key] = self.progress.add_task(description, total=total)

    def _done(self, key: str) -> None:
        if key in self.tasks:
            self.progress.remove_task(self.tasks.pop(key))

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "load":
            key = f"load:{event['role']}"
            if event["phase"] == "start":
                self._bar(key, f"loading {event['role']} ({event['model']})", None)
            else:
                self._done(key)
                self.console.print(f"  loaded {event['role']} in {event['seconds']:.1f}s", style="dim")
        elif kind == "progress":
            key = f"gen:{event['stage']}"
            if event["step"] == 0:
                self._bar(key, f"{event['stage']}: denoising", event["total"] or None)
            elif key in self.tasks:
                self.progress.update(self.tasks[key], completed=event["step"])
                if event["step"] >= event["total"]:
                    self._done(key)
        elif kind == "encode":
            key = f"enc:{event['id']}"
            if event["phase"] == "start":
                self._bar(key, f"encoding {event['id']} ({event['frames']} frames)", None)
            else:
                self._done(key)
        elif kind == "transcript":
            e = event["event"]
            if e["type"] == "tool_call":
                arrow = f"{', '.join(e['inputs']) or '-'} -> {', '.join(e['outputs']) or '-'}"
                self.console.print(f"[{e['step']}] {e['agent']}: {e['tool']} {arrow} ({e['seconds']:.1f}s)")
                if e.get("result"):
                    self.console.print(f"     {e['result']}", style="dim")
            elif e["type"] == "note":
                self.console.print(f"     note: {e['text']}", style="yellow")


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are requirements
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    try:
        progress = _CliProgress()
        orch = Orchestrator(profile=args.profile, llm=args.llm, on_event=progress)
        with progress:
            result = orch.run(
                args.task,
                prompt=args.prompt,
                image=args.image,
                videos=args.video,
                seed=args.seed,
                segments=args.segments,
                out=args.out,
            )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ModelLoadError, OpenMoraError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the run folder records what was done", file=sys.stderr)
        return 130
    t = result.timings
    print(
        f"done in {t['wall_s']:.1f}s (load {t['load_s']:.1f}s, generate {t['generate_s']:.1f}s, "
        f"encode {t['encode_s']:.1f}s, other {t['other_s']:.1f}s)",
        file=sys.stderr,
    )
    print(result.final_video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
