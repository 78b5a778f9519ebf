"""A conversation about one run folder: the first request, then revisions, resumable (:class:`ChatSession`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from openmora.artifacts import Artifact, ArtifactKind, ArtifactStore
from openmora.errors import InputError, first_line
from openmora.events import Event, EventSink, RunStatus
from openmora.fileio import atomic_writer
from openmora.group_chat.executor import STATE_FILE, PlanExecutor
from openmora.group_chat.plan_state import PlanState, guess_intent
from openmora.group_chat.plans import check_prompt_length, check_task_inputs
from openmora.group_chat.session import GroupChatSession
from openmora.group_chat.transcript import Transcript
from openmora.loader import PipelineLoader
from openmora.profiles import Profile
from openmora.story import StoryRenderer, split_shots
from openmora.tools.context import ToolContext, seeds_taken
from openmora.video_io import fit_frame, read_image, read_video_info

if TYPE_CHECKING:
    from openmora.engine import Orchestrator

logger = logging.getLogger("openmora")


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
    kind: ArtifactKind
    source: str
    pixels: np.ndarray
    fps: float | None  # None for an image; a video is resampled to the profile's fps
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


class ChatSession:
    """One run folder and the conversation about it: the first request, then revisions, resumable.

    Only what a revision touches re-runs: extending reuses every clip, an edit reuses the first image's layout,
    a new animation reuses the image. Every result is recorded; ``final.mp4`` is always the latest.
    """

    def __init__(self, orchestrator: Orchestrator, on_event: EventSink | None = None) -> None:
        self.orch = orchestrator
        self._on_event = on_event  # this session's own listener (run_stream's queue), besides the orchestrator's
        self.store: ArtifactStore | None = None
        self.transcript: Transcript | None = None
        self.ctx: ToolContext | None = None
        self.state: PlanState | None = None
        self.group: GroupChatSession | None = None
        self.result: RunResult | None = None
        self._wall = 0.0
        self._guarded = False

    def _opened(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"ChatSession.{name} used before start() or resume() opened the run folder")
        return value

    @property
    def _store(self) -> ArtifactStore:
        return self._opened("store")

    @property
    def _transcript(self) -> Transcript:
        return self._opened("transcript")

    @property
    def _ctx(self) -> ToolContext:
        return self._opened("ctx")

    @property
    def _state(self) -> PlanState:
        return self._opened("state")

    @property
    def run_dir(self) -> Path | None:
        return self._store.run_dir if self.store else None

    def _emit(self, event: Event) -> None:
        if self.orch.on_event:
            self.orch.on_event(event)
        if self._on_event:
            self._on_event(event)

    def _open(self, out: Path, meta: dict | None) -> None:
        profile = self.orch.profile
        self.store = ArtifactStore(out, meta=meta)
        self._store.on_event = self._emit
        self.transcript = Transcript(out / "transcript.jsonl", on_event=self._emit)
        loader = PipelineLoader(profile, on_event=self._emit, runtime=self.orch.runtime)
        seed = int(self._store.meta.get("seed", 0))
        self.ctx = ToolContext(store=self.store, loader=loader, profile=profile, seed=seed, on_event=self._emit)
        # Tool calls after a resume must not reuse the seeds of calls already made.
        self._ctx._calls = seeds_taken(self._store.artifacts())

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
        store, transcript = self._store, self._transcript
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
                        p.pixels,
                        p.fps or float(self.orch.profile.fps),
                        tool="input",
                        description=f"input video {Path(p.source).name}",
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
                self._state.steps[0].args = {"segments": n_segments, "prompt": prompt or ""}
            store.flush()  # the inputs on disk before a state that names them
            self._state.save(out / STATE_FILE)
            request = _request_text(task, prompt, image_id, clip_ids, store)
            await self._execute(client, request)
        self._wall += time.perf_counter() - wall_start
        return self._finish(decode_seconds)

    async def _render_story(self, prompt: str, segments: int) -> None:
        """Multi-shot: every shot rendered by the fixed plan with stage overlap, then joined with transitions."""
        shots = split_shots(prompt)
        self._transcript.record("note", agent="planner", text=f"story of {len(shots)} shots: " + " | ".join(shots))
        renderer = StoryRenderer(self.ctx, self.transcript, overlap=self.orch.story_overlap)
        final_id, _ = await asyncio.to_thread(renderer.render, shots, segments)
        # Revisions of a story extend its end; its shots are recorded in the manifest.
        self.state = PlanState(task="story", prompt=prompt, segments=segments, final_id=final_id, finals=[final_id])
        self._store.flush()
        self._state.save(self._store.run_dir / STATE_FILE)

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
        if self.state is None or self._state.final_id is None:
            raise InputError("nothing to revise yet: make a video first")
        if not text or not text.strip():
            raise InputError("the revision is empty; say what to change")
        check_prompt_length(text, "the revision")
        wall_start = time.perf_counter()
        self._transcript.record("message", agent="user", text=text, request=self._state.request + 1)
        client = self.orch.client()
        with self._status_on_failure():
            if client is None:
                intent = guess_intent(text, self._state.intents())
                self._transcript.record(
                    "planner",
                    agent="planner",
                    decision="revision",
                    candidates=self._state.intents(),
                    raw_choice=None,
                    valid=True,
                    fallback_used=False,
                    chosen=intent,
                    reason="no LLM: keyword reading",
                )
            else:
                intent = await self._group_chat().choose_intent(text)
            frames = int(self.orch.profile.role("image_to_video").params.get("num_frames", 25))
            steps = self._state.begin_revision(intent, text, self.orch.profile.fps, frames)
            self._transcript.record(
                "note",
                agent="planner",
                text=f"revision '{intent}': re-running {', '.join(s.tool for s in steps)}; earlier artifacts are reused",
            )
            self._store.flush()
            self._state.save(self._store.run_dir / STATE_FILE)
            self._store.update_meta(status="running")
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
        self._transcript.record("run_resume", agent="user", pending=[s.tool for s in self._state.pending()])
        client = orchestrator.client()
        if client is not None:
            await self._group_chat().load_team()
        if not self._state.complete:
            wall_start = time.perf_counter()
            with self._status_on_failure():
                self._store.update_meta(status="running")
                await self._execute(client, "Continue the plan: the previous session was interrupted.")
            self._wall += time.perf_counter() - wall_start
        if self._state.final_id:
            self._finish(0.0)
        return self

    def close(self) -> None:
        """End the session: wait for the run folder's last writes and stop its writer thread (idempotent). The run
        folder stays resumable (``ChatSession.resume``); this session takes no more requests."""
        if self.store is not None:
            self._store.close()

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
            status: RunStatus = (
                "interrupted" if isinstance(err, KeyboardInterrupt | asyncio.CancelledError) else "failed"
            )
            message = first_line(err)
            with contextlib.suppress(Exception):
                # Finish the files of steps that completed (and the plan state that records them): a resume then
                # re-runs only what did not finish. A failed write stays unrecorded.
                self._store.flush()
            self._transcript.record("run_end", agent="orchestrator", status=status, error=message)
            self._store.update_meta(status=status, error=message)
            raise
        finally:
            self._guarded = False

    def _finish(self, decode_seconds: float) -> RunResult:
        store, final_id = self._store, self._state.final_id
        flush_start = time.perf_counter()
        with self._status_on_failure():
            store.flush()  # every clip's files written (encoding overlapped the rendering), the plan state saved
        self._wall += time.perf_counter() - flush_start
        out = store.run_dir
        final = out / "final.mp4"
        with open(store.path(final_id), "rb") as src, atomic_writer(final) as dst:
            shutil.copyfileobj(src, dst)
        loader = self._ctx.loader
        timings = {
            "wall_s": self._wall,
            "load_s": loader.load_seconds,
            "generate_s": self._ctx.timings.get("generate", 0.0),
            # Video I/O: encoding every clip (in the background, beside the rendering), decoding + fitting the inputs.
            "encode_s": store.encode_seconds + decode_seconds,
            # The part of the wall time spent waiting for files (what the background encoding did not hide).
            "encode_wait_s": store.wait_seconds + decode_seconds,
            # The planner's and agents' LLM calls (0 with --llm none).
            "llm_s": self.orch.llm_seconds,
        }
        busy = timings["load_s"] + timings["generate_s"] + timings["encode_wait_s"] + timings["llm_s"]
        timings["other_s"] = max(0.0, timings["wall_s"] - busy)
        self._transcript.record(
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
