"""GPU benchmark: every `mora` task at Mora's settings, OpenMora's path against a reproduction of Mora's own code path,
in one process, with full-size random-weight models built from the committed configs.

Phases (``--phases``, comma-separated, run in this order):
  ablation   one change at a time on the SVD UNet / VAE (per-step time, one-forward error against fp32)
  baseline   Mora's code path: its loading calls (fp16, SDXL+refiner on the GPU sharing VAE and text encoder 2,
             SVD moved to the GPU *then* model-CPU-offloaded, as Mora does), its call pattern and step counts
  optimized  OpenMora: orchestrator + loader + memory manager, profile `mora` (its speedups)
  precision  final latents of SDXL+refiner, InstructPix2Pix and one SVD segment: fp32 reference (TF32 off) vs the
             fp16 baseline vs optimized, same seeds and inputs
  lowvram    OpenMora with profile `mora-lowvram` (24 GB budget)
  convs      SVD's convolutions alone per layout, then its full-resolution up block compiled per variant
  vae        SVD's temporal VAE decode alone: eager, cudnn.benchmark, channels_last, compiled decoder
  fast       opt-in output-changing mode (reported apart)
  lowvram_fast  the fast mode of `mora-lowvram` (fp8 Wan weights: the 14 B transformer fits in 24 GB)
  lowvram_pageable  `mora-lowvram` with evictions to pageable memory (OPENMORA_PINNED_EVICTIONS=0), to compare
  wan_cfg    Wan FLF2V's cond/uncond calls separate vs batched (``batched_cfg``): time per step, peak, error vs fp32
Per task it prints wall time, per-stage times (each pipeline, denoiser, VAE decode, video encode, orchestration),
peak VRAM, speedup over the baseline and the FLOP floor of the denoiser passes at the measured bf16 matmul rate.

Usage:
    python -m bench.gpu_bench --tiny --out /tmp/bench            # CPU, tiny models: checks the script end to end
    python -m bench.gpu_bench --out $OUT --phases baseline,optimized,precision   # on the H100
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.ablation import rel_err, sync
from openmora.profiles import load_profile
from openmora.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("bench")
# One runtime for the whole bench process: phases reuse (or clear) the pipelines that earlier phases loaded.
RUNTIME = Runtime()
# phases that build their own modules; the others need the saved full-size pipelines
SELF_BUILT_PHASES = {"ablation", "vae", "convs", "wan_cfg"}
TASKS = ("text-to-video", "image-to-video", "extend", "edit", "digital-world", "connect")
PROMPT = "a red fox running through fresh snow at dusk, cinematic"
EDIT = "make it look like a watercolor painting"
H100_BF16_TFLOPS = 790.0  # measured 8192^3 bf16 matmul on this workplace's H100 (KINDS.md: 798); fp16 rate is the same
DENOISERS = ("unet", "transformer")
START = time.perf_counter()


# ----- timing helpers ------------------------------------------------------------------------------------------------
class StageTimer:
    """Times pipeline modules' methods: denoiser forwards, VAE decodes.

    On CUDA each timed call records a pair of CUDA events and nothing waits for them until :meth:`collect`, after the
    run: the timer leaves the host free to queue the next kernels while the GPU works, as an uninstrumented run does.
    A stage's seconds are GPU-timeline time from the call's first queued kernel to its last one's end (idle gaps
    inside the call included). ``blocking=True`` synchronizes around every call instead (host wall time; the
    measurement then adds one host round trip per call to the run).
    """

    def __init__(self, blocking: bool = False) -> None:
        self.blocking = blocking
        self.enabled = True  # False: the hooks stay in place and do nothing (an uninstrumented run)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first_args: dict[str, Any] = {}
        self.wrapped: set[int] = set()
        self.modules: dict[str, torch.nn.Module] = {}
        self._pending: list[tuple[str, Any, Any]] = []

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self._pending.clear()

    def forget(self) -> None:
        """Drop references to the last phase's modules (a 14 B model held here would stay in host memory)."""
        self.modules.clear()
        self.first_args.clear()
        self.wrapped.clear()

    def collect(self) -> dict[str, float]:
        """Resolve the recorded events into ``seconds`` (waits for the GPU); returns ``seconds``."""
        for label, start, end in self._pending:
            end.synchronize()
            self.seconds[label] += start.elapsed_time(end) / 1e3
        self._pending.clear()
        return self.seconds

    def _start(self) -> Any:
        if torch.cuda.is_available() and not self.blocking:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        sync()
        return time.perf_counter()

    def _stop(self, label: str, start: Any) -> None:
        self.calls[label] += 1
        if isinstance(start, float):
            sync()
            self.seconds[label] += time.perf_counter() - start
        else:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((label, start, end))

    def _wrap(self, obj: Any, attr: str, label: str, keep_args: bool = False) -> None:
        if obj is None or (id(obj), attr) in self.wrapped:
            return
        self.wrapped.add((id(obj), attr))
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            start = self._start()
            out = fn(*args, **kwargs)
            self._stop(label, start)
            if keep_args and label not in self.first_args:
                self.first_args[label] = _detach(args, kwargs)
            return out

        setattr(obj, attr, timed)

    def _hook(self, module: torch.nn.Module, label: str) -> None:
        # torch forward hooks, not a wrapped .forward: diffusers' offload re-arms accelerate hooks after every call,
        # which resets .forward. With offload, the time includes moving the weights in (Mora pays that too).
        if id(module) in self.wrapped:
            return
        self.wrapped.add(id(module))
        start: list[Any] = []

        def pre(_m: Any, args: tuple, kwargs: dict) -> None:
            if not self.enabled:
                return
            start.append(self._start())
            if label not in self.first_args:
                self.first_args[label] = _detach(args, kwargs)

        def post(_m: Any, _args: tuple, _out: Any) -> None:
            if not self.enabled or not start:
                return
            self._stop(label, start.pop())
            if self.calls[label] % 20 == 0:  # a trace in bench.log even if a long run hits the command's limit
                log.info("  %s: %d calls", label, self.calls[label])

        module.register_forward_pre_hook(pre, with_kwargs=True)
        module.register_forward_hook(post)

    def instrument(self, pipe: Any, name: str) -> None:
        """Time ``name``'s denoiser forwards and VAE decodes (shared VAEs are timed under the first name)."""
        for d in DENOISERS:
            module = getattr(pipe, d, None)
            if module is not None:
                self.modules[f"{name}.{d}"] = module
                self._hook(module, f"{name}.{d}")
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            self._wrap(vae, "decode", f"{name}.vae_decode")


