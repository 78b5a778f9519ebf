"""``openmora serve``: the HTTP job API (FastAPI, served by uvicorn) over the persistent queue and one worker.

Every error is an HTTP 4xx with ``{"error": "<one line naming the problem and what is accepted>"}``. Files are
served only from inside a job's run folder. With a token, every request needs ``Authorization: Bearer TOKEN`` (or
the web page's session cookie; see :mod:`openmora.server.web`, which also serves the page at ``/``).
See README.md's "Server" section for the endpoints, with curl examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from openmora import __version__
from openmora.errors import InputError, first_line
from openmora.server import web
from openmora.server.jobs import (
    INPUTS_DIR,
    RUN_DIR,
    EventHub,
    Worker,
    job_finished,
    read_json,
)
from openmora.server.queue import FINISHED_STATUSES, Job, JobQueue, is_job_id, new_job_id
from openmora.settings import current

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8188
MAX_VIDEOS = 2
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
# The CLI's option names in the shared input checks' messages, as this API's field names.
_FIELD_NAMES = {
    "--prompt": "prompt",
    "--image": "image",
    "--video": "video",
    "--segments": "segments",
    "--seed": "seed",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ErrorOut(BaseModel):
    """Every 4xx response."""

    error: str = Field(description="one line: the problem and what is accepted")


class JobOut(BaseModel):
    """A job: its request, status, plan, last progress event, artifacts (the manifest's) and timings."""

    id: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    task: str
    prompt: str | None = None
    seed: int
    segments: int | None = None
    best_of: int
    inputs: list[str] = Field(default_factory=list, description="the uploads' kinds, in order")
    created: str
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    cancel: str | None = Field(default=None, description="after POST .../cancel: cancelled, cancelling, or the status")
    plan: dict[str, Any] | None = Field(default=None, description="the current plan and each step's status")
    progress: dict[str, Any] | None = Field(default=None, description="the last progress event")
    artifacts: list[dict[str, Any]] = Field(default_factory=list, description="the manifest's artifacts")
    timings: dict[str, float] | None = None
    final: str | None = Field(default=None, description="the URL of final.mp4 once there is one")
    files: list[str] = Field(default_factory=list, description="report.html, scores.json when they exist")
    steps: list[dict[str, Any]] = Field(default_factory=list, description="the first request, then each revision")


class JobList(BaseModel):
    """Every job, newest first (without plan, artifacts and steps)."""

    jobs: list[JobOut]


class QueueOut(BaseModel):
    """The queue: paused or not, the running jobs, the queued jobs in the order they will run."""

    paused: bool
    running: str | None  # the running job that started first (None: none runs)
    running_jobs: list[str] = []  # every running job, in the order they started (``serve --jobs N``, Ray actors)
    queued: list[str]


class MessageIn(BaseModel):
    """A revision of a finished job, in words ("extend it by two seconds", "make it darker")."""

    text: str


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 415)}


@dataclass
class _State:
    data_dir: Path
    jobs_dir: Path
    queue: JobQueue
    hub: EventHub
    worker: Worker
    max_upload_bytes: int


