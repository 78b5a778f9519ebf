"""A conversation about one run folder: the first request, then revisions, resumable (:class:`ChatSession`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import threading
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
from openmora.group_chat.checker import PlanError, check_plan
from openmora.group_chat.executor import STATE_FILE, PlanExecutor
from openmora.group_chat.plan import Plan
from openmora.group_chat.plan_state import FINISHED, PlanState
from openmora.group_chat.planner import Planner, Request
from openmora.group_chat.plans import check_prompt_length, check_task_inputs
from openmora.group_chat.session import GroupChatSession
from openmora.group_chat.transcript import Transcript
from openmora.loader import PipelineLoader
from openmora.profiles import Profile
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
class PlannedRun:
    """A checked plan and what it is expected to cost (``openmora plan``; what a run would do)."""

    plan: Plan
    estimate_s: float | None
    profile: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # the planning, as transcript lines
    client: Any = None
    segments: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"steps": [{"id", "agent", "tool", "args"}], "estimate_s", "source"}`` (seeds are the run's)."""
        steps = []
        for s in self.plan.steps:
            d = s.to_dict()
            d["args"] = {k: v for k, v in d["args"].items() if k != "seed"}
            d.pop("shot", None)
            steps.append(d)
        return {"steps": steps, "estimate_s": self.estimate_s, "source": self.plan.source}


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
        self._exec: PlanExecutor | None = None
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
        """Validate, plan, create the run folder, import the inputs and run the first request.

        ``task`` is one of Mora's tasks or ``story`` (its template plan), or ``auto``: the planner plans the request
        (the LLM's checked plan; with ``--llm none`` the template the request's words and inputs point to).
        """
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
        # The plan first: a request that cannot be planned leaves no run folder behind.
        planned = await _plan(self.orch, task, prompt or "", prepared, image is not None, len(videos), segments)
        client, plan, planning, segments = planned.client, planned.plan, planned.events, planned.segments
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
            inputs: dict[str, str] = {}
            for p in prepared:
                if p.kind == "image":
                    art = store.add_image(p.pixels, tool="input", description=f"input image {Path(p.source).name}")
                    inputs["$image"] = art.id
                else:
                    art = store.add_video(
                        p.pixels,
                        p.fps or float(self.orch.profile.fps),
                        tool="input",
                        description=f"input video {Path(p.source).name}",
                    )
                    inputs[f"$video{sum(k.startswith('$video') for k in inputs) + 1}"] = art.id
                transcript.record(
                    "input", agent="user", tool="input", outputs=[art.id], source=p.source, result=art.summary()
                )
                for note in p.notes:
                    transcript.record("note", agent="orchestrator", inputs=[art.id], text=f"{art.id}: {note}")
            for kind, fields in planning:
                transcript.record(kind, agent="planner", request=0, **fields)
            self.state = PlanState.new(task, prompt or "", plan, seed=seed, inputs=inputs)
            self._announce_plan()
            store.flush()  # the inputs on disk before a state that names them
            self._state.save(out / STATE_FILE)
            await self._execute(client, _request_text(task, prompt, inputs, store))
        self._wall += time.perf_counter() - wall_start
        return self._finish(decode_seconds)

    def estimate(self) -> float | None:
        """Seconds the current plan's steps that must run are expected to take on this profile (None: unknown)."""
        from openmora.estimates import estimate

        state = self._state
        finished = {s.id for s in state.plan.steps if state.run_of(s.id).status in FINISHED}
        return estimate(state.plan, self.orch.profile, skip=finished, takes=self.orch.gate.takes_for)

    def _executor(self) -> PlanExecutor:
        """The executor of the current plan state (one per state: resume makes a new state). Prompts are keyed by
        the LLM that writes them."""
        if self._exec is None or self._exec.state is not self.state:
            self._exec = PlanExecutor(
                self.ctx,
                self.transcript,
                self.state,
                context={"prompt_writer": self.orch.llm},
                gate=self.orch.gate,
                judge=self._judge_without_chat,
                remote_shots=self.orch.ray_shots,
                score_steps=self.orch.llm != "none",  # a planner LLM reads each step's quality
            )
        return self._exec

    def _judge_without_chat(self, step: Any, takes: list[Any], retakes: int) -> tuple[str, str]:
        """The planner's quality decision when no chat runs (``--llm none``, whose executor runs in a worker thread
        with no event loop; the chat installs its own judge that asks the planner's LLM)."""
        return asyncio.run(self._planner().review_takes(step, takes, self.orch.gate, retakes))

    def _announce_plan(self) -> None:
        """The plan and its estimate, in the transcript (and so in the chat and the CLI) before the render. Steps the
        step cache holds are completed first, so the estimate counts only what will run."""
        state = self._state
        self._executor().reuse_ready()
        est = self.estimate()
        self._transcript.record(
            "note",
            agent="planner",
            text=state.plan.describe() + (f"\nestimate: ~{est:.0f} s on {self.orch.profile.name}" if est else ""),
            request=state.request,
            estimate_s=est,
        )

    def _group_chat(self) -> GroupChatSession:
        """The session's group chat, made on first use (one per session: the agents keep their history)."""
        if self.group is None:
            self.group = GroupChatSession(
                self.ctx,
                self.transcript,
                self.orch.client,
                self.state,
                self._planner(),
                max_turns=self.orch.max_turns,
                on_event=self._emit,
                executor=self._executor(),
            )
        return self.group

    def _planner(self) -> Planner:
        def record(kind: str, **fields: Any) -> None:
            self._transcript.record(kind, agent="planner", request=self._state.request, **fields)

        return Planner(self.orch.client(), self.orch.profile, record=record)

    async def _execute(self, client: Any, request: str | None) -> None:
        if client is None:
            await asyncio.to_thread(self._executor().run_all, self.orch.story_overlap)
            return
        self._preload()
        await self._group_chat().run(request)

    def _preload(self, n_roles: int = 2) -> None:
        """Load the pipelines of the plan's first model steps in the background while the LLM turns run (loading is
        mostly file reading; the LLM computes). The run's own ``loader.get`` then finds them, or waits for them."""
        from openmora.estimates import TOOL_ROLES

        roles: list[str] = []
        for step in self._state.pending():
            role = TOOL_ROLES.get(step.tool)
            if role and role not in roles:
                roles.append(role)
        loader = self._ctx.loader

        def load() -> None:
            for role in roles[:n_roles]:
                try:
                    loader.get(role)
                except Exception as err:  # noqa: BLE001 - the step's own load reports it
                    logger.debug("preloading %s failed: %s", role, first_line(err))
                    return

        threading.Thread(target=load, name="openmora-preload", daemon=True).start()

    async def revise(self, text: str) -> RunResult:
        """Apply a revision ("make it look like the 1920s", "extend it by two seconds"): the planner edits the plan;
        steps whose inputs did not change are reused, the changed ones re-run with everything downstream."""
        if self.state is None or self._state.final_id is None:
            raise InputError("nothing to revise yet: make a video first")
        if not text or not text.strip():
            raise InputError("the revision is empty; say what to change")
        check_prompt_length(text, "the revision")
        wall_start = time.perf_counter()
        state = self._state
        self._transcript.record("message", agent="user", text=text, request=state.request + 1)
        client = self.orch.client()
        with self._status_on_failure():
            planner = self.group.planner if self.group is not None else self._planner()
            thumb = _thumbnail(self._store) if client is not None and client.model_info.get("vision") else None
            plan, _rev = await planner.revise(state.plan, text, prompt=current_prompt(state), image=thumb)
            inputs = state.inputs
            problems = check_plan(
                plan,
                has_image="$image" in inputs,
                n_videos=sum(k.startswith("$video") for k in inputs),
                known=state.known_artifacts(),
            )
            if problems:
                raise PlanError(problems)
            state.begin_request(plan)
            self._announce_plan()
            self._store.flush()
            state.save(self._store.run_dir / STATE_FILE)
            self._store.update_meta(status="running")
            await self._execute(client, f"Revision: {text}")
        self._wall += time.perf_counter() - wall_start
        return self._finish(0.0)

    @classmethod
    async def resume(
        cls, orchestrator: Orchestrator, run_dir: str | Path, on_event: EventSink | None = None
    ) -> ChatSession:
        """Reopen a run folder; finish an interrupted request. Then ``revise`` as usual. ``on_event`` hears this
        session's events only (besides the orchestrator's ``on_event``)."""
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
        self = cls(orchestrator, on_event=on_event)
        self._open(run_dir, None)
        self.state = PlanState.load(run_dir / STATE_FILE)
        self._transcript.record("run_resume", agent="user", pending=[s.id for s in self._state.pending()])
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
        store.update_meta(status="done", final=final_id, final_video="final.mp4", timings=timings, error=None)
        if self.orch.report:  # scored and reported before the last line, which then counts that time too
            report_start = time.perf_counter()
            self._write_report()
            timings["report_s"] = time.perf_counter() - report_start
            self._wall += timings["report_s"]
            timings["wall_s"] = self._wall
            store.update_meta(timings=timings)
        self._transcript.record(
            "run_end",
            agent="orchestrator",
            outputs=[final_id],
            seconds=self._wall,
            status="done",
            final="final.mp4",
            timings=timings,
        )
        self.result = RunResult(
            run_dir=out,
            final_video=final,
            final_id=final_id,
            artifacts=store.artifacts(),
            transcript=out / "transcript.jsonl",
            timings=timings,
        )
        return self.result

    def _write_report(self) -> None:
        """Score the run and write scores.json and report.html (a failure is a note: the video is made)."""
        from openmora.quality.report import write_report
        from openmora.quality.score import score_run, summary

        start = time.perf_counter()
        try:
            scores = score_run(self._store.run_dir, frames=self._store.frames, known=self._executor().scored)
            report = write_report(self._store.run_dir, scores, frames=self._store.frames)
            for clip in scores["clips"]:  # every clip's figures in the manifest too
                if self._store.has(clip["id"]):
                    self._store.set_scores(clip["id"], summary(clip))
        except Exception as err:  # noqa: BLE001 - the run's video exists; the report is extra
            logger.warning("could not write the run's report: %s", first_line(err))
            self._transcript.record("note", agent="orchestrator", text=f"no report: {first_line(err)}")
            return
        final = next((c for c in scores["clips"] if c["id"] == scores.get("final")), None)
        self._transcript.record(
            "note",
            agent="orchestrator",
            text=f"scored and reported in {time.perf_counter() - start:.1f}s"
            + (f": final video quality {final['overall']:.2f}" if final else "")
            + f"; report: {report.name}",
        )