def _detach(args: tuple, kwargs: dict) -> tuple:
    def conv(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().clone()
        if isinstance(x, (list, tuple)):
            return type(x)(conv(i) for i in x)
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return conv(args), conv(kwargs)


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def elapsed() -> float:
    return time.perf_counter() - START


# ----- inputs ------------------------------------------------------------------------------------------------------
def make_inputs(folder: Path, width: int, height: int, frames: int) -> dict[str, Path]:
    """A synthetic input image and two clips (moving gradients) at the profile's size."""
    from openmora.video_io import write_image, write_video

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height)) + 64], -1).astype(
        np.uint8
    )
    write_image(img, folder / "input.png")
    clips = {}
    for name, shift in (("clip_a", 0), ("clip_b", 97)):
        seq = np.stack([np.roll(img, 8 * t + shift, axis=1) for t in range(frames)])
        write_video(seq, 7, folder / f"{name}.mp4")
        clips[name] = folder / f"{name}.mp4"
    return {"image": folder / "input.png", **clips}


def task_kwargs(task: str, inputs: dict[str, Path], segments: int) -> dict[str, Any]:
    return {
        "text-to-video": dict(prompt=PROMPT, segments=segments),
        "image-to-video": dict(prompt=PROMPT, image=inputs["image"], segments=1),
        "extend": dict(videos=[inputs["clip_a"]], segments=1),
        "edit": dict(prompt=EDIT, videos=[inputs["clip_a"]], segments=1),
        "digital-world": dict(image=inputs["image"], segments=1),
        "connect": dict(videos=[inputs["clip_a"], inputs["clip_b"]]),
    }[task]


# ----- profiles ----------------------------------------------------------------------------------------------------
def bench_profile(name: str, args: argparse.Namespace) -> Any:
    """The named profile with hub ids swapped for full-size random-weight builds (or the tiny profile for --tiny)."""
    if args.tiny:
        profile = load_profile("tiny")
        if name == "mora-lowvram":
            profile.vram_budget_gb = 24
            profile.name = "tiny-lowvram"
    else:
        from bench.full_size import full_size_profile

        profile = full_size_profile(load_profile(name), root=args.models)
    for cfg in profile.roles.values():
        if args.no_compile:
            cfg.speedups = [s for s in cfg.speedups if s not in ("compile", "vae_compile")]
        if args.steps:
            cfg.params["num_inference_steps"] = args.steps
    return profile


def pipeline_stage(role: str, part: str = "main") -> str:
    return (
        {"text_to_image": "sdxl_base", "edit_image": "ip2p", "image_to_video": "svd", "connect_frames": "wan_flf"}[role]
        if part == "main"
        else "sdxl_refiner"
    )


