"""The ablation phase of ``python -m bench.gpu_bench``: one change at a time on SVD's UNet and temporal VAE at Mora's shapes.

UNet: CFG batch 2 x 25 frames at 1024x576 (latents 72x128), one forward per timing, median of several. Each change
is tried on top of the best state so far and kept only if it is faster (so a slower change never hides behind a
later one); the output figure is one forward's relative error against an fp32 copy (TF32 off). Also: SDPA backends
timed alone at the UNet's attention shapes, a kernel-time breakdown of one pass (eager and compiled) and a CUDA-graph
replay of the compiled UNet. VAE: the 25-frame decode in Mora's chunks of 12, the same way.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch._dynamo
import torch._inductor.config as inductor_config

from openmora.errors import first_line

log = logging.getLogger("bench")
KERNEL_KINDS = (  # first match wins; names are CUDA kernel names as the profiler reports them
    # Triton first: inductor names its fused kernels after the ops they absorb ("triton_poi_fused_convolution_..."
    # is a conv's bias add), which the conv and norm rules below would otherwise claim.
    ("triton (fused)", ("triton",)),
    ("attention", ("flash", "fmha", "attn", "sdpa", "cudnn_generated_fort_native_sdpa")),
    ("conv", ("conv", "fprop", "implicit", "dgrad", "winograd", "xmma_fprop")),
    ("gemm", ("gemm", "cutlass", "nvjet", "sm90_xmma", "cublas", "matmul")),
    ("norm", ("norm", "welford")),
    ("layout/copy", ("copy", "transpose", "nchw", "nhwc", "permute", "cat")),
)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against ``ref`` in float64 (NaN if ``a`` is not finite)."""
    a, ref = a.double().cpu(), ref.double().cpu()
    if not torch.isfinite(a).all():
        return float("nan")
    return float((a - ref).norm() / ref.norm())


def median_time(fn: Callable[[], Any], reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def kernel_breakdown(fn: Callable[[], Any], top: int = 25) -> dict:
    """CUDA kernel time of one call of ``fn``, grouped by kind, plus the top kernels by name."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    by_name: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t and ev.key and not ev.key.startswith("aten::") and not ev.key.startswith("cuda"):
            by_name[ev.key] += t / 1e6
            counts[ev.key] += ev.count
    kinds: dict[str, float] = defaultdict(float)
    for name, t in by_name.items():
        low = name.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(s in low for s in keys)), "elementwise/other")
        kinds[kind] += t
    total = sum(by_name.values())
    top_rows = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {
        "kernel_s": round(total, 4),
        "launches": int(sum(counts.values())),
        "by_kind_s": {k: round(v, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "top": [{"kernel": n[:120], "s": round(t, 4), "count": counts[n]} for n, t in top_rows],
    }


def sdpa_backends(dev: str, dt: torch.dtype) -> list[dict]:
    """Each SDPA backend alone at the SVD UNet's attention shapes (batch, heads, tokens, head dim 64)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shapes = {
        "spatial 72x128 (level 0)": (50, 5, 9216, 9216),
        "spatial 36x64 (level 1)": (50, 10, 2304, 2304),
        "spatial 18x32 (level 2)": (50, 20, 576, 576),
        "temporal 25 frames (level 0)": (2 * 9216, 5, 25, 25),
        "temporal 25 frames (level 1)": (2 * 2304, 10, 25, 25),
    }
    rows = []
    for label, (b, h, lq, lk) in shapes.items():
        q = torch.randn(b, h, lq, 64, device=dev, dtype=dt)
        k = torch.randn(b, h, lk, 64, device=dev, dtype=dt)
        v = torch.randn(b, h, lk, 64, device=dev, dtype=dt)
        row: dict[str, Any] = {"shape": label, "tflop": round(4 * b * h * lq * lk * 64 / 1e12, 3)}

        def attend(q: Any = q, k: Any = k, v: Any = v) -> Any:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    t = median_time(attend, 5)
                row[backend.name.lower()] = round(t * 1e3, 3)
            except RuntimeError as err:
                row[backend.name.lower()] = f"n/a: {first_line(err)[:80]}"
        t = median_time(attend, 5)
        row["default_ms"] = round(t * 1e3, 3)
        rows.append(row)
        log.info("sdpa %s", row)
        del q, k, v
    return rows