async def _plan(
    orch: Orchestrator,
    task: str,
    prompt: str,
    prepared: list[_PreparedInput],
    has_image: bool,
    n_videos: int,
    segments: int | None,
) -> PlannedRun:
    """Plan a request: ``auto`` by the planner (the LLM's checked plan, repaired once, else the template), a task by
    its template. Refuses a plan that cannot run (:class:`PlanError`)."""
    from openmora.estimates import estimate

    profile = orch.profile
    client = orch.client()  # an LLM that cannot start fails here, before any run folder exists
    events: list[tuple[str, dict[str, Any]]] = []
    planner = Planner(client, profile, record=lambda kind, **f: events.append((kind, f)))
    if segments is None and task in ("edit", "digital-world") and n_videos:
        # Edit (and restyle) the first frame, then regenerate at least the original's length of motion.
        segments = _segments_to_cover(len(prepared[-1].pixels), profile)
    req = Request(prompt, has_image=has_image, n_videos=n_videos, segments=segments)
    if task == "auto":
        plan = await planner.plan(prompt, has_image=has_image, n_videos=n_videos, segments=segments)
    else:
        plan = planner.template_for(req, task)
        plan.source = "template"
        events.append(("plan", {"source": "template", "steps": [s.to_dict() for s in plan.steps], "valid": True}))
    problems = check_plan(plan, has_image=has_image, n_videos=n_videos)
    if problems:
        raise PlanError(problems)
    return PlannedRun(plan, estimate(plan, profile, takes=orch.gate.takes_for), profile.name, events, client, segments)


