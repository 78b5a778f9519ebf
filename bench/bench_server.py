"""Benchmark of ``openmora serve``: throughput, overhead per job against ``Orchestrator.run``, and a kill -9 soak.

    python -m bench.bench_server                      # tiny profile, --llm none, 1 torch thread, 2 segments a job
    python -m bench.bench_server --jobs 10 --soak-jobs 12 --repeat 3

Every job is a text-to-video request (``--segments``, default 2: enhance_prompt, text_to_image, image_to_video,
extend_video) on a real server: ``python -m openmora serve`` in a subprocess on a free port of 127.0.0.1.

1. Throughput: ``--jobs`` jobs queued at once on a fresh server (its pipelines load during the first job):
   jobs/minute from the first submit to the last ``done``, and the time from a job's submit to its first
   ``progress`` event (the first job's, and the median over jobs), read from each job's SSE stream.
2. Overhead per job: the same request ``--repeat`` times through the (warm) server, one job at a time, alternated
   with ``Orchestrator.run`` in this process (warm: one run first). Server wall per job: its own ``status`` events
   (``running`` -> ``done``, stamped on arrival of the SSE stream) and the queue's ``started``/``finished`` (1 s
   resolution); end to end: submit -> ``done`` seen by the client. Overhead = (server - in-process) / in-process,
   best against best (the goal: under 5%) and median against median.
3. Soak: ``--soak-jobs`` jobs queued on a fresh server, which is killed with SIGKILL ``--kills`` times while a job
   runs (at spread-out numbers of finished jobs, once the running job has a finished clip) and restarted. Lost jobs:
   any that does not end ``done``. Re-rendered artifacts: an artifact on disk at a kill whose id or sha256 changed
   by the end; steps run twice: ``tool_call`` lines of a tool beyond the plan's steps with that tool.

Writes ``bench/results/server.json`` (with the load average: the machine may be shared) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "server.json"
os.environ.setdefault("OPENMORA_TORCH_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "a fox running through snow at dusk"
FINISHED = ("done", "failed", "cancelled")


# ----- a server subprocess ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m openmora serve`` on a data folder and a free port; started, killed (-9) and restarted."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start the server and wait until it answers; returns the seconds that took."""
        env = dict(os.environ, OPENMORA_TORCH_THREADS="1", PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "openmora", "serve", "--port", str(self.port), "--data", str(self.data)]
        cmd += ["--llm", "none", "--profile", "tiny"]
        t0 = time.perf_counter()
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        end = t0 + timeout
        while time.perf_counter() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited: " + self.log.read_text()[-2000:])
            try:
                if httpx.get(f"{self.base}/queue", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s")

    def kill9(self) -> None:
        """SIGKILL the server and wait for it to die."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it takes longer than 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Watch:
    """One job's SSE stream read in a thread: every record with its arrival time (``time.perf_counter``)."""

    def __init__(self, base: str, job_id: str) -> None:
        self.job_id = job_id
        self.records: list[tuple[float, dict[str, Any]]] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base,), daemon=True)
        self._thread.start()

    def _read(self, base: str) -> None:
        try:
            with httpx.stream("GET", f"{base}/jobs/{self.job_id}/events", timeout=None) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        record = json.loads(line[len("data: ") :])
                        self.records.append((time.perf_counter(), record))
                        if record.get("type") == "status" and record.get("status") in FINISHED:
                            break
        finally:
            self.done.set()

    def first(self, kind: str, status: str | None = None) -> float | None:
        """Arrival time of the first record of a type (and status), or None."""
        for t, rec in self.records:
            if rec.get("type") == kind and (status is None or rec.get("status") == status):
                return t
        return None

    def wait(self, timeout: float) -> None:
        """Wait until the job's stream has ended (its job finished)."""
        if not self.done.wait(timeout):
            raise RuntimeError(f"job {self.job_id} did not finish within {timeout:.0f} s")