def _channels_last(module: torch.nn.Module, on: bool) -> None:
    from openmora.speedups.channels_last import to_channels_last

    if on:
        to_channels_last(module)
        return
    for p in module.parameters():
        if p.dim() in (4, 5):
            p.data = p.data.contiguous()


def svd_unet_inputs(unet: Any, h: int, w: int, f: int, dev: str, dt: torch.dtype) -> tuple:
    """One CFG pass's inputs for SVD's UNet: (sample, timestep, image embedding, added time ids), fixed seed."""
    g = torch.Generator("cpu").manual_seed(0)
    sample = torch.randn(2, f, 8, h, w, generator=g).to(dev, dt)
    enc = torch.randn(2, 1, unet.config.cross_attention_dim, generator=g).to(dev, dt)
    added = torch.tensor([[6.0, 180.0, 0.1]] * 2).to(dev, dt)
    return sample, torch.tensor(1.5, device=dev), enc, added, g


def run_ablation(args: Any, elapsed: Callable[[], float]) -> dict:
    from bench.full_size import FULL_SIZE_MODELS, build_component
    from openmora.speedups.attention import prefer_cudnn_attention
    from openmora.speedups.compile import compile_regions

    res: dict[str, Any] = {}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    spec = FULL_SIZE_MODELS["stabilityai/stable-video-diffusion-img2vid-xt"]
    if args.tiny:
        from openmora.tiny_models import build_image_to_video

        pipe = build_image_to_video()
        unet, vae = pipe.unet, pipe.vae
        h, w, f = 8, 12, 4
        dt = torch.float32
    else:
        dt = torch.float16
        unet = build_component(spec.components["unet"], dt, dev)
        vae = build_component(spec.components["vae"], dt, dev)
        h, w, f = 72, 128, 25
    sample, tstep, enc, added, g = svd_unet_inputs(unet, h, w, f, dev, dt)
    reps = 1 if args.tiny else 5
    torch.backends.cudnn.benchmark = False

    def forward(m: Any = None) -> torch.Tensor:
        m = m or unet
        with torch.inference_mode():
            return m(sample.to(m.dtype), tstep, enc.to(m.dtype), added_time_ids=added.to(m.dtype)).sample

    # fp32 reference of one forward, TF32 off.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref_unet = copy.deepcopy(unet).float()
    ref = forward(ref_unet).float()
    del ref_unet
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
        res["sdpa_ms"] = sdpa_backends(dev, dt)

    rows: list[dict] = []

    def measure(name: str, kept_note: str = "") -> float:
        step = median_time(forward, reps)
        err = rel_err(forward(), ref)
        rows.append({"variant": name, "unet_step_s": round(step, 4), "rel_err_vs_fp32": err, "note": kept_note})
        log.info("ablation unet %s: %.4fs/step, err %.2e %s", name, step, err, kept_note)
        return step

    best = measure("fp16 eager (Mora)")
    original_forward = unet.forward
    # Eager changes: (name, apply, undo). Each is kept only if it beats the best so far by more than 1%.
    eager: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        (
            "cudnn.benchmark",
            lambda: setattr(torch.backends.cudnn, "benchmark", True),
            lambda: setattr(torch.backends.cudnn, "benchmark", False),
        ),
        (
            "channels_last (4-D and 5-D conv weights)",
            lambda: _channels_last(unet, True),
            lambda: _channels_last(unet, False),
        ),
        (
            "cuDNN attention first",
            lambda: prefer_cudnn_attention(unet),
            lambda: setattr(unet, "forward", original_forward),
        ),
    ]
    if hasattr(unet, "fuse_qkv_projections"):
        eager.append(("fused QKV", unet.fuse_qkv_projections, unet.unfuse_qkv_projections))
    kept: list[str] = []
    for name, apply, undo in eager:
        if elapsed() > args.deadline:
            break
        try:
            apply()
            step = measure("+" + name)
            if step < best * 0.99:
                best = step
                kept.append(name)
                rows[-1]["note"] = "kept"
            else:
                undo()
                rows[-1]["note"] = "reverted (not faster)"
        except Exception as err:
            log.error("ablation %s failed: %s\n%s", name, err, traceback.format_exc())
            rows.append({"variant": name, "error": str(err)[:300]})
    res["kept_eager"] = kept
    if dev == "cuda" and elapsed() < args.deadline:
        res["profile_eager"] = kernel_breakdown(forward)
        log.info("eager kernel breakdown: %s", res["profile_eager"]["by_kind_s"])

    # Compiled: regional compile with inductor's defaults, then with GroupNorm statistics per channel first (kept for
    # the next row), then with inductor's conv/GEMM tuning flags, then a CUDA graph.
    from openmora.speedups.group_norm import install_cl_group_norm

    compile_variants: list[tuple[str, dict, Callable[[], Any] | None]] = [
        ("regional compile", {}, None),
        ("regional compile + cl_group_norm", {}, lambda: install_cl_group_norm(unet)),
        (
            "regional compile + cl_group_norm + inductor tuning flags",
            {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False},
            None,
        ),
    ]
    if args.ablation_no_compile or args.tiny:
        compile_variants = compile_variants[:2] if args.tiny else []
    compiled_ok = False
    for name, flags, prepare in compile_variants:
        if elapsed() > args.deadline - 150:
            rows.append({"variant": name, "skipped": "deadline"})
            continue
        try:
            torch._dynamo.reset()
            for k, v in flags.items():
                setattr(inductor_config, k, v)
            if prepare is not None:
                prepare()
            t = time.perf_counter()
            compile_regions(unet, mode="blocking")
            forward()
            sync()
            compile_s = time.perf_counter() - t
            measure("+" + name, f"compile {compile_s:.0f}s")
            compiled_ok = True
        except Exception as err:
            log.error("ablation %s failed: %s\n%s", name, err, traceback.format_exc())
            rows.append({"variant": name, "error": str(err)[:300]})
    if compiled_ok and dev == "cuda" and elapsed() < args.deadline:
        res["profile_compiled"] = kernel_breakdown(forward)
        log.info("compiled kernel breakdown: %s", res["profile_compiled"]["by_kind_s"])
        try:
            rows.append(cuda_graph_row(unet, sample, tstep, enc, added, ref, reps))
            log.info("ablation unet %s", rows[-1])
        except Exception as err:
            log.error("cuda graph failed: %s\n%s", err, traceback.format_exc())
            rows.append({"variant": "+CUDA graph of the compiled UNet", "error": str(err)[:300]})
    res["unet"] = rows
    res["vae"] = vae_rows(vae, f, h, w, dev, dt, g, args, elapsed)
    unet.to("cpu")
    vae.to("cpu")
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = False
    return res


