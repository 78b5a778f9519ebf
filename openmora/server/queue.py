"""The server's persistent job queue: one SQLite file (``DATA/jobs.sqlite3``, WAL mode) that survives a restart.

A *job* is one run folder; its *steps* are the requests made on it: the first (``start``), then each revision
(``revise``). The worker's slots take the oldest queued step of a job that has none running; taking one is a
transaction (:meth:`JobQueue.take_step`, :meth:`JobQueue.claim`), so two slots never get the same step. Every write
goes through one connection under one lock (one writer); readers see a consistent state thanks to WAL.

| table | holds |
|---|---|
| ``jobs`` | ``id``, ``status`` (queued, running, done, failed, cancelled), the request's fields, times, ``error`` |
| ``steps`` | ``id`` (order), ``job_id``, ``kind`` (start, revise), ``text`` (a revision's words), ``status``, ``request`` |
| ``state`` | ``paused``: whether the worker takes new steps |

Example:
    >>> import tempfile, pathlib
    >>> q = JobQueue(pathlib.Path(tempfile.mkdtemp()) / "jobs.sqlite3")
    >>> job = q.add_job("text-to-video", prompt="a fox", seed=0, segments=None, best_of=1, inputs=[])
    >>> q.get(job.id).status, q.next_step().kind
    ('queued', 'start')
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
# A job in one of these has nothing left to do until someone sends it a revision.
FINISHED_STATUSES = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    task TEXT NOT NULL,
    prompt TEXT,
    seed INTEGER NOT NULL,
    segments INTEGER,
    best_of INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    kind TEXT NOT NULL,
    text TEXT,
    status TEXT NOT NULL,
    request INTEGER,
    resumed INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# The oldest queued step whose job has no step running: one job's steps run one after another, on one slot.
_NEXT = (
    "SELECT * FROM steps WHERE status = 'queued' AND job_id NOT IN "
    "(SELECT job_id FROM steps WHERE status = 'running') ORDER BY id LIMIT 1"
)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class Step:
    """One request on a job: the first (``start``) or a revision (``revise``, with its ``text``)."""

    id: int
    job_id: str
    kind: str
    text: str | None
    status: str
    request: int | None  # a revision: the plan state's request number before it began (None: not begun)
    resumed: bool  # the server died while it ran: it continues from the run folder
    created: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """The step as the API shows it."""
        return {
            "kind": self.kind,
            "text": self.text,
            "status": self.status,
            "created": self.created,
            "error": self.error,
        }


@dataclass
class Job:
    """One job: the request's fields, its status and times; ``inputs`` are ``{"kind", "path"}`` (path relative to
    the job folder)."""

    id: str
    seq: int
    status: str
    task: str
    prompt: str | None
    seed: int
    segments: int | None
    best_of: int
    inputs: list[dict[str, str]]
    created: str
    started: str | None
    finished: str | None
    error: str | None
    steps: list[Step] = field(default_factory=list)


class JobQueue:
    """The jobs and their steps in SQLite; thread-safe (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed job survives a process kill
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database (the queue is unusable afterwards)."""
        with self._lock:
            self._db.close()

    # ----- jobs -------------------------------------------------------------------------------------------------
    def add_job(
        self,
        task: str,
        *,
        prompt: str | None,
        seed: int,
        segments: int | None,
        best_of: int,
        inputs: list[dict[str, str]],
        job_id: str | None = None,
    ) -> Job:
        """A new queued job with its first step."""
        job_id = job_id or new_job_id()
        now = _now()
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "INSERT INTO jobs (id, seq, status, task, prompt, seed, segments, best_of, inputs, created) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, task, prompt, seed, segments, best_of, json.dumps(inputs), now),
            )
            db.execute(
                "INSERT INTO steps (job_id, kind, status, created) VALUES (?, 'start', 'queued', ?)", (job_id, now)
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def add_revision(self, job_id: str, text: str) -> None:
        """Queue a revision of a job (the caller checked that the job is done)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO steps (job_id, kind, text, status, created) VALUES (?, 'revise', ?, 'queued', ?)",
                (job_id, text, _now()),
            )
            db.execute("UPDATE jobs SET status = 'queued', error = NULL, finished = NULL WHERE id = ?", (job_id,))

    def get(self, job_id: str) -> Job | None:
        """The job and its steps, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            steps = self._db.execute("SELECT * FROM steps WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return _job(row, [_step(s) for s in steps])

    def jobs(self) -> list[Job]:
        """Every job, newest first (without their steps)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC").fetchall()
        return [_job(r, []) for r in rows]

    def set_job(self, job_id: str, **values: Any) -> None:
        """Update a job's columns (``status``, ``started``, ``finished``, ``error``)."""
        allowed = {"status", "started", "finished", "error"}
        if not values or set(values) - allowed:
            raise ValueError(f"set_job takes {', '.join(sorted(allowed))}, got {', '.join(values)}")
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    # ----- steps ------------------------------------------------------------------------------------------------
    def next_step(self) -> Step | None:
        """The oldest queued step of a job with no step running (None: none, or the queue is paused). It stays
        queued: :meth:`claim` (or :meth:`take_step`) hands it to one worker slot."""
        if self.paused:
            return None
        with self._lock:
            row = self._db.execute(_NEXT).fetchone()
        return _step(row) if row else None

    def claim(self, step_id: int) -> bool:
        """Mark a queued step ``running`` in one transaction; True for the one caller that got it (False: another
        slot took it first, it was cancelled, or another step of its job runs)."""
        with self._tx() as db:
            n = db.execute(
                "UPDATE steps SET status = 'running' WHERE id = ? AND status = 'queued' AND job_id NOT IN "
                "(SELECT job_id FROM steps WHERE status = 'running')",
                (step_id,),
            ).rowcount
        return n == 1

    def take_step(self) -> Step | None:
        """:meth:`next_step` and :meth:`claim` in one transaction: the step returned is ``running`` and no other
        caller gets it (None: nothing to take, or the queue is paused)."""
        if self.paused:
            return None
        with self._tx() as db:
            row = db.execute(_NEXT).fetchone()
            if row is None:
                return None
            db.execute("UPDATE steps SET status = 'running' WHERE id = ?", (row["id"],))
        step = _step(row)
        step.status = "running"
        return step

    def set_step(self, step_id: int, **values: Any) -> None:
        """Update a step's columns (``status``, ``error``, ``request``, ``resumed``)."""
        allowed = {"status", "error", "request", "resumed"}
        if not values or set(values) - allowed:
            raise ValueError(f"set_step takes {', '.join(sorted(allowed))}, got {', '.join(values)}")
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE steps SET {cols} WHERE id = ?", (*values.values(), step_id))

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job's queued steps, and the job if it is queued; True if something was cancelled."""
        with self._tx() as db:
            n = db.execute(
                "UPDATE steps SET status = 'cancelled' WHERE job_id = ? AND status = 'queued'", (job_id,)
            ).rowcount
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                (_now(), job_id),
            )
        return n > 0

    def recover(self) -> list[str]:
        """After a restart: every step that was running when the server died is queued again, marked resumed (the
        worker continues it from the run folder). Returns the ids of those jobs."""
        with self._tx() as db:
            rows = db.execute("SELECT id, job_id FROM steps WHERE status = 'running'").fetchall()
            for row in rows:
                db.execute("UPDATE steps SET status = 'queued', resumed = 1 WHERE id = ?", (row["id"],))
                db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (row["job_id"],))
        return [r["job_id"] for r in rows]

    def queued_job_ids(self) -> list[str]:
        """The jobs with a queued step, in the order the worker takes them."""
        with self._lock:
            rows = self._db.execute("SELECT job_id FROM steps WHERE status = 'queued' ORDER BY id").fetchall()
        seen: dict[str, None] = {}
        for r in rows:
            seen.setdefault(r["job_id"], None)
        return list(seen)

    # ----- pause ------------------------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        """Whether the worker takes new steps (a running one always finishes)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = 'paused'").fetchone()
        return bool(row and row["value"] == "1")

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the queue (kept across restarts)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO state (key, value) VALUES ('paused', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                ("1" if paused else "0",),
            )


def new_job_id() -> str:
    """A fresh job id: 12 lowercase hex digits (safe in paths and URLs)."""
    return uuid.uuid4().hex[:12]


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the form of a job id (checked before it names a folder)."""
    return len(text) == 12 and all(c in "0123456789abcdef" for c in text)


def _job(row: sqlite3.Row, steps: list[Step]) -> Job:
    return Job(
        id=row["id"],
        seq=row["seq"],
        status=row["status"],
        task=row["task"],
        prompt=row["prompt"],
        seed=row["seed"],
        segments=row["segments"],
        best_of=row["best_of"],
        inputs=json.loads(row["inputs"]),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        error=row["error"],
        steps=steps,
    )


def _step(row: sqlite3.Row) -> Step:
    return Step(
        id=row["id"],
        job_id=row["job_id"],
        kind=row["kind"],
        text=row["text"],
        status=row["status"],
        request=row["request"],
        resumed=bool(row["resumed"]),
        created=row["created"],
        error=row["error"],
    )
