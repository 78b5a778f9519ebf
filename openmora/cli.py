"""The command line: ``openmora run TASK ...``, ``openmora chat`` (also ``python -m openmora`` and
``python orchestrator.py``). Exit codes: 0 done, 1 a model or run failure, 2 bad input, 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from openmora.chat import ChatSession
from openmora.engine import Orchestrator
from openmora.errors import InputError, ModelLoadError, OpenMoraError
from openmora.events import CompileEndEvent, CompileQueuedEvent, Event
from openmora.group_chat.plans import TASK_HELP, TASKS
from openmora.group_chat.session import DEFAULT_MAX_TURNS, RunIncomplete
from openmora.profiles import available_profiles
from openmora.settings import current


# ----- command line -----------------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (and exit code 2) instead of usage + message."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="openmora",
        description="OpenMora: a team of AutoGen agents makes videos with diffusers pipelines (Mora's six tasks).",
        epilog="Example: openmora run text-to-video --prompt 'a fox running through snow at dusk'",
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
    fast_help = "opt-in fast mode: the profile's faster, output-changing settings (fewer steps, caches, fp8 weights)"
    run.add_argument("--fast", action="store_true", help=fast_help)
    run.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=RAY_HELP)
    run.add_argument("--out", help="run folder to create (new or empty); default: runs/<time>-<task>-<id>")
    run.add_argument(
        "--seed", type=int, default=0, help="base random seed; same seed and inputs give the same frames (default 0)"
    )
    run.add_argument(
        "--segments",
        type=int,
        help="image-to-video segments chained on the last frame (default: the profile's, 1 for extend)",
    )
    run.add_argument(
        "--llm",
        default=current().llm or "none",
        help="the planner and agents' LLM: none (the task's fixed plan, default), local (embedded Qwen2.5-Coder-1.5B), "
        "local-small (0.5B), openai (OPENMORA_OPENAI_MODEL, OPENAI_API_KEY, OPENMORA_OPENAI_BASE_URL), replay:FILE",
    )
    run.add_argument(
        "--max-turns",
        type=int,
        default=DEFAULT_MAX_TURNS,
        help="group chat turn limit per request (default 0: two turns per plan step plus six)",
    )
    _quality_options(run)
    plan = sub.add_parser(
        "plan",
        help="print the checked plan of a request and its estimated seconds, without rendering",
        description="Plan REQUEST (as `run auto` would, or a task's template with --task) and print the plan and its "
        "estimated seconds on the profile, from measured per-step costs. Nothing is rendered or written.",
    )
    plan.add_argument("request", metavar="REQUEST", help="what to make, in your own words")
    plan.add_argument("--task", choices=TASKS, default="auto", metavar="TASK", help="auto (default) or a template")
    plan.add_argument("--image", help="input image the request is about")
    plan.add_argument("--video", action="append", default=[], help="input video(s) the request is about")
    plan.add_argument("--segments", type=int, help="image-to-video segments (default: from the request's words)")
    plan.add_argument("--profile", default="tiny", help="model profile whose costs the estimate uses (default tiny)")
    plan.add_argument("--fast", action="store_true", help=fast_help)
    plan.add_argument("--best-of", type=int, default=1, metavar="N", help="takes per rendering step (as for run)")
    plan.add_argument("--llm", default=current().llm or "none", help="as for run (default: none, the templates)")
    plan.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"steps": [{"id", "agent", "tool", "args"}], "estimate_s", "source"}',
    )
    score = sub.add_parser(
        "score",
        help="measure a run folder's or a video file's quality: per clip and per join",
        description="Score PATH (a run folder: every clip and every join its tools recorded, written to scores.json "
        "and report.html there; or any video file: the clip and the hard cuts found in it). Weight-free metrics: "
        "VBench's temporal flickering, estimators of motion smoothness, dynamic degree and imaging quality "
        "(BRISQUE), seam continuity at joins, Mora's TCON/Tmean (OPENMORA_DINO / OPENMORA_CLIP: local model "
        "folders for the feature extractor).",
    )
    score.add_argument("path", metavar="PATH", help="a run folder or a video file")
    score.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    report = sub.add_parser(
        "report",
        help="write a run folder's report.html (plan, contact sheets, metric plots, joins, timings)",
        description="Write RUN/report.html: self-contained and offline (open it in a browser). Scores the run first "
        "when it has no scores.json.",
    )
    report.add_argument("run", metavar="RUN", help="a run folder")
    chat = sub.add_parser(
        "chat",
        help="talk with the team: a request, then revisions ('darker', 'extend it by two seconds')",
        description="Interactive session. Type a request; when the video is made, type revisions: only what depends on "
        "the change re-runs. Commands: /image PATH and /video PATH attach inputs before the first request, /status "
        "lists the artifacts, /quit ends. Ctrl-C leaves a consistent run folder: continue it with --resume RUN_DIR.",
    )
    chat.add_argument("--llm", default=current().llm or "local", help="as for run (default: local, the embedded LLM)")
    chat.add_argument("--profile", default="tiny", help="model profile (default: tiny)")
    chat.add_argument("--fast", action="store_true", help=fast_help)
    chat.add_argument("--out", help="run folder to create (new or empty)")
    chat.add_argument("--resume", metavar="RUN_DIR", help="continue an earlier chat's run folder")
    chat.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        metavar="TASK",
        help="the first request's task (default: auto, planned)",
    )
    chat.add_argument("--image", help="input image for the first request")
    chat.add_argument("--video", action="append", default=[], help="input video(s) for the first request")
    chat.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    chat.add_argument("--segments", type=int, help="image-to-video segments for the first request")
    chat.add_argument(
        "--max-turns", type=int, default=DEFAULT_MAX_TURNS, help="group chat turn limit per request (0: from the plan)"
    )
    _quality_options(chat)
    cache = sub.add_parser(
        "cache",
        help="carry the compile cache to another machine of the same kind (export, import, info)",
        description="The compile cache (inductor's compiled code for the compile speedups, and which regions were "
        "compiled here) as one .tar.gz: a machine that imports it starts like one that compiled before.",
    )
    cache.add_argument("action", choices=("export", "import", "info"), help="export FILE, import FILE, or info")
    cache.add_argument("file", nargs="?", help="the archive (for export and import)")
    cache.add_argument("--force", action="store_true", help="import an archive made for other versions or devices")
    serve = sub.add_parser(
        "serve",
        help="the HTTP job API: queue jobs, watch their events, download and revise their videos",
        description="Serve the job API (FastAPI + uvicorn; docs at /docs). Jobs persist in DATA/jobs.sqlite3 and "
        "survive a restart: a job that was running is resumed from its run folder. Jobs run on pipelines that "
        "stay loaded between jobs: --jobs N at once (default: as many as the memory manager says fit), or with "
        "--ray one per Ray actor.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    serve.add_argument("--port", type=int, default=8188, help="port (default 8188)")
    serve.add_argument("--profile", default="tiny", help="model profile for every job (default: tiny)")
    serve.add_argument("--llm", default=current().llm or "none", help="as for run (default: none, the templates)")
    serve.add_argument("--data", help="folder for the queue and the jobs' folders (default: $OPENMORA_RUNS/server)")
    serve.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' on every request (default: $OPENMORA_API_TOKEN)"
    )
    serve.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run each job on a Ray actor that owns a GPU (or a CPU slot) and keeps its pipelines loaded, a story's "
        "shots on all of them (needs the ray extra); ADDRESS: a cluster's (auto, HOST:PORT, ray://HOST:PORT), "
        "default: start one on this machine",
    )
    serve.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="jobs at once: without --ray, in this process on shared pipelines (default: as many as fit the "
        "device's memory by the profile's estimated weights and reserve, 1 for mora on a 24 GB GPU); with --ray, "
        "the number of actors (default: one per GPU, else per CPU, at most 4)",
    )
    return parser


RAY_HELP = (
    "render a story's shots on Ray actors that keep their pipelines loaded (needs the ray extra); ADDRESS: a "
    "cluster's (auto, HOST:PORT, ray://HOST:PORT), default: start one on this machine"
)


def _quality_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--best-of",
        type=int,
        default=1,
        metavar="N",
        help="render N takes of every step that renders (different seeds), score them, keep the best (default 1)",
    )
    parser.add_argument(
        "--min-quality",
        type=float,
        metavar="X",
        help="a step whose best take scores under X (overall, 0..1) goes to the planner, which may ask for another "
        "take (default: the profile's; none: never)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip scoring the run and writing report.html at the end"
    )


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
        self.compiles_queued = 0
        self.compiles_done = 0
        self.said_background = False
        self.said_cached = False
        self.compile_estimate: float | None = 0.0  # None once a queued region was never timed on this machine

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

    def _compile(self, event: CompileQueuedEvent | CompileEndEvent) -> None:
        """One bar for the background compiles: how many are done of those queued, and the estimate when known."""
        key = "compile"
        if event["phase"] == "queued":
            self.compiles_queued += 1
            if event["estimate_s"] is None:
                self.compile_estimate = None
            elif self.compile_estimate is not None:
                self.compile_estimate += event["estimate_s"]
            if event["background"] and not self.said_background:
                self.said_background = True
                self.console.print(
                    "  compiling the models' hot blocks in the background (rendering eagerly until each is ready; "
                    "the first time on a machine this takes minutes, later runs reuse the compile cache)",
                    style="dim",
                )
            elif not event["background"] and event["estimate_s"] is None:
                self.console.print(
                    f"  compiling {event['name']} (the first time on this machine: minutes)", style="dim"
                )
            elif not event["background"] and not self.said_cached:
                self.said_cached = True
                self.console.print(
                    "  compiling the models' hot blocks from the compile cache (seconds each, before their first use)",
                    style="dim",
                )
        else:
            self.compiles_done += 1
            if not event["ok"]:
                self.console.print(f"  {event['name']} stays eager: its compile failed (see the log)", style="yellow")
        about = f", about {self.compile_estimate:.0f}s in all last time" if self.compile_estimate else ""
        description = f"compiling{about}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=self.compiles_queued)
        self.progress.update(
            self.tasks[key], description=description, total=self.compiles_queued, completed=self.compiles_done
        )
        if event["pending"] == 0 and event["phase"] == "end":
            self._done(key)

    def __call__(self, event: Event) -> None:
        # Compared as event["type"] (not through a variable): a type checker then knows each branch's keys.
        if event["type"] == "load":
            key = f"load:{event['role']}"
            if event["phase"] == "start":
                self._bar(key, f"loading {event['role']} ({event['model']})", None)
            else:
                self._done(key)
                self.console.print(f"  loaded {event['role']} in {event['seconds']:.1f}s", style="dim")
        elif event["type"] == "progress":
            key = f"gen:{event['stage']}"
            if event["step"] == 0:
                self._bar(key, f"{event['stage']}: denoising", event["total"] or None)
            elif key in self.tasks:
                self.progress.update(self.tasks[key], completed=event["step"])
                if event["step"] >= event["total"]:
                    self._done(key)
        elif event["type"] == "encode":
            key = f"enc:{event['id']}"
            if event["phase"] == "start":
                self._bar(key, f"encoding {event['id']} ({event['frames']} frames)", None)
            else:
                self._done(key)
        elif event["type"] == "compile":
            self._compile(event)
        elif event["type"] == "transcript":
            e = event["event"]
            if e["type"] == "message":
                self.console.print(f"[{e['step']}] {e['agent']}: {e.get('text', '')}")
            elif e["type"] == "planner":
                how = (
                    "plan fallback"
                    if e.get("fallback_used")
                    else ("LLM" if e.get("raw_choice") is not None else "plan")
                )
                cands = f"; candidates {', '.join(e['candidates'])}" if e.get("candidates") else ""
                why = f": {e['reason']}" if e.get("reason") and e.get("decision") != "next_speaker" else ""
                self.console.print(
                    f"[{e['step']}] planner {e.get('decision', '')} -> {e.get('chosen')} ({how}{cands}){why}",
                    style="cyan",
                )
            elif e["type"] == "plan" and e.get("attempt"):
                state = "valid" if e.get("valid") else "cannot run: " + "; ".join(e.get("problems") or [])
                self.console.print(f"[{e['step']}] planner: plan attempt {e['attempt']}: {state}", style="cyan")
            elif e["type"] == "tool_call" and e.get("error"):
                self.console.print(f"[{e['step']}] {e['agent']}: {e['tool']} failed: {e['error']}", style="red")
            elif e["type"] == "tool_call":
                arrow = f"{', '.join(e['inputs']) or '-'} -> {', '.join(e['outputs']) or '-'}"
                self.console.print(f"[{e['step']}] {e['agent']}: {e['tool']} {arrow} ({e['seconds']:.1f}s)")
                if e.get("result"):
                    self.console.print(f"     {e['result']}", style="dim")
            elif e["type"] == "note":
                self.console.print(f"     note: {e['text']}", style="yellow")
            elif e["type"] == "take":
                overall = (e.get("scores") or {}).get("overall")
                shown = f"quality {overall:.2f}" if isinstance(overall, int | float) else "not scored"
                self.console.print(
                    f"[{e['step']}] {e['agent']}: {e['tool']} take {e['take'] + 1} (seed {e['seed']}) -> "
                    f"{', '.join(e.get('outputs') or [])}: {shown}",
                    style="dim",
                )


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # AutoGen warns on every token count of a tool call; our transcript already says what happened.
    logging.getLogger("autogen_core").setLevel(max(level, logging.ERROR))
    logging.getLogger("autogen_core.events").setLevel(max(level, logging.ERROR))
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are requirements
        pass


async def _chat(args: argparse.Namespace, orch: Orchestrator, console: Any) -> int:
    """The interactive loop: a thin front end over ChatSession."""
    image, videos = args.image, list(args.video)
    if args.resume:
        session = await ChatSession.resume(orch, args.resume)
        console.print(
            f"resumed {session.run_dir}" + (f": video {session.result.final_video}" if session.result else "")
        )
    else:
        session = orch.chat_session()
    try:
        return await _chat_loop(args, session, console, image, videos)
    finally:
        session.close()


async def _chat_loop(
    args: argparse.Namespace, session: ChatSession, console: Any, image: str | None, videos: list
) -> int:
    console.print("Type a request (or /help). Ctrl-D or /quit ends.", style="dim")
    while True:
        try:
            line = (await asyncio.to_thread(input, "you> ")).strip()
        except EOFError:
            return 0
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            if cmd in ("/quit", "/exit"):
                return 0
            if cmd == "/image":
                image = rest.strip() or None
            elif cmd == "/video":
                videos.append(rest.strip())
            elif cmd == "/status" and session.store:
                for art in session.store.artifacts():
                    console.print(f"  {art.summary()}")
            else:
                console.print(
                    "commands: /image PATH, /video PATH, /status, /quit; anything else is a request", style="dim"
                )
            continue
        try:
            if session.result is None and session.state is None:
                task = args.task
                result = await session.start(
                    task, prompt=line, image=image, videos=videos, seed=args.seed, segments=args.segments, out=args.out
                )
            else:
                result = await session.revise(line)
        except InputError as err:
            console.print(f"error: {err}", style="red")
            continue
        except RunIncomplete as err:
            console.print(f"incomplete: {err}", style="red")
            continue
        console.print(f"video: {result.final_video}", style="green")


def _print_plan(args: argparse.Namespace, orch: Orchestrator) -> int:
    planned = orch.plan(args.request, image=args.image, videos=args.video, segments=args.segments, task=args.task)
    if args.json:
        print(json.dumps(planned.to_json(), ensure_ascii=False))
        return 0
    print(planned.plan.describe())
    est = planned.estimate_s
    print(
        f"estimate: ~{est:.1f} s on {planned.profile}" if est is not None else f"estimate: unknown on {planned.profile}"
    )
    for note in planned.plan.notes:
        print(f"note: {note}")
    return 0


def _quality(args: argparse.Namespace) -> int:
    """``openmora score`` and ``openmora report``: no model, no LLM."""
    from pathlib import Path

    from openmora.quality.report import write_report
    from openmora.quality.score import format_table, score_path, to_json
    from openmora.replay import SCORES, RunNotFoundError, UnsafePathError

    try:
        if args.command == "score":
            scores = score_path(args.path)
            if scores["source"] == "run":
                report = write_report(args.path, scores)
                print(f"wrote {report.parent / SCORES} and {report}", file=sys.stderr)
            print(to_json(scores) if args.json else format_table(scores))
            return 0
        # a run scored before keeps its scores; one never scored is scored first
        scores = None if (Path(args.run) / SCORES).is_file() else score_path(args.run)
        print(write_report(args.run, scores))
        return 0
    except (InputError, RunNotFoundError, UnsafePathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _cache(args: argparse.Namespace) -> int:
    from openmora.speedups.compile_cache import cache_summary, export_cache, import_cache

    try:
        if args.action == "info":
            info = cache_summary()
            machine = ", ".join(f"{k} {v}" for k, v in info["machine"].items())
            print(
                f"{info['folder']}: {info['files']} files, {info['bytes'] / 2**20:.1f} MB, "
                f"{info['regions']} compiled regions on record; this machine: {machine}"
            )
            return 0
        if not args.file:
            raise InputError(f"cache {args.action} needs a FILE (e.g. compile-cache.tar.gz)")
        if args.action == "export":
            manifest = export_cache(args.file)
            print(f"wrote {args.file}: {manifest['files']} files, {manifest['bytes'] / 2**20:.1f} MB")
        else:
            manifest = import_cache(args.file, force=args.force)
            made = ", ".join(f"{k} {v}" for k, v in manifest["machine"].items())
            print(f"imported {manifest['files']} files made on {made}")
        return 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    if args.command in ("score", "report"):
        return _quality(args)
    if args.command == "cache":
        return _cache(args)
    if args.command == "serve":
        from openmora.server.app import serve

        return serve(args.host, args.port, args.profile, args.llm, args.data, args.token, ray=args.ray, jobs=args.jobs)
    try:
        progress = _CliProgress()
        orch = Orchestrator(
            profile=args.profile,
            llm=args.llm,
            on_event=progress,
            max_turns=getattr(args, "max_turns", DEFAULT_MAX_TURNS),
            fast=args.fast,
            best_of=getattr(args, "best_of", 1),
            min_quality=getattr(args, "min_quality", None),
            report=not getattr(args, "no_report", False),
            ray=getattr(args, "ray", None),
        )
        if args.command == "chat":
            with progress:
                return asyncio.run(_chat(args, orch, progress.console))
        if args.command == "plan":
            return _print_plan(args, orch)
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
    except (ModelLoadError, OpenMoraError, RunIncomplete) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: the run folder records what was done; continue it with `openmora chat --resume RUN_DIR`",
            file=sys.stderr,
        )
        return 130
    t = result.timings
    print(
        f"done in {t['wall_s']:.1f}s (load {t['load_s']:.1f}s, generate {t['generate_s']:.1f}s, "
        f"waiting for encodes {t['encode_wait_s']:.1f}s of {t['encode_s']:.1f}s encoding, llm {t['llm_s']:.1f}s, "
        f"other {t['other_s']:.1f}s" + (f", score + report {t['report_s']:.1f}s" if "report_s" in t else "") + ")",
        file=sys.stderr,
    )
    _toy_reading(orch, args, result)
    print(result.final_video)
    _finish_compiles(progress)
    return 0


def _toy_reading(orch: Orchestrator, args: argparse.Namespace, result: Any) -> None:
    """On the ``toy`` profile, after a run made from a prompt: what the detector reads in the video, against what the
    prompt asked for (one line on stderr)."""
    if orch.profile.name != "toy" or not args.prompt or args.task not in ("text-to-video", "digital-world", "auto"):
        return
    from openmora.artifacts import ArtifactStore
    from openmora.toy.detect import reading

    try:
        with ArtifactStore(result.run_dir) as store:
            line = reading(store.frames(result.final_id), args.prompt)
    except (OSError, ValueError) as err:  # the run is done and written: a failed reading costs it nothing
        line = f"could not read the video back ({err})"
    print(f"toy world: {line}", file=sys.stderr)


def _finish_compiles(progress: _CliProgress) -> None:
    """Wait for the background compiles the run queued, so that the next process finds them in the compile cache.
    The video is written already; Ctrl-C skips the wait (compiles finished so far are kept)."""
    compile_module = sys.modules.get("openmora.speedups.compile")  # never imported: nothing was compiled
    if compile_module is None:
        return
    background = compile_module.compiler()
    pending = background.pending()
    if not pending:
        return
    estimate = background.estimate_s()
    about = f", about {estimate:.0f}s" if estimate else ""
    print(
        f"finishing {pending} background compile(s) for the next run{about} (Ctrl-C skips; the video is done)",
        file=sys.stderr,
    )
    try:
        with progress:
            background.wait()
    except KeyboardInterrupt:
        print("compiles skipped: the next run compiles what is missing", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