# ----- OpenMora's path ---------------------------------------------------------------------------------------------
def run_openmora(
    profile: Any,
    tasks: list[str],
    inputs: dict,
    args: argparse.Namespace,
    label: str,
    timer: StageTimer,
    keep_loaded: bool = False,
) -> dict:
    from openmora import Orchestrator
    from openmora.loader import PipelineLoader

    if not keep_loaded:  # the fast phase reuses the optimized phase's (compiled) pipelines where only params differ
        RUNTIME.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    results: dict[str, Any] = {}
    loader = PipelineLoader(profile, runtime=RUNTIME)
    needed = {
        "text-to-video": [("text_to_image", "main"), ("text_to_image", "refiner"), ("image_to_video", "main")],
        "image-to-video": [("image_to_video", "main")],
        "extend": [("image_to_video", "main")],
        "edit": [("edit_image", "main"), ("image_to_video", "main")],
        "digital-world": [("edit_image", "main"), ("image_to_video", "main")],
        "connect": [("connect_frames", "main")],
    }
    load_s: dict[str, float] = {}
    warm_s: dict[str, float] = {}
    for task in tasks:
        if elapsed() > args.deadline:
            results[task] = {"skipped": f"deadline {args.deadline}s reached"}
            continue
        try:
            # Load and warm (compile) the task's pipelines outside the timed run, as a long-lived server would.
            for role, part in needed[task]:
                if role not in profile.roles or (part == "refiner" and profile.roles[role].refiner is None):
                    continue
                stage = pipeline_stage(role, part)
                if stage not in load_s:
                    t = time.perf_counter()
                    pipe = loader.get(role, part)
                    sync()
                    load_s[stage] = time.perf_counter() - t
                    timer.instrument(pipe, stage)
                    t = time.perf_counter()
                    warmup(pipe, role, part, profile)
                    sync()
                    warm_s[stage] = time.perf_counter() - t
                    log.info("%s: %s loaded in %.1fs, warmed in %.1fs", label, stage, load_s[stage], warm_s[stage])
            timer.reset()
            reset_peak()
            orch = Orchestrator(profile=profile, llm="none", runs_dir=Path(args.out) / f"runs-{label}", runtime=RUNTIME)
            moves0 = _manager_moves()
            t = time.perf_counter()
            res = orch.run(task, seed=0, **task_kwargs(task, inputs, profile.segments))
            sync()
            wall = time.perf_counter() - t
            moves = [b - a for a, b in zip(moves0, _manager_moves(), strict=True)]
            tm = res.timings
            stages = {k: round(v, 3) for k, v in timer.collect().items()}
            # Clips are encoded in the background while the next segment renders: the stage is the wait that was left
            # (the end of the last clip); the encoders' whole time is reported beside it.
            stages["video_encode"] = round(tm["encode_wait_s"], 3)
            stages["video_encode_background"] = round(tm["encode_s"], 3)
            stages["load_in_run"] = round(tm["load_s"], 3)
            # evictions and reloads between pipelines (the memory manager's moves), kept out of orchestration
            stages["memory_moves"] = round(moves[0], 3)
            stages["memory_moved_gb"] = round(moves[1] / 2**30, 2)
            other = tm["generate_s"] + tm["encode_wait_s"] + tm["load_s"] + moves[0]
            stages["orchestration"] = round(max(0.0, wall - other), 3)
            stages["pipelines_other"] = round(max(0.0, tm["generate_s"] - sum(v for k, v in timer.seconds.items())), 3)
            results[task] = {
                "wall_s": round(wall, 3),
                "stages_s": stages,
                "denoiser_calls": dict(timer.calls),
                "peak_vram_gb": round(peak_gb(), 2),
                "frames": res.artifacts[-1].frames if res.artifacts else None,
            }
            log.info("%s %s: %.1fs, peak %.1f GB, stages %s", label, task, wall, peak_gb(), stages)
        except Exception as err:  # keep going: one failing task must not lose the others' numbers
            log.error("%s %s failed: %s\n%s", label, task, err, traceback.format_exc())
            results[task] = {"error": f"{type(err).__name__}: {err}"[:500]}
    results["_load_s"] = load_s
    results["_warmup_s"] = warm_s
    if args.profile_denoiser and torch.cuda.is_available():
        from bench.ablation import profile_module

        for label, module in timer.modules.items():
            if label in timer.first_args and elapsed() < args.deadline:
                try:
                    results.setdefault("_profile", {})[label] = profile_module(module, *timer.first_args[label])
                    log.info("%s profile %s: %s", label, label, results["_profile"][label])
                except Exception as err:
                    log.error("profiling %s failed: %s", label, err)
    return results


def _manager_moves() -> tuple[float, int]:
    """Seconds and bytes every device's memory manager (the bench runtime's) has spent moving weights so far."""
    managers = RUNTIME.managers()
    return sum(m.move_seconds for m in managers), sum(m.moved_bytes for m in managers)


