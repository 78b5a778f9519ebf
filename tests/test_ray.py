"""Ray scale-out: a story's shots rendered by two tiny-profile CPU actors on a loopback Ray cluster give the frames of
the serial run, the shots at the same time on different actors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# ----- whole jobs on job actors ---------------------------------------------------------------------------------
JOBS = [("a fox running through snow", 5), ("a red kite over the sea", 6)]


def _wait_job(client: Any, job_id: str, statuses: tuple[str, ...] = ("done", "failed", "cancelled")) -> dict:
    import time

    end = time.monotonic() + 240
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in statuses:
        assert time.monotonic() < end, f"job still {job['status']}"
        time.sleep(0.2)
    return job


def _statuses(data: Path, job_id: str) -> list[dict]:
    lines = (data / "jobs" / job_id / "events.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "status"]


@pytest.fixture(scope="module")
def job_server(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A server whose job steps run on two tiny CPU actors of the loopback cluster."""
    from fastapi.testclient import TestClient

    from openmora.server import create_app

    data = tmp_path_factory.mktemp("ray-jobs") / "data"
    app = create_app(data, profile="tiny", llm="none", ray="local", jobs=2, report=False)
    with TestClient(app) as client:
        yield client, data


def test_serve_with_ray_runs_two_jobs_at_once_on_two_actors_with_the_in_process_frames(
    job_server: tuple[Any, Path], tmp_path: Path
) -> None:
    client, data = job_server
    client.post("/queue/pause")  # both queued before either starts
    ids = []
    for prompt, seed in JOBS:
        r = client.post("/jobs", data={"task": "text-to-video", "prompt": prompt, "seed": str(seed), "segments": "2"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    client.post("/queue/resume")
    jobs = [_wait_job(client, job_id) for job_id in ids]
    assert [j["status"] for j in jobs] == ["done", "done"], [j["error"] for j in jobs]

    runs = []
    for job_id in ids:
        statuses = _statuses(data, job_id)
        running = next(e for e in statuses if e["status"] == "running")
        done = next(e for e in statuses if e["status"] == "done")
        runs.append((running["actor"], running["time"], done["time"]))
    (actor_a, start_a, end_a), (actor_b, start_b, end_b) = runs
    assert actor_a != actor_b  # one job per actor, both at once
    assert start_a < end_b and start_b < end_a
    # The actors' events reached each job's log: progress, the transcript's tool calls, previews of every artifact.
    for job, job_id in zip(jobs, ids, strict=True):
        events = [json.loads(x) for x in (data / "jobs" / job_id / "events.jsonl").read_text().splitlines()]
        tools = [e["event"]["tool"] for e in events if e["type"] == "transcript" and e["event"]["type"] == "tool_call"]
        assert tools == ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]
        assert any(e["type"] == "progress" for e in events)
        assert {e["id"] for e in events if e["type"] == "preview"} == {a["id"] for a in job["artifacts"]}

    # The same requests in this process: the same frames.
    orch = Orchestrator(report=False)
    for job_id, (prompt, seed) in zip(ids, JOBS, strict=True):
        serial = orch.run("text-to-video", prompt=prompt, seed=seed, segments=2, out=tmp_path / f"serial-{seed}")
        run_dir = data / "jobs" / job_id / "run"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        final = next(a for a in manifest["artifacts"] if a["id"] == manifest["run"]["final"])
        frames = _final(run_dir, final["id"])
        assert frames.shape[0] == final["frames"] > 8 and (run_dir / "final.mp4").is_file()
        assert np.array_equal(frames, _final(serial.run_dir, str(serial.final_id)))


def test_cancelling_a_job_on_an_actor_stops_it_there_and_leaves_a_resumable_run_folder(
    job_server: tuple[Any, Path],
) -> None:
    import time

    client, data = job_server
    r = client.post("/jobs", data={"task": "text-to-video", "prompt": "a paper boat on a river", "segments": "8"})
    job_id = r.json()["id"]
    end = time.monotonic() + 120
    while (job := client.get(f"/jobs/{job_id}").json())["progress"] is None:  # the actor's progress is here
        assert time.monotonic() < end and job["status"] in ("queued", "running"), job
        time.sleep(0.1)
    assert client.post(f"/jobs/{job_id}/cancel").json()["cancel"] == "cancelling"
    job = _wait_job(client, job_id)
    assert job["status"] == "cancelled" and job["error"] == "cancelled by a request"
    run_dir = data / "jobs" / job_id / "run"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run"]["status"] == "interrupted"  # the actor's session recorded the interruption
    assert not (run_dir / "final.mp4").exists() and (run_dir / "plan_state.json").is_file()
    state = json.loads((run_dir / "plan_state.json").read_text())
    assert "extend_video" in {s["tool"] for s in state["plan"]["steps"]}
    done = [k for k, r in state["runs"].items() if r["status"] == "done"]
    assert len(done) < len(state["plan"]["steps"])  # stopped before the end
    assert client.get("/queue").json()["running"] is None
    assert "actor" in next(e for e in _statuses(data, job_id) if e["status"] == "running")


def test_a_job_whose_actor_dies_resumes_on_a_new_actor_reusing_what_it_had_made(job_server: tuple[Any, Path]) -> None:
    import time

    client, data = job_server
    pool = client.app.state.openmora.worker.ray  # type: ignore[attr-defined]
    r = client.post("/jobs", data={"task": "text-to-video", "prompt": "a lighthouse at night", "segments": "8"})
    job_id = r.json()["id"]
    end = time.monotonic() + 120
    while True:  # kill the actor once the first clip and its plan step are on disk, mid-extension
        job = client.get(f"/jobs/{job_id}").json()
        steps = {s["tool"]: s["status"] for s in (job["plan"] or {}).get("steps", [])}
        if steps.get("image_to_video") == "done":
            break
        assert time.monotonic() < end and job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    assert steps.get("extend_video") != "done", job
    before = {a["id"]: a["sha256"] for a in job["artifacts"]}
    first = next(e for e in _statuses(data, job_id) if e["status"] == "running")["actor"]
    ray.kill(pool.actors[pool.names.index(first)])

    job = _wait_job(client, job_id)
    assert job["status"] == "done", job["error"]
    statuses = _statuses(data, job_id)
    requeued = next(e for e in statuses if e["status"] == "queued" and e.get("resumed"))
    assert "actor" in requeued["error"] and "died" in requeued["error"]
    second = [e["actor"] for e in statuses if e["status"] == "running"]
    assert len(second) == 2 and second[0] == first and second[1] != first and first not in pool.names
    after = {a["id"]: a["sha256"] for a in job["artifacts"]}
    assert {k: after.get(k) for k in before} == before  # unchanged: not re-rendered
    run = data / "jobs" / job_id / "run"
    lines = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    made = [e["tool"] for e in lines if e["type"] == "tool_call" and not e.get("error")]
    assert made.count("text_to_image") == 1 and made.count("image_to_video") == 1, made
    assert made.count("extend_video") == 1 and any(e["type"] == "run_resume" for e in lines)
    assert (run / "final.mp4").is_file()