async def plan_request(
    orch: Orchestrator,
    request: str,
    *,
    image: str | Path | None = None,
    videos: Sequence[str | Path] = (),
    segments: int | None = None,
    task: str = "auto",
) -> PlannedRun:
    """The checked plan of a request without running it (inputs are read to check them)."""
    videos = list(videos)
    check_task_inputs(task, request, image, videos, segments)
    prepared: list[_PreparedInput] = []
    if image is not None:
        prepared.append(_prepare_image(str(image), orch.profile))
    prepared += [_prepare_video(str(v), orch.profile) for v in videos]
    return await _plan(orch, task, request, prepared, image is not None, len(videos), segments)


def _segments_to_cover(n_frames: int, profile: Profile) -> int:
    per = int(profile.role("image_to_video").params.get("num_frames", 25))
    if n_frames <= per:
        return 1
    return min(12, 1 + math.ceil((n_frames - per) / max(1, per - 1)))


def _request_text(task: str, prompt: str | None, inputs: dict[str, str], store: ArtifactStore) -> str:
    parts = [f"Task: {task}.", f"Request: {prompt.strip()}." if prompt and prompt.strip() else ""]
    for ref, art_id in inputs.items():
        parts.append(f"Input {ref}: {store.get(art_id).summary()}.")
    return " ".join(p for p in parts if p)


def current_prompt(state: PlanState) -> str:
    """The words the current picture was made from: the first prompt step's or image step's, else the request."""
    for step in state.plan.steps:
        if step.tool in ("enhance_prompt", "text_to_image"):
            value = step.args.get("prompt", "")
            if isinstance(value, str) and value and not value.startswith("$"):
                return value
    return state.prompt


def _thumbnail(store: ArtifactStore, size: int = 256) -> Any:
    """The newest image, or the newest clip's last frame, as a small AutoGen image (``None`` if there is none)."""
    from autogen_core import Image as AGImage
    from PIL import Image

    arts = store.artifacts()
    if not arts:
        return None
    art = arts[-1]
    pixels = store.image(art.id) if art.kind == "image" else store.frames(art.id)[-1]
    picture = Image.fromarray(pixels)
    picture.thumbnail((size, size))
    return AGImage.from_pil(picture)