def warmup(pipe: Any, role: str, part: str, profile: Any) -> None:
    """One short call at the run's shapes: compiles regional graphs, picks cuDNN algorithms, allocates."""
    from PIL import Image

    w, h = profile.width, profile.height
    gen = torch.Generator("cpu").manual_seed(123)
    params = dict(profile.roles[role].params if part == "main" else profile.roles[role].refiner.params)
    params["num_inference_steps"] = 2
    img = Image.new("RGB", (w, h), (120, 90, 60))
    with torch.inference_mode():
        if role == "text_to_image" and part == "main":
            pipe(prompt="warm", height=h, width=w, generator=gen, output_type="latent", **params)
        elif role == "text_to_image":
            lat = torch.zeros(1, 4, h // 8, w // 8, dtype=pipe.unet.dtype, device=pipe._execution_device) + 0.1
            pipe(
                prompt="warm",
                image=lat,
                denoising_start=0.8,
                generator=gen,
                output_type="latent",
                num_inference_steps=5,
            )
        elif role == "edit_image":
            pipe(prompt="warm", image=img, generator=gen, output_type="latent", **params)
        elif role == "image_to_video":
            pipe(image=img, height=h, width=w, generator=gen, output_type="np", **params)
        else:
            pipe(
                image=img,
                last_image=img,
                prompt="warm",
                height=h,
                width=w,
                generator=gen,
                output_type="latent",
                **params,
            )


# ----- Mora's path -------------------------------------------------------------------------------------------------
class MoraBaseline:
    """Mora's code path, reproduced: its from_pretrained calls, placement, call arguments and chaining.

    Loads as Mora's action constructors do (all models up front). On one GPU Mora's `cuda:0..3` become `cuda`;
    SVD keeps Mora's `.to(device)` followed by `enable_model_cpu_offload()` (the offload wins).
    Connect: Mora's SEINE is not in diffusers; the same Wan FLF2V pipeline as the profile, diffusers defaults, bf16.
    """

    def __init__(self, profile: Any, args: argparse.Namespace, timer: StageTimer) -> None:
        self.profile, self.args, self.timer = profile, args, timer
        self.pipes: dict[str, Any] = {}
        self.load_s: dict[str, float] = {}
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32

    def _from(self, role: str, part: str = "main", **kw: Any) -> Any:
        import diffusers

        cfg = self.profile.roles[role] if part == "main" else self.profile.roles[role].refiner
        if cfg.model.startswith("fullsize:"):
            from bench.full_size import build_pipeline

            return build_pipeline(cfg.model.removeprefix("fullsize:"), kw.pop("dtype", self.dtype), self.device, **kw)
        if cfg.model.startswith("tiny:"):
            from openmora.tiny_models import ensure_tiny_model

            path = ensure_tiny_model(cfg.model.removeprefix("tiny:"))
        else:
            path = cfg.model
        dtype = kw.pop("dtype", self.dtype)
        pipe = getattr(diffusers, cfg.pipeline).from_pretrained(path, torch_dtype=dtype, **kw)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def load(self, tasks: list[str]) -> None:
        need = set()
        for t in tasks:
            need |= {
                "text-to-video": {"sdxl", "svd"},
                "image-to-video": {"svd"},
                "extend": {"svd"},
                "edit": {"ip2p", "svd"},
                "digital-world": {"ip2p", "svd"},
                "connect": {"wan"},
            }[t]
        dev = self.device
        if "sdxl" in need:
            t = time.perf_counter()
            base = self._from("text_to_image")
            base.to(dev)
            self.pipes["sdxl_base"] = base
            if self.profile.roles["text_to_image"].refiner is not None:
                refiner = self._from("text_to_image", "refiner", text_encoder_2=base.text_encoder_2, vae=base.vae)
                refiner.to(dev)
                self.pipes["sdxl_refiner"] = refiner
            sync()
            self.load_s["sdxl"] = time.perf_counter() - t
        if "ip2p" in need:
            t = time.perf_counter()
            self.pipes["ip2p"] = self._from("edit_image").to(dev)
            sync()
            self.load_s["ip2p"] = time.perf_counter() - t
        if "svd" in need:
            t = time.perf_counter()
            svd = self._from("image_to_video").to(dev)
            if dev == "cuda":
                svd.enable_model_cpu_offload()  # Mora's line after .to("cuda:2"): the offload is what runs
            self.pipes["svd"] = svd
            sync()
            self.load_s["svd"] = time.perf_counter() - t
        if "wan" in need:
            t = time.perf_counter()
            dtype = torch.bfloat16 if dev == "cuda" else torch.float32
            self.pipes["wan_flf"] = self._from("connect_frames", dtype=dtype).to(dev)
            sync()
            self.load_s["wan_flf"] = time.perf_counter() - t
        for name, pipe in self.pipes.items():
            self.timer.instrument(pipe, name)

    def warm(self) -> dict[str, float]:
        out = {}
        for name, pipe in self.pipes.items():
            role, part = {
                "sdxl_base": ("text_to_image", "main"),
                "sdxl_refiner": ("text_to_image", "refiner"),
                "ip2p": ("edit_image", "main"),
                "svd": ("image_to_video", "main"),
                "wan_flf": ("connect_frames", "main"),
            }[name]
            t = time.perf_counter()
            warmup(pipe, role, part, self.profile)
            sync()
            out[name] = time.perf_counter() - t
        return out

    # Mora's actions, call for call ------------------------------------------------------------------------------
    def t2i(self, prompt: str) -> Any:
        p = self.profile
        steps = p.roles["text_to_image"].params.get("num_inference_steps", 40)
        if "sdxl_refiner" not in self.pipes:  # --tiny: no refiner
            return self.pipes["sdxl_base"](
                prompt=prompt, num_inference_steps=steps, height=p.height, width=p.width
            ).images[0]
        image = self.pipes["sdxl_base"](
            prompt=prompt,
            num_inference_steps=steps,
            denoising_end=0.8,
            height=p.height,
            width=p.width,
            output_type="latent",
        ).images
        return self.pipes["sdxl_refiner"](
            prompt=prompt, num_inference_steps=steps, denoising_start=0.8, height=p.height, width=p.width, image=image
        ).images[0]

    def svd(self, image: Any, segments: int) -> list:
        p = self.profile
        prm = p.roles["image_to_video"].params
        generator = torch.manual_seed(42)
        current = image.resize((p.width, p.height))
        frames_all: list = []
        for _ in range(segments):
            frames = self.pipes["svd"](
                current,
                height=p.height,
                width=p.width,
                num_frames=prm.get("num_frames", 25),
                num_inference_steps=prm.get("num_inference_steps", 25),
                decode_chunk_size=prm.get("decode_chunk_size", 12),
                generator=generator,
                motion_bucket_id=180,
                noise_aug_strength=0.1,
            ).frames[0]
            frames_all += frames
            current = frames[-1]
        return frames_all

    def ip2p(self, image: Any, instruction: str) -> Any:
        prm = self.profile.roles["edit_image"].params
        return self.pipes["ip2p"](
            instruction,
            image=image,
            generator=torch.manual_seed(42),
            num_inference_steps=prm.get("num_inference_steps", 100),
        ).images[0]

    def connect(self, a_last: Any, b_first: Any) -> list:
        p = self.profile
        prm = p.roles["connect_frames"].params
        return self.pipes["wan_flf"](
            image=a_last,
            last_image=b_first,
            prompt="a smooth continuous transition between two scenes",
            height=p.height,
            width=p.width,
            generator=torch.manual_seed(42),
            **prm,
        ).frames[0]

    def run(self, task: str, inputs: dict, out: Path) -> tuple[list, float]:
        from PIL import Image

        from openmora.video_io import read_video

        segs = self.profile.segments
        if task == "text-to-video":
            frames = self.svd(self.t2i(PROMPT), segs)
        elif task == "image-to-video":
            frames = self.svd(Image.open(inputs["image"]).convert("RGB"), 1)
        elif task == "extend":
            clip, _ = read_video(inputs["clip_a"])
            frames = [Image.fromarray(f) for f in clip] + self.svd(Image.fromarray(clip[-1]), 1)[1:]
        elif task in ("edit", "digital-world"):
            if task == "edit":
                clip, _ = read_video(inputs["clip_a"])
                first = Image.fromarray(clip[0])
            else:
                first = Image.open(inputs["image"]).convert("RGB")
            frames = self.svd(self.ip2p(first, EDIT), 1)
        else:
            a, _ = read_video(inputs["clip_a"])
            b, _ = read_video(inputs["clip_b"])
            trans = self.connect(Image.fromarray(a[-1]), Image.fromarray(b[0]))
            frames = [Image.fromarray(f) for f in a] + list(trans) + [Image.fromarray(f) for f in b]
        sync()
        t = time.perf_counter()
        arr = np.stack([np.asarray(f) if not isinstance(f, np.ndarray) else f for f in frames])
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        # Mora's writer: moviepy's write_videofile(codec="libx264", fps=7) -- preset medium, ffmpeg's own threads.
        from moviepy import ImageSequenceClip

        ImageSequenceClip(list(arr), fps=self.profile.fps).write_videofile(
            str(out / f"mora-{task}.mp4"), codec="libx264", fps=self.profile.fps, logger=None
        )
        return frames, time.perf_counter() - t


def run_baseline(profile: Any, tasks: list[str], inputs: dict, args: argparse.Namespace, timer: StageTimer) -> dict:
    results: dict[str, Any] = {}
    base = MoraBaseline(profile, args, timer)
    base.load(tasks)
    results["_load_s"] = base.load_s
    results["_warmup_s"] = base.warm()
    out = Path(args.out) / "runs-baseline"
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        if elapsed() > args.deadline:
            results[task] = {"skipped": f"deadline {args.deadline}s reached"}
            continue
        try:
            timer.reset()
            reset_peak()
            t = time.perf_counter()
            with torch.inference_mode():
                frames, enc = base.run(task, inputs, out)
            sync()
            wall = time.perf_counter() - t
            stages = {k: round(v, 3) for k, v in timer.collect().items()}
            stages["video_encode"] = round(enc, 3)
            results[task] = {
                "wall_s": round(wall, 3),
                "stages_s": stages,
                "denoiser_calls": dict(timer.calls),
                "peak_vram_gb": round(peak_gb(), 2),
                "frames": len(frames),
            }
            log.info("baseline %s: %.1fs, peak %.1f GB, stages %s", task, wall, peak_gb(), stages)
        except Exception as err:
            log.error("baseline %s failed: %s\n%s", task, err, traceback.format_exc())
            results[task] = {"error": f"{type(err).__name__}: {err}"[:500]}
    base.pipes.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return results


# ----- FLOPs -------------------------------------------------------------------------------------------------------
def denoiser_flops(timer: StageTimer) -> dict[str, float]:
    """FLOPs of one denoiser forward per pipeline, counted by torch's FlopCounterMode on the first call's inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for label, (a, kw) in timer.first_args.items():
        module = timer.modules.get(label)
        if module is None:
            continue
        try:
            with torch.inference_mode(), FlopCounterMode(display=False) as fc:
                module(*a, **kw)
            out[label] = float(fc.get_total_flops())
        except Exception as err:
            log.warning("flop count of %s failed: %s", label, err)
    return out


def floor_seconds(calls: dict[str, int], flops: dict[str, float], tflops: float) -> float:
    return sum(n * flops.get(k, 0.0) for k, n in calls.items() if k in flops) / (tflops * 1e12)


# ----- precision ---------------------------------------------------------------------------------------------------
def run_precision(profile_opt: Any, args: argparse.Namespace) -> dict:
    """Final latents of each Mora stage at Mora's settings: fp32 (TF32 off), fp16 as Mora, optimized."""
    from PIL import Image

    from openmora.loader import PipelineLoader

    res: dict[str, Any] = {}
    w, h = profile_opt.width, profile_opt.height
    y, x = np.mgrid[0:h, 0:w]
    img = Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], -1).astype(np.uint8))
    base_args = argparse.Namespace(**vars(args))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # CPU randn draws different numbers in float16 than in float32: draw every noise tensor in float32 and cast,
    # so the fp32 reference and the fp16 runs start from the same noise.
    import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd_mod
    from diffusers.utils.torch_utils import randn_tensor as _randn

    def randn32(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, layout: Any = None) -> Any:
        return _randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    svd_mod.randn_tensor = randn32

    def calls(pipes: dict, p: Any = profile_opt) -> dict[str, torch.Tensor]:
        out = {}
        with torch.inference_mode():
            if "svd" in pipes and elapsed() < args.deadline:
                prm = dict(p.roles["image_to_video"].params)
                out["svd"] = pipes["svd"](
                    image=img,
                    height=h,
                    width=w,
                    output_type="latent",
                    generator=torch.Generator("cpu").manual_seed(1),
                    **prm,
                ).frames.float()
            if "sdxl_refiner" in pipes and elapsed() < args.deadline:
                steps = p.roles["text_to_image"].params.get("num_inference_steps", 40)
                lat = pipes["sdxl_base"](
                    prompt=PROMPT,
                    num_inference_steps=steps,
                    denoising_end=0.8,
                    height=h,
                    width=w,
                    output_type="latent",
                    generator=torch.Generator("cpu").manual_seed(1),
                ).images
                out["sdxl"] = pipes["sdxl_refiner"](
                    prompt=PROMPT,
                    num_inference_steps=steps,
                    denoising_start=0.8,
                    image=lat,
                    output_type="latent",
                    generator=torch.Generator("cpu").manual_seed(1),
                ).images.float()
            if "ip2p" in pipes and elapsed() < args.deadline:
                prm = dict(p.roles["edit_image"].params)
                out["ip2p"] = pipes["ip2p"](
                    prompt=EDIT, image=img, output_type="latent", generator=torch.Generator("cpu").manual_seed(1), **prm
                ).images.float()
        return out

    # 1. optimized: OpenMora's loader with the profile's speedups (compiled graphs reused from the optimized phase).
    stages = args.precision_stages.split(",")

    def stage_pipes(profile: Any) -> dict[str, Any]:
        """The asked-for stages' pipelines through OpenMora's loader (cached: loaded once per configuration)."""
        loader = PipelineLoader(profile, runtime=RUNTIME)
        pipes = {}
        for role, part, name in (
            ("text_to_image", "main", "sdxl_base"),
            ("text_to_image", "refiner", "sdxl_refiner"),
            ("edit_image", "main", "ip2p"),
            ("image_to_video", "main", "svd"),
        ):
            if part == "refiner" and profile.roles[role].refiner is None:
                continue
            if name.split("_")[0] in stages and elapsed() < args.deadline:
                pipes[name] = loader.get(role, part)
        return pipes

    t = time.perf_counter()
    opt = stage_pipes(profile_opt)
    got_opt = calls(opt)
    res["optimized_s"] = time.perf_counter() - t
    got_opt = {k: v.cpu() for k, v in got_opt.items()}
    opt.clear()
    # 1b. the opt-in fast mode (fewer steps; the same loaded pipelines where only parameters change).
    from openmora.profiles import fast_variant

    fast_profile = fast_variant(profile_opt)
    fast = stage_pipes(fast_profile)
    t = time.perf_counter()
    got_fast = {k: v.cpu() for k, v in calls(fast, fast_profile).items()}
    res["fast_s"] = time.perf_counter() - t
    fast.clear()
    RUNTIME.clear()
    gc.collect()
    torch.cuda.empty_cache() if dev == "cuda" else None
    # 2. fp16 as Mora (eager, no speedups) and 3. fp32 reference, one pipeline at a time.
    got: dict[str, dict[str, torch.Tensor]] = {"fp16": {}, "fp32": {}}
    saved = torch.load(args.precision_ref) if args.precision_ref else None
    for prec, dtype in (("fp16", torch.float16 if dev == "cuda" else torch.float32), ("fp32", torch.float32)):
        if prec == "fp32" and saved is not None:
            # A saved fp32 reference counts only if this run's fp16 latents reproduce the saved fp16 ones (same
            # weights, inputs and kernels): two fp16 runs of the same build are bit-identical.
            same = {k: rel_err(v, saved["fp16"][k]) for k, v in got["fp16"].items() if k in saved.get("fp16", {})}
            res["saved_reference"] = {"file": str(args.precision_ref), "fp16_rel_diff": same}
            log.info("saved reference: fp16 now vs saved %s", same)
            reuse = [k for k, d in same.items() if d <= 1e-6 and k in saved.get("fp32", {})]
            got["fp32"].update({k: saved["fp32"][k] for k in reuse})
            if all(k in reuse for k in got["fp16"]):
                res["fp32_s"] = 0.0
                continue
        t = time.perf_counter()
        mb = MoraBaseline(profile_opt, base_args, StageTimer())
        mb.dtype = dtype
        for group in (("svd",), ("sdxl",), ("ip2p",)):
            if group[0] not in stages:
                continue
            if elapsed() > args.deadline:
                break
            mb.pipes.clear()
            gc.collect()
            torch.cuda.empty_cache() if dev == "cuda" else None
            if prec == "fp32" and group[0] in got["fp32"]:
                continue
            mb.load([{"sdxl": "text-to-video", "ip2p": "edit", "svd": "extend"}[group[0]]])
            if "svd" in mb.pipes:  # offload is latent-neutral; plain .to keeps fp32 SVD off the CPU-offload path
                mb.pipes["svd"] = None
                gc.collect()
                mb.pipes["svd"] = mb._from("image_to_video", dtype=dtype).to(dev)
            for name in list(mb.pipes):  # only the stages asked for (text-to-video's group also loads SVD)
                if name.split("_")[0] not in stages:
                    mb.pipes.pop(name)
            got[prec].update({k: v.cpu() for k, v in calls(mb.pipes).items()})
        res[f"{prec}_s"] = time.perf_counter() - t
        mb.pipes.clear()
    gc.collect()
    torch.save(got, Path(args.out) / "precision_ref.pt")  # fp16 + fp32 latents: reusable with --precision-ref
    for stage, ref in got["fp32"].items():
        entry = {}
        if stage in got_fast:
            entry["fast_vs_fp32"] = rel_err(got_fast[stage], ref)
        if stage in got["fp16"]:
            entry["fp16_vs_fp32"] = rel_err(got["fp16"][stage], ref)
        if stage in got_opt:
            entry["optimized_vs_fp32"] = rel_err(got_opt[stage], ref)
        if stage in got_opt and stage in got["fp16"]:
            entry["optimized_vs_fp16"] = rel_err(got_opt[stage], got["fp16"][stage])
        if "fp16_vs_fp32" in entry and "optimized_vs_fp32" in entry:
            entry["ratio"] = entry["optimized_vs_fp32"] / max(entry["fp16_vs_fp32"], 1e-30)
            entry["keeps_output"] = bool(entry["ratio"] <= 2.0)
        res[stage] = entry
        log.info("precision %s: %s", stage, entry)
    torch.backends.cuda.matmul.allow_tf32 = False
    return res


