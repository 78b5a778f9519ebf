"""Several jobs at once: whole job steps on Ray actors, or in slots of the server's process when the memory manager
says that they fit on its device.

With ``openmora serve --ray``, the worker (:class:`openmora.server.jobs.Worker`) hands each queued job step to a free
:class:`JobWorker` actor. An actor owns a GPU (or a CPU slot) and one :class:`~openmora.engine.Orchestrator` whose
pipelines stay loaded between jobs; it runs the step (a task, an auto-planned request, a revision) into the job's run
folder on the shared filesystem, as the worker would in its own process, and keeps the step's events for the worker
to fetch (:meth:`JobWorker.events`) while it runs. One actor runs one job step at a time; several actors, several
jobs. A story's step instead claims every actor and runs in the server's process, its shots on the actors
(:class:`openmora.scale.RayShots`, which :meth:`JobWorker.render_shot` serves), its transitions and join locally.

Without Ray, :func:`concurrent_jobs` is how many jobs the server runs at once on one device: the profile's estimated
weights once (the slots share one runtime's pipelines) plus one reserve per job, against the device's budget.

Example:
    >>> from openmora.profiles import load_profile
    >>> w, r = job_memory(load_profile("mora"))["cuda"]
    >>> jobs_that_fit(w, r, 24 * GB)  # one 24 GB GPU: the weights alone do not fit, one job at a time
    1
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmora.errors import InputError, OpenMoraError, first_line
from openmora.memory import (
    DEFAULT_WEIGHTS_GB,
    FALLBACK_WEIGHTS_GB,
    GB,
    card_budget_bytes,
    host_available_bytes,
    reserve_bytes,
)
from openmora.profiles import Profile
from openmora.scale import (
    LOCAL,
    RayShots,
    ShotWorker,
    actor_env,
    actor_name,
    actor_resources,
    check_actors,
    connect,
)

if TYPE_CHECKING:
    from openmora.runtime import Runtime
    from openmora.server.queue import Job, Step

logger = logging.getLogger(__name__)

# The embedded models (``model: tiny:...``, random weights, and ``toy:...``, trained) are a few MB each: the tiny profile's three roles of a
# text-to-video and a story job hold 12.6 MB of weights, and the two jobs grew the process by 0.31 GB, imports
# included (x86_64, 1 torch thread). The class-based figures of openmora.memory are for the full-size models.
TINY_WEIGHTS_BYTES = 8 * 2**20
TINY_RESERVE_BYTES = GB // 4
MAX_AUTO_JOBS = 4  # the most jobs at once that the default picks, however much memory there is
ACTOR_START_S = 120.0  # how long the actors have to come up (placed, constructed) before the server gives up
# Methods an actor may run at once: a job step, the worker's event polls, a cancel (one job at a time is the
# worker's rule, not the actor's).
ACTOR_CONCURRENCY = 4


def check_jobs(value: Any) -> int | None:
    """``--jobs``: None (decide) or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"--jobs must be a whole number >= 1 (jobs at once), got {value!r}")
    return value


# ----- how many jobs fit one device ---------------------------------------------------------------------------
def role_memory(cfg: Any) -> tuple[int, int]:
    """A role's ``(weights, reserve)`` in bytes, estimated before anything loads (refiner included)."""
    if str(cfg.model).startswith(("tiny:", "toy:")):
        return TINY_WEIGHTS_BYTES, TINY_RESERVE_BYTES
    weights = DEFAULT_WEIGHTS_GB.get(cfg.pipeline, FALLBACK_WEIGHTS_GB) * GB
    if cfg.refiner is not None:
        weights += DEFAULT_WEIGHTS_GB.get(cfg.refiner.pipeline, FALLBACK_WEIGHTS_GB) * GB
    return int(weights), reserve_bytes(cfg.pipeline, cfg.reserve_gb)


def job_memory(profile: Profile, devices: dict[str, str] | None = None) -> dict[str, tuple[int, int]]:
    """Per device type or name: the weights of the profile's roles placed there, and the largest reserve among them
    (what one more job needs while its biggest step runs). ``devices``: role -> device (default: the device type
    each role names, ``auto`` counted as ``cuda``)."""
    out: dict[str, tuple[int, int]] = {}
    for role, cfg in profile.roles.items():
        spec = (devices or {}).get(role) or cfg.device or profile.device
        device = "cuda" if spec == "auto" else spec
        weights, reserve = role_memory(cfg)
        w, r = out.get(device, (0, 0))
        out[device] = (w + weights, max(r, reserve))
    return out


