"""CUDA-graph replay of a denoiser's forward: what the ``cuda_graphs`` speedup installs.

SDXL's UNet at 1024x576 launches ~2,350 kernels per step whose GPU time is 28 ms, but the eager call takes 76 ms:
the step is bound by Python and kernel launches, not by the GPU (H100 profile). Replaying a
captured graph launches the whole step at once. The math is the same kernels on the same inputs, so the output is
bit-identical to eager.

How it works: the first call with a new input signature (shapes, dtypes and the non-tensor arguments) runs two warm-up
calls, then captures one into a graph with static input buffers; later calls copy their tensors into those buffers,
replay, and return a copy of the outputs. A signature that cannot be captured (a host sync inside the model) runs eagerly
from then on. When the module's weights move (the memory manager evicted and restored it), graphs are recaptured; eviction
also releases the graphs' memory pools.
Only active on CUDA, without autograd, and never with offload hooks (the loader applies it to resident pipelines only).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from typing import Any

import torch

logger = logging.getLogger(__name__)
MAX_GRAPHS = 2  # signatures kept per module (e.g. with and without classifier-free guidance)
MAX_CAPTURES = 8  # more than this: the inputs change shape every call, so graphs cannot pay off; run eagerly


def _flatten(obj: Any, tensors: list[torch.Tensor]) -> Any:
    """A hashable description of ``obj`` with every tensor replaced by its slot, shape and dtype."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ("T", len(tensors) - 1, tuple(obj.shape), str(obj.dtype), obj.device.type)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_flatten(o, tensors) for o in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, _flatten(v, tensors)) for k, v in obj.items()))
    hash(obj)  # TypeError for unhashable leaves: such calls are not captured
    return obj


def _rebuild(spec: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(spec, tuple) and spec and spec[0] == "T":
        return tensors[spec[1]]
    if isinstance(spec, tuple) and spec and spec[0] in ("list", "tuple"):
        items = [_rebuild(s, tensors) for s in spec[1]]
        return items if spec[0] == "list" else tuple(items)
    if isinstance(spec, tuple) and spec and spec[0] == "dict":
        return {k: _rebuild(v, tensors) for k, v in spec[1]}
    return spec


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (list, tuple)) and not dataclasses.is_dataclass(out):
        return type(out)(_clone(o) for o in out)
    if dataclasses.is_dataclass(out):  # diffusers' BaseOutput (e.g. UNet2DConditionOutput)
        return type(out)(**{f.name: _clone(getattr(out, f.name)) for f in dataclasses.fields(out)})
    if isinstance(out, dict):
        return {k: _clone(v) for k, v in out.items()}
    return out


@dataclasses.dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static: list[torch.Tensor]
    output: Any
    weights_ptr: int


class GraphedForward:
    """Replaces ``module.forward``; see the module docstring."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.eager = module.forward
        self.graphs: OrderedDict[Any, _Captured] = OrderedDict()
        self.uncapturable: set[Any] = set()
        self.replays = 0
        self.captures = 0
        self._regions: list | None = None  # the module's background-compiled regions, found on the first call

    def release(self) -> None:
        """Drop the captured graphs and their GPU memory pools (the memory manager calls this on eviction)."""
        self.graphs.clear()

    def _weights_ptr(self) -> int:
        p = next(self.module.parameters(), None)
        return -1 if p is None or not p.is_cuda else p.data_ptr()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ptr = self._weights_ptr()
        if ptr < 0 or torch.is_grad_enabled() or torch.cuda.is_current_stream_capturing():
            return self.eager(*args, **kwargs)
        if self._regions is None:
            from openmora.speedups.compile import regions_of

            self._regions = regions_of(self.module)
        if any(r.pending for r in self._regions):  # capture the compiled code, not the eager stand-in
            return self.eager(*args, **kwargs)
        tensors: list[torch.Tensor] = []
        try:
            # inference-mode buffers cannot be written outside inference mode: each mode gets its own graph
            key = (torch.is_inference_mode_enabled(), _flatten((args, kwargs), tensors))
        except TypeError:
            return self.eager(*args, **kwargs)
        if key in self.uncapturable or self.captures >= MAX_CAPTURES:
            return self.eager(*args, **kwargs)
        entry = self.graphs.get(key)
        if entry is None or entry.weights_ptr != ptr:
            self.graphs.pop(key, None)
            try:
                entry = self._capture(key, tensors, ptr)
            except RuntimeError as err:  # e.g. a host synchronisation inside the forward
                logger.info("cuda_graphs: %s runs eagerly for this input (%s)", type(self.module).__name__, err)
                self.uncapturable.add(key)
                torch.cuda.synchronize()
                return self.eager(*args, **kwargs)
        else:
            self.graphs.move_to_end(key)
        for dst, src in zip(entry.static, tensors, strict=True):
            dst.copy_(src, non_blocking=True)
        entry.graph.replay()
        self.replays += 1
        return _clone(entry.output)

    def _capture(self, key: Any, tensors: list[torch.Tensor], ptr: int) -> _Captured:
        device = next(self.module.parameters()).device
        static = [t.detach().to(device).clone() for t in tensors]  # CPU scalars (timesteps) become device buffers
        args, kwargs = _rebuild(key[1], static)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture: cuBLAS/cuDNN handles, workspaces, autotuning
                self.eager(*args, **kwargs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's work on this GPU (a story renders shot k+1's image while shot k animates)
        # must not invalidate the capture, nor be refused while it runs.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = self.eager(*args, **kwargs)
        while len(self.graphs) >= MAX_GRAPHS:
            self.graphs.popitem(last=False)
        self.captures += 1
        entry = _Captured(graph, static, output, ptr)
        self.graphs[key] = entry
        logger.info("cuda_graphs: captured %s for a new input signature", type(self.module).__name__)
        return entry


def install_cuda_graphs(module: torch.nn.Module) -> GraphedForward:
    """Route ``module``'s forward through :class:`GraphedForward` (idempotent)."""
    if isinstance(module.forward, GraphedForward):
        return module.forward
    graphed = GraphedForward(module)
    module.forward = graphed
    return graphed


ENCODERS = ("text_encoder", "text_encoder_2", "image_encoder")  # the pipeline attributes ``encoder_graphs`` graphs


def install_graphs(pipe: Any, speedups: list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    """Graph a resident pipeline's launch-bound modules for the graph speedups among ``speedups``; returns the names
    of the modules graphed.

    ``cuda_graphs``: the denoiser (SDXL's UNet: 2,350 kernels in 28 ms of GPU time, 76 ms eager).
    ``encoder_graphs``: the prompt and image encoders (CLIP text and vision transformers at batch 1: ~15 small kernels
    per layer, the GPU idle between them). A module shared by two pipelines (SDXL's second text encoder) gets one
    graph set.
    """
    names = []
    if "cuda_graphs" in speedups:
        names += [n for n in ("unet", "transformer") if getattr(pipe, n, None) is not None][:1]
    if "encoder_graphs" in speedups:
        names += [n for n in ENCODERS if isinstance(getattr(pipe, n, None), torch.nn.Module)]
    for name in names:
        install_cuda_graphs(getattr(pipe, name))
    return names