def _submit(http: httpx.Client, segments: int, seed: int = 0) -> str:
    r = http.post(
        "/jobs", data={"task": "text-to-video", "prompt": PROMPT, "segments": str(segments), "seed": str(seed)}
    )
    r.raise_for_status()
    return str(r.json()["id"])


def _db_seconds(job: dict[str, Any]) -> float | None:
    if not job.get("started") or not job.get("finished"):
        return None
    return (datetime.fromisoformat(job["finished"]) - datetime.fromisoformat(job["started"])).total_seconds()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----- 1. throughput ------------------------------------------------------------------------------------------------
def throughput(server: Server, n: int, segments: int) -> dict[str, Any]:
    """``n`` jobs queued at once on a fresh server: jobs/minute and submit -> first progress."""
    http = httpx.Client(base_url=server.base, timeout=30)
    load0 = _load()
    submits: list[float] = []
    watches: list[Watch] = []
    for _ in range(n):
        submits.append(time.perf_counter())
        job_id = _submit(http, segments)
        watches.append(Watch(server.base, job_id))
    for w in watches:
        w.wait(600)
    done_t = [w.first("status", "done") for w in watches]
    lost = [w.job_id for w, t in zip(watches, done_t, strict=True) if t is None]
    first_progress = [
        (t - s) if (t := w.first("progress")) is not None else None for w, s in zip(watches, submits, strict=True)
    ]
    ok_done = [t for t in done_t if t is not None]
    total = max(ok_done) - submits[0]
    firsts = [x for x in first_progress if x is not None]
    # after the first job (which loads the pipelines): the steady rate of a warm server
    warm_span = max(ok_done) - min(ok_done)
    http.close()
    return {
        "jobs": n,
        "segments": segments,
        "not_done": lost,
        "total_s": round(total, 2),
        "jobs_per_minute": round(60 * len(ok_done) / total, 2),
        "warm_jobs_per_minute": round(60 * (len(ok_done) - 1) / warm_span, 2) if warm_span > 0 else None,
        "first_job_submit_to_first_progress_s": round(first_progress[0], 3) if first_progress[0] else None,
        "median_submit_to_first_progress_s": round(statistics.median(firsts), 3),
        "load_average": {"start": load0, "end": _load()},
    }