# ----- report ------------------------------------------------------------------------------------------------------
def table(results: dict, flops: dict[str, float]) -> str:
    lines = []
    base = results.get("baseline", {})
    for mode in ("baseline", "optimized", "lowvram", "fast", "lowvram_fast"):
        r = results.get(mode)
        if not r:
            continue
        lines.append(f"\n== {mode} ==")
        lines.append(
            f"{'task':15} {'wall s':>8} {'speedup':>8} {'peak GB':>8} {'floor s':>8} {'meas/floor':>10}  stages (s)"
        )
        for task in TASKS:
            e = r.get(task)
            if not e:
                continue
            if "wall_s" not in e:
                lines.append(f"{task:15} {e.get('error') or e.get('skipped')}")
                continue
            floor = floor_seconds(e.get("denoiser_calls", {}), flops, H100_BF16_TFLOPS)
            b = base.get(task, {}).get("wall_s")
            sp = f"{b / e['wall_s']:.2f}x" if b else "-"
            ratio = f"{e['wall_s'] / floor:.1f}" if floor else "-"
            st = " ".join(f"{k}={v:.2f}" for k, v in e["stages_s"].items() if v)
            lines.append(
                f"{task:15} {e['wall_s']:8.2f} {sp:>8} {e['peak_vram_gb']:8.1f} {floor:8.2f} {ratio:>10}  {st}"
            )
    return "\n".join(lines)


