"""``openmora serve``: the job API in-process (TestClient, tiny profile, no LLM) and as a real server that is killed
with SIGKILL mid-job and restarted (the job resumes from its run folder, reusing what it had made)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from openmora.server import create_app
from openmora.server.app import serve

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_LIMIT = 300_000  # bytes: the module's server refuses larger uploads


def _wait(client: Any, job_id: str, statuses: tuple[str, ...] = ("done", "failed", "cancelled"), timeout: float = 90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is still {job['status']} after {timeout} s")


def _events(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    """The job's SSE stream, parsed (it ends by itself once the job has finished)."""
    out: list[dict[str, Any]] = []
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                record = json.loads(line[len("data: ") :])
                assert record["type"] == kind
                out.append(record)
    return out


def _one_line_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path_factory.mktemp("server")
    app = create_app(data, profile="tiny", llm="none", max_upload_bytes=UPLOAD_LIMIT)
    with TestClient(app) as client:
        yield client, data


@pytest.fixture(scope="module")
def done_job(server: tuple[TestClient, Path]) -> dict[str, Any]:
    client, _ = server
    r = client.post("/jobs", data={"task": "text-to-video", "prompt": "a fox running through snow", "segments": "2"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    job = _wait(client, r.json()["id"])
    assert job["status"] == "done", job["error"]
    return job


@pytest.mark.integration
def test_a_text_to_video_job_runs_and_serves_its_plan_events_previews_and_video(
    server: tuple[TestClient, Path], done_job: dict[str, Any]
) -> None:
    client, data = server
    job_id = done_job["id"]
    job = client.get(f"/jobs/{job_id}").json()
    assert [s["tool"] for s in job["plan"]["steps"]] == [
        "enhance_prompt",
        "text_to_image",
        "image_to_video",
        "extend_video",
    ]
    assert all(s["status"] == "done" for s in job["plan"]["steps"])
    assert job["progress"]["type"] == "progress" and job["progress"]["step"] == job["progress"]["total"] > 0
    ids = [a["id"] for a in job["artifacts"]]
    assert ids == ["img-0001", "clip-0001", "clip-0002"]
    assert job["timings"]["wall_s"] > 0 and job["final"] == f"/jobs/{job_id}/final.mp4"
    assert set(job["files"]) == {"report.html", "scores.json"}

    events = _events(client, job_id)
    kinds = {e["type"] for e in events}
    assert {"status", "load", "progress", "encode", "transcript", "preview"} <= kinds
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["status"] for e in events if e["type"] == "status"] == ["queued", "running", "done"]
    tools = [e["event"]["tool"] for e in events if e["type"] == "transcript" and e["event"]["type"] == "tool_call"]
    assert tools == ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]
    previews = {e["id"]: e for e in events if e["type"] == "preview"}
    assert set(previews) == set(ids)
    from PIL import Image

    for preview in previews.values():
        head, payload = preview["image"].split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
            assert im.format == "PNG" and max(im.size) <= 160 and min(im.size) > 0
    # Last-Event-ID: only what came after it
    with client.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(len(events) - 1)}) as r:
        assert sum(line.startswith("data: ") for line in r.iter_lines()) == 1

    on_disk = (data / "jobs" / job_id / "run" / "final.mp4").read_bytes()
    full = client.get(f"/jobs/{job_id}/final.mp4")
    assert full.status_code == 200 and full.content == on_disk and full.headers["content-type"] == "video/mp4"
    part = client.get(f"/jobs/{job_id}/final.mp4", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == on_disk[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(on_disk)}"
    art = job["artifacts"][1]
    clip = client.get(f"/jobs/{job_id}/files/{art['path']}")
    assert clip.status_code == 200 and clip.content == (data / "jobs" / job_id / "run" / art["path"]).read_bytes()
    assert client.get(f"/jobs/{job_id}/files/report.html").text.lstrip().lower().startswith("<!doctype html")
    assert "overall" in json.dumps(client.get(f"/jobs/{job_id}/files/scores.json").json())

    listed = client.get("/jobs").json()["jobs"]
    assert listed[-1]["id"] == job_id and listed[-1]["status"] == "done"
    created = [j["created"] for j in listed]
    assert created == sorted(created, reverse=True)


@pytest.mark.integration
def test_a_revision_message_makes_a_longer_video_on_the_same_run_folder(
    server: tuple[TestClient, Path], done_job: dict[str, Any]
) -> None:
    client, data = server
    job_id = done_job["id"]
    final_before = next(a for a in done_job["artifacts"] if a["id"] == "clip-0002")
    r = client.post(f"/jobs/{job_id}/messages", json={"text": "extend it by two seconds"})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job = _wait(client, job_id)
    assert job["status"] == "done", job["error"]
    assert [s["kind"] for s in job["steps"]] == ["start", "revise"]
    manifest = json.loads((data / "jobs" / job_id / "run" / "manifest.json").read_text())
    final = next(a for a in manifest["artifacts"] if a["id"] == manifest["run"]["final"])
    assert final["id"] != final_before["id"] and final["frames"] > final_before["frames"]
    # what was made before is reused, unchanged
    before = {a["id"]: a["sha256"] for a in done_job["artifacts"]}
    assert {a["id"]: a["sha256"] for a in manifest["artifacts"] if a["id"] in before} == before
    got = client.get(f"/jobs/{job_id}/final.mp4").content
    assert got == (data / "jobs" / job_id / "run" / "final.mp4").read_bytes()
    _one_line_error(client.post(f"/jobs/{job_id}/messages", json={"text": "  "}), 400, "empty")


@pytest.mark.integration
def test_pause_queue_cancel_a_queued_job_then_resume(server: tuple[TestClient, Path]) -> None:
    client, data = server
    assert client.post("/queue/pause").json()["paused"] is True
    r = client.post("/jobs", data={"task": "text-to-video", "prompt": "a lighthouse at night"})
    job_id = r.json()["id"]
    queue = client.get("/queue").json()
    assert queue["paused"] is True and queue["queued"] == [job_id]
    _one_line_error(client.post(f"/jobs/{job_id}/messages", json={"text": "darker"}), 409, "queued")
    cancelled = client.post(f"/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel"] == "cancelled"
    assert client.get("/queue").json()["queued"] == []
    resumed = client.post("/queue/resume").json()
    assert resumed["paused"] is False
    time.sleep(1.0)
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    assert not (data / "jobs" / job_id / "run").exists()
    _one_line_error(client.post(f"/jobs/{job_id}/cancel"), 409, "cancelled")


@pytest.mark.integration
def test_cancelling_a_running_job_stops_it_and_leaves_a_resumable_run_folder(server: tuple[TestClient, Path]) -> None:
    client, data = server
    r = client.post("/jobs", data={"task": "text-to-video", "prompt": "a red kite over the sea", "segments": "8"})
    job_id = r.json()["id"]
    _wait(client, job_id, ("running",), timeout=30)
    end = time.monotonic() + 30
    while client.get(f"/jobs/{job_id}").json()["progress"] is None and time.monotonic() < end:
        time.sleep(0.1)
    out = client.post(f"/jobs/{job_id}/cancel").json()
    assert out["cancel"] == "cancelling"
    job = _wait(client, job_id, timeout=30)
    assert job["status"] == "cancelled"
    manifest = json.loads((data / "jobs" / job_id / "run" / "manifest.json").read_text())
    assert manifest["run"]["status"] == "interrupted"
    assert not (data / "jobs" / job_id / "run" / "final.mp4").exists()
    assert (data / "jobs" / job_id / "run" / "plan_state.json").is_file()
    assert client.get("/queue").json()["running"] is None


@pytest.mark.integration
def test_bad_requests_get_one_line_4xx_and_leave_nothing_behind(
    server: tuple[TestClient, Path], media: dict[str, Path]
) -> None:
    client, data = server
    jobs_before = client.get("/jobs").json()["jobs"]
    folders_before = sorted(p.name for p in (data / "jobs").iterdir())

    _one_line_error(client.post("/jobs", data={"task": "juggle", "prompt": "x"}), 400, "unknown task", "text-to-video")
    _one_line_error(client.post("/jobs", data={"task": "text-to-video"}), 400, "needs prompt")
    _one_line_error(client.post("/jobs", data={"task": "text-to-video", "prompt": "x", "seed": "-1"}), 400, "seed")
    _one_line_error(client.post("/jobs", data={"task": "text-to-video", "prompt": "x", "segments": "99"}), 400)
    _one_line_error(client.post("/jobs", data={"task": "text-to-video", "prompt": "x", "best_of": "0"}), 400)
    not_an_image = {"image": ("photo.png", b"GIF89a not really a picture" * 10, "image/png")}
    _one_line_error(client.post("/jobs", data={"task": "image-to-video"}, files=not_an_image), 415, "PNG, JPEG or WebP")
    broken_png = {"image": ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 500, "image/png")}
    _one_line_error(client.post("/jobs", data={"task": "image-to-video"}, files=broken_png), 415, "image upload")
    not_a_video = {"video": ("clip.mp4", b"\x00\x01 no frames here" * 100, "video/mp4")}
    _one_line_error(client.post("/jobs", data={"task": "extend"}, files=not_a_video), 415, "video 1 upload")
    oversized = {"image": ("big.png", b"\x89PNG\r\n\x1a\n" + os.urandom(UPLOAD_LIMIT + 10), "image/png")}
    _one_line_error(client.post("/jobs", data={"task": "image-to-video"}, files=oversized), 413, str(UPLOAD_LIMIT))
    too_many = [("video", (f"v{i}.mp4", media["video_a"].read_bytes(), "video/mp4")) for i in range(3)]
    _one_line_error(client.post("/jobs", data={"task": "auto", "prompt": "join"}, files=too_many), 400, "at most 2")
    wrong_inputs = {"image": ("photo.png", media["image"].read_bytes(), "image/png")}
    _one_line_error(
        client.post("/jobs", data={"task": "text-to-video", "prompt": "x"}, files=wrong_inputs), 400, "takes no image"
    )

    any_job = jobs_before[0]["id"]
    _one_line_error(client.get(f"/jobs/{any_job}/files/..%2F..%2Fjobs.sqlite3"), 400, "..")
    _one_line_error(client.get(f"/jobs/{any_job}/files/%2e%2e/%2e%2e/jobs.sqlite3"), 400, "..")
    _one_line_error(client.get(f"/jobs/{any_job}/files/%2Fetc%2Fpasswd"), 400, "relative")
    _one_line_error(client.get(f"/jobs/{any_job}/files/nothing.png"), 404)
    run = data / "jobs" / any_job / "run"
    (run / "escape.txt").symlink_to(data / "jobs.sqlite3")
    _one_line_error(client.get(f"/jobs/{any_job}/files/escape.txt"), 404)
    _one_line_error(client.get("/jobs/0123456789ab"), 404, "no job")
    _one_line_error(client.get("/jobs/..%2F..%2Fetc"), 404)
    _one_line_error(client.post(f"/jobs/{any_job}/messages", json={"words": "x"}), 400, "text")
    _one_line_error(client.get("/no/such/endpoint"), 404, "/docs")

    assert client.get("/jobs").json()["jobs"] == jobs_before
    assert sorted(p.name for p in (data / "jobs").iterdir()) == folders_before
    assert not any((data / "uploads").rglob("*")) if (data / "uploads").exists() else True


