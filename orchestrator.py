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
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from group_chat.executor import STATE_FILE, PlanExecutor
from group_chat.llm_backends import TimedClient, check_llm_spec, make_llm_client
from group_chat.plan_state import PlanState, guess_intent
from group_chat.plans import TASK_HELP, TASKS, check_task_inputs
from group_chat.session import DEFAULT_MAX_TURNS, GroupChatSession, RunIncomplete
from group_chat.story import StoryRenderer, split_shots
from group_chat.transcript import Transcript
from tools.artifacts import Artifact, ArtifactStore
from tools.context import ToolContext
from tools.errors import InputError, ModelLoadError, OpenMoraError
from tools.model_loader import PipelineLoader
from tools.profiles import Profile, available_profiles, fast_variant, load_profile
from tools.video_io import fit_frame, read_image, read_video_info

logger = logging.getLogger("openmora")
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
    """Builds and runs OpenMora tasks: the fixed plan (``llm="none"``) or the agents' group chat.

    Args:
        profile: a profile name (``tiny``, ``mora``, ``modern``), a YAML path, or a :class:`Profile`.
        llm: the planner/agents' LLM: ``none`` (fixed plan), ``local``, ``local-small``, ``openai``, ``replay:FILE``.
        runs_dir: where run folders go when ``run(out=...)`` is not given.
        on_event: called with every event (transcript lines, model loading, denoising progress, encoding, chat).
        max_turns: the group chat's turn limit per request.
        fast: the opt-in fast mode: each role's ``fast`` overrides (fewer steps, diffusers caches, fp8 weights).
            It changes the output; bench/SPEED_NOTES.md gives its error against an fp32 reference.

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
        max_turns: int = DEFAULT_MAX_TURNS,
        fast: bool = False,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        if fast:
            self.profile = fast_variant(self.profile)
        self.llm = check_llm_spec(llm)
        self.runs_dir = Path(runs_dir) if runs_dir else DEFAULT_RUNS_DIR
        self.on_event = on_event
        self.max_turns = max_turns
        self.story_overlap = True  # stories: overlap shot k+1's image with shot k's video (False: one at a time)
        self._clients: dict[str, Any] = {}

    def client(self, role: str = "planner") -> Any:
        """The LLM client for ``role`` (``None`` for ``llm="none"``).

        The embedded LLM gets one client per role: llama.cpp reuses only the prompt prefix it saw last, so a client
        shared by the planner and every agent re-reads the whole conversation each turn (10.7 s instead of 0.3 s for
        a 265-token prompt). Weights are memory-mapped and shared; a role's model loads on its first call.
        Other backends share one client (a replay script is one sequence of replies).
        """
        if self.llm == "none":
            return None
        key = role if self.llm in ("local", "local-small") else "shared"
        if key not in self._clients:
            self._clients[key] = TimedClient(make_llm_client(self.llm))
        return self._clients[key]

    @property
    def llm_seconds(self) -> float:
        return sum(c.seconds for c in self._clients.values())

    def run(self, task: str, **kwargs: Any) -> RunResult:
        """Run one task to its final video (blocking). In a running event loop (Jupyter), ``await arun(...)``.

        Keyword args: ``prompt``, ``image``, ``videos``, ``seed``, ``segments``, ``out`` (see :meth:`arun`).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(task, **kwargs))
        raise RuntimeError("Orchestrator.run() was called inside a running event loop; use `await orch.arun(...)`")

    async def arun(
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
        session = ChatSession(self)
        return await session.start(
            task, prompt=prompt, image=image, videos=videos, seed=seed, segments=segments, out=out
        )

    async def run_stream(self, task: str, **kwargs: Any) -> AsyncIterator[dict]:
        """Run a task and yield every event as it happens; the last one is ``{"type": "result", "result": RunResult}``.

        Example:
            >>> async def show():
            ...     async for event in Orchestrator().run_stream("text-to-video", prompt="a fox"):
            ...         print(event["type"])  # doctest: +SKIP
        """
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        user_callback = self.on_event

        def push(event: dict) -> None:
            if user_callback:
                user_callback(event)
            loop.call_soon_threadsafe(queue.put_nowait, event)

        self.on_event = push
        job = asyncio.ensure_future(self.arun(task, **kwargs))
        try:
            while not (job.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            yield {"type": "result", "result": job.result()}
        finally:
            self.on_event = user_callback
            if not job.done():
                job.cancel()

    def chat_session(self) -> ChatSession:
        """A conversation: ``await s.start(task, ...)``, then ``await s.revise("make it darker")`` as often as wanted."""
        return ChatSession(self)


class ChatSession:
    """One run folder and the conversation about it: the first request, then revisions, resumable.

    Only what a revision touches re-runs: extending reuses every clip, an edit reuses the first image's layout,
    a new animation reuses the image. Every result is recorded; ``final.mp4`` is always the latest.
    """

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator
        self.store: ArtifactStore | None = None
        self.transcript: Transcript | None = None
        self.ctx: ToolContext | None = None
        self.state: PlanState | None = None
        self.group: GroupChatSession | None = None
        self.result: RunResult | None = None
        self._wall = 0.0
        self._guarded = False

    @property
    def run_dir(self) -> Path | None:
        return self.store.run_dir if self.store else None

    def _emit(self, event: dict) -> None:
        if self.orch.on_event:
            self.orch.on_event(event)

    def _open(self, out: Path, meta: dict | None) -> None:
        profile = self.orch.profile
        self.store = ArtifactStore(out, meta=meta)
        self.store.on_event = self._emit
        self.transcript = Transcript(out / "transcript.jsonl", on_event=self._emit)
        loader = PipelineLoader(profile, on_event=self._emit)
        seed = int(self.store.meta.get("seed", 0))
        self.ctx = ToolContext(store=self.store, loader=loader, profile=profile, seed=seed, on_event=self._emit)
        # Tool calls after a resume must not reuse the seeds of calls already made.
        self.ctx._calls = sum(1 for a in self.store.artifacts() if a.seed is not None)

    async def start(
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
        """Validate, create the run folder, import the inputs and run the first request."""
        wall_start = time.perf_counter()
        profile = self.orch.profile
        videos = list(videos)
        check_task_inputs(task, prompt, image, videos, segments)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"--seed must be a whole number >= 0, got {seed!r}")
        prepared: list[_PreparedInput] = []
        decode_start = time.perf_counter()
        if image is not None:
            prepared.append(_prepare_image(str(image), profile))
        prepared += [_prepare_video(str(v), profile) for v in videos]
        decode_seconds = time.perf_counter() - decode_start
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = self.orch.runs_dir / f"{stamp}-{task}-{uuid.uuid4().hex[:4]}"
        out = Path(out)
        _check_out_dir(out)
        if task == "story" and self.orch.llm != "none":
            raise InputError("story renders its shots with the fixed plan (in parallel); use --llm none")
        client = self.orch.client()  # an LLM that cannot start fails here, before the run folder exists

        meta = {
            "task": task,
            "prompt": prompt or "",
            "profile": profile.name,
            "llm": self.orch.llm,
            "seed": seed,
            "segments": segments,
            "inputs": [p.source for p in prepared],
            "status": "running",
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        self._open(out, meta)
        store, transcript = self.store, self.transcript
        transcript.record(
            "run_start",
            agent="user",
            task=task,
            prompt=prompt or "",
            profile=profile.name,
            seed=seed,
            llm=self.orch.llm,
        )
        with self._status_on_failure():
            image_id, clip_ids = None, []
            for p in prepared:
                if p.kind == "image":
                    art = store.add_image(p.pixels, tool="input", description=f"input image {Path(p.source).name}")
                    image_id = art.id
                else:
                    art = store.add_video(
                        p.pixels, p.fps, tool="input", description=f"input video {Path(p.source).name}"
                    )
                    clip_ids.append(art.id)
                transcript.record(
                    "input", agent="user", tool="input", outputs=[art.id], source=p.source, result=art.summary()
                )
                for note in p.notes:
                    transcript.record("note", agent="orchestrator", inputs=[art.id], text=f"{art.id}: {note}")
            n_segments = segments
            if task in ("edit", "digital-world") and clip_ids:
                # Edit (and restyle) the first frame, then regenerate at least the original's length of motion.
                first = store.add_image(
                    store.frames(clip_ids[0])[0],
                    tool="first_frame",
                    parents=[clip_ids[0]],
                    description=f"first frame of {clip_ids[0]}",
                )
                transcript.record(
                    "tool_call",
                    agent="edit_agent",
                    tool="first_frame",
                    inputs=[clip_ids[0]],
                    outputs=[first.id],
                    result=first.summary(),
                )
                image_id = first.id
                if n_segments is None:
                    n_segments = _segments_to_cover(store.get(clip_ids[0]).frames or 1, profile)
            if task == "story":
                await self._render_story(prompt or "", n_segments or 1)
                self._wall += time.perf_counter() - wall_start
                return self._finish(decode_seconds)
            if n_segments is None:
                n_segments = profile.segments if task in ("text-to-video", "digital-world") and image_id is None else 1
            self.state = PlanState.for_task(
                task, prompt=prompt or "", segments=n_segments, image_id=image_id, clip_ids=clip_ids
            )
            if task == "extend":
                self.state.steps[0].args = {"segments": n_segments, "prompt": prompt or ""}
            store.flush()  # the inputs on disk before a state that names them
            self.state.save(out / STATE_FILE)
            request = _request_text(task, prompt, image_id, clip_ids, store)
            await self._execute(client, request)
        self._wall += time.perf_counter() - wall_start
        return self._finish(decode_seconds)

    async def _render_story(self, prompt: str, segments: int) -> None:
        """Multi-shot: every shot rendered by the fixed plan with stage overlap, then joined with transitions."""
        shots = split_shots(prompt)
        self.transcript.record("note", agent="planner", text=f"story of {len(shots)} shots: " + " | ".join(shots))
        renderer = StoryRenderer(self.ctx, self.transcript, overlap=self.orch.story_overlap)
        final_id, _ = await asyncio.to_thread(renderer.render, shots, segments)
        # Revisions of a story extend its end; its shots are recorded in the manifest.
        self.state = PlanState(task="story", prompt=prompt, segments=segments, final_id=final_id, finals=[final_id])
        self.store.flush()
        self.state.save(self.store.run_dir / STATE_FILE)

    def _group_chat(self) -> GroupChatSession:
        """The session's group chat, made on first use (one per session: the agents keep their history)."""
        if self.group is None:
            self.group = GroupChatSession(
                self.ctx,
                self.transcript,
                self.orch.client,
                self.state,
                max_turns=self.orch.max_turns,
                on_event=self._emit,
            )
        return self.group

    async def _execute(self, client: Any, request: str | None) -> None:
        if client is None:
            await asyncio.to_thread(PlanExecutor(self.ctx, self.transcript, self.state).run_all)
            return
        await self._group_chat().run(request)

    async def revise(self, text: str) -> RunResult:
        """Apply a revision ("make it darker", "extend it by two seconds"); only what depends on it re-runs."""
        if self.state is None or self.state.final_id is None:
            raise InputError("nothing to revise yet: make a video first")
        if not text or not text.strip():
            raise InputError("the revision is empty; say what to change")
        wall_start = time.perf_counter()
        self.transcript.record("message", agent="user", text=text, request=self.state.request + 1)
        client = self.orch.client()
        with self._status_on_failure():
            if client is None:
                intent = guess_intent(text, self.state.intents())
                self.transcript.record(
                    "planner",
                    agent="planner",
                    decision="revision",
                    candidates=self.state.intents(),
                    raw_choice=None,
                    valid=True,
                    fallback_used=False,
                    chosen=intent,
                    reason="no LLM: keyword reading",
                )
            else:
                intent = await self._group_chat().choose_intent(text)
            frames = int(self.orch.profile.role("image_to_video").params.get("num_frames", 25))
            steps = self.state.begin_revision(intent, text, self.orch.profile.fps, frames)
            self.transcript.record(
                "note",
                agent="planner",
                text=f"revision '{intent}': re-running {', '.join(s.tool for s in steps)}; earlier artifacts are reused",
            )
            self.store.flush()
            self.state.save(self.store.run_dir / STATE_FILE)
            self.store.update_meta(status="running")
            await self._execute(client, f"Revision: {text}")
        self._wall += time.perf_counter() - wall_start
        return self._finish(0.0)

    @classmethod
    async def resume(cls, orchestrator: Orchestrator, run_dir: str | Path) -> ChatSession:
        """Reopen a run folder; finish an interrupted request. Then ``revise`` as usual."""
        run_dir = Path(run_dir)
        if not (run_dir / "manifest.json").is_file() or not (run_dir / STATE_FILE).is_file():
            raise InputError(f"{run_dir} is not a resumable run folder (it needs manifest.json and {STATE_FILE})")
        made_with = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")).get("run", {}).get("profile")
        if made_with and made_with != orchestrator.profile.name:
            base, fast = made_with.removesuffix("+fast"), made_with.endswith("+fast")
            raise InputError(
                f"{run_dir} was made with profile {made_with!r}, not {orchestrator.profile.name!r}: resume it with "
                f"--profile {base}{' --fast' if fast else ''} so that its remaining steps match the ones already made"
            )
        self = cls(orchestrator)
        self._open(run_dir, None)
        self.state = PlanState.load(run_dir / STATE_FILE)
        self.transcript.record("run_resume", agent="user", pending=[s.tool for s in self.state.pending()])
        client = orchestrator.client()
        if client is not None:
            await self._group_chat().load_team()
        if not self.state.complete:
            wall_start = time.perf_counter()
            with self._status_on_failure():
                self.store.update_meta(status="running")
                await self._execute(client, "Continue the plan: the previous session was interrupted.")
            self._wall += time.perf_counter() - wall_start
        if self.state.final_id:
            self._finish(0.0)
        return self

    @contextlib.contextmanager
    def _status_on_failure(self) -> Iterator[None]:
        """Record a failure or an interruption in the transcript and the manifest, then let it propagate."""
        if self._guarded:  # nested (the final flush inside a guarded request): the outer one records it
            yield
            return
        self._guarded = True
        try:
            yield
        except BaseException as err:
            status = "interrupted" if isinstance(err, KeyboardInterrupt | asyncio.CancelledError) else "failed"
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            with contextlib.suppress(Exception):
                # Finish the files of steps that completed (and the plan state that records them): a resume then
                # re-runs only what did not finish. A failed write stays unrecorded.
                self.store.flush()
            self.transcript.record("run_end", agent="orchestrator", status=status, error=message)
            self.store.update_meta(status=status, error=message)
            raise
        finally:
            self._guarded = False

    def _finish(self, decode_seconds: float) -> RunResult:
        store, final_id = self.store, self.state.final_id
        flush_start = time.perf_counter()
        with self._status_on_failure():
            store.flush()  # every clip's files written (encoding overlapped the rendering), the plan state saved
        self._wall += time.perf_counter() - flush_start
        out = store.run_dir
        final = out / "final.mp4"
        tmp = out / f".final.{uuid.uuid4().hex[:8]}.tmp.mp4"
        shutil.copyfile(store.path(final_id), tmp)
        os.replace(tmp, final)
        loader = self.ctx.loader
        timings = {
            "wall_s": self._wall,
            "load_s": loader.load_seconds,
            "generate_s": self.ctx.timings.get("generate", 0.0),
            # Video I/O: encoding every clip (in the background, beside the rendering), decoding + fitting the inputs.
            "encode_s": store.encode_seconds + decode_seconds,
            # The part of the wall time spent waiting for files (what the background encoding did not hide).
            "encode_wait_s": store.wait_seconds + decode_seconds,
            # The planner's and agents' LLM calls (0 with --llm none).
            "llm_s": self.orch.llm_seconds,
        }
        busy = timings["load_s"] + timings["generate_s"] + timings["encode_wait_s"] + timings["llm_s"]
        timings["other_s"] = max(0.0, timings["wall_s"] - busy)
        self.transcript.record(
            "run_end",
            agent="orchestrator",
            outputs=[final_id],
            seconds=self._wall,
            status="done",
            final="final.mp4",
            timings=timings,
        )
        store.update_meta(status="done", final=final_id, final_video="final.mp4", timings=timings, error=None)
        self.result = RunResult(
            run_dir=out,
            final_video=final,
            final_id=final_id,
            artifacts=store.artifacts(),
            transcript=out / "transcript.jsonl",
            timings=timings,
        )
        return self.result


def _segments_to_cover(n_frames: int, profile: Profile) -> int:
    per = int(profile.role("image_to_video").params.get("num_frames", 25))
    if n_frames <= per:
        return 1
    return min(12, 1 + math.ceil((n_frames - per) / max(1, per - 1)))


def _request_text(
    task: str, prompt: str | None, image_id: str | None, clip_ids: list[str], store: ArtifactStore
) -> str:
    parts = [f"Task: {task}.", f"Request: {prompt.strip()}." if prompt and prompt.strip() else ""]
    if image_id:
        parts.append(f"Image: {store.get(image_id).summary()}.")
    for cid in clip_ids:
        parts.append(f"Clip: {store.get(cid).summary()}.")
    return " ".join(p for p in parts if p)


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
    fast_help = "opt-in fast mode: the profile's faster, output-changing settings (fewer steps, caches, fp8 weights)"
    run.add_argument("--fast", action="store_true", help=fast_help)
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
        default=os.environ.get("OPENMORA_LLM", "none"),
        help="the planner and agents' LLM: none (the task's fixed plan, default), local (embedded Qwen2.5-Coder-1.5B), "
        "local-small (0.5B), openai (OPENMORA_OPENAI_MODEL, OPENAI_API_KEY, OPENMORA_OPENAI_BASE_URL), replay:FILE",
    )
    run.add_argument(
        "--max-turns", type=int, default=DEFAULT_MAX_TURNS, help="group chat turn limit (default %(default)s)"
    )
    chat = sub.add_parser(
        "chat",
        help="talk with the team: a request, then revisions ('darker', 'extend it by two seconds')",
        description="Interactive session. Type a request; when the video is made, type revisions: only what depends on "
        "the change re-runs. Commands: /image PATH and /video PATH attach inputs before the first request, /status "
        "lists the artifacts, /quit ends. Ctrl-C leaves a consistent run folder: continue it with --resume RUN_DIR.",
    )
    chat.add_argument(
        "--llm", default=os.environ.get("OPENMORA_LLM", "local"), help="as for run (default: local, the embedded LLM)"
    )
    chat.add_argument("--profile", default="tiny", help="model profile (default: tiny)")
    chat.add_argument("--fast", action="store_true", help=fast_help)
    chat.add_argument("--out", help="run folder to create (new or empty)")
    chat.add_argument("--resume", metavar="RUN_DIR", help="continue an earlier chat's run folder")
    chat.add_argument("--task", choices=TASKS, metavar="TASK", help="the first request's task (default: inferred)")
    chat.add_argument("--image", help="input image for the first request")
    chat.add_argument("--video", action="append", default=[], help="input video(s) for the first request")
    chat.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    chat.add_argument("--segments", type=int, help="image-to-video segments for the first request")
    chat.add_argument("--max-turns", type=int, default=DEFAULT_MAX_TURNS, help="group chat turn limit per request")
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
            if e["type"] == "message":
                self.console.print(f"[{e['step']}] {e['agent']}: {e.get('text', '')}")
            elif e["type"] == "planner":
                how = (
                    "plan fallback"
                    if e.get("fallback_used")
                    else ("LLM" if e.get("raw_choice") is not None else "plan")
                )
                self.console.print(
                    f"[{e['step']}] planner -> {e['chosen']} ({how}; candidates {', '.join(e['candidates'])})",
                    style="cyan",
                )
            elif e["type"] == "tool_call" and e.get("error"):
                self.console.print(f"[{e['step']}] {e['agent']}: {e['tool']} failed: {e['error']}", style="red")
            elif e["type"] == "tool_call":
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


def _infer_task(text: str, image: str | None, videos: list[str]) -> str:
    t = text.lower()
    if image:
        return "digital-world" if "digital world" in t or "minecraft" in t else "image-to-video"
    if len(videos) >= 2:
        return "connect"
    if len(videos) == 1:
        return "extend" if any(w in t for w in ("extend", "continue", "longer")) else "edit"
    return "digital-world" if "digital world" in t or "minecraft" in t else "text-to-video"


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
                task = args.task or _infer_task(line, image, videos)
                console.print(f"task: {task}", style="dim")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    try:
        progress = _CliProgress()
        orch = Orchestrator(
            profile=args.profile, llm=args.llm, on_event=progress, max_turns=args.max_turns, fast=args.fast
        )
        if args.command == "chat":
            with progress:
                return asyncio.run(_chat(args, orch, progress.console))
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
            "interrupted: the run folder records what was done; continue it with `orchestrator.py chat --resume RUN_DIR`",
            file=sys.stderr,
        )
        return 130
    t = result.timings
    print(
        f"done in {t['wall_s']:.1f}s (load {t['load_s']:.1f}s, generate {t['generate_s']:.1f}s, "
        f"waiting for encodes {t['encode_wait_s']:.1f}s of {t['encode_s']:.1f}s encoding, llm {t['llm_s']:.1f}s, "
        f"other {t['other_s']:.1f}s)",
        file=sys.stderr,
    )
    print(result.final_video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