def summary_json(results: dict, flops: dict[str, float]) -> dict:
    out = {}
    prec = results.get("precision", {})
    stage_of = {
        "text-to-video": ["sdxl", "svd"],
        "image-to-video": ["svd"],
        "extend": ["svd"],
        "edit": ["ip2p", "svd"],
        "digital-world": ["ip2p", "svd"],
        "connect": [],
    }
    for task in TASKS:
        b = results.get("baseline", {}).get(task, {})
        o = results.get("optimized", {}).get(task, {})
        lo = results.get("lowvram", {}).get(task, {})
        errs = [prec[s]["optimized_vs_fp32"] for s in stage_of[task] if "optimized_vs_fp32" in prec.get(s, {})]
        calls = o.get("denoiser_calls") or b.get("denoiser_calls") or {}
        out[task] = {
            "baseline_s": b.get("wall_s"),
            "optimized_s": o.get("wall_s"),
            "speedup": round(b["wall_s"] / o["wall_s"], 3) if b.get("wall_s") and o.get("wall_s") else None,
            "max_rel_err": max(errs) if errs else None,
            "peak_vram_gb": o.get("peak_vram_gb"),
            "low_vram_s": lo.get("wall_s"),
            "low_vram_peak_gb": lo.get("peak_vram_gb"),
            "floor_s": round(floor_seconds(calls, flops, H100_BF16_TFLOPS), 3) if flops else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny profile on CPU: checks the script, numbers mean nothing")
    ap.add_argument("--phases", default="baseline,optimized,precision")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--models", default=None, help="where full-size builds are saved (default: the OpenMora cache)")
    ap.add_argument("--steps", type=int, default=None, help="override every pipeline's steps (smoke runs only)")
    ap.add_argument("--no-compile", action="store_true", help="drop compile speedups (smoke runs)")
    ap.add_argument("--ablation-no-compile", action="store_true", help="ablation without the compile variant")
    ap.add_argument("--baseline-tasks", default="", help="tasks for the baseline phase (default: --tasks)")
    ap.add_argument("--precision-stages", default="svd,sdxl,ip2p", help="stages the precision phase checks")
    ap.add_argument(
        "--precision-ref",
        default=None,
        help="a precision_ref.pt from an earlier run: its fp32 latents are reused where this run's fp16 ones match",
    )
    ap.add_argument(
        "--convs-autotune",
        action="store_true",
        help="convs phase: also compile the block with max-autotune (took over 6 minutes on an H100 without finishing)",
    )
    ap.add_argument("--wan-cfg-steps", type=int, default=10, help="wan_cfg phase: steps of each run (fp32 ~8 s each)")
    ap.add_argument("--wan-cfg-no-fp32", action="store_true", help="wan_cfg phase: timings only, no fp32 reference")
    ap.add_argument("--wan-compile", action="store_true", help="wan_cfg phase: also the blocks compiled (regional)")
    ap.add_argument("--profile-denoiser", action="store_true", help="after a phase: kernel breakdown + CUDA graph")
    ap.add_argument("--deadline", type=float, default=1e9, help="skip remaining work after this many seconds")
    ap.add_argument(
        "--blocking-timers",
        action="store_true",
        help="synchronize around every timed call (the older, slower method) instead of recording CUDA events",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(out / "bench.log"), logging.StreamHandler(sys.stdout)],
    )
    for noisy in ("diffusers", "transformers", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("OPENMORA_CACHE", str(out / "cache"))
    if args.models:
        args.models = Path(args.models)
    if args.tiny:
        torch.set_num_threads(1)
    phases = [p for p in args.phases.split(",") if p]
    tasks = [t for t in args.tasks.split(",") if t]
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "phases": phases,
        "tasks": tasks,
        "steps_override": args.steps,
    }
    json_path = out / "bench.json"

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=1, default=str))

    timer = StageTimer(blocking=args.blocking_timers)
    profile_opt, inputs = None, {}
    if set(phases) - SELF_BUILT_PHASES:
        t = time.perf_counter()
        profile_opt = bench_profile("mora", args)
        results["build_and_save_s"] = round(time.perf_counter() - t, 2)
        log.info("full-size models ready in %.1fs", results["build_and_save_s"])
        inputs = make_inputs(out / "inputs", profile_opt.width, profile_opt.height, 25 if not args.tiny else 8)
    flops: dict[str, float] = {}
    if "baseline" in phases and args.baseline_tasks:
        baseline_tasks = [t for t in args.baseline_tasks.split(",") if t]
    else:
        baseline_tasks = tasks
    for phase in phases:
        if elapsed() > args.deadline:
            results[phase] = {"skipped": "deadline"}
            continue
        t = time.perf_counter()
        if phase != "fast":  # the fast phase reuses the optimized phase's pipelines (and their timing hooks)
            timer.forget()
            gc.collect()
        log.info("=== phase %s (t=%.0fs)", phase, elapsed())
        try:
            if phase == "ablation":
                from bench.ablation import run_ablation

                results["ablation"] = run_ablation(args, elapsed)
            elif phase == "baseline":
                results["baseline"] = run_baseline(profile_opt, baseline_tasks, inputs, args, timer)
                flops.update(denoiser_flops(timer))
            elif phase == "optimized":
                results["optimized"] = run_openmora(profile_opt, tasks, inputs, args, "optimized", timer)
                if not flops:
                    flops.update(denoiser_flops(timer))
            elif phase == "lowvram":
                results["lowvram"] = run_openmora(
                    bench_profile("mora-lowvram", args), tasks, inputs, args, "lowvram", timer
                )
                if not flops:
                    flops.update(denoiser_flops(timer))
            elif phase == "fast":
                from openmora.profiles import fast_variant

                results["fast"] = run_openmora(
                    fast_variant(profile_opt), tasks, inputs, args, "fast", timer, keep_loaded=True
                )
            elif phase == "lowvram_pageable":
                os.environ["OPENMORA_PINNED_EVICTIONS"] = "0"
                try:
                    results["lowvram_pageable"] = run_openmora(
                        bench_profile("mora-lowvram", args), tasks, inputs, args, "lowvram_pageable", timer
                    )
                finally:
                    os.environ.pop("OPENMORA_PINNED_EVICTIONS")
            elif phase == "lowvram_fast":
                from openmora.profiles import fast_variant

                results["lowvram_fast"] = run_openmora(
                    fast_variant(bench_profile("mora-lowvram", args)), tasks, inputs, args, "lowvram_fast", timer
                )
            elif phase == "convs":
                from bench.ablation import run_convs

                results["convs"] = run_convs(args, elapsed)
            elif phase == "wan_cfg":
                from bench.ablation import run_wan_cfg

                results["wan_cfg"] = run_wan_cfg(args, elapsed)
            elif phase == "vae":
                from bench.ablation import run_vae

                results["vae"] = run_vae(args, elapsed)
            elif phase == "precision":
                results["precision"] = run_precision(profile_opt, args)
            else:
                log.error("unknown phase %s", phase)
        except Exception as err:
            log.error("phase %s failed: %s\n%s", phase, err, traceback.format_exc())
            results[phase] = {"error": f"{type(err).__name__}: {err}"[:800]}
        results.setdefault("phase_s", {})[phase] = round(time.perf_counter() - t, 1)
        timer.first_args.clear() if flops else None
        results["denoiser_tflop_per_call"] = {k: v / 1e12 for k, v in flops.items()}
        save()
    results["summary"] = summary_json(results, flops)
    save()
    print(table(results, flops))
    print("\nsummary:", json.dumps(results["summary"], indent=1))
    if "precision" in results:
        print("precision:", json.dumps(results["precision"], indent=1, default=str))
    for name in ("ablation", "convs", "wan_cfg"):
        if name in results:
            print(f"{name}:", json.dumps(results[name], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
