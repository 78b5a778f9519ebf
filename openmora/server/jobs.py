"""What the server does with a job: its folder, its event log (replayed, then live), previews, and the worker that
runs one job step at a time on one :class:`~openmora.engine.Orchestrator` (whose pipelines stay loaded).

A job's folder (``DATA/jobs/<id>/``) holds ``inputs/`` (the uploads), ``run/`` (the run folder: manifest, plan
state, transcript, artifacts, ``final.mp4``, the report) and ``events.jsonl``: every event of the job, one JSON
object a line with a ``seq`` number, in the order they happened. Besides the run's own events (``load``,
``progress``, ``encode``, ``transcript``, ``chat``; see :mod:`openmora.events`) the log holds ``status`` events (the
job's status changed) and ``preview`` events (a new artifact, with a PNG thumbnail as a data URI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmora.errors import first_line
from openmora.server.queue import FINISHED_STATUSES, Job, JobQueue, Step

if TYPE_CHECKING:
    from openmora.engine import Orchestrator

logger = logging.getLogger("openmora.server")

EVENTS_FILE = "events.jsonl"
RUN_DIR = "run"
INPUTS_DIR = "inputs"
PREVIEW_PX = 160  # a preview thumbnail's longer side
# Seconds a running job has, after a cancel, to stop at its next denoising step before its task is cancelled.
CANCEL_GRACE_S = 3.0


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ----- events -------------------------------------------------------------------------------------------------------
class EventLog:
    """One job's ``events.jsonl``: appended from any thread, read back in full, and pushed to live listeners."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.seq = 0
        self.last_progress: dict[str, Any] | None = None
        self.previewed: set[str] = set()
        for record in self.read():
            self.seq = max(self.seq, int(record.get("seq", 0)))
            self._note(record)

    def _note(self, record: dict[str, Any]) -> None:
        if record.get("type") == "progress":
            self.last_progress = record
        elif record.get("type") == "preview":
            self.previewed.add(str(record.get("id")))

    def read(self) -> list[dict[str, Any]]:
        """Every event recorded so far (a torn last line from a killed process is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Record an event (it gets the next ``seq``) and push it to the listeners; returns the record."""
        with self._lock:
            self.seq += 1
            record = {"seq": self.seq, **event}
            line = json.dumps(record, ensure_ascii=False, default=str)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            self._note(record)
            listeners = list(self._listeners)
        for loop, queue in listeners:
            with contextlib.suppress(RuntimeError):  # that listener's loop has closed
                loop.call_soon_threadsafe(queue.put_nowait, record)
        return record

    def subscribe(self) -> asyncio.Queue:
        """A queue on the running loop that receives every event from now on (``unsubscribe`` it when done)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._listeners.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        """Stop pushing events to ``queue``."""
        with self._lock:
            self._listeners = [(lp, q) for lp, q in self._listeners if q is not queue]


class EventHub:
    """The event logs of every job, one :class:`EventLog` per job folder, shared by the API and the worker."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = jobs_dir
        self._logs: dict[str, EventLog] = {}
        self._lock = threading.Lock()

    def log(self, job_id: str) -> EventLog:
        """The job's event log (opened on first use)."""
        with self._lock:
            if job_id not in self._logs:
                self._logs[job_id] = EventLog(self.jobs_dir / job_id / EVENTS_FILE)
            return self._logs[job_id]