# ----- 2. overhead --------------------------------------------------------------------------------------------------
def overhead(server: Server, repeat: int, segments: int, work: Path) -> dict[str, Any]:
    """The same request through the warm server (one job at a time) and ``Orchestrator.run`` here, alternated."""
    from openmora import Orchestrator

    http = httpx.Client(base_url=server.base, timeout=30)
    load0 = _load()
    orch = Orchestrator(profile="tiny", llm="none")
    orch.run("text-to-video", prompt=PROMPT, segments=segments, seed=0, out=work / "warm")  # loads the pipelines
    local: list[float] = []
    local_run: list[float] = []
    events: list[float] = []
    e2e: list[float] = []
    db: list[float] = []
    run_wall: list[float] = []
    for i in range(repeat):
        t0 = time.perf_counter()
        res = orch.run("text-to-video", prompt=PROMPT, segments=segments, seed=0, out=work / f"local-{i}")
        local.append(time.perf_counter() - t0)
        local_run.append(float(res.timings["wall_s"]))

        t0 = time.perf_counter()
        job_id = _submit(http, segments)
        w = Watch(server.base, job_id)
        w.wait(300)
        seen = w.first("status", "done")
        running = w.first("status", "running")
        if seen is None or running is None:
            raise RuntimeError(f"server job {job_id} did not end done")
        e2e.append(seen - t0)
        events.append(seen - running)
        job = http.get(f"/jobs/{job_id}").json()
        if (s := _db_seconds(job)) is not None:
            db.append(s)
        run_wall.append(float((job.get("timings") or {}).get("wall_s", 0.0)))
    http.close()

    def pct(a: float, b: float) -> float:
        return round(100 * (a - b) / b, 1)

    best, med = min(local), statistics.median(local)
    return {
        "repeat": repeat,
        "segments": segments,
        "in_process_s": [round(x, 3) for x in local],
        "in_process_run_wall_s": [round(x, 3) for x in local_run],
        "server_events_s": [round(x, 3) for x in events],
        "server_db_s": db,
        "server_run_wall_s": [round(x, 3) for x in run_wall],
        "end_to_end_s": [round(x, 3) for x in e2e],
        "best": {
            "in_process_s": round(best, 3),
            "server_events_s": round(min(events), 3),
            "end_to_end_s": round(min(e2e), 3),
            "server_events_overhead_pct": pct(min(events), best),
            "end_to_end_overhead_pct": pct(min(e2e), best),
            # where it goes: the run itself in the server (its manifest's wall) against the in-process run's
            "run_wall_in_server_s": round(min(run_wall), 3),
            "run_wall_in_process_s": round(min(local_run), 3),
            "run_wall_overhead_pct": pct(min(run_wall), min(local_run)),
        },
        "median": {
            "in_process_s": round(med, 3),
            "server_events_s": round(statistics.median(events), 3),
            "end_to_end_s": round(statistics.median(e2e), 3),
            "server_db_s": statistics.median(db) if db else None,
            "server_events_overhead_pct": pct(statistics.median(events), med),
            "end_to_end_overhead_pct": pct(statistics.median(e2e), med),
            "run_wall_in_server_s": round(statistics.median(run_wall), 3),
            "run_wall_in_process_s": round(statistics.median(local_run), 3),
            "run_wall_overhead_pct": pct(statistics.median(run_wall), statistics.median(local_run)),
            # the worker's own work around the run: status writes, the last previews
            "outside_run_s": round(statistics.median(e - r for e, r in zip(events, run_wall, strict=True)), 3),
        },
        "load_average": {"start": load0, "end": _load()},
    }


# ----- 3. soak ------------------------------------------------------------------------------------------------------
def _disk_artifacts(jobs_dir: Path) -> dict[str, dict[str, str]]:
    """Every job's manifest artifacts on disk: ``{job: {artifact id: sha256}}``."""
    out: dict[str, dict[str, str]] = {}
    for manifest in jobs_dir.glob("*/run/manifest.json"):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        out[manifest.parent.parent.name] = {str(a["id"]): str(a.get("sha256")) for a in data.get("artifacts", [])}
    return out