def _http(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _api_words(message: str) -> str:
    for flag, name in _FIELD_NAMES.items():
        message = message.replace(flag, name)
    return message


# ----- security -------------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Guard:
    """ASGI middleware: the bearer token (when set) on every request but the web page's own files and its login
    (the header, or the session cookie that ``POST /login`` sets), and an early 413 for a request body that is
    larger than every upload together may be (when the client says its length)."""

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and (scope.get("method"), scope.get("path")) not in web.PUBLIC:
            given = headers.get("authorization", "")
            header_ok = hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())
            # the web page's session cookie (POST /login): EventSource and <video> cannot send a header
            if not header_ok and not web.cookie_ok(headers.get("cookie", ""), self.token):
                response = JSONResponse(
                    {"error": "missing or wrong token: send the header 'Authorization: Bearer TOKEN'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            response = JSONResponse(
                {"error": f"the request is {int(length)} bytes; uploads of at most {self.max_body} bytes are accepted"},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def safe_path(root: Path, relative: str) -> Path:
    """The file ``relative`` names inside ``root``: 400 for an absolute path or one with ``..``, 404 for one that
    resolves outside ``root`` (a symlink pointing out) or is not a file."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise _http(400, f"file path {relative!r} must be relative to the run folder (like images/img-0001.png)")
    if any(part == ".." for part in relative.split("/")):
        raise _http(400, f"file path {relative!r} may not contain '..'; give a path inside the run folder")
    base = root.resolve()
    candidate = (base / relative).resolve()  # follows symlinks: a link that points out is caught below
    if base not in candidate.parents or not candidate.is_file():
        raise _http(404, f"no file {relative!r} in this job's run folder")
    return candidate


# ----- uploads --------------------------------------------------------------------------------------------------
def _image_type(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return None


async def _save_upload(upload: UploadFile, folder: Path, stem: str, limit: int) -> Path:
    """Copy an upload into ``folder`` (413 when over ``limit`` bytes)."""
    size = upload.size
    if size is not None and size > limit:
        raise _http(413, f"{stem} upload is {size} bytes; at most {limit} bytes are accepted")
    head = await upload.read(16)
    if stem == "image":
        suffix = _image_type(head)
        if suffix is None:
            raise _http(415, "the image upload is not a PNG, JPEG or WebP image (judged by its content)")
    else:
        name_suffix = Path(upload.filename or "").suffix.lower()
        suffix = name_suffix if name_suffix in _VIDEO_SUFFIXES else ".mp4"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{suffix}"
    written = len(head)
    with open(path, "wb") as f:
        f.write(head)
        while chunk := await upload.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise _http(413, f"{stem} upload is over {limit} bytes; at most {limit} bytes are accepted")
            f.write(chunk)
    return path


def _check_media(path: Path, kind: str, label: str) -> None:
    """Read an upload as OpenMora will (415 when it is not a usable image or video)."""
    from openmora.video_io import read_image, read_video_info

    try:
        if kind == "image":
            read_image(path)
        else:
            read_video_info(path)
    except InputError as err:
        raise _http(415, first_line(err).replace(str(path), f"the {label} upload")) from None


def _int_field(raw: str | None, name: str, default: int | None, minimum: int) -> int | None:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _http(400, f"{name} must be a whole number >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise _http(400, f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return value


# ----- job views ------------------------------------------------------------------------------------------------
def _plan_view(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if not state or "plan" not in state:
        return None
    plan, runs = state["plan"], state.get("runs", {})
    steps = [
        {
            "id": s["id"],
            "agent": s.get("agent"),
            "tool": s.get("tool"),
            "status": runs.get(s["id"], {}).get("status", "pending"),
            "outputs": runs.get(s["id"], {}).get("outputs", []),
        }
        for s in plan.get("steps", [])
    ]
    return {
        "request": state.get("request", 0),
        "source": plan.get("source"),
        "final": plan.get("final"),
        "steps": steps,
    }


def _job_view(st: _State, job: Job, full: bool = True) -> JobOut:
    out = JobOut(
        id=job.id,
        status=job.status,
        task=job.task,
        prompt=job.prompt,
        seed=job.seed,
        segments=job.segments,
        best_of=job.best_of,
        inputs=[i["kind"] for i in job.inputs],
        created=job.created,
        started=job.started,
        finished=job.finished,
        error=job.error,
    )
    run_dir = st.jobs_dir / job.id / RUN_DIR
    if (run_dir / "final.mp4").is_file():
        out.final = f"/jobs/{job.id}/final.mp4"
    if not full:
        return out
    manifest = read_json(run_dir / "manifest.json") or {}
    out.plan = _plan_view(read_json(run_dir / "plan_state.json"))
    out.progress = st.hub.log(job.id).last_progress
    out.artifacts = list(manifest.get("artifacts", []))
    timings = manifest.get("run", {}).get("timings")
    out.timings = timings if isinstance(timings, dict) else None
    out.files = [name for name in ("report.html", "scores.json") if (run_dir / name).is_file()]
    out.steps = [s.to_json() for s in job.steps]
    return out


def _sse(record: dict[str, Any]) -> str:
    data = json.dumps(record, ensure_ascii=False, default=str)
    return f"id: {record.get('seq', 0)}\nevent: {record.get('type', 'message')}\ndata: {data}\n\n"


# ----- the app --------------------------------------------------------------------------------------------------
def create_app(
    data_dir: str | Path,
    profile: str = "tiny",
    llm: str = "none",
    token: str | None = None,
    start_worker: bool = True,
    *,
    max_upload_bytes: int | None = None,
    report: bool = True,
    fast: bool = False,
    ray: str | None = None,
    jobs: int | None = None,
) -> FastAPI:
    """The API app over ``data_dir`` (``jobs.sqlite3``, ``jobs/<id>/``). Jobs that were running when a server on
    the same folder died are resumed from their run folders. ``start_worker=False``: jobs queue but none runs.

    ``max_upload_bytes``: the largest upload (default ``OPENMORA_MAX_UPLOAD_MB``, 200 MB). Bad ``profile``,
    ``llm``, ``ray`` or ``jobs`` raise :class:`InputError` here, before anything listens. ``ray``: run each job step
    on a Ray job actor, a story's shots on all of them (``local``: a cluster on this machine, or a cluster's
    address; see :mod:`openmora.scale_jobs`). ``jobs``: how many jobs run at once: without Ray, slots of this
    process (default: what the memory manager says fits, :func:`openmora.scale_jobs.concurrent_jobs`); with Ray,
    the actors (default: one per GPU, else per CPU, at most 4).
    """
    from openmora.engine import Orchestrator
    from openmora.scale_jobs import RayJobs, check_jobs, concurrent_jobs

    data = Path(data_dir)
    jobs_dir = data / "jobs"
    limit = max_upload_bytes if max_upload_bytes is not None else current().max_upload_mb * 2**20
    jobs = check_jobs(jobs)
    # the orchestrator first: a bad profile or LLM leaves no data folder behind
    orch = Orchestrator(profile=profile, llm=llm, runs_dir=jobs_dir, report=report, fast=fast)
    pool = RayJobs(orch.profile, llm=orch.llm, report=report, address=ray, actors=jobs) if ray else None
    slots = jobs or (1 if pool is not None else concurrent_jobs(orch.profile, orch.runtime))
    jobs_dir.mkdir(parents=True, exist_ok=True)
    uploads = data / "uploads"
    shutil.rmtree(uploads, ignore_errors=True)  # half-received uploads of a server that died
    queue = JobQueue(data / "jobs.sqlite3")
    hub = EventHub(jobs_dir)
    worker = Worker(queue, hub, jobs_dir, orch, slots=slots, ray=pool)
    for job_id in queue.recover():
        worker.status_event(job_id, "queued", resumed=True)
    st = _State(data, jobs_dir, queue, hub, worker, limit)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if start_worker:
            worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(
        title="OpenMora",
        version=__version__,
        description="Queue video jobs (Mora's tasks, stories, auto-planned requests), watch their events, download "
        "their videos, revise them in words.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.openmora = st
    app.add_middleware(_Guard, token=token, max_body=limit * (1 + MAX_VIDEOS) + (1 << 20))
    _docs(app)
    # The page's planner: the worker's profile and LLM, its own orchestrator (the worker sets its takes per job).
    web.add_web(app, Orchestrator(profile=profile, llm=llm, runs_dir=jobs_dir, report=report, fast=fast), token)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; see /docs or /openapi.json"
        elif exc.status_code == 405:
            detail = "method not allowed on this endpoint; see /docs or /openapi.json"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
        message = f"{where or 'request'}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": first_line(message)}, status_code=400)

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": _api_words(first_line(exc))}, status_code=400)

    def job_or_404(job_id: str) -> Job:
        job = queue.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise _http(404, f"no job {job_id!r}; GET /jobs lists them")
        return job

    @app.post("/jobs", status_code=201, response_model=JobOut, responses=_ERRORS)
    async def submit_job(
        task: str = Form("auto", description="auto, text-to-video, image-to-video, extend, edit, connect, ..."),
        prompt: str | None = Form(None),
        seed: str | None = Form(None, description="a whole number >= 0 (default 0)"),
        segments: str | None = Form(None, description="image-to-video segments (default: the profile's)"),
        best_of: str | None = Form(None, description="takes per rendering step (default 1)"),
        image: UploadFile | None = File(None, description="PNG, JPEG or WebP"),
        video: list[UploadFile] | None = File(None, description="up to two videos (MP4, MOV, WebM, AVI)"),
    ) -> JobOut:
        """Queue a job. Checked like the CLI's ``run`` before anything is kept: a bad request leaves nothing."""
        from openmora.group_chat.plans import check_task_inputs
        from openmora.quality.gate import check_best_of

        videos = [v for v in (video or []) if v.filename or v.size]
        if len(videos) > MAX_VIDEOS:
            raise _http(400, f"at most {MAX_VIDEOS} video uploads are accepted, got {len(videos)}")
        seed_v = _int_field(seed, "seed", 0, 0) or 0
        segments_v = _int_field(segments, "segments", None, 1)
        best_of_v = _int_field(best_of, "best_of", 1, 1) or 1
        prompt = prompt if prompt is None or prompt.strip() else None
        try:
            check_task_inputs(task, prompt, "image" if image is not None else None, videos, segments_v)
            check_best_of(best_of_v, "best_of")
        except InputError as err:
            raise _http(400, _api_words(first_line(err))) from None
        job_id = new_job_id()
        staging = uploads / job_id
        inputs: list[dict[str, str]] = []
        try:
            files: list[tuple[Path, str, str]] = []
            if image is not None:
                files.append((await _save_upload(image, staging, "image", limit), "image", "image"))
            for n, v in enumerate(videos, 1):
                files.append((await _save_upload(v, staging, f"video{n}", limit), "video", f"video {n}"))
            for path, kind, label in files:
                await asyncio.to_thread(_check_media, path, kind, label)
                inputs.append({"kind": kind, "path": f"{INPUTS_DIR}/{path.name}"})
            job_dir = jobs_dir / job_id
            job_dir.mkdir(parents=True)
            if files:
                staging.rename(job_dir / INPUTS_DIR)
            job = queue.add_job(
                task, prompt=prompt, seed=seed_v, segments=segments_v, best_of=best_of_v, inputs=inputs, job_id=job_id
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if queue.get(job_id) is None:
                shutil.rmtree(jobs_dir / job_id, ignore_errors=True)
            raise
        worker.status_event(job.id, "queued")
        worker.wake()
        return _job_view(st, job)

    @app.get("/jobs", response_model=JobList, responses=_ERRORS)
    def list_jobs() -> JobList:
        """Every job, newest first."""
        return JobList(jobs=[_job_view(st, j, full=False) for j in queue.jobs()])

    @app.get("/jobs/{job_id}", response_model=JobOut, responses=_ERRORS)
    def get_job(job_id: str) -> JobOut:
        """A job: status, plan (the run folder's plan state), last progress event, artifacts, timings, error."""
        return _job_view(st, job_or_404(job_id))

    @app.get(
        "/jobs/{job_id}/events",
        responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    )
    async def job_events(job_id: str, last_event_id: str | None = Header(None)) -> StreamingResponse:
        """The job's events as Server-Sent Events: every event so far (after ``Last-Event-ID``), then live ones, until
        the job has nothing queued or running. ``event:`` is the type (load, progress, encode, transcript, chat,
        preview, status); ``data:`` the event as JSON with its ``seq``."""
        job_or_404(job_id)
        log = hub.log(job_id)
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        live = log.subscribe()  # before reading the file: an event written meanwhile is in one or the other

        async def stream() -> AsyncIterator[str]:
            last, status = after, None
            try:
                for record in await asyncio.to_thread(log.read):
                    if record.get("type") == "status":
                        status = record.get("status")
                    if int(record.get("seq", 0)) > last:
                        last = int(record["seq"])
                        yield _sse(record)
                while True:
                    now = queue.get(job_id)
                    if now is None or (job_finished(now) and status in (None, *FINISHED_STATUSES)):
                        return
                    try:
                        record = await asyncio.wait_for(live.get(), 15.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if record.get("type") == "status":
                        status = record.get("status")
                    if int(record.get("seq", 0)) > last:
                        last = int(record["seq"])
                        yield _sse(record)
            finally:
                log.unsubscribe(live)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post("/jobs/{job_id}/messages", status_code=202, response_model=JobOut, responses=_ERRORS)
    def post_message(job_id: str, message: MessageIn) -> JobOut:
        """Revise a done job in words: queued as its next step, on the same run folder (only what the change touches
        re-runs). 409 unless the job is done."""
        from openmora.group_chat.plans import check_prompt_length

        job = job_or_404(job_id)
        if job.status != "done":
            raise _http(409, f"job {job_id} is {job.status}; only a done job takes a revision (wait for it)")
        text = message.text.strip()
        if not text:
            raise _http(400, "text is empty; say what to change (e.g. 'extend it by two seconds')")
        try:
            check_prompt_length(text, "text")
        except InputError as err:
            raise _http(400, first_line(err)) from None
        queue.add_revision(job_id, text)
        worker.status_event(job_id, "queued", step="revise")
        worker.wake()
        return _job_view(st, job_or_404(job_id))

    @app.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=_ERRORS)
    def cancel_job(job_id: str) -> JobOut:
        """Cancel a job: a queued one at once; a running one as soon as it can stop (its run folder stays
        consistent and resumable). 409 for a job that has finished."""
        job = job_or_404(job_id)
        if job_finished(job):
            raise _http(409, f"job {job_id} is {job.status}; only a queued or running job can be cancelled")
        outcome = worker.cancel(job_id)
        out = _job_view(st, job_or_404(job_id))
        out.cancel = outcome
        return out

    @app.get("/jobs/{job_id}/final.mp4", response_class=FileResponse, responses=_ERRORS)
    def final_video(job_id: str) -> FileResponse:
        """The job's final video (the latest request's); supports HTTP Range requests."""
        job_or_404(job_id)
        path = safe_path(jobs_dir / job_id / RUN_DIR, "final.mp4")
        return FileResponse(path, media_type="video/mp4")

    @app.get("/jobs/{job_id}/files/{path:path}", response_class=FileResponse, responses=_ERRORS)
    def job_file(job_id: str, path: str) -> FileResponse:
        """A file of the job's run folder (an artifact's ``path``, report.html, scores.json, manifest.json,
        transcript.jsonl); supports HTTP Range requests. Paths outside the run folder are refused."""
        job_or_404(job_id)
        return FileResponse(safe_path(jobs_dir / job_id / RUN_DIR, path))

    @app.get("/queue", response_model=QueueOut, responses=_ERRORS)
    def get_queue() -> QueueOut:
        """Whether the queue is paused, the running jobs, the queued ones in order."""
        return QueueOut(
            paused=queue.paused,
            running=worker.current,
            running_jobs=worker.running_jobs,
            queued=queue.queued_job_ids(),
        )

    @app.post("/queue/pause", response_model=QueueOut, responses=_ERRORS)
    def pause_queue() -> QueueOut:
        """Take no new job steps (a running one finishes); kept across restarts."""
        queue.set_paused(True)
        return get_queue()

    @app.post("/queue/resume", response_model=QueueOut, responses=_ERRORS)
    def resume_queue() -> QueueOut:
        """Take job steps again."""
        queue.set_paused(False)
        worker.wake()
        return get_queue()

    return app


def _docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the installed swagger-ui-bundle (offline); without it, FastAPI's CDN copy."""
    js = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
    css = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
    favicon = "https://fastapi.tiangolo.com/img/favicon.png"
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
        from fastapi.staticfiles import StaticFiles

        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")
        js, css, favicon = (
            "/docs-assets/swagger-ui-bundle.js",
            "/docs-assets/swagger-ui.css",
            "/docs-assets/favicon-32x32.png",
        )
    except ImportError:
        pass

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="OpenMora API",
            swagger_js_url=js,
            swagger_css_url=css,
            swagger_favicon_url=favicon,
        )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    profile: str = "tiny",
    llm: str = "none",
    data: str | Path | None = None,
    token: str | None = None,
    ray: str | None = None,
    jobs: int | None = None,
) -> int:
    """Run the server until interrupted (``openmora serve``). Returns the exit code: 2 for bad options (a
    non-loopback ``host`` without a token, a bad profile, ``jobs`` < 1), 0 after a clean shutdown."""
    import uvicorn

    token = token or current().api_token
    if not is_loopback(host) and not token:
        print(
            f"error: --host {host} is reachable from other machines; give --token TOKEN (or OPENMORA_API_TOKEN) so "
            "that every request must authenticate, or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if not 1 <= port <= 65535:
        print(f"error: --port must be from 1 to 65535, got {port}", file=sys.stderr)
        return 2
    data_dir = Path(data) if data else current().runs_dir / "server"
    try:
        app = create_app(data_dir, profile=profile, llm=llm, token=token, ray=ray, jobs=jobs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = app.state.openmora.worker.n_slots
    at_once = f"Ray {ray}, {jobs or 'one per GPU or CPU'} job actors" if ray else f"{n} job{'s' * (n > 1)} at once"
    print(
        f"openmora serve: http://{host}:{port} (profile {profile}, llm {llm}, data {data_dir}, {at_once}); the web "
        "page at /, API docs at /docs",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except OSError as err:  # the port is taken, the address is not this machine's
        print(f"error: cannot listen on {host}:{port}: {first_line(err)}", file=sys.stderr)
        return 2
    return 0