# ----- previews -----------------------------------------------------------------------------------------------------
def thumbnail_data_uri(path: Path, kind: str, size: int = PREVIEW_PX) -> str:
    """A PNG data URI of an image, or of a clip's first frame, at most ``size`` px on its longer side."""
    from PIL import Image

    if kind == "image":
        with Image.open(path) as im:
            picture = im.convert("RGB")
    else:
        import imageio_ffmpeg
        import numpy as np

        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        try:
            width, height = next(reader)["size"]
            first = next(reader)
        finally:
            reader.close()
        picture = Image.fromarray(np.frombuffer(first, np.uint8).reshape(height, width, 3))
    picture.thumbnail((size, size))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written atomically by the run (manifest, plan state, scores), or None if absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def emit_previews(run_dir: Path, log: EventLog) -> int:
    """A ``preview`` event for each artifact of the run folder's manifest that has none yet; returns how many."""
    manifest = read_json(run_dir / "manifest.json") or {}
    n = 0
    for art in manifest.get("artifacts", []):
        art_id = str(art.get("id"))
        if art_id in log.previewed:
            continue
        path = (run_dir / str(art.get("path", ""))).resolve()
        if run_dir.resolve() not in path.parents or not path.is_file():
            continue
        try:
            uri = thumbnail_data_uri(path, str(art.get("kind")))
        except Exception as err:  # noqa: BLE001 - a preview is a nicety; the artifact exists
            logger.debug("no preview of %s: %s", art_id, first_line(err))
            log.previewed.add(art_id)
            continue
        log.emit(
            {
                "type": "preview",
                "id": art_id,
                "kind": art.get("kind"),
                "path": art.get("path"),
                "tool": art.get("tool"),
                "image": uri,
            }
        )
        n += 1
    return n


