"""What the server does with a job: its folder, its event log (replayed, then live), previews, and the worker that
runs job steps on orchestrators whose pipelines stay loaded (several jobs at once in slots of this process, or on
Ray job actors; see :class:`Worker`).

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
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from openmora.errors import first_line
from openmora.server.queue import FINISHED_STATUSES, Job, JobQueue, Step

if TYPE_CHECKING:
    import numpy as np

    from openmora.engine import Orchestrator

logger = logging.getLogger("openmora.server")

EVENTS_FILE = "events.jsonl"
RUN_DIR = "run"
INPUTS_DIR = "inputs"
PREVIEW_PX = 160  # a preview thumbnail's longer side
# Progress events recorded per second per job, at most: denoising steps can come faster than anyone watches them,
# and each recorded event is a line written and a message to every listener (see EventLog).
PROGRESS_PER_S = 10.0
# Seconds a running job has, after a cancel, to stop at its next denoising step before its task is cancelled.
CANCEL_GRACE_S = 3.0


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ----- events -------------------------------------------------------------------------------------------------------
def _stage(event: dict[str, Any]) -> tuple[Any, Any]:
    return event.get("stage"), event.get("role")


def _may_have_made(record: dict[str, Any]) -> bool:
    """Whether an artifact may have been made or written: a clip's encoding started or ended, a tool call ended."""
    if record.get("type") == "encode":
        return True
    return record.get("type") == "transcript" and (record.get("event") or {}).get("type") == "tool_call"


def _cut_torn_tail(path: Path) -> None:
    """End the file with a whole line: a last line without its newline (the process was killed while writing it)
    is cut off, or given its newline if it is a whole record, so the next line appended starts clean."""
    try:
        f = open(path, "rb+")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos, cut = end, 0
        while pos > 0:
            start = max(0, pos - (1 << 16))
            f.seek(start)
            found = f.read(pos - start).rfind(b"\n")
            if found >= 0:
                cut = start + found + 1
                break
            pos = start
        f.seek(cut)
        try:
            json.loads(f.read().decode("utf-8"))
        except ValueError:
            f.truncate(cut)
        else:
            f.write(b"\n")