def jobs_that_fit(weights: int, reserve: int, budget: int) -> int:
    """How many jobs at once fit a device's ``budget``: the pipelines' weights once, a reserve for each job; at least
    one (a profile too big for the device runs one job at a time, offloaded), at most :data:`MAX_AUTO_JOBS`."""
    if reserve <= 0:
        return MAX_AUTO_JOBS
    return int(max(1, min(MAX_AUTO_JOBS, (budget - weights) // reserve)))


def concurrent_jobs(profile: Profile, runtime: Runtime | None = None) -> int:
    """How many jobs the server runs at once in its process (``serve``'s ``--jobs`` default): on each device the
    profile uses, what fits its budget (the profile's ``vram_budget_gb``, else the card's memory less a margin; on
    the CPU the host's available memory), and on the CPU no more jobs than cores per torch thread count.

    The slots share one runtime: one copy of each pipeline, whose calls take turns (``Runtime.using``).
    """
    from openmora.loader import PipelineLoader
    from openmora.runtime import Runtime

    rt = runtime if runtime is not None else Runtime()
    loader = PipelineLoader(profile, runtime=rt)
    devices = {role: str(loader.device_for(role)) for role in profile.roles}
    n = MAX_AUTO_JOBS
    for device, (weights, reserve) in job_memory(profile, devices).items():
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" or profile.vram_budget_gb is not None:
            budget = card_budget_bytes(dev, profile.vram_budget_gb)
        else:
            budget = host_available_bytes() or 0
        n = min(n, jobs_that_fit(weights, reserve, budget))
        if dev.type == "cpu":
            threads = rt.settings.torch_threads or max(1, (os.cpu_count() or 2) // 2)
            n = min(n, max(1, (os.cpu_count() or 1) // threads))
    return max(1, n)


# ----- a job actor ----------------------------------------------------------------------------------------------
class JobWorker:
    """What a job actor runs: one orchestrator (pipelines loaded on first use and kept), one job step at a time.

    Args:
        profile: every job's profile (the server's, fast variant included).
        llm: the planner's LLM (as the server's ``--llm``).
        report: score each run and write its report, as the server does.
    """

    def __init__(self, profile: Profile, llm: str = "none", report: bool = True) -> None:
        from openmora.engine import Orchestrator

        self.orch = Orchestrator(profile=profile, llm=llm, report=report, on_event=self._on_event)
        self.name = actor_name()
        self._lock = threading.Lock()
        self._token: str | None = None  # the step running now (the worker's name for it)
        self._events: list[dict[str, Any]] = []
        self._cancel = threading.Event()
        self._shots: ShotWorker | None = None

    def whoami(self) -> str:
        """The actor's id (also a readiness check: it answers once the actor is constructed)."""
        return self.name

    def run_step(self, token: str, job: Job, step: Step, run_dir: str, job_dir: str, began: bool) -> dict[str, Any]:
        """Run one job step into ``run_dir`` (see :func:`openmora.server.jobs.run_job_step`); its events are kept
        under ``token`` for :meth:`events`. Returns ``{"status": done|cancelled|failed, "error", "actor", "start",
        "end"}``; it never raises, so that the worker can tell a failed job from a dead actor."""
        from openmora.server.jobs import run_job_step

        with self._lock:
            self._token, self._events = token, []
            self._cancel.clear()
        start = time.time()
        status, error = "done", None
        try:
            asyncio.run(run_job_step(self.orch, job, step, Path(run_dir), Path(job_dir), began))
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled by a request"
        except Exception as err:  # noqa: BLE001 - a failed job is reported, the actor goes on
            status, error = "failed", first_line(err)
        return {"status": status, "error": error, "actor": self.name, "start": start, "end": time.time()}

    def events(self, token: str, after: int = 0) -> list[dict[str, Any]]:
        """The events of step ``token`` from number ``after`` on (none if another step runs now)."""
        with self._lock:
            return list(self._events[after:]) if token == self._token else []

    def cancel(self, token: str) -> bool:
        """Stop step ``token`` at its next denoising step (its run folder stays resumable); False if it is not the
        step running."""
        with self._lock:
            if token != self._token:
                return False
            self._cancel.set()
            return True

    def render_shot(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """One shot of a story that the server runs (:meth:`openmora.scale.ShotWorker.render_shot`), on this
        actor's pipelines."""
        if self._shots is None:
            self._shots = ShotWorker(self.orch.profile, runtime=self.orch.runtime)
        return self._shots.render_shot(steps)

    def _on_event(self, event: Any) -> None:
        record = json.loads(json.dumps(dict(event), default=str))  # plain JSON: it crosses to the server
        with self._lock:
            self._events.append(record)
        if record.get("type") == "progress" and self._cancel.is_set():
            raise asyncio.CancelledError("the job was cancelled")


class RayJobs:
    """The job actors of a server: made on first use, one per GPU of the cluster (else one per CPU, at most 4).

    Args:
        profile, llm, report: what every actor's orchestrator gets (:class:`JobWorker`).
        address: a Ray cluster's address (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or ``local`` (start one on
            this machine, or use the one this process already started).
        actors: how many actors (``--jobs``); default: one per GPU, else per CPU, at most 4.
        env: the actors' environment variables (default :func:`openmora.scale.actor_env`).
        init: extra ``ray.init`` arguments.

    Example:
        >>> pool = RayJobs(load_profile("tiny"), actors=2)  # doctest: +SKIP
        >>> pool.start()  # doctest: +SKIP
        ['9c1f...', '4be0...']
    """

    def __init__(
        self,
        profile: Profile,
        llm: str = "none",
        report: bool = True,
        address: str | None = LOCAL,
        actors: int | None = None,
        env: dict[str, str] | None = None,
        init: dict[str, Any] | None = None,
    ) -> None:
        check_actors(actors)
        if not isinstance(address, (str, type(None))) or (isinstance(address, str) and not address.strip()):
            raise InputError(f"ray must be an address (auto, HOST:PORT, ray://HOST:PORT) or 'local', got {address!r}")
        self.profile = profile
        self.llm = llm
        self.report = report
        self.address = (address or LOCAL).strip()
        self.n_actors = actors
        self.env = actor_env() if env is None else dict(env)
        self.init_args = dict(init or {})
        self.actors: list[Any] = []  # shared with the RayShots of :meth:`shots`: a replaced actor serves shots too
        self.names: list[str] = []
        self._options: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> list[str]:
        """Join (or start) the cluster and make the actors, once; waits until they answer. Returns their ids."""
        with self._lock:
            if self.actors:
                return list(self.names)
            ray = connect(self.address, self.init_args)
            n, self._options = actor_resources(ray, self.n_actors)
            actors = [self._new(ray) for _ in range(n)]
            self.names = self._ready(ray, actors)
            self.actors.extend(actors)
            return list(self.names)

    def replace(self, index: int) -> str:
        """Make a new actor in place of actor ``index`` (it died); returns the new one's id."""
        ray = connect(self.address, self.init_args)
        with self._lock:
            old = self.actors[index]
            try:
                ray.kill(old)
            except Exception:  # noqa: BLE001 - it is gone already
                pass
            new = self._new(ray)
            self.names[index] = self._ready(ray, [new])[0]
            self.actors[index] = new
            return self.names[index]

    def shots(self) -> RayShots:
        """A story's shots dispatcher that uses these actors (:meth:`JobWorker.render_shot`)."""
        shots = RayShots(self.profile, address=self.address, env=self.env, init=self.init_args)
        shots.actors = self.actors
        return shots

    def shutdown(self) -> None:
        """End the actors (the cluster stays up)."""
        with self._lock:
            if not self.actors:
                return
            ray = connect(self.address, self.init_args)
            for actor in self.actors:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self.actors.clear()
            self.names = []

    def _new(self, ray: Any) -> Any:
        remote = ray.remote(JobWorker)
        return remote.options(
            runtime_env={"env_vars": self.env}, max_concurrency=ACTOR_CONCURRENCY, **self._options
        ).remote(self.profile, self.llm, self.report)

    def _ready(self, ray: Any, actors: list[Any]) -> list[str]:
        try:
            return list(ray.get([a.whoami.remote() for a in actors], timeout=ACTOR_START_S))
        except Exception as err:  # noqa: BLE001 - not placed (too few free GPUs/CPUs), or failed to start
            free = ray.available_resources()
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001
                    pass
            raise OpenMoraError(
                f"the Ray job actors did not start in {ACTOR_START_S:.0f} s ({first_line(err)}); each needs "
                f"{self._options}, the cluster has GPU {free.get('GPU', 0):g}, CPU {free.get('CPU', 0):g} free"
            ) from err