# ----- the worker ---------------------------------------------------------------------------------------------------
class Worker:
    """Runs queued job steps one at a time in its own thread and event loop, on one orchestrator.

    Its own loop keeps the API responsive: a run does blocking work (scoring, the report, writes) on the loop that
    runs it. Cancelling a running job makes its next denoising step raise ``CancelledError`` in the rendering
    thread (the run then stops where ChatSession records an interruption); a job that does not reach one within
    :data:`CANCEL_GRACE_S` has its task cancelled.
    """

    def __init__(self, queue: JobQueue, hub: EventHub, jobs_dir: Path, orchestrator: Orchestrator) -> None:
        self.queue = queue
        self.hub = hub
        self.jobs_dir = jobs_dir
        self.orch = orchestrator
        self.orch.on_event = self._on_event
        self.current: str | None = None  # the running job's id
        self._cancel: set[str] = set()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    # ----- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="openmora-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking steps; a running step is interrupted and stays ``running`` in the queue, so that the next
        start of the server resumes it from its run folder."""
        self._stop.set()
        self._wake.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A step was queued or the queue resumed: look now."""
        self._wake.set()

    def _main(self) -> None:
        asyncio.run(self._loop_main())

    async def _loop_main(self) -> None:
        self._loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            step = self.queue.next_step()
            if step is None:
                self._wake.clear()
                await asyncio.to_thread(self._wake.wait, 0.5)
                continue
            await self._run(step)

    # ----- events -----------------------------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        """The orchestrator's sink: the running job's events go to its log. A cancelled job (or every job, once the
        server stops) stops at its next denoising step (these come from the rendering thread)."""
        job_id = self.current
        if job_id is None:
            return
        self.hub.log(job_id).emit(dict(event))
        if event.get("type") == "progress" and (job_id in self._cancel or self._stop.is_set()):
            # Also on shutdown: the rendering thread would otherwise finish the whole plan before the process exits.
            raise asyncio.CancelledError(f"job {job_id} was cancelled")

    def status_event(self, job_id: str, status: str, **extra: Any) -> None:
        """Record a job's new status in its event log."""
        self.hub.log(job_id).emit({"type": "status", "status": status, **extra})

    # ----- cancelling -------------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel a job: ``cancelled`` (it was queued), ``cancelling`` (it runs: it stops as soon as it can) or its
        status unchanged (it had finished)."""
        if self.current == job_id:
            self._cancel.add(job_id)
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._cancel_later, job_id)
            return "cancelling"
        if self.queue.cancel_queued(job_id):
            job = self.queue.get(job_id)
            if job is not None and job.status != "cancelled":  # a queued revision of a finished job
                self.queue.set_job(job_id, status="cancelled", finished=_now())
            self.status_event(job_id, "cancelled")
            return "cancelled"
        job = self.queue.get(job_id)
        return job.status if job else "unknown"

    def _cancel_later(self, job_id: str) -> None:
        loop = self._loop
        assert loop is not None

        def fire() -> None:
            if self.current == job_id and self._task is not None and not self._task.done():
                self._task.cancel()

        loop.call_later(CANCEL_GRACE_S, fire)

    # ----- running a step ---------------------------------------------------------------------------------------
    async def _run(self, step: Step) -> None:
        job = self.queue.get(step.job_id)
        if job is None or job.status == "cancelled":
            self.queue.set_step(step.id, status="cancelled")
            return
        self.current = job.id
        self._cancel.discard(job.id)
        self.queue.set_step(step.id, status="running")
        self.queue.set_job(job.id, status="running", started=job.started or _now(), error=None)
        self.status_event(job.id, "running", step=step.kind, resumed=step.resumed)
        run_dir = self.jobs_dir / job.id / RUN_DIR
        log = self.hub.log(job.id)
        task = asyncio.ensure_future(self._do(job, step, run_dir))
        self._task = task
        watcher = asyncio.ensure_future(self._watch_previews(run_dir, log))
        status, error = "done", None
        try:
            await task
        except asyncio.CancelledError:
            if self._stop.is_set():  # shutting down: the step stays "running"; the next start resumes it
                self.current = None
                watcher.cancel()
                return
            status, error = "cancelled", "cancelled by a request"
        except BaseException as err:  # noqa: BLE001 - a failed job is recorded, the worker goes on
            if job.id in self._cancel:
                status, error = "cancelled", "cancelled by a request"
            else:
                status, error = "failed", first_line(err)
                logger.warning("job %s failed: %s", job.id, error)
        finally:
            watcher.cancel()
            self._task = None
        await asyncio.to_thread(emit_previews, run_dir, log)
        self.queue.set_step(step.id, status=status, error=error)
        self.queue.set_job(job.id, status=status, finished=_now(), error=error)
        self.current = None
        self._cancel.discard(job.id)
        self.status_event(job.id, status, **({"error": error} if error else {}))

    async def _watch_previews(self, run_dir: Path, log: EventLog) -> None:
        while True:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(emit_previews, run_dir, log)

    async def _do(self, job: Job, step: Step, run_dir: Path) -> None:
        from openmora.chat import ChatSession
        from openmora.quality.gate import GateSettings

        orch = self.orch
        profile = orch.profile
        # The job's takes per rendering step; one worker, one job at a time: setting it here is safe.
        orch.gate = GateSettings(
            best_of=job.best_of,
            per_tool=dict(profile.best_of),
            min_quality=profile.min_quality,
            max_retakes=profile.max_retakes,
        )
        resumable = (run_dir / "manifest.json").is_file() and (run_dir / "plan_state.json").is_file()
        session: Any = None
        try:
            if step.kind == "start":
                if resumable:
                    session = await ChatSession.resume(orch, run_dir)
                    return
                if run_dir.exists():  # the server died before the plan was saved: nothing there is reusable
                    shutil.rmtree(run_dir)
                job_dir = self.jobs_dir / job.id
                image = next((job_dir / i["path"] for i in job.inputs if i["kind"] == "image"), None)
                videos = [job_dir / i["path"] for i in job.inputs if i["kind"] == "video"]
                session = ChatSession(orch)
                await session.start(
                    job.task,
                    prompt=job.prompt,
                    image=image,
                    videos=videos,
                    seed=job.seed,
                    segments=job.segments,
                    out=run_dir,
                )
                return
            # A revision: reopen the run folder (finishing anything left), then revise, unless an earlier server
            # had begun this revision before it died (the plan state's request number moved on): then the resume
            # finished it.
            state = read_json(run_dir / "plan_state.json") or {}
            before = int(state.get("request", 0))
            began = step.resumed and step.request is not None and before > step.request
            session = await ChatSession.resume(orch, run_dir)
            if not began:
                self.queue.set_step(step.id, request=before)
                await session.revise(step.text or "")
        finally:
            if session is not None:
                await asyncio.to_thread(session.close)


def job_finished(job: Job) -> bool:
    """Whether the job has nothing queued or running."""
    return job.status in FINISHED_STATUSES