class EventLog:
    """One job's ``events.jsonl``: appended from any thread, read back in full, and pushed to live listeners.

    Progress events (one a denoising step) are coalesced: at most ``progress_per_s`` a second are recorded. One
    that comes sooner is held back, replaced by a newer one of its stage, and recorded when its turn comes or
    before any other event; so the last progress of every stage is kept, and every other event is recorded, in
    order. Lines go through one open file, flushed with each write (after a kill -9 the file holds every event
    recorded; at most a held progress event is lost). The file is open while the job runs and closed after any
    other status. A torn last line left by a killed process is cut off when the log is opened.

    Example:
        >>> import tempfile
        >>> log = EventLog(Path(tempfile.mkdtemp()) / "events.jsonl")
        >>> [log.emit({"type": "progress", "stage": "s", "step": i, "total": 9}) is None for i in range(3)]
        [False, True, True]
        >>> log.emit({"type": "status", "status": "done"})["seq"]  # the held step 2 was recorded first
        3
        >>> [(r["seq"], r.get("step")) for r in log.read()]
        [(1, 0), (2, 2), (3, None)]
    """

    def __init__(self, path: Path, progress_per_s: float = PROGRESS_PER_S, previewer: Previewer | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._file: TextIO | None = None
        self._gap = 1.0 / progress_per_s if progress_per_s > 0 else 0.0
        self._last_progress_at = float("-inf")  # time.monotonic() of the last progress recorded
        self._held: dict[str, Any] | None = None  # a progress event waiting for its turn
        self._timer: threading.Timer | None = None
        self._previewer = previewer
        self.preview_lock = threading.Lock()  # one preview pass at a time (emit_previews)
        self.thumbnails: dict[str, str] = {}  # artifact id -> preview made from its pixels, until it is sent
        self.seq = 0
        self.last_progress: dict[str, Any] | None = None
        self.previewed: set[str] = set()
        _cut_torn_tail(path)
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

    def emit(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Record an event (it gets the next ``seq``) and push it to the listeners; returns the record, or None for
        a progress event held back (see the class)."""
        now = time.monotonic()
        batch: list[dict[str, Any]] = []
        with self._lock:
            held, self._held = self._held, None
            if event.get("type") != "progress":
                batch = [held, event] if held is not None else [event]
            elif held is not None and _stage(held) != _stage(event):
                batch = [held, event]  # the last step of the stage before is kept
            elif now < self._last_progress_at + self._gap:
                self._held = event  # replaces an older held one of the same stage
                if self._timer is None:
                    self._timer = threading.Timer(self._last_progress_at + self._gap - now, self._release)
                    self._timer.daemon = True
                    self._timer.start()
                return None
            else:
                batch = [event]
            records, listeners = self._record(batch, now)
        self._push(records, listeners)
        return records[-1]

    def _release(self) -> None:
        """The timer's end: record the held progress event, if any (and if its turn has come)."""
        now = time.monotonic()
        with self._lock:
            self._timer = None
            if self._held is None:
                return
            if now < self._last_progress_at + self._gap:  # a progress was recorded meanwhile: wait again
                self._timer = threading.Timer(self._last_progress_at + self._gap - now, self._release)
                self._timer.daemon = True
                self._timer.start()
                return
            held, self._held = self._held, None
            records, listeners = self._record([held], now)
        self._push(records, listeners)

    def _record(
        self, batch: list[dict[str, Any]], now: float
    ) -> tuple[list[dict[str, Any]], list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]]:
        """Number the events and write them in one flush (the caller holds the lock)."""
        records = []
        for event in batch:
            self.seq += 1
            record = {"seq": self.seq, **event}
            records.append(record)
            self._note(record)
            if record.get("type") == "progress":
                self._last_progress_at = now
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while the job runs
        self._file.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        self._file.flush()
        if any(r.get("type") == "status" and r.get("status") != "running" for r in records):
            self._close_file()
        return records, list(self._listeners)

    def _push(
        self, records: list[dict[str, Any]], listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]
    ) -> None:
        for record in records:
            for loop, queue in listeners:
                with contextlib.suppress(RuntimeError):  # that listener's loop has closed
                    loop.call_soon_threadsafe(queue.put_nowait, record)
        if self._previewer is not None and any(_may_have_made(r) for r in records):
            self._previewer.ask(self)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Record a held progress event and close the file (the log can still be appended to: it reopens)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            held, self._held = self._held, None
            records, listeners = self._record([held], time.monotonic()) if held is not None else ([], [])
            self._close_file()
        self._push(records, listeners)

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
    """The event logs of every job, one :class:`EventLog` per job folder, shared by the API and the worker, and
    the :class:`Previewer` that makes their previews."""

    def __init__(self, jobs_dir: Path, progress_per_s: float = PROGRESS_PER_S) -> None:
        self.jobs_dir = jobs_dir
        self.progress_per_s = progress_per_s
        self.previewer = Previewer()
        self._logs: dict[str, EventLog] = {}
        self._lock = threading.Lock()

    def log(self, job_id: str) -> EventLog:
        """The job's event log (opened on first use)."""
        with self._lock:
            if job_id not in self._logs:
                path = self.jobs_dir / job_id / EVENTS_FILE
                self._logs[job_id] = EventLog(path, self.progress_per_s, self.previewer)
            return self._logs[job_id]


# ----- previews -----------------------------------------------------------------------------------------------------
class Previewer:
    """Makes the previews of jobs' new artifacts (:func:`emit_previews`) on its own thread, when a job's events say
    one may be ready (a clip's encoding started or ended, a tool call was recorded): the rendering thread only asks.
    The thread ends after :attr:`idle_s` without a request and starts again on the next one."""

    idle_s = 5.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked: dict[int, EventLog] = {}  # in the order asked; a log asked twice before its pass runs once
        self._thread: threading.Thread | None = None

    def ask(self, log: EventLog) -> None:
        """Run a preview pass over ``log``'s run folder soon."""
        with self._cond:
            self._asked.setdefault(id(log), log)
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="openmora-previews", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _main(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._asked), self.idle_s):
                    self._thread = None
                    return
                log = self._asked.pop(next(iter(self._asked)))
            try:
                emit_previews(log.path.parent / RUN_DIR, log)
            except Exception as err:  # noqa: BLE001 - a preview is a nicety; the job goes on
                logger.warning("previews of %s failed: %s", log.path.parent.name, first_line(err))


