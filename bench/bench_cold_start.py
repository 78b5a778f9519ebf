"""Cold start: what a user running one command waits for, in fresh processes, and a warm server's second job.

Each scenario is a fresh ``python -m openmora run text-to-video`` process on the ``mora`` profile (full-size
random-weight builds of its models, ``bench/full_size.py``; the compile speedups as the profile lists them), timed
from the process's start to the final video on disk (*to video*) and to its exit (*to exit*: the CLI finishes the
background compiles after the video, so the next process finds them cached):

* ``first``: an empty OpenMora cache (no compile cache), ``OPENMORA_COMPILE=background`` (``--first-compile
  blocking``: compile before each region's first use, as before background compiles);
* ``cached``: the cache the first process left (regions compiled before compile in the foreground, from the cache);
* ``cached-background`` (``--with-cached-background``): the same cache, every compile in the background, those
  compiled before too (``OPENMORA_COMPILE_CACHED=background``): the other side of the foreground rule's A/B;
* ``cached-blocking`` (``--with-blocking``): the same cache, ``OPENMORA_COMPILE=blocking`` (every region compiles
  at its first use: the behaviour before background compiles, with the cache kept);
* ``first-blocking`` (``--with-first-blocking``, ~5 min): an empty cache, blocking;
* ``server``: ``openmora serve`` with the cached compiles, two text-to-video jobs one after the other; the second
  job's wall time is the warm figure (models loaded, compiled code in place).

Needs a CUDA GPU and ~14 GB of disk for the models. Prints a Markdown table and writes JSON.

    python -m bench.bench_cold_start --models /tmp/om_full --out /tmp/cold --deadline 560
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red fox running through fresh snow at dusk, cinematic"
START = time.perf_counter()


def _elapsed() -> float:
    return time.perf_counter() - START


def write_profile(models: Path, out: Path) -> Path:
    """The ``mora`` profile with its hub ids swapped for full-size random-weight folders under ``models``."""
    import yaml

    from bench.full_size import full_size_profile
    from openmora.profiles import load_profile

    mora = load_profile("mora")
    mora.roles = {k: v for k, v in mora.roles.items() if k in ("text_to_image", "image_to_video")}  # what t2v uses
    data = full_size_profile(mora, root=models).to_dict()
    data["name"] = "mora-fullsize"
    path = out / "mora-fullsize.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _env(cache: Path, mode: str) -> dict[str, str]:
    """The scenario's environment; ``mode`` is ``OPENMORA_COMPILE``, or ``cached-background`` (background compiles,
    those compiled before too)."""
    cached = "background" if mode == "cached-background" else "foreground"
    mode = "background" if mode == "cached-background" else mode
    env = dict(os.environ, OPENMORA_CACHE=str(cache), OPENMORA_COMPILE=mode, PYTHONUNBUFFERED="1")
    env["OPENMORA_COMPILE_CACHED"] = cached
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the compile cache lives in the OpenMora cache
    return env


def run_cli(name: str, profile: Path, cache: Path, mode: str, out: Path, timeout: float) -> dict[str, Any]:
    """One fresh CLI process: seconds to the final video and to exit, the CLI's own split, the compiles it ran."""
    run_dir = out / f"run-{name}"
    log = out / f"{name}.log"
    cmd = [sys.executable, "-m", "openmora", "-v", "run", "text-to-video", "--profile", str(profile)]
    cmd += ["--llm", "none", "--no-report", "--seed", "0", "--prompt", PROMPT, "--out", str(run_dir)]
    t0 = time.perf_counter()
    to_video = None
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=_env(cache, mode), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if to_video is None and (run_dir / "final.mp4").is_file():
                to_video = time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                break
            time.sleep(0.1)
    to_exit = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    row: dict[str, Any] = {
        "scenario": name,
        "compile_mode": mode,
        "rc": proc.returncode,
        "to_video_s": round(to_video, 1) if to_video else None,
        "to_exit_s": round(to_exit, 1),
    }
    done = re.search(r"done in ([\d.]+)s \(load ([\d.]+)s, generate ([\d.]+)s", text)
    if done:
        row.update(run_s=float(done[1]), load_s=float(done[2]), generate_s=float(done[3]))
    compiles = [float(s) for s in re.findall(r"compiled \S+ in ([\d.]+)s", text)]
    row["compiles"] = len(compiles)
    row["compile_s_sum"] = round(sum(compiles), 1)
    row["compile_failed"] = text.count("stays eager")
    if proc.returncode != 0:
        row["tail"] = text[-1500:]
    print(f"{name}: {row}", flush=True)
    return row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_server(profile: Path, cache: Path, out: Path, jobs: int, timeout: float) -> dict[str, Any]:
    """``openmora serve`` and ``jobs`` text-to-video jobs in turn: each job's wall time as the server records it."""
    import httpx

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "openmora", "serve", "--port", str(port), "--data", str(out / "server")]
    cmd += ["--llm", "none", "--profile", str(profile)]
    t0 = time.perf_counter()
    log = out / "server.log"
    row: dict[str, Any] = {"scenario": "server", "compile_mode": "background", "jobs_s": []}
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=_env(cache, "background"), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx.get(f"{base}/queue", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("the server did not start: " + log.read_text(errors="replace")[-1500:])
            time.sleep(0.2)
        row["server_start_s"] = round(time.perf_counter() - t0, 1)
        for k in range(jobs):
            t = time.perf_counter()
            r = httpx.post(f"{base}/jobs", data={"task": "text-to-video", "prompt": PROMPT, "seed": "0"}, timeout=30)
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                job = httpx.get(f"{base}/jobs/{job_id}", timeout=30).json()
                if job.get("status") in ("done", "failed", "cancelled"):
                    break
                if time.perf_counter() - t > timeout or _elapsed() > timeout + 60:
                    raise RuntimeError(f"job {k + 1} did not finish in time")
                time.sleep(0.2)
            row["jobs_s"].append(round(time.perf_counter() - t, 1))
            row[f"job{k + 1}_status"] = job.get("status")
            print(f"server job {k + 1}: {row['jobs_s'][-1]} s ({job.get('status')})", flush=True)
    except Exception as err:  # noqa: BLE001 - keep the rows measured so far
        row["error"] = str(err)[:1500]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | compile | to video (s) | to exit (s) | run (s) | load (s) | compiles | compile s (sum) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["scenario"] == "server":
            jobs = ", ".join(f"{s}" for s in r.get("jobs_s", []))
            lines.append(f"| server (jobs in turn: {jobs}) | background | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {r['scenario']} | {r['compile_mode']} | {r.get('to_video_s')} | {r['to_exit_s']} | {r.get('run_s')} | "
            f"{r.get('load_s')} | {r['compiles']} | {r['compile_s_sum']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="folder for the full-size builds (made if absent)")
    parser.add_argument("--profile", help="a profile name or file instead of the full-size mora builds (a CPU check)")
    parser.add_argument("--out", type=Path, required=True, help="folder for logs, runs, caches and the JSON")
    parser.add_argument("--deadline", type=float, default=560, help="skip scenarios that would start after this")
    parser.add_argument("--with-first-blocking", action="store_true", help="also an empty cache with blocking compiles")
    parser.add_argument(
        "--first-compile",
        choices=("background", "blocking"),
        default="background",
        help="OPENMORA_COMPILE of the first (empty-cache) process",
    )
    parser.add_argument("--with-blocking", action="store_true", help="also the cache with blocking compiles")
    parser.add_argument("--server-jobs", type=int, default=2)
    parser.add_argument(
        "--with-cached-background", action="store_true", help="also the cache with every compile in the background"
    )
    parser.add_argument(
        "--only", help="comma-separated scenarios (first, server, cached, cached-background, cached-blocking)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    t = time.perf_counter()
    if args.profile:
        profile = Path(args.profile)
    elif args.models:
        profile = write_profile(args.models, args.out)
    else:
        parser.error("give --models (full-size builds) or --profile")
    build_s = time.perf_counter() - t
    print(f"models ready in {build_s:.0f} s: {profile}", flush=True)
    cache = args.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    plan = [("first", args.first_compile)]
    if args.with_first_blocking:
        plan.insert(0, ("first-blocking", "blocking"))
    plan += [("server", "background"), ("cached", "background")]
    if args.with_cached_background:
        plan.append(("cached-background", "cached-background"))
    if args.with_blocking:
        plan.append(("cached-blocking", "blocking"))
    if args.only:
        keep = set(args.only.split(","))
        plan = [p for p in plan if p[0] in keep]
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "command": "python -m bench.bench_cold_start " + " ".join(argv if argv is not None else sys.argv[1:]),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "models_build_s": round(build_s, 1),
        "rows": rows,
    }
    for name, mode in plan:
        left = args.deadline - _elapsed()
        if left < 60:
            rows.append(
                {
                    "scenario": name,
                    "compile_mode": mode,
                    "skipped": "deadline",
                    "to_exit_s": None,
                    "compiles": 0,
                    "compile_s_sum": 0,
                }
            )
            continue
        if name == "first-blocking":
            run_cache = args.out / "cache-blocking"
            shutil.rmtree(run_cache, ignore_errors=True)
            rows.append(run_cli(name, profile, run_cache, mode, args.out, left))
        elif name == "server":
            rows.append(run_server(profile, cache, args.out, args.server_jobs, left))
        else:
            rows.append(run_cli(name, profile, cache, mode, args.out, left))
        (args.out / "cold_start.json").write_text(json.dumps(result, indent=2))
    print(table([r for r in rows if "skipped" not in r]))
    (args.out / "cold_start.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