@pytest.mark.integration
def test_a_token_is_required_on_every_request_and_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(tmp_path / "data", token="s3cret", start_worker=False)
    with TestClient(app) as client:
        _one_line_error(client.get("/queue"), 401, "Authorization: Bearer")
        _one_line_error(client.get("/openapi.json", headers={"Authorization": "Bearer wrong"}), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert client.get("/queue", headers=ok).json() == {
            "paused": False,
            "running": None,
            "running_jobs": [],
            "queued": [],
        }
        schema = client.get("/openapi.json", headers=ok).json()
        assert {
            "/jobs",
            "/jobs/{job_id}",
            "/jobs/{job_id}/events",
            "/jobs/{job_id}/messages",
            "/jobs/{job_id}/cancel",
        } <= set(schema["paths"])
        assert {"/jobs/{job_id}/final.mp4", "/jobs/{job_id}/files/{path}", "/queue", "/queue/pause"} <= set(
            schema["paths"]
        )
        docs = client.get("/docs", headers=ok).text
        assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn." not in docs
        assert client.get("/docs-assets/swagger-ui-bundle.js", headers=ok).status_code == 200
    assert serve(host="0.0.0.0", port=8188, data=tmp_path / "refused") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --host 0.0.0.0") and "--token" in err and "\n" not in err
    assert not (tmp_path / "refused").exists()


# ----- the event log and previews, without a server -------------------------------------------------------------
def _preview_pixels(uri: str) -> Any:
    import numpy as np
    from PIL import Image

    head, payload = uri.split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.unit
def test_previews_come_from_the_pixels_in_memory_and_from_the_files_only_once_the_store_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imageio_ffmpeg
    import numpy as np

    from openmora.artifacts import ArtifactStore, open_store
    from openmora.server.jobs import EVENTS_FILE, RUN_DIR, EventLog, emit_previews, thumbnail_of

    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:64, 0:96]
    first = np.stack([xs * 2, ys * 3, np.full_like(xs, 60)], axis=-1).astype(np.uint8)  # smooth: H.264 keeps it
    frames = np.stack([first] + [255 - first] * 4)  # the first frame differs from the rest
    decoded: list[str] = []
    real_read_frames = imageio_ffmpeg.read_frames

    def counting_read_frames(path: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(path)
        return real_read_frames(path, *args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", counting_read_frames)
    job_dir = tmp_path / "jobs" / "0123456789ab"
    run_dir = job_dir / RUN_DIR
    log = EventLog(job_dir / EVENTS_FILE)
    store = ArtifactStore(run_dir)
    assert open_store(run_dir) is store
    img = store.add_image(image, tool="text_to_image")
    clip = store.add_video(frames, 7, tool="image_to_video", parents=[img.id])
    emit_previews(run_dir, log)  # the files may still be being written: previews made now, sent once on disk
    store.close()  # its pixels are gone: what was made from them is still sent, nothing is decoded
    assert open_store(run_dir) is None
    emit_previews(run_dir, log)
    previews = {r["id"]: r for r in log.read() if r["type"] == "preview"}
    assert set(previews) == {img.id, clip.id} and decoded == []
    assert previews[clip.id]["image"] == thumbnail_of(frames[0])
    assert previews[img.id]["image"] == thumbnail_of(image)
    assert previews[clip.id]["path"] == clip.path and previews[clip.id]["kind"] == "video"
    assert emit_previews(run_dir, log) == 0  # one preview an artifact

    # a job resumed after a restart: a clip whose pixels are not in memory is decoded from its MP4 (lossy)
    other = EventLog(tmp_path / "jobs" / "ba9876543210" / EVENTS_FILE)
    run_copy = other.path.parent / RUN_DIR
    run_copy.mkdir(parents=True)
    for rel in ("manifest.json", img.path, clip.path):
        (run_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_copy / rel).write_bytes((run_dir / rel).read_bytes())
    assert emit_previews(run_copy, other) == 2 and len(decoded) == 1
    again = {r["id"]: r["image"] for r in other.read() if r["type"] == "preview"}
    assert again[img.id] == previews[img.id]["image"]  # a PNG is exact
    got = _preview_pixels(again[clip.id]).astype(int)
    assert got.shape == (64, 96, 3)
    assert np.abs(got - first).mean() < 8 < np.abs(got - frames[1]).mean()  # H.264's loss, not another frame


@pytest.mark.unit
def test_progress_events_are_coalesced_keeping_each_stages_last_and_every_other_event(tmp_path: Path) -> None:
    from openmora.server.jobs import EventLog

    def progress(stage: str, step: int) -> dict[str, Any]:
        return {"type": "progress", "stage": stage, "role": stage, "step": step, "total": 9}

    path = tmp_path / "events.jsonl"
    log = EventLog(path, progress_per_s=1e-6)  # one progress event recorded, then each held until something else
    log.emit({"type": "status", "status": "running"})
    held = [log.emit(progress("a", i)) is None for i in range(10)]
    assert held == [False] + [True] * 9
    log.emit(progress("b", 0))  # another stage: a's last step is recorded first
    for i in range(1, 4):
        log.emit(progress("b", i))
    log.emit({"type": "encode", "phase": "start", "id": "clip-0001", "frames": 8})
    log.emit(progress("b", 9))
    log.emit({"type": "status", "status": "done"})
    records = log.read()
    assert [(r["type"], r.get("stage"), r.get("step", r.get("status"))) for r in records] == [
        ("status", None, "running"),
        ("progress", "a", 0),
        ("progress", "a", 9),
        ("progress", "b", 0),
        ("progress", "b", 3),
        ("encode", None, None),
        ("progress", "b", 9),
        ("status", None, "done"),
    ]
    assert [r["seq"] for r in records] == list(range(1, 9))
    assert log.last_progress == records[6]
    log.close()

    every = EventLog(tmp_path / "every.jsonl", progress_per_s=0)  # 0: no coalescing
    for i in range(5):
        every.emit(progress("a", i))
    assert [r["step"] for r in every.read()] == [0, 1, 2, 3, 4]
    every.close()


@pytest.mark.unit
def test_the_event_log_survives_a_torn_last_line_and_goes_on_numbering(tmp_path: Path) -> None:
    from openmora.server.jobs import EventLog

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for status in ("queued", "running"):
        log.emit({"type": "status", "status": status})
    log.emit({"type": "transcript", "event": {"type": "note", "text": "half"}})
    log.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:  # a kill -9 in the middle of a line
        f.write(b'{"seq": 4, "type": "prev')
    reopened = EventLog(path)
    assert reopened.seq == 3 and path.read_bytes() == whole
    assert reopened.emit({"type": "status", "status": "done"})["seq"] == 4
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4] and records[-1]["status"] == "done"

    # a whole last record that lost only its newline is kept
    with open(path, "ab") as f:
        f.write(json.dumps({"seq": 5, "type": "status", "status": "queued"}).encode())
    kept = EventLog(path)
    assert kept.seq == 5 and path.read_text().endswith("\n")
    assert kept.emit({"type": "status", "status": "running"})["seq"] == 6
    assert [r["seq"] for r in kept.read()] == [1, 2, 3, 4, 5, 6]
    kept.close()


# ----- a real server, killed mid-job ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OPENMORA_TORCH_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "openmora", "serve", "--port", str(port), "--data", str(data), "--llm", "none"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"{base}/queue", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the server did not start in 60 s: " + log.read_text()[-2000:])


@pytest.mark.slow
def test_a_job_running_when_the_server_is_killed_resumes_after_a_restart_reusing_its_artifacts(
    tmp_path: Path,
) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    port = _free_port()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    proc = _start(data, port, log)
    try:
        r = http.post("/jobs", data={"task": "text-to-video", "prompt": "a paper boat on a river", "segments": "8"})
        job_id = r.json()["id"]
        end = time.monotonic() + 90
        while time.monotonic() < end:  # kill once the first clip and its plan step are on disk, mid-extension
            job = http.get(f"/jobs/{job_id}").json()
            steps = {s["tool"]: s["status"] for s in (job["plan"] or {}).get("steps", [])}
            if steps.get("image_to_video") == "done":
                break
            assert job["status"] in ("queued", "running"), job
            time.sleep(0.1)
        assert job["status"] == "running" and steps.get("extend_video") != "done", job
        before = {a["id"]: a["sha256"] for a in job["artifacts"]}
        assert {"img-0001", "clip-0001"} <= set(before)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        proc = _start(data, port, log)
        end = time.monotonic() + 120
        while (job := http.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed", "cancelled"):
            assert time.monotonic() < end, job
            time.sleep(0.3)
        assert job["status"] == "done", job["error"]
        after = {a["id"]: a["sha256"] for a in job["artifacts"]}
        assert {k: after.get(k) for k in before} == before  # unchanged: not re-rendered
        run = data / "jobs" / job_id / "run"
        lines = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
        made = [e["tool"] for e in lines if e["type"] == "tool_call" and not e.get("error")]
        assert made.count("text_to_image") == 1 and made.count("image_to_video") == 1, made
        assert made.count("extend_video") == 1 and any(e["type"] == "run_resume" for e in lines)
        final = next(
            a for a in job["artifacts"] if a["id"] == json.loads((run / "manifest.json").read_text())["run"]["final"]
        )
        assert final["tool"] == "extend_video" and final["frames"] > 8
        assert http.get(f"/jobs/{job_id}/final.mp4").content == (run / "final.mp4").read_bytes()
        records = [json.loads(x) for x in (data / "jobs" / job_id / "events.jsonl").read_text().splitlines()]
        statuses = [e["status"] for e in records if e["type"] == "status"]
        assert statuses[-1] == "done" and statuses.count("running") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        http.close()


# ----- several jobs at once ---------------------------------------------------------------------------------------
def _final_frames(run_dir: Path) -> Any:
    from openmora.artifacts import ArtifactStore

    manifest = json.loads((run_dir / "manifest.json").read_text())
    return ArtifactStore(run_dir).frames(manifest["run"]["final"])


def _status_events(data: Path, job_id: str) -> list[dict[str, Any]]:
    lines = (data / "jobs" / job_id / "events.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "status"]


@pytest.mark.unit
def test_a_queued_step_is_taken_by_one_slot_and_a_jobs_steps_one_after_another(tmp_path: Path) -> None:
    import threading

    from openmora.server.queue import JobQueue

    queue = JobQueue(tmp_path / "jobs.sqlite3")
    ids = [
        queue.add_job("text-to-video", prompt=f"p{i}", seed=i, segments=1, best_of=1, inputs=[]).id for i in range(40)
    ]
    taken: list[tuple[int, str]] = []
    lock = threading.Lock()

    def take() -> None:
        while (step := queue.take_step()) is not None:
            with lock:
                taken.append((step.id, step.job_id))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(job for _, job in taken) == sorted(ids)  # each step once, to one taker
    assert len({step for step, _ in taken}) == 40
    # A job whose step runs gets no second step until it ends; claim() loses to the one who took it.
    first = ids[0]
    queue.set_step(taken[[j for _, j in taken].index(first)][0], status="done")
    queue.add_revision(first, "darker")
    step = queue.take_step()
    assert step is not None and step.job_id == first and step.kind == "revise"
    queue.add_revision(first, "brighter")
    assert queue.take_step() is None and queue.next_step() is None
    assert queue.claim(step.id) is False
    queue.set_step(step.id, status="done")
    nxt = queue.next_step()
    assert nxt is not None and nxt.text == "brighter"
    assert queue.claim(nxt.id) is True and queue.claim(nxt.id) is False


@pytest.mark.unit
def test_jobs_at_once_follow_the_memory_estimate_and_are_checked(tmp_path: Path) -> None:
    from openmora.errors import InputError
    from openmora.memory import GB
    from openmora.profiles import load_profile
    from openmora.scale_jobs import concurrent_jobs, job_memory, jobs_that_fit

    weights, reserve = job_memory(load_profile("mora"))["cuda"]
    assert jobs_that_fit(weights, reserve, 24 * GB) == 1  # one 24 GB card: mora runs one job at a time
    assert jobs_that_fit(weights, reserve, 100 * GB) == 2  # 58.9 GB of weights + 2 x 14 GB of reserve
    tiny_w, tiny_r = job_memory(load_profile("tiny"), {r: "cpu" for r in load_profile("tiny").roles})["cpu"]
    assert jobs_that_fit(tiny_w, tiny_r, int(0.6 * GB)) == 2 and jobs_that_fit(tiny_w, tiny_r, 64 * GB) == 4
    assert 1 <= concurrent_jobs(load_profile("tiny")) <= max(1, os.cpu_count() or 1)
    with pytest.raises(InputError, match="--jobs must be a whole number"):
        create_app(tmp_path / "data", jobs=0)
    assert not (tmp_path / "data").exists()
    from openmora.cli import build_parser

    assert build_parser().parse_args(["serve", "--jobs", "2"]).jobs == 2
    assert build_parser().parse_args(["serve"]).jobs is None


@pytest.mark.integration
def test_two_slots_run_two_jobs_at_once_with_the_frames_of_one_at_a_time(tmp_path: Path) -> None:
    import numpy as np

    from openmora import Orchestrator

    data = tmp_path / "data"
    requests = [("a fox running through snow", 5), ("a red kite over the sea", 6)]
    app = create_app(data, profile="tiny", llm="none", jobs=2, report=False)
    with TestClient(app) as client:
        assert app.state.openmora.worker.n_slots == 2
        client.post("/queue/pause")  # both queued before either starts
        ids = []
        for prompt, seed in requests:
            r = client.post(
                "/jobs", data={"task": "text-to-video", "prompt": prompt, "seed": str(seed), "segments": "2"}
            )
            ids.append(r.json()["id"])
        client.post("/queue/resume")
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(seen) < 2:  # GET /queue lists both while they overlap
            queue = client.get("/queue").json()
            if len(queue["running_jobs"]) == 2:
                seen = set(queue["running_jobs"])
            elif not queue["running_jobs"] and not queue["queued"]:
                break
            time.sleep(0.02)
        jobs = [_wait(client, job_id) for job_id in ids]
    assert seen == set(ids)
    assert [j["status"] for j in jobs] == ["done", "done"], [j["error"] for j in jobs]
    runs = []
    for job_id in ids:
        statuses = _status_events(data, job_id)
        running = next(e for e in statuses if e["status"] == "running")
        done = next(e for e in statuses if e["status"] == "done")
        runs.append((running["slot"], running["time"], done["time"]))
    (slot_a, start_a, end_a), (slot_b, start_b, end_b) = runs
    assert {slot_a, slot_b} == {0, 1}
    assert start_a < end_b and start_b < end_a  # each started before the other ended

    # The same requests one at a time, in this process: the same frames.
    orch = Orchestrator(report=False)
    for job_id, (prompt, seed) in zip(ids, requests, strict=True):
        serial = orch.run("text-to-video", prompt=prompt, seed=seed, segments=2, out=tmp_path / f"serial-{seed}")
        run_dir = data / "jobs" / job_id / "run"
        frames = _final_frames(run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        final = next(a for a in manifest["artifacts"] if a["id"] == manifest["run"]["final"])
        assert frames.shape[0] == final["frames"] > 8 and (run_dir / "final.mp4").is_file()
        assert np.array_equal(frames, _final_frames(serial.run_dir))