def thumbnail_of(pixels: np.ndarray, size: int = PREVIEW_PX) -> str:
    """A PNG data URI of an RGB ``uint8`` picture ``(H, W, 3)``, at most ``size`` px on its longer side.

    Example:
        >>> import numpy as np
        >>> thumbnail_of(np.zeros((64, 96, 3), np.uint8)).startswith("data:image/png;base64,")
        True
    """
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    picture.thumbnail((size, size))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_data_uri(path: Path, kind: str, size: int = PREVIEW_PX) -> str:
    """:func:`thumbnail_of` an image file, or of a clip's first frame (decoded from its file by ffmpeg)."""
    import numpy as np
    from PIL import Image

    if kind == "image":
        with Image.open(path) as im:
            return thumbnail_of(np.asarray(im.convert("RGB")), size)
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        first = next(reader)
    finally:
        reader.close()
    return thumbnail_of(np.frombuffer(first, np.uint8).reshape(height, width, 3), size)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written atomically by the run (manifest, plan state, scores), or None if absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def emit_previews(run_dir: Path, log: EventLog) -> int:
    """A ``preview`` event for each artifact of the run folder's manifest that has none yet; returns how many.

    While the run's store is open in this process, a preview is made from the pixels it holds (an image, a clip's
    first frame) as soon as they are there, and sent once the artifact's file is on disk (in the manifest). Only an
    artifact whose pixels are not in memory (a job resumed after a restart) is decoded from its file.
    """
    from openmora.artifacts import open_store

    with log.preview_lock:
        store = open_store(run_dir)
        if store is not None:
            for made in store.artifacts():
                if made.id in log.previewed or made.id in log.thumbnails:
                    continue
                pixels = store.first_pixels(made.id)
                if pixels is not None:
                    log.thumbnails[made.id] = thumbnail_of(pixels)
        manifest = read_json(run_dir / "manifest.json") or {}
        n = 0
        for art in manifest.get("artifacts", []):
            art_id = str(art.get("id"))
            if art_id in log.previewed:
                continue
            path = (run_dir / str(art.get("path", ""))).resolve()
            if run_dir.resolve() not in path.parents or not path.is_file():
                continue
            uri = log.thumbnails.pop(art_id, None)
            if uri is None:
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
class _Slot:
    """One place a job step runs: an orchestrator of this process, or a Ray job actor."""

    def __init__(self, index: int, orch: Orchestrator | None = None, actor: Any = None, name: str = "") -> None:
        self.index = index
        self.orch = orch
        self.actor = actor
        self.name = name or f"slot {index}"
        self.job_id: str | None = None  # the job it runs now


class _ActorDied(Exception):
    """The Ray actor running a job step died (the step is queued again and resumes from its run folder)."""


# How often the worker fetches a running actor's events; how many times a job step whose actor died is queued again.
ACTOR_POLL_S = 0.25
ACTOR_RETRIES = 2