def graph_replay_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Capture one call of ``fn`` (static inputs, no host syncs inside) in a CUDA graph; median replay time, output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
    return median_time(graph.replay, reps), out


def cuda_graph_row(unet: Any, sample: Any, tstep: Any, enc: Any, added: Any, ref: Any, reps: int) -> dict:
    """Time replays of one compiled UNet forward captured in a CUDA graph."""
    step, out = graph_replay_time(lambda: unet(sample, tstep, enc, added_time_ids=added).sample, reps)
    return {
        "variant": "+CUDA graph of the compiled UNet",
        "unet_step_s": round(step, 4),
        "rel_err_vs_fp32": rel_err(out, ref),
        "note": "replay of one captured forward",
    }


def profile_module(module: Any, args: tuple, kwargs: dict, reps: int = 3) -> dict:
    """Kernel breakdown, eager-call time and CUDA-graph replay time of one forward of a loaded (maybe compiled)
    denoiser, called through ``forward`` so that timing hooks (which synchronize) stay out of the capture."""

    def call() -> Any:
        with torch.inference_mode():
            out = module.forward(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else getattr(out, "sample", out)

    res: dict[str, Any] = {"call_s": round(median_time(call, reps), 4)}
    res["kernels"] = kernel_breakdown(call)
    try:
        step, out = graph_replay_time(call, reps)
        res["graph_replay_s"] = round(step, 4)
        res["graph_rel_diff"] = rel_err(out, call())
    except Exception as err:  # capture can fail on host syncs inside the model
        res["graph_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return res


def vae_rows(vae: Any, f: int, h: int, w: int, dev: str, dt: Any, g: Any, args: Any, elapsed: Callable) -> list:
    """SVD's temporal decode of 25 frames in Mora's chunks of 12: eager, +cudnn.benchmark, +channels_last, +compile,
    +cl_group_norm (compiled)."""
    lat = torch.randn(f, 4, h, w, generator=g).to(dev, dt)

    def decode() -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat(
                [vae.decode(lat[i : i + 12], num_frames=lat[i : i + 12].shape[0]).sample for i in range(0, f, 12)]
            )

    torch.backends.cudnn.benchmark = False
    ref = decode()
    rows = []
    for name in ("eager chunk 12", "+cudnn.benchmark", "+channels_last", "+compile decoder", "+cl_group_norm"):
        if elapsed() > args.deadline:
            break
        try:
            if name == "+cudnn.benchmark":
                torch.backends.cudnn.benchmark = True
            elif name == "+channels_last":
                _channels_last(vae, True)
            elif name == "+cl_group_norm":
                from openmora.speedups.group_norm import install_cl_group_norm

                torch._dynamo.reset()
                install_cl_group_norm(vae.decoder)
            if name in ("+compile decoder", "+cl_group_norm"):
                vae.decoder.compile(dynamic=False)
                t = time.perf_counter()
                decode()
                sync()
                log.info("vae decoder (%s) compiled in %.0fs", name, time.perf_counter() - t)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            step = median_time(decode, 1 if args.tiny else 3)
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
            rows.append(
                {
                    "variant": name,
                    "decode_s": round(step, 4),
                    "peak_gb": round(peak, 2),
                    "rel_err_vs_eager": rel_err(decode(), ref),
                }
            )
            log.info("ablation vae %s: %s", name, rows[-1])
        except Exception as err:
            log.error("ablation vae %s failed: %s", name, err)
            rows.append({"variant": name, "error": str(err)[:300]})
    return rows


def run_vae(args: Any, elapsed: Callable[[], float]) -> list:
    """The VAE rows of the ablation alone (a full-size SVD temporal decoder, random weights)."""
    from bench.full_size import FULL_SIZE_MODELS, build_component

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator("cpu").manual_seed(0)
    if args.tiny:
        from openmora.tiny_models import build_image_to_video

        vae, (f, h, w), dt = build_image_to_video().vae, (4, 8, 12), torch.float32
    else:
        spec = FULL_SIZE_MODELS["stabilityai/stable-video-diffusion-img2vid-xt"]
        vae, (f, h, w), dt = build_component(spec.components["vae"], torch.float16, dev), (25, 72, 128), torch.float16
    rows = vae_rows(vae, f, h, w, dev, dt, g, args, elapsed)
    torch.backends.cudnn.benchmark = False
    return rows


# ----- convolutions: why compiled convs ran slower than eager ones ---------------------------------------------------
class TemporalConvAs2d(torch.nn.Module):
    """A ``Conv3d`` with kernel (k, 1, 1) run as a ``Conv2d`` with kernel (k, 1) over (frames, height*width).

    The same sums in the same order per output element (only the kernel's tiling may differ): cuDNN's 2-D NHWC
    kernels are its most tuned ones, its 3-D ones often convert layouts around the call."""

    def __init__(self, conv: torch.nn.Conv3d) -> None:
        super().__init__()
        k = conv.kernel_size
        if k[1:] != (1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1 or conv.dilation != (1, 1, 1):
            raise ValueError(f"only (k, 1, 1) temporal convolutions convert, got kernel {k}")
        pad = conv.padding
        if isinstance(pad, str) or pad[1:] != (0, 0):
            raise ValueError(f"only temporal padding converts, got {pad}")
        self.pad = (pad[0], 0)
        self.weight = torch.nn.Parameter(conv.weight.detach()[..., 0], requires_grad=False)  # (out, in, k, 1)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, f, h, w = x.shape
        y = torch.nn.functional.conv2d(x.reshape(n, c, f, h * w), self.weight, self.bias, padding=self.pad)
        return y.reshape(n, y.shape[1], f, h, w)


def temporal_convs_as_2d(module: torch.nn.Module) -> int:
    """Replace every (k, 1, 1) ``Conv3d`` under ``module`` by ``TemporalConvAs2d``; returns how many."""
    n = 0
    for sub in list(module.modules()):
        for child_name, child in list(sub.named_children()):
            if isinstance(child, torch.nn.Conv3d):
                try:
                    setattr(sub, child_name, TemporalConvAs2d(child))
                    n += 1
                except ValueError:
                    pass
    return n


def _conv_configs(unet: Any, forward: Callable[[], Any]) -> list[dict]:
    """Every convolution one forward runs: kind, input shape, weight shape, padding, stride, and how often."""
    seen: dict[tuple, dict] = {}
    hooks = []

    def hook(mod: Any, inp: tuple) -> None:
        x = inp[0]
        key = (type(mod).__name__, tuple(x.shape), tuple(mod.weight.shape), tuple(mod.padding), tuple(mod.stride))
        seen.setdefault(key, {"count": 0})["count"] += 1

    for m in unet.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            hooks.append(m.register_forward_pre_hook(hook))
    forward()
    for h in hooks:
        h.remove()
    return [
        {"kind": k[0], "x": k[1], "w": k[2], "padding": k[3], "stride": k[4], "count": v["count"]}
        for k, v in seen.items()
    ]


def conv_rows(configs: list[dict], dev: str, dt: torch.dtype, reps: int) -> dict:
    """Each convolution alone in NCHW, in channels_last, and (temporal ones) as a 2-D conv; cudnn.benchmark off/on.
    Totals are weighted by how often one UNet forward runs each configuration."""
    F = torch.nn.functional
    rows = []
    for cfg in configs:
        x = torch.randn(cfg["x"], device=dev, dtype=dt)
        w = torch.randn(cfg["w"], device=dev, dtype=dt) * 0.02
        three_d = cfg["kind"] == "Conv3d"
        fn = F.conv3d if three_d else F.conv2d
        fmt = torch.channels_last_3d if three_d else torch.channels_last
        variants: dict[str, Callable[[], Any]] = {
            "nchw": lambda x=x, w=w, fn=fn, c=cfg: fn(x, w, padding=c["padding"], stride=c["stride"]),
        }
        xl, wl = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
        variants["nhwc"] = lambda x=xl, w=wl, fn=fn, c=cfg: fn(x, w, padding=c["padding"], stride=c["stride"])
        if three_d and cfg["w"][3:] == (1, 1) and tuple(cfg["stride"]) == (1, 1, 1):
            n, c_, f, h, wd = cfg["x"]
            x2 = xl.reshape(n, c_, f, h * wd)  # NDHWC memory is a valid NHWC (frames x pixels) view
            w2 = w[..., 0].contiguous(memory_format=torch.channels_last)
            pad = (cfg["padding"][0], 0)
            variants["as 2-d nhwc"] = lambda x=x2, w=w2, p=pad: F.conv2d(x, w, padding=p)
        row = {"kind": cfg["kind"], "x": cfg["x"], "w": cfg["w"], "count": cfg["count"]}
        for bench_mode in (False, True):
            torch.backends.cudnn.benchmark = bench_mode
            for name, call in variants.items():
                label = f"{name}{' +benchmark' if bench_mode else ''}"
                try:
                    with torch.inference_mode():
                        t = median_time(call, reps, warm=2)
                    row[label + "_ms"] = round(t * 1e3, 3)
                except RuntimeError as err:
                    row[label + "_ms"] = f"n/a: {str(err)[:60]}"
        rows.append(row)
        del x, w, xl, wl
    torch.backends.cudnn.benchmark = False
    # One forward's conv time per layout choice: 2-D convs in nchw/nhwc, temporal ones in their best form.
    summary: dict[str, float] = {}
    for bench_mode in ("", " +benchmark"):
        for name in ("nchw", "nhwc"):
            summary[f"{name}{bench_mode}"] = round(
                sum(
                    r[f"{name}{bench_mode}_ms"] * r["count"]
                    for r in rows
                    if isinstance(r.get(f"{name}{bench_mode}_ms"), float)
                )
                / 1e3,
                4,
            )
        summary[f"nhwc, temporal as 2-d{bench_mode}"] = round(
            sum(
                r.get(f"as 2-d nhwc{bench_mode}_ms", r.get(f"nhwc{bench_mode}_ms", 0.0)) * r["count"]
                for r in rows
                if isinstance(r.get(f"nhwc{bench_mode}_ms"), float)
            )
            / 1e3,
            4,
        )
    return {"per_config": rows, "forward_conv_s": summary}


def conv_kernel_times(fn: Callable[[], Any]) -> dict:
    """Device time of the convolution ops of one call, by input shape (aten::cudnn_convolution and friends)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        sync()
    out: dict[str, float] = {}
    for ev in prof.key_averages(group_by_input_shape=True):
        if "convolution" in ev.key and ev.key.startswith("aten::cudnn"):
            t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
            out[f"{ev.key} {ev.input_shapes[:2]}"] = round(t / 1e6, 5)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_convs(args: Any, elapsed: Callable[[], float]) -> dict:
    """Convolutions of SVD's UNet at Mora's shapes: each alone per layout, then one block compiled per variant."""
    from bench.full_size import FULL_SIZE_MODELS, build_component
    from openmora.speedups.attention import install_lean_attention, prefer_cudnn_attention

    res: dict[str, Any] = {}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        from openmora.tiny_models import build_image_to_video

        unet, (h, w, f), dt = build_image_to_video().unet, (8, 12, 4), torch.float32
    else:
        spec = FULL_SIZE_MODELS["stabilityai/stable-video-diffusion-img2vid-xt"]
        unet, (h, w, f), dt = build_component(spec.components["unet"], torch.float16, dev), (72, 128, 25), torch.float16
    install_lean_attention(unet)
    prefer_cudnn_attention(unet)
    sample, tstep, enc, added, _ = svd_unet_inputs(unet, h, w, f, dev, dt)
    reps = 1 if args.tiny else 10

    # The block whose inputs we capture: the full-resolution up block (3 resnets, 3 transformers: the most convs).
    block = unet.up_blocks[-1]
    captured: dict[str, Any] = {}

    def grab(mod: Any, a: tuple, kw: dict) -> None:
        captured["args"], captured["kwargs"] = a, dict(kw)

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)

    def forward() -> Any:
        with torch.inference_mode():
            return unet(sample, tstep, enc, added_time_ids=added).sample

    configs = _conv_configs(unet, forward)
    handle.remove()
    res["conv_configs"] = len(configs)
    res["convs"] = conv_rows(configs, dev, dt, reps)
    log.info("convs alone, one forward: %s", res["convs"]["forward_conv_s"])
    ref_block = copy.deepcopy(block)
    unet.to("cpu")  # only the block stays on the GPU
    gc.collect()
    torch.cuda.empty_cache() if dev == "cuda" else None

    def block_call(m: Any) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return m(*captured["args"], **captured["kwargs"])

        return call

    with torch.inference_mode():
        ref_out = block_call(ref_block)()
    variants: list[tuple[str, dict]] = [
        ("eager", {}),
        ("compile (as `mora`: 4-D channels_last)", {"compile": True, "cl4": True}),
        ("compile, no channels_last", {"compile": True}),
        ("compile + 5-D channels_last", {"compile": True, "cl4": True, "cl5": True}),
        ("compile + cudnn.benchmark", {"compile": True, "cl4": True, "benchmark": True}),
        ("compile + temporal convs as 2-D", {"compile": True, "cl4": True, "as2d": True}),
        (
            "compile + temporal convs as 2-D + cudnn.benchmark",
            {"compile": True, "cl4": True, "as2d": True, "benchmark": True},
        ),
    ]
    if getattr(args, "convs_autotune", False):  # did not finish compiling one block in 6 minutes on the H100
        variants.append(
            ("compile max-autotune-no-cudagraphs", {"compile": True, "cl4": True, "mode": "max-autotune-no-cudagraphs"})
        )
    rows = []
    for name, opt in variants:
        if elapsed() > args.deadline - 60:
            rows.append({"variant": name, "skipped": "deadline"})
            continue
        try:
            torch._dynamo.reset()
            torch.backends.cudnn.benchmark = bool(opt.get("benchmark"))
            m = copy.deepcopy(ref_block)
            if opt.get("as2d"):
                temporal_convs_as_2d(m)
            for p in m.parameters():
                if p.dim() == 4 and opt.get("cl4"):
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
                if p.dim() == 5 and opt.get("cl5"):
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
            if opt.get("compile") and not args.tiny:
                m.compile(dynamic=False, **({"mode": opt["mode"]} if "mode" in opt else {}))
            call = block_call(m)
            t = time.perf_counter()
            out = call()
            sync()
            warm = time.perf_counter() - t
            row: dict[str, Any] = {"variant": name, "first_call_s": round(warm, 1)}
            row["block_s"] = round(median_time(call, reps, warm=2), 5)
            row["rel_diff_vs_eager"] = rel_err(out, ref_out)
            if dev == "cuda":
                kb = kernel_breakdown(call, top=8)
                row["by_kind_s"] = kb["by_kind_s"]
                row["top"] = kb["top"]
                row["conv_ops"] = dict(list(conv_kernel_times(call).items())[:12])
            rows.append(row)
            log.info("conv block %s: %s", name, {k: v for k, v in row.items() if k not in ("top", "conv_ops")})
            del m
        except Exception as err:
            log.error("conv block %s failed: %s\n%s", name, err, traceback.format_exc())
            rows.append({"variant": name, "error": str(err)[:300]})
    torch.backends.cudnn.benchmark = False
    res["block"] = rows
    return res


# ----- batched classifier-free guidance for Wan ----------------------------------------------------------------------
def run_wan_cfg(args: Any, elapsed: Callable[[], float]) -> dict:
    """Wan FLF2V at the `mora` profile's connect settings: the cond and uncond transformer calls of each step run
    separately (diffusers) and as one batch (``batched_cfg``), timed in the same process -- resident on the GPU, then
    under group offload (the 24 GB mode, where each pass streams the transformer's blocks) -- and the resident runs'
    final latents against the same steps with the transformer in fp32 (TF32 off).

    The prompt embeddings are computed once and passed in, so the 11 GB text encoder can leave the GPU for the fp32 run (56 GB of transformer). ``--wan-cfg-steps`` sets the steps of the resident and fp32 runs (fp32
    costs several seconds per step at full size); the offloaded runs take 3 steps each.
    """
    from PIL import Image

    from openmora.memory import apply_group_offload
    from openmora.profiles import load_profile
    from openmora.speedups.batched_cfg import install_batched_cfg

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    role = load_profile("tiny" if args.tiny else "mora").roles["connect_frames"]
    if args.tiny:
        from openmora.tiny_models import build_connect_frames

        pipe, (w, h), dt = build_connect_frames(), (96, 64), torch.float32
    else:
        from bench.full_size import build_pipeline

        hub_id = "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"
        pipe, (w, h), dt = build_pipeline(hub_id, torch.bfloat16, dev), (1024, 576), torch.bfloat16
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    y, x = np.mgrid[0:h, 0:w]
    first = Image.fromarray(np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], -1).astype(np.uint8))
    last = Image.fromarray(np.stack([y * 255 // h, np.full_like(x, 40), x * 255 // w], -1).astype(np.uint8))
    params = {k: v for k, v in role.params.items() if k != "num_inference_steps"}
    with torch.inference_mode():
        pos, neg = pipe.encode_prompt("a smooth continuous transition between two scenes", device=dev)
        embeds = {"prompt_embeds": pos, "negative_prompt_embeds": neg}
    step_times: list[float] = []

    def on_step(_p: Any, _i: int, _t: Any, kw: dict) -> dict:
        sync()
        step_times.append(time.perf_counter())
        return kw

    def latents(steps: int) -> tuple[torch.Tensor, float]:
        step_times.clear()
        with torch.inference_mode():
            out = pipe(
                image=first,
                last_image=last,
                height=h,
                width=w,
                num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(42),
                output_type="latent",
                callback_on_step_end=on_step,
                **embeds,
                **params,
            ).frames
        per_step = float(np.median(np.diff(step_times))) if len(step_times) > 1 else float("nan")
        return out.float().cpu(), per_step

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    steps = args.wan_cfg_steps
    res: dict[str, Any] = {"steps": steps, "dtype": str(dt), "size": f"{w}x{h}", "frames": params.get("num_frames")}
    pipe.text_encoder.to("cpu")  # the prompt embeddings are passed in from here on
    _peak_and_reset(dev)
    separate, res["separate_s_per_step"] = latents(steps)
    res["separate_peak_gb"] = _peak_and_reset(dev)
    if not install_batched_cfg(pipe):
        return {**res, "error": "batched_cfg did not install on the Wan pipeline"}
    state = pipe._openmora_batched_cfg
    batched, res["batched_s_per_step"] = latents(steps)
    res["batched_peak_gb"] = _peak_and_reset(dev)
    res["speedup_per_step"] = res["separate_s_per_step"] / res["batched_s_per_step"]
    res["batched_vs_separate"] = rel_err(batched, separate)
    state.enabled = False
    with _cudnn_first():  # the profiles' cudnn_attention option, on the separate calls
        _, res["separate_cudnn_s_per_step"] = latents(min(steps, 3))
    log.info("wan cfg: %s", res)
    compiled = None
    if args.wan_compile and dev == "cuda" and elapsed() < args.deadline:
        compiled = _wan_compiled_run(pipe, latents, steps, res)
        res["compiled_vs_separate"] = rel_err(compiled, separate)
        res["compile_speedup_per_step"] = res["separate_s_per_step"] / res["compiled_s_per_step"]
        log.info("wan cfg: %s", res)
    # The reference: the same weights in fp32 (bf16 -> fp32 -> bf16 is exact), the same embeddings, separate calls.
    if elapsed() < args.deadline and not args.wan_cfg_no_fp32:
        state.enabled = False
        pipe.transformer.float()
        gc.collect()
        torch.cuda.empty_cache() if dev == "cuda" else None
        reference, res["fp32_s_per_step"] = latents(steps)
        res["separate_vs_fp32"] = rel_err(separate, reference)
        res["batched_vs_fp32"] = rel_err(batched, reference)
        res["ratio"] = res["batched_vs_fp32"] / max(res["separate_vs_fp32"], 1e-30)
        res["keeps_output"] = bool(res["ratio"] <= 2.0)
        if compiled is not None:
            res["compiled_vs_fp32"] = rel_err(compiled, reference)
            res["compiled_ratio"] = res["compiled_vs_fp32"] / max(res["separate_vs_fp32"], 1e-30)
            res["compiled_keeps_output"] = bool(res["compiled_ratio"] <= 2.0)
        pipe.transformer.to(dt)
        log.info("wan cfg: %s", res)
    # Under group offload (mora-lowvram): each pass streams the transformer's blocks from pinned host memory.
    if dev == "cuda" and elapsed() < args.deadline:
        pipe.to("cpu")
        gc.collect()
        torch.cuda.empty_cache()
        apply_group_offload(pipe, torch.device(dev))
        _peak_and_reset(dev)
        variants = (("offload_separate", False, False), ("offload_batched", True, False))
        for label, on, cudnn in (*variants, ("offload_separate_cudnn", False, True)):
            state.enabled = on
            with _cudnn_first() if cudnn else contextlib.nullcontext():
                _, res[f"{label}_s_per_step"] = latents(3)
            res[f"{label}_peak_gb"] = _peak_and_reset(dev)
        res["offload_speedup_per_step"] = res["offload_separate_s_per_step"] / res["offload_batched_s_per_step"]
        log.info("wan cfg: %s", res)
    return res


def _wan_compiled_run(pipe: Any, latents: Callable[[int], tuple], steps: int, res: dict) -> torch.Tensor:
    """The separate calls with the transformer's blocks compiled as the ``compile`` speedup does (one graph shared by
    the 40 blocks); the blocks run eager again afterwards, so the fp32 reference and the offloaded runs are eager."""
    from openmora.speedups.compile import compile_regions

    compile_regions(pipe.transformer, mode="blocking")
    start = time.perf_counter()
    latents(1)  # compiles
    res["compile_warmup_s"] = time.perf_counter() - start
    out, res["compiled_s_per_step"] = latents(steps)
    for block in pipe.transformer.blocks:
        del block.forward  # compile_regions set a compiled forward on the instance: the class's eager one again
    return out


def _cudnn_first() -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def _peak_and_reset(dev: str) -> float:
    if dev != "cuda":
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)
