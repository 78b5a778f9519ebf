"""Ray scale-out: a story's shots rendered by two tiny-profile CPU actors on a loopback Ray cluster give the frames of
the serial run, the shots at the same time on different actors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra (requirements-ray.txt)")

from openmora import Orchestrator  # noqa: E402
from openmora.artifacts import ArtifactStore  # noqa: E402
from openmora.errors import InputError  # noqa: E402
from openmora.scale import RayShots, actor_env, ray_shots  # noqa: E402

pytestmark = pytest.mark.slow

STORY = "A fox wakes in its den. It runs across the snow."


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster: no token file written
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _final(run_dir: Path, final_id: str) -> np.ndarray:
    return ArtifactStore(run_dir).frames(final_id)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The story rendered here, one step at a time: its run folder and final clip."""
    orch = Orchestrator()
    orch.story_overlap = False
    r = orch.run("story", prompt=STORY, seed=3, out=tmp_path_factory.mktemp("serial") / "run")
    assert r.final_id is not None
    return r.run_dir, r.final_id


def test_two_actors_render_two_shots_at_once_with_the_serial_frames(
    cluster: None, serial: tuple[Path, str], tmp_path: Path
) -> None:
    ser_dir, ser_final = serial
    shots = RayShots(Orchestrator().profile, actors=2, env=actor_env() | {"OPENMORA_TORCH_THREADS": "1"})
    orch = Orchestrator(ray=shots)
    try:
        par = orch.run("story", prompt=STORY, seed=3, out=tmp_path / "ray")
    finally:
        shots.shutdown()  # their CPU slots back for the next test's actors

    assert par.final_id is not None
    assert np.array_equal(_final(par.run_dir, par.final_id), _final(ser_dir, ser_final))
    # Each shot went to its own actor, and the two ran at overlapping times.
    assert sorted(r["shot"] for r in shots.runs) == [1, 2]
    first, second = shots.runs
    assert first["actor"] != second["actor"]
    assert first["start"] < second["end"] and second["start"] < first["end"]
    # The shots' steps are recorded as the executor records them, with the actor that ran them; the rest ran here.
    calls = [json.loads(line) for line in par.transcript.read_text().splitlines()]
    calls = [c for c in calls if c["type"] == "tool_call"]
    remote = {c["tool"] for c in calls if "actor" in c}
    assert remote == {"enhance_prompt", "text_to_image", "image_to_video"}
    assert {c["tool"] for c in calls if "actor" not in c} == {"connect_clips", "join_clips"}
    state = json.loads((par.run_dir / "plan_state.json").read_text())
    assert {r["status"] for r in state["runs"].values()} == {"done"}

    # Same tools, params, seeds and parent links as the serial run's artifacts.
    def lineage(run_dir: Path) -> list[tuple]:
        store = ArtifactStore(run_dir)
        kinds = {a.id: (a.tool, a.seed) for a in store.artifacts()}
        return sorted(
            (a.tool, a.seed, json.dumps(a.params, sort_keys=True), tuple(sorted(kinds[p] for p in a.parents)))
            for a in store.artifacts()
        )

    assert lineage(par.run_dir) == lineage(ser_dir)


def test_serve_with_ray_renders_a_story_jobs_shots_on_actors(
    cluster: None, serial: tuple[Path, str], tmp_path: Path
) -> None:
    import time

    from fastapi.testclient import TestClient

    from openmora.server import create_app

    app = create_app(tmp_path / "data", profile="tiny", llm="none", ray="local")
    with TestClient(app) as client:
        r = client.post("/jobs", data={"task": "story", "prompt": STORY, "seed": "3"})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        end = time.monotonic() + 240
        while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < end, f"job still {job['status']}"
            time.sleep(0.5)
    assert job["status"] == "done", job["error"]
    run_dir = tmp_path / "data" / "jobs" / job_id / "run"
    calls = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    actors = {c["shot"]: c["actor"] for c in calls if c["type"] == "tool_call" and c["tool"] == "image_to_video"}
    assert sorted(actors) == [1, 2] and len(set(actors.values())) == 2
    assert np.array_equal(_final(run_dir, _final_id(run_dir)), _final(*serial))


def _final_id(run_dir: Path) -> str:
    return str(json.loads((run_dir / "plan_state.json").read_text())["final_id"])


def test_ray_option_is_checked() -> None:
    orch = Orchestrator()
    assert ray_shots(None, orch.profile) is None
    assert ray_shots("127.0.0.1:6379", orch.profile).address == "127.0.0.1:6379"  # type: ignore[union-attr]
    with pytest.raises(InputError, match="ray must be"):
        Orchestrator(ray=3)
    with pytest.raises(InputError, match="actors"):
        RayShots(orch.profile, actors=0)
    from openmora.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--ray"]).ray == "local"
    assert parser.parse_args(["serve", "--ray", "auto"]).ray == "auto"
    assert parser.parse_args(["run", "story", "--prompt", "a; b"]).ray is None
