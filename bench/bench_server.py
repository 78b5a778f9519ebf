"""Benchmark of ``openmora serve``: throughput, overhead per job against ``Orchestrator.run``, and a kill -9 soak.

    python -m bench.bench_server                      # tiny profile, --llm none, 1 torch thread, 2 segments a job
    python -m bench.bench_server --jobs 10 --soak-jobs 12 --repeat 10
    python -m bench.bench_server --only overhead      # one part; the others in --out are kept as they were

Every job is a text-to-video request (``--segments``, default 2: enhance_prompt, text_to_image, image_to_video,
extend_video) on a real server: ``python -m openmora serve`` in a subprocess on a free port of 127.0.0.1.

1. Throughput: ``--jobs`` jobs queued at once on a fresh server (its pipelines load during the first job):
   jobs/minute from the first submit to the last ``done``, and the time from a job's submit to its first
   ``progress`` event (the first job's, and the median over jobs), read from each job's SSE stream.
2. Overhead per job: the same request through the (warm) server, one job at a time, and ``Orchestrator.run`` in this
   process (warm: one run of each first), in ``--repeat`` pairs (default 20) whose order alternates: in-process then
   server, server then in-process, ... Server wall per job: its own ``status`` events (``running`` -> ``done``,
   stamped on arrival of the SSE stream, opened while the queue is paused so that it sees them live) and the queue's
   ``started``/``finished`` (1 s resolution); end to end: the submit request plus resume -> ``done`` seen. Overhead =
   (server - in-process) / in-process, three ways: best against best, the ratio of the medians (the goal: under 5%),
   and the median over pairs of each pair's ratio. Why 20 pairs: on a shared 2-core machine one run's wall moves by
   10-30% with the load, so the median of 5 moves by several percent, as much as the effect measured; 20 pairs (about
   a minute for jobs of about 1 s) bring the medians' spread down to a few percent, and the pairs' ratios (runs made
   seconds apart) cancel the slow drift of the load.
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
REPEAT = 20  # overhead pairs (see the docstring: why 20)
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


# ----- 2. overhead ---------------------------------------------------------------------------------------------------
def _server_job(server: Server, http: httpx.Client, segments: int) -> dict[str, float]:
    """One job through the server, waited for: its seconds by its events, end to end, in the queue, its run's wall.

    The queue is paused while the job is submitted and its SSE stream opens, then resumed: the stream sees the
    ``running`` event live (a stream opened once the job had started would stamp it late, when it is replayed).
    End to end is the submit request plus resume -> ``done`` seen (the bench's own wait for the stream left out).
    """
    http.post("/queue/pause").raise_for_status()
    t0 = time.perf_counter()
    job_id = _submit(http, segments)
    submit_s = time.perf_counter() - t0
    w = Watch(server.base, job_id)
    end = time.perf_counter() + 30
    while w.first("status", "queued") is None:
        if time.perf_counter() > end:
            raise RuntimeError(f"the SSE stream of job {job_id} did not start within 30 s")
        time.sleep(0.005)
    t1 = time.perf_counter()
    http.post("/queue/resume").raise_for_status()
    w.wait(300)
    seen = w.first("status", "done")
    running = w.first("status", "running")
    if seen is None or running is None:
        raise RuntimeError(f"server job {job_id} did not end done")
    job = http.get(f"/jobs/{job_id}").json()
    return {
        "events": seen - running,
        "e2e": submit_s + (seen - t1),
        "db": _db_seconds(job) or float("nan"),
        "run_wall": float((job.get("timings") or {}).get("wall_s", 0.0)),
    }


def overhead(server: Server, repeat: int, segments: int, work: Path) -> dict[str, Any]:
    """The same request through the warm server (one job at a time) and ``Orchestrator.run`` here, in ``repeat``
    pairs whose order alternates (in-process first, then server first, ...): a load that changes over the minutes
    falls on both kinds alike, and a pair's ratio compares runs made seconds apart."""
    from openmora import Orchestrator

    http = httpx.Client(base_url=server.base, timeout=30)
    load0 = _load()
    orch = Orchestrator(profile="tiny", llm="none")
    orch.run("text-to-video", prompt=PROMPT, segments=segments, seed=0, out=work / "warm")  # loads the pipelines
    _server_job(server, http, segments)  # and the server's (a fresh server's first job loads them)
    local: list[float] = []
    local_run: list[float] = []
    jobs: list[dict[str, float]] = []
    for i in range(repeat):
        for which in ("local", "server") if i % 2 == 0 else ("server", "local"):
            if which == "server":
                jobs.append(_server_job(server, http, segments))
                continue
            t0 = time.perf_counter()
            res = orch.run("text-to-video", prompt=PROMPT, segments=segments, seed=0, out=work / f"local-{i}")
            local.append(time.perf_counter() - t0)
            local_run.append(float(res.timings["wall_s"]))
    http.close()
    events = [j["events"] for j in jobs]
    e2e = [j["e2e"] for j in jobs]
    run_wall = [j["run_wall"] for j in jobs]
    db = [j["db"] for j in jobs if j["db"] == j["db"]]  # not NaN

    def pct(a: float, b: float) -> float:
        return round(100 * (a - b) / b, 1)

    def paired(xs: list[float], ys: list[float]) -> float:
        """The median over pairs of (server - in-process) / in-process, in percent."""
        return round(100 * statistics.median((x - y) / y for x, y in zip(xs, ys, strict=True)), 1)

    best, med = min(local), statistics.median(local)
    return {
        "repeat": repeat,
        "segments": segments,
        "order": "pairs, in-process first in even pairs and the server first in odd ones",
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
            # the ratio of the medians (the goal: under 5%)
            "server_events_overhead_pct": pct(statistics.median(events), med),
            "end_to_end_overhead_pct": pct(statistics.median(e2e), med),
            "run_wall_in_server_s": round(statistics.median(run_wall), 3),
            "run_wall_in_process_s": round(statistics.median(local_run), 3),
            "run_wall_overhead_pct": pct(statistics.median(run_wall), statistics.median(local_run)),
            # the worker's own work around the run: status writes, the last previews
            "outside_run_s": round(statistics.median(e - r for e, r in zip(events, run_wall, strict=True)), 3),
        },
        "median_of_pairs": {
            "server_events_overhead_pct": paired(events, local),
            "end_to_end_overhead_pct": paired(e2e, local),
            "run_wall_overhead_pct": paired(run_wall, local_run),
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


PARTS = ("throughput", "overhead", "soak")


def _print_tables(result: dict[str, Any]) -> None:
    """The Markdown tables of the parts in ``result``."""
    m = result["machine"]
    print(
        f"Command: `{result['command']}` ({m['platform']}, {m['cpu_count']} cores, 1 torch thread, profile tiny, "
        f"--llm none, text-to-video {result['request']['segments']} segments; load average "
        f"{result['load_average']['start'][0]}-{result['load_average']['end'][0]})\n"
    )
    if thr := result.get("throughput"):
        print(
            "| throughput | jobs | jobs/minute | jobs/minute after the first | submit -> 1st progress, job 1 s "
            "| median s |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        print(
            f"| one server, queued at once | {thr['jobs']} | {thr['jobs_per_minute']:.1f} | "
            f"{thr['warm_jobs_per_minute']} | {thr['first_job_submit_to_first_progress_s']} | "
            f"{thr['median_submit_to_first_progress_s']:.2f} |\n"
        )
    if ovh := result.get("overhead"):
        b, md, pr = ovh["best"], ovh["median"], ovh["median_of_pairs"]
        print(
            f"| per job (best / median of {ovh['repeat']}) | seconds | overhead: best / ratio of medians / "
            "median of pairs |"
        )
        print("|---|---:|---:|")
        print(f"| `Orchestrator.run` in-process, warm | {b['in_process_s']:.3f} / {md['in_process_s']:.3f} | |")
        for label, key, run_key in (
            ("server: status running -> done (its events)", "server_events", "server_events"),
            ("the run inside the server (its manifest's wall) vs in-process run", "run_wall_in_server", "run_wall"),
            ("client: submit -> done seen", "end_to_end", "end_to_end"),
        ):
            print(
                f"| {label} | {b[key + '_s']:.3f} / {md[key + '_s']:.3f} | {b[run_key + '_overhead_pct']:+.1f}% / "
                f"{md[run_key + '_overhead_pct']:+.1f}% / {pr[run_key + '_overhead_pct']:+.1f}% |"
            )
        print(f"| server: queue started -> finished (1 s resolution) | - / {md['server_db_s']} | |\n")
    if sk := result.get("soak"):
        print(
            "| soak | jobs | kills | jobs lost | resumed | artifacts checked | re-rendered | steps run twice | total s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| SIGKILL + restart | {sk['jobs']} | {len(sk['kills'])} | {sk['jobs_lost']} | {sk['jobs_resumed']} | "
            f"{sk['artifacts_checked']} | {sk['artifacts_rerendered']} | {sk['steps_run_twice']} | "
            f"{sk['total_s']:.0f} |"
        )


def main() -> int:
    """Run the parts asked for, print their tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="throughput: jobs queued at once")
    parser.add_argument("--segments", type=int, default=2, help="segments of each text-to-video job (1-8)")
    parser.add_argument(
        "--repeat", type=int, default=REPEAT, help=f"overhead: pairs of a server job and an in-process run ({REPEAT})"
    )
    parser.add_argument("--soak-jobs", type=int, default=30, help="soak: jobs queued")
    parser.add_argument("--kills", type=int, default=3, help="soak: SIGKILLs and restarts")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); the other parts of an existing --out are kept as they were",
    )
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
    parts = [p for p in PARTS if p in (args.only or PARTS)]
    cmd = ("python -m bench.bench_server " + " ".join(sys.argv[1:])).strip()
    t0 = time.perf_counter()
    load0 = _load()
    measured: dict[str, Any] = {}
    first_start = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" in parts or "overhead" in parts:
            server = Server(work / "data", work / "server.log")
            try:
                first_start = server.start()
                if "throughput" in parts:
                    measured["throughput"] = throughput(server, args.jobs, args.segments)
                if "overhead" in parts:
                    measured["overhead"] = overhead(server, args.repeat, args.segments, work / "local")
            finally:
                server.stop()
        if "soak" in parts:
            soak_server = Server(work / "soak", work / "soak.log")
            try:
                soak_server.start()
                measured["soak"] = soak(soak_server, args.soak_jobs, args.kills, args.segments)
            finally:
                soak_server.stop()
    import torch

    stamp = {"command": cmd, "date": time.strftime("%Y-%m-%d"), "commit": _commit()}
    out_path = Path(args.out)
    old: dict[str, Any] = {}
    if args.only and out_path.is_file():  # keep the parts not measured now, each with the command that made it
        old = json.loads(out_path.read_text())
    result: dict[str, Any] = {
        **stamp,
        "parts": parts,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": 1},
        "software": _versions(),
        "profile": "tiny",
        "llm": "none",
        "request": {"task": "text-to-video", "prompt": PROMPT, "segments": args.segments},
    }
    if "throughput" in measured:  # the fresh server's start, before its first job
        result["server_start_s"] = round(first_start or 0.0, 2)
    elif "server_start_s" in old:
        result["server_start_s"] = old["server_start_s"]
    for part in PARTS:
        if part in measured:
            result[part] = {**stamp, **measured[part]}
        elif part in old:
            result[part] = {**{k: old.get(k) for k in stamp}, **old[part]}
    result["bench_s"] = round(time.perf_counter() - t0, 1)
    result["load_average"] = {"start": load0, "end": _load()}
    result["torch_cuda"] = torch.cuda.is_available()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")

    _print_tables({k: v for k, v in result.items() if k not in PARTS or k in measured})
    out = out_path.resolve()
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwrote {shown} ({result['bench_s']:.0f} s)")
    thr, sk = measured.get("throughput", {}), measured.get("soak", {})
    ok = not thr.get("not_done") and not sk.get("jobs_lost") and not sk.get("artifacts_rerendered")
    return 0 if ok and not sk.get("steps_run_twice") else 1


if __name__ == "__main__":
    sys.exit(main())