class Worker:
    """Runs queued job steps in its own thread and event loop: in ``slots`` orchestrators of this process, or on
    Ray job actors (``ray``), one step per slot at a time.

    Its own loop keeps the API responsive: a run does blocking work (scoring, the report, writes) on the loop that
    runs it. Cancelling a running job makes its next denoising step raise ``CancelledError`` in the rendering
    thread (the run then stops where ChatSession records an interruption); a job in this process that does not
    reach one within :data:`CANCEL_GRACE_S` has its task cancelled. On an actor the cancel is sent to the actor.

    Slots of this process each have their own orchestrator (the job's takes, its event sink, its session), built on
    one runtime: the pipelines are loaded once and shared, each pipeline call holding that pipeline's lock
    (``Runtime.using``), so two jobs take turns on one pipeline and overlap on different ones. With ``ray`` a job
    step goes to a free actor (:class:`openmora.scale_jobs.JobWorker`); a story's step waits for every actor, runs
    here on ``orchestrator`` and sends its shots to them. A step whose actor died is queued again (it resumes from
    its plan state, reusing what was made), at most :data:`ACTOR_RETRIES` times.

    Args:
        queue, hub, jobs_dir: the job queue, the event logs, the folder of the jobs' folders.
        orchestrator: the first slot's orchestrator (with ``ray``: the one that runs stories).
        slots: how many jobs at once in this process (ignored with ``ray``: one per actor).
        ray: the job actors (:class:`openmora.scale_jobs.RayJobs`), started on the first step.
    """

    def __init__(
        self,
        queue: JobQueue,
        hub: EventHub,
        jobs_dir: Path,
        orchestrator: Orchestrator,
        *,
        slots: int = 1,
        ray: Any = None,
    ) -> None:
        self.queue = queue
        self.hub = hub
        self.jobs_dir = jobs_dir
        self.orch = orchestrator
        self.ray = ray
        self._local = _Slot(0, orchestrator)
        self._bind(self._local)
        self._slots: list[_Slot] = []
        if ray is None:
            self._slots = [self._local] + [_Slot(i, self._sibling(orchestrator)) for i in range(1, max(1, slots))]
            for slot in self._slots[1:]:
                self._bind(slot)
        self.started: dict[str, float] = {}  # running job id -> time.time() it started, in the order they started
        self._inner: dict[str, asyncio.Future] = {}  # running job id -> the task running its step
        self._runners: dict[str, _Slot] = {}  # running job id -> the slot that runs it
        self._cancel: set[str] = set()
        self._deaths: dict[int, int] = {}  # step id -> how many actors died running it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def n_slots(self) -> int:
        """How many job steps run at once (Ray: the actors', once started, else what was asked)."""
        if self.ray is not None:
            return len(self._slots) or (self.ray.n_actors or 0)
        return len(self._slots)

    @property
    def current(self) -> str | None:
        """The running job that started first (None: none runs)."""
        return next(iter(self.started), None)

    @property
    def running_jobs(self) -> list[str]:
        """Every running job, in the order they started."""
        return list(self.started)

    @staticmethod
    def _sibling(orch: Orchestrator) -> Orchestrator:
        from openmora.engine import Orchestrator

        other = Orchestrator(
            profile=orch.profile,
            llm=orch.llm,
            runs_dir=orch.runs_dir,
            max_turns=orch.max_turns,
            runtime=orch.runtime,
            report=orch.report,
        )
        other.story_overlap = orch.story_overlap
        other.gate = orch.gate  # the server's takes and quality gate, for every slot
        return other

    def _bind(self, slot: _Slot) -> None:
        assert slot.orch is not None
        slot.orch.on_event = lambda event: self._on_event(slot, event)

    # ----- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="openmora-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking steps; running steps are interrupted and stay ``running`` in the queue, so that the next
        start of the server resumes them from their run folders. Ray's job actors end."""
        self._stop.set()
        self._wake.set()
        loop = self._loop
        if loop is not None:
            for task in list(self._inner.values()):
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
        if self.ray is not None:
            with contextlib.suppress(Exception):
                self.ray.shutdown()

    def wake(self) -> None:
        """A step was queued or the queue resumed: look now."""
        self._wake.set()

    def _main(self) -> None:
        asyncio.run(self._loop_main())

    async def _loop_main(self) -> None:
        self._loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        while not self._stop.is_set():
            task = await self._dispatch()
            if task is None:
                self._wake.clear()
                await asyncio.to_thread(self._wake.wait, 0.5)
                continue
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self) -> asyncio.Task | None:
        """Take the next step for a free slot and start it; None when there is nothing to start now."""
        if self.ray is not None and not self._slots:
            step = self.queue.next_step()
            if step is None:
                return None
            try:
                names = await asyncio.to_thread(self.ray.start)
            except Exception as err:  # noqa: BLE001 - no cluster, no actors: the step fails, saying why
                if self.queue.claim(step.id):
                    self._fail(step, first_line(err))
                return None
            actors = list(self.ray.actors)
            self._slots = [_Slot(i, actor=a, name=n) for i, (a, n) in enumerate(zip(actors, names, strict=True))]
            self.orch.ray_shots = self.ray.shots()  # a story here sends its shots to the same actors
        free = [s for s in self._slots if s.job_id is None]
        if not free:
            return None
        if self.ray is None:
            step = self.queue.take_step()
            if step is None:
                return None
            job = self.queue.get(step.job_id)
            slots = [free[0]]
            runner = free[0]
        else:
            step = self.queue.next_step()
            if step is None:
                return None
            job = self.queue.get(step.job_id)
            story = job is not None and job.task == "story"
            if story and len(free) < len(self._slots):
                return None  # a story's shots go to every actor: it waits for all of them
            if not self.queue.claim(step.id):
                return None
            slots = free if story else [free[0]]
            runner = self._local if story else free[0]
        if job is None or job.status == "cancelled":
            self.queue.set_step(step.id, status="cancelled")
            self._wake.set()
            return None
        for slot in {id(s): s for s in [*slots, runner]}.values():
            slot.job_id = job.id
        self.started[job.id] = time.time()
        self._runners[job.id] = runner
        return asyncio.ensure_future(self._run(job, step, runner, slots))

    def _fail(self, step: Step, error: str) -> None:
        logger.warning("job %s failed: %s", step.job_id, error)
        self.queue.set_step(step.id, status="failed", error=error)
        self.queue.set_job(step.job_id, status="failed", finished=_now(), error=error)
        self.status_event(step.job_id, "failed", error=error)

    # ----- events -----------------------------------------------------------------------------------------------
    def _on_event(self, slot: _Slot, event: Any) -> None:
        """A slot's orchestrator's sink: its job's events go to the job's log. A cancelled job (or every job, once
        the server stops) stops at its next denoising step (these come from the rendering thread)."""
        job_id = slot.job_id
        if job_id is None:
            return
        self.hub.log(job_id).emit(dict(event))
        if event.get("type") == "progress" and (job_id in self._cancel or self._stop.is_set()):
            # Also on shutdown: the rendering thread would otherwise finish the whole plan before the process exits.
            raise asyncio.CancelledError(f"job {job_id} was cancelled")

    def status_event(self, job_id: str, status: str, **extra: Any) -> None:
        """Record a job's new status in its event log (with ``time``: seconds since the epoch)."""
        self.hub.log(job_id).emit({"type": "status", "status": status, "time": round(time.time(), 3), **extra})

    # ----- cancelling -------------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel a job: ``cancelled`` (it was queued), ``cancelling`` (it runs: it stops as soon as it can) or its
        status unchanged (it had finished)."""
        if job_id in self.started:
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
        runner = self._runners.get(job_id)
        if runner is None or runner.actor is not None:
            return  # on an actor: the actor stops it (the worker cannot interrupt the actor's thread)

        def fire() -> None:
            task = self._inner.get(job_id)
            if task is not None and not task.done():
                task.cancel()

        loop.call_later(CANCEL_GRACE_S, fire)

    # ----- running a step ---------------------------------------------------------------------------------------
    async def _run(self, job: Job, step: Step, runner: _Slot, slots: list[_Slot]) -> None:
        self._cancel.discard(job.id)
        run_dir = self.jobs_dir / job.id / RUN_DIR
        log = self.hub.log(job.id)
        try:
            self.queue.set_job(job.id, status="running", started=job.started or _now(), error=None)
            began = self._revision_began(step, run_dir)
            where = {"actor": runner.name} if runner.actor is not None else {"slot": runner.index}
            self.status_event(job.id, "running", step=step.kind, resumed=step.resumed, **where)
            if runner.actor is not None:
                task = asyncio.ensure_future(self._on_actor(runner, job, step, run_dir, began))
            else:
                assert runner.orch is not None
                task = asyncio.ensure_future(
                    run_job_step(runner.orch, job, step, run_dir, self.jobs_dir / job.id, began)
                )
            self._inner[job.id] = task
            watcher = asyncio.ensure_future(self._watch_previews(run_dir, log))
            status, error = "done", None
            try:
                await task
            except asyncio.CancelledError:
                if self._stop.is_set():  # shutting down: the step stays "running"; the next start resumes it
                    return
                status, error = "cancelled", "cancelled by a request"
            except _ActorDied as err:
                self._deaths[step.id] = self._deaths.get(step.id, 0) + 1
                if self._stop.is_set():
                    return
                if self._deaths[step.id] <= ACTOR_RETRIES and job.id not in self._cancel:
                    logger.warning("job %s: %s; queued again", job.id, err)
                    self.queue.set_step(step.id, status="queued", resumed=1)
                    self.queue.set_job(job.id, status="queued")
                    self.status_event(job.id, "queued", resumed=True, error=str(err))
                    return
                status, error = "failed", str(err)
                if job.id in self._cancel:
                    status, error = "cancelled", "cancelled by a request"
            except BaseException as err:  # noqa: BLE001 - a failed job is recorded, the worker goes on
                if job.id in self._cancel:
                    status, error = "cancelled", "cancelled by a request"
                else:
                    status, error = "failed", first_line(err)
                    logger.warning("job %s failed: %s", job.id, error)
            finally:
                watcher.cancel()
            await asyncio.to_thread(emit_previews, run_dir, log)
            self.queue.set_step(step.id, status=status, error=error)
            self.queue.set_job(job.id, status=status, finished=_now(), error=error)
            self.status_event(job.id, status, **({"error": error} if error else {}))
        finally:
            for slot in {id(s): s for s in [*slots, runner]}.values():
                slot.job_id = None
            self.started.pop(job.id, None)
            self._inner.pop(job.id, None)
            self._runners.pop(job.id, None)
            self._cancel.discard(job.id)
            self._wake.set()

    def _revision_began(self, step: Step, run_dir: Path) -> bool:
        """A revision: whether an earlier server had begun it before it died (the plan state's request number moved
        on; the resume then finishes it). Otherwise the request number it starts from is kept with the step."""
        if step.kind != "revise":
            return False
        state = read_json(run_dir / "plan_state.json") or {}
        before = int(state.get("request", 0))
        began = step.resumed and step.request is not None and before > step.request
        if not began:
            self.queue.set_step(step.id, request=before)
        return bool(began)

    async def _on_actor(self, slot: _Slot, job: Job, step: Step, run_dir: Path, began: bool) -> None:
        """Run the step on the slot's actor, copying its events into the job's log as they come."""
        import uuid

        from openmora.errors import OpenMoraError

        ray = self.ray
        assert ray is not None
        actor, token = slot.actor, f"{job.id}-{step.id}-{uuid.uuid4().hex[:6]}"
        log = self.hub.log(job.id)
        after, told = 0, False

        def call(method: Any, *args: Any) -> asyncio.Future:
            return asyncio.wrap_future(method.remote(*args).future())

        result = call(actor.run_step, token, job, step, str(run_dir), str(self.jobs_dir / job.id), began)
        # Its error is read below, or not at all when an event poll saw the actor die first: never left unread.
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            while True:
                await asyncio.wait({result}, timeout=ACTOR_POLL_S)
                batch = await call(actor.events, token, after)
                for event in batch:
                    log.emit(event)
                after += len(batch)
                if job.id in self._cancel and not told:
                    actor.cancel.remote(token)
                    told = True
                if result.done():
                    break
            out = result.result()
        except asyncio.CancelledError:  # the server stops: so does the actor's run, at its next denoising step
            with contextlib.suppress(Exception):
                actor.cancel.remote(token)
                await asyncio.wait({result}, timeout=CANCEL_GRACE_S)
            raise
        except Exception as err:
            if _actor_gone(err):
                with contextlib.suppress(Exception):
                    slot.name = await asyncio.to_thread(ray.replace, slot.index)
                    slot.actor = ray.actors[slot.index]
                raise _ActorDied(f"the Ray actor running it died ({first_line(err)})") from err
            raise
        if out["status"] == "cancelled":
            raise asyncio.CancelledError(out["error"])
        if out["status"] == "failed":
            raise OpenMoraError(out["error"] or "the job failed on its Ray actor")

    async def _watch_previews(self, run_dir: Path, log: EventLog) -> None:
        while True:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(emit_previews, run_dir, log)


def _actor_gone(err: BaseException) -> bool:
    """Whether a Ray call failed because its actor died (killed, its node lost)."""
    try:
        from ray.exceptions import RayActorError
    except ImportError:
        return False
    return isinstance(err, RayActorError)


async def run_job_step(orch: Orchestrator, job: Job, step: Step, run_dir: Path, job_dir: Path, began: bool) -> None:
    """Run one job step on ``orch`` into ``run_dir``: the first request (or its resume from the plan state, when the
    run folder has one), or a revision (reopening the run folder, finishing anything left, then revising, unless
    ``began``: an earlier server had begun it, and the resume finished it). The worker calls it in its process, a
    Ray job actor in its own (:class:`openmora.scale_jobs.JobWorker`)."""
    from openmora.chat import ChatSession
    from openmora.quality.gate import GateSettings

    profile = orch.profile
    # The job's takes per rendering step; an orchestrator runs one job at a time: setting it here is safe.
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
        session = await ChatSession.resume(orch, run_dir)
        if not began:
            await session.revise(step.text or "")
    finally:
        if session is not None:
            await asyncio.to_thread(session.close)


def job_finished(job: Job) -> bool:
    """Whether the job has nothing queued or running."""
    return job.status in FINISHED_STATUSES