def _steps_run_twice(run: Path) -> int:
    """``tool_call`` lines (without an error) of each tool beyond the plan's steps with that tool."""
    steps = json.loads((run / "plan_state.json").read_text())["plan"]["steps"]
    planned: dict[str, int] = {}
    for s in steps:
        planned[str(s.get("tool"))] = planned.get(str(s.get("tool")), 0) + 1
    made: dict[str, int] = {}
    for line in (run / "transcript.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "tool_call" and not rec.get("error"):
            made[str(rec["tool"])] = made.get(str(rec["tool"]), 0) + 1
    return sum(max(0, c - planned.get(tool, 0)) for tool, c in made.items())


def soak(server: Server, n: int, kills: int, segments: int) -> dict[str, Any]:
    """``n`` jobs queued; the server SIGKILLed and restarted ``kills`` times while jobs run."""
    http = httpx.Client(base_url=server.base, timeout=30)
    load0 = _load()
    t_start = time.perf_counter()
    ids = [_submit(http, segments, seed=i) for i in range(n)]
    thresholds = [round(n * (k + 1) / (kills + 1)) - 1 for k in range(kills)]  # spread over the run
    seen: dict[str, dict[str, str]] = {}  # the artifacts on disk at the kills (first sha seen)
    kill_log: list[dict[str, Any]] = []

    def done_count() -> int:
        return sum(j["status"] == "done" for j in http.get("/jobs").json()["jobs"])

    for threshold in thresholds:
        while done_count() < threshold:
            time.sleep(0.3)
        # kill mid-job: once the running job has a finished clip and steps left (at most 30 s of waiting)
        end = time.perf_counter() + 30
        victim, tools_done = None, []
        while time.perf_counter() < end:
            running = http.get("/queue").json()["running"]
            if running:
                job = http.get(f"/jobs/{running}").json()
                steps = (job.get("plan") or {}).get("steps", [])
                tools_done = [s["tool"] for s in steps if s["status"] == "done"]
                if "image_to_video" in tools_done and len(tools_done) < len(steps):
                    victim = running
                    break
            time.sleep(0.05)
        finished = done_count()
        server.kill9()
        for job_id, arts in _disk_artifacts(server.data / "jobs").items():
            for art, sha in arts.items():
                seen.setdefault(job_id, {}).setdefault(art, sha)
        restart_s = server.start()
        kill_log.append(
            {
                "done_jobs_at_kill": finished,
                "running_job": victim,
                "its_finished_steps": tools_done,
                "restart_s": round(restart_s, 2),
            }
        )
        http.close()
        http = httpx.Client(base_url=server.base, timeout=30)

    end = time.perf_counter() + 900
    while True:
        jobs = {j["id"]: j for j in http.get("/jobs").json()["jobs"]}
        if all(jobs.get(i, {}).get("status") in FINISHED for i in ids) or time.perf_counter() > end:
            break
        time.sleep(0.5)
    total = time.perf_counter() - t_start
    http.close()
    final = _disk_artifacts(server.data / "jobs")
    lost = [i for i in ids if jobs.get(i, {}).get("status") != "done"]
    changed = sum(final.get(j, {}).get(a) != sha for j, arts in seen.items() for a, sha in arts.items())
    expected_arts = 1 + segments  # the image and one clip a segment
    extra = sum(max(0, len(final.get(i, {})) - expected_arts) for i in ids)
    twice = sum(_steps_run_twice(server.data / "jobs" / i / "run") for i in ids if i not in lost)
    resumed = 0
    for i in ids:
        lines = (server.data / "jobs" / i / "run" / "transcript.jsonl").read_text().splitlines()
        resumed += any(json.loads(x).get("type") == "run_resume" for x in lines)
    return {
        "jobs": n,
        "segments": segments,
        "kills": kill_log,
        "total_s": round(total, 2),
        "jobs_lost": len(lost),
        "lost_ids": lost,
        "jobs_resumed": resumed,
        "artifacts_checked": sum(len(a) for a in seen.values()),
        "artifacts_rerendered": changed + extra,
        "artifacts_changed": changed,
        "artifacts_extra": extra,
        "steps_run_twice": twice,
        "load_average": {"start": load0, "end": _load()},
    }


# ----- main ---------------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "fastapi", "uvicorn", "httpx"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is shown as such
            out[pkg] = "missing"
    return out


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    """Run the three measures, print their tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="throughput: jobs queued at once")
    parser.add_argument("--segments", type=int, default=2, help="segments of each text-to-video job (1-8)")
    parser.add_argument("--repeat", type=int, default=5, help="overhead: jobs through the server and runs in-process")
    parser.add_argument("--soak-jobs", type=int, default=30, help="soak: jobs queued")
    parser.add_argument("--kills", type=int, default=3, help="soak: SIGKILLs and restarts")
    parser.add_argument("--out", default=str(OUT), help="the JSON to write")
    args = parser.parse_args()
    from openmora.errors import InputError

    for name in ("jobs", "repeat", "soak_jobs", "kills"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 1 <= args.segments <= 8:
        raise InputError(f"--segments must be from 1 to 8, got {args.segments}")
    if args.kills >= args.soak_jobs:
        raise InputError(f"--kills must be below --soak-jobs ({args.soak_jobs}), got {args.kills}")
    cmd = ("python -m bench.bench_server " + " ".join(sys.argv[1:])).strip()
    t0 = time.perf_counter()
    load0 = _load()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = Server(work / "data", work / "server.log")
        try:
            first_start = server.start()
            thr = throughput(server, args.jobs, args.segments)
            ovh = overhead(server, args.repeat, args.segments, work / "local")
        finally:
            server.stop()
        soak_server = Server(work / "soak", work / "soak.log")
        try:
            soak_server.start()
            sk = soak(soak_server, args.soak_jobs, args.kills, args.segments)
        finally:
            soak_server.stop()
    import torch

    result: dict[str, Any] = {
        "command": cmd,
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": 1},
        "software": _versions(),
        "profile": "tiny",
        "llm": "none",
        "request": {"task": "text-to-video", "prompt": PROMPT, "segments": args.segments},
        "server_start_s": round(first_start, 2),
        "throughput": thr,
        "overhead": ovh,
        "soak": sk,
        "bench_s": round(time.perf_counter() - t0, 1),
        "load_average": {"start": load0, "end": _load()},
        "torch_cuda": torch.cuda.is_available(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    print(
        f"Command: `{cmd}` ({m['platform']}, {m['cpu_count']} cores, 1 torch thread, profile tiny, --llm none, "
        f"text-to-video {args.segments} segments; load average {load0[0]}-{result['load_average']['end'][0]})\n"
    )
    print(
        "| throughput | jobs | jobs/minute | jobs/minute after the first | submit -> 1st progress, job 1 s | median s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| one server, queued at once | {thr['jobs']} | {thr['jobs_per_minute']:.1f} | {thr['warm_jobs_per_minute']} | "
        f"{thr['first_job_submit_to_first_progress_s']} | {thr['median_submit_to_first_progress_s']:.2f} |\n"
    )
    b, md = ovh["best"], ovh["median"]
    print(f"| per job (best / median of {args.repeat}) | seconds | overhead vs in-process |")
    print("|---|---:|---:|")
    print(f"| `Orchestrator.run` in-process, warm | {b['in_process_s']:.3f} / {md['in_process_s']:.3f} | |")
    print(
        f"| server: status running -> done (its events) | {b['server_events_s']:.3f} / {md['server_events_s']:.3f} | "
        f"{b['server_events_overhead_pct']:+.1f}% / {md['server_events_overhead_pct']:+.1f}% |"
    )
    print(
        f"| the run inside the server (its manifest's wall) vs in-process run | {b['run_wall_in_server_s']:.3f} / "
        f"{md['run_wall_in_server_s']:.3f} | {b['run_wall_overhead_pct']:+.1f}% / {md['run_wall_overhead_pct']:+.1f}% |"
    )
    print(f"| server: queue started -> finished (1 s resolution) | - / {md['server_db_s']} | |")
    print(
        f"| client: submit -> done seen | {b['end_to_end_s']:.3f} / {md['end_to_end_s']:.3f} | "
        f"{b['end_to_end_overhead_pct']:+.1f}% / {md['end_to_end_overhead_pct']:+.1f}% |\n"
    )
    print("| soak | jobs | kills | jobs lost | resumed | artifacts checked | re-rendered | steps run twice | total s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| SIGKILL + restart | {sk['jobs']} | {len(sk['kills'])} | {sk['jobs_lost']} | {sk['jobs_resumed']} | "
        f"{sk['artifacts_checked']} | {sk['artifacts_rerendered']} | {sk['steps_run_twice']} | {sk['total_s']:.0f} |"
    )
    out = Path(args.out).resolve()
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwrote {shown} ({result['bench_s']:.0f} s)")
    ok = not thr["not_done"] and sk["jobs_lost"] == 0 and sk["artifacts_rerendered"] == 0 and sk["steps_run_twice"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
