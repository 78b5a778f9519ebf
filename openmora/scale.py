"""Scale-out on Ray: a story's shots render on Ray actors that each own a GPU (or a CPU slot) and keep their pipelines
resident; the run's store, plan state and transcript stay in the calling process.

A :class:`ShotActor` holds one profile's pipeline loader and renders one shot's steps (enhance_prompt,
text_to_image, image_to_video, extend_video) with the seeds the plan fixed, returning the pixels and each
artifact's metadata. :class:`RayShots` sends the shots of a story round robin to its actors, adds what comes back to
the run's store (same tool, params, seed, parents) and records the steps in the plan state as the executor does;
the transitions and the join then run locally. The seeds are the plan's, so the frames are those of a serial run.

Example:
    >>> from openmora import Orchestrator
    >>> orch = Orchestrator(profile="tiny", ray="local")  # doctest: +SKIP
    >>> orch.run("story", prompt="a fox wakes; it runs across the snow").final_video  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from openmora.errors import InputError, OpenMoraError, first_line
from openmora.profiles import Profile

logger = logging.getLogger(__name__)

# The steps of one shot that an actor renders; a story's transitions and join need two shots and run locally.
SHOT_TOOLS = ("enhance_prompt", "text_to_image", "image_to_video", "extend_video")
# Environment an actor needs to find the same models and settings as the process that sends it work.
_ENV_PREFIXES = ("OPENMORA_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "CUDA_VISIBLE")
_ID = re.compile(r"\b(?:img|clip)-\d{4,6}\b")
LOCAL = "local"  # `--ray` without an address: start a Ray cluster on this machine


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise InputError(
            "--ray needs the ray package: pip install 'openmora[ray]' (or -r requirements-ray.txt)"
        ) from err
    return ray


class ShotWorker:
    """What a :class:`ShotActor` runs: one profile's pipelines, loaded on the first shot and kept for the next.

    Args:
        profile: the profile every shot renders with (the orchestrator's, fast variant included).
        runtime: where its pipelines live (default: a new one); a job actor passes its orchestrator's, so that its
            jobs and shots share one set of loaded pipelines.
    """

    def __init__(self, profile: Profile, runtime: Any = None) -> None:
        from openmora.loader import PipelineLoader
        from openmora.runtime import Runtime

        self.profile = profile
        self.loader = PipelineLoader(profile, runtime=runtime if runtime is not None else Runtime())
        self.name = actor_name()

    def render_shot(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """Render one shot's steps in plan order (``PlanStep.to_dict()`` each, seeds fixed) in a scratch store.

        Returns ``{"actor", "start", "end", "steps": [{"id", "text", "result", "notes", "seconds", "outputs"}]}``;
        each output is an artifact's fields (``id``, ``kind``, ``tool``, ``parents``, ``params``, ``seed``, ...) with
        its ``pixels`` (an image's ``(H, W, 3)`` or a clip's ``(T, H, W, 3)`` ``uint8``). Ids are the scratch
        store's; :class:`RayShots` maps them to the run's.
        """
        from openmora.artifacts import ArtifactStore
        from openmora.group_chat.plan import REF, TOOLS
        from openmora.tools.context import ToolContext
        from openmora.tools.enhance_prompt import enhance_prompt

        start = time.time()
        scratch = tempfile.mkdtemp(prefix="openmora-shot-")
        done: dict[str, Any] = {}  # step id -> its prompt text or last artifact id
        out: list[dict[str, Any]] = []
        try:
            with ArtifactStore(scratch, cache_bytes=1 << 40) as store:
                ctx = ToolContext(store=store, loader=self.loader, profile=self.profile)

                def resolve(value: Any) -> Any:
                    if isinstance(value, list):
                        return [resolve(v) for v in value]
                    if isinstance(value, str) and REF.match(value):
                        if value[1:] not in done:
                            raise InputError(f"a shot's step refers to {value}, which is not a step of that shot")
                        return done[value[1:]]
                    return value

                for spec in steps:
                    args = {k: resolve(v) for k, v in spec["args"].items()}
                    t0 = time.perf_counter()
                    if spec["tool"] == "enhance_prompt":
                        text = enhance_prompt(**args)
                        done[spec["id"]] = text
                        out.append({"id": spec["id"], "text": text, "result": text, "notes": [], "outputs": []})
                    else:
                        result = TOOLS[spec["tool"]].fn(ctx, **args)
                        done[spec["id"]] = result.outputs[-1]
                        arts = []
                        for art_id in result.outputs:
                            art = store.get(art_id)
                            pixels = store.image(art_id) if art.kind == "image" else store.frames(art_id)
                            arts.append(asdict(art) | {"pixels": np.ascontiguousarray(pixels)})
                        out.append(
                            {
                                "id": spec["id"],
                                "text": "",
                                "result": result.text,
                                "notes": list(result.notes),
                                "outputs": arts,
                            }
                        )
                    out[-1]["seconds"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {"actor": self.name, "start": start, "end": time.time(), "steps": out}


def check_actors(actors: Any) -> None:
    """Refuse (one line) a number of Ray actors that is not a whole number >= 1 (None: the default)."""
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InputError(f"the number of Ray actors must be a whole number >= 1, got {actors!r}")


def actor_env() -> dict[str, str]:
    """The environment variables an actor gets (models' cache, offline switches, torch threads)."""
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def actor_name() -> str:
    """The Ray actor id of the calling actor; outside an actor (a test calling a worker directly) the process id."""
    try:
        return str(_ray().get_runtime_context().get_actor_id() or os.getpid())
    except Exception:  # noqa: BLE001 - no Ray, or not in an actor: the process id names it
        return str(os.getpid())


def connect(address: str, init: dict[str, Any] | None = None) -> Any:
    """Join the Ray cluster at ``address`` (``local``: start one on this machine), unless this process already has;
    returns the ``ray`` module."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address == LOCAL else address,
                include_dashboard=False,
                log_to_driver=False,
                **(init or {}),
            )
        except Exception as err:  # noqa: BLE001 - one line for the user, whatever Ray raised
            raise OpenMoraError(f"cannot start or join Ray at {address}: {first_line(err)}") from err
    return ray


def actor_resources(ray: Any, n: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors to make and what each one asks for: ``n`` (default: one per GPU of the cluster, else one per
    CPU, at most 4), each with a GPU (a share of one when ``n`` is more than the GPUs) or else one CPU."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    n = n or (gpus if gpus else max(1, min(4, int(resources.get("CPU", 1)))))
    if gpus:
        return n, {"num_gpus": 1 if n <= gpus else gpus / n}
    return n, {"num_cpus": 1}


class RayShots:
    """Renders a story's shots on Ray actors; used by the executor when a run has Ray on.

    Args:
        profile: the profile the actors load.
        address: a Ray cluster's address (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or ``local`` (default): start
            one on this machine, or use the one this process already started.
        actors: how many actors (default: one per GPU of the cluster, else one per CPU, at most 4).
        env: environment variables of the actors (default :func:`actor_env`).
        init: extra ``ray.init`` arguments when this object starts or joins the cluster.
    """

    def __init__(
        self,
        profile: Profile,
        address: str | None = LOCAL,
        actors: int | None = None,
        env: dict[str, str] | None = None,
        init: dict[str, Any] | None = None,
    ) -> None:
        check_actors(actors)
        self.profile = profile
        self.address = address or LOCAL
        self.n_actors = actors
        self.env = actor_env() if env is None else dict(env)
        self.init_args = dict(init or {})
        self.actors: list[Any] = []
        self.runs: list[dict[str, Any]] = []  # per shot sent: {"shot", "actor", "start", "end"}
        self._next = 0
        self._lock = threading.Lock()

    def start(self) -> list[Any]:
        """Join (or start) the cluster and create the actors, once; returns them."""
        with self._lock:
            if self.actors:
                return self.actors
            ray = connect(self.address, self.init_args)
            n, options = actor_resources(ray, self.n_actors)
            remote = ray.remote(ShotWorker)
            self.actors.extend(
                remote.options(runtime_env={"env_vars": self.env}, **options).remote(self.profile) for _ in range(n)
            )
            return self.actors

    def shutdown(self) -> None:
        """End the actors (the cluster stays up)."""
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors.clear()

    def run(self, executor: Any) -> int:
        """Render every pending shot of ``executor``'s plan on the actors and record its steps; returns how many
        shots ran remotely. Shots that are partly done, or whose steps render best-of-N takes or under a quality
        gate, are left to the executor."""
        from openmora.group_chat.executor import _step_fields
        from openmora.group_chat.transcript import record_tool_call
        from openmora.quality.gate import GATED_TOOLS
        from openmora.tools.context import ToolResult

        executor.reuse_ready()
        shots = _pending_shots(executor.state)
        gate = executor.gate
        shots = {
            k: steps
            for k, steps in shots.items()
            if not any(
                s.tool in GATED_TOOLS and (gate.takes_for(s.tool, s.best_of) > 1 or gate.min_quality is not None)
                for s in steps
            )
        }
        if not shots:
            return 0
        ray = _ray()
        actors = self.start()
        sent = []
        for k, steps in shots.items():
            actor = actors[self._next % len(actors)]
            self._next += 1
            sent.append((k, steps, actor.render_shot.remote([s.to_dict() for s in steps])))
        store, state, transcript = executor.ctx.store, executor.state, executor.transcript
        for k, steps, ref in sent:
            try:
                shot = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - the actor's error, as one line on the shot's first step
                message = first_line(getattr(err, "cause", None) or err)
                with executor._lock:
                    state.record_failed(steps[0], message)
                    executor.save_state()
                raise OpenMoraError(f"shot {k} failed on a Ray actor: {message}") from err
            self.runs.append({"shot": k, "actor": shot["actor"], "start": shot["start"], "end": shot["end"]})
            ids: dict[str, str] = {}  # the actor's scratch ids -> the run's
            for step, done in zip(steps, shot["steps"], strict=True):
                with executor._lock:
                    resolved = state.resolve(step)
                    key = executor.step_key(step, resolved)
                outputs = [_add(store, art, ids) for art in done["outputs"]]
                result: Any = done["text"]
                if step.tool != "enhance_prompt":
                    result = ToolResult(
                        outputs=outputs,
                        text=_map_ids(done["result"], ids),
                        notes=[_map_ids(n, ids) for n in done["notes"]],
                    )
                with executor._lock:
                    state.record_done(step, outputs, done["text"], by=step.agent, key=key, takes=[])
                    executor.save_state()
                record_tool_call(
                    transcript,
                    step.agent,
                    step.tool,
                    resolved,
                    result=result,
                    seconds=done["seconds"],
                    **_step_fields(step),
                    actor=shot["actor"],
                )
        return len(sent)


def _pending_shots(state: Any) -> dict[int, list[Any]]:
    """Shot number -> its steps, for shots whose steps are all pending and refer only to each other."""
    from openmora.group_chat.plan_state import FINISHED

    by_shot: dict[int, list[Any]] = {}
    for step in state.plan.steps:
        if step.shot is not None:
            by_shot.setdefault(step.shot, []).append(step)
    shots = {}
    for k, steps in by_shot.items():
        ids = {s.id for s in steps}
        if all(
            s.tool in SHOT_TOOLS and state.run_of(s.id).status not in FINISHED and state.run_of(s.id).status != "failed"
            for s in steps
        ) and all(d in ids for s in steps for d in s.deps()):
            shots[k] = steps
    return shots


def _add(store: Any, art: dict[str, Any], ids: dict[str, str]) -> str:
    """Add an artifact an actor made to the run's store, its parents mapped to the run's ids; returns its id."""
    fields = {
        "tool": art["tool"],
        "parents": [ids.get(p, p) for p in art["parents"]],
        "params": art["params"],
        "seed": art["seed"],
        "seconds": art["seconds"],
        "description": _map_ids(art["description"], ids),
    }
    if art["kind"] == "image":
        new = store.add_image(art["pixels"], **fields)
    else:
        new = store.add_video(art["pixels"], float(art["fps"]), joins=art["joins"], **fields)
    ids[art["id"]] = new.id
    return str(new.id)


def _map_ids(text: str, ids: dict[str, str]) -> str:
    return _ID.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


def ray_shots(value: Any, profile: Profile) -> RayShots | None:
    """The dispatcher an ``Orchestrator(ray=...)`` value asks for: None/False (off), True or ``local`` (a cluster on
    this machine), an address string, or a :class:`RayShots` (used as it is)."""
    if value is None or value is False:
        return None
    if isinstance(value, RayShots):
        return value
    if value is True:
        return RayShots(profile)
    if isinstance(value, str) and value.strip():
        return RayShots(profile, address=value.strip())
    raise InputError(f"ray must be an address (auto, HOST:PORT, ray://HOST:PORT), 'local' or True, got {value!r}")
