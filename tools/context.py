"""What every tool call shares: the run's artifact store, the pipeline loader, the profile, seeds and progress.

A tool is a plain function ``tool(ctx, ...typed args...) -> ToolResult``; agents bind ``ctx`` before handing the
function to AutoGen, so the LLM sees only the typed, documented arguments.

Example:
    >>> from openmora.tools.context import ToolResult
    >>> ToolResult(outputs=["img-0001"], text="img-0001: image 96x64").text
    'img-0001: image 96x64'
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from openmora.artifacts import Artifact, ArtifactStore
from openmora.errors import InputError
from openmora.events import Event, EventSink
from openmora.loader import PipelineLoader
from openmora.profiles import Profile

logger = logging.getLogger(__name__)
_TIMINGS_LOCK = threading.Lock()


@dataclass
class ToolResult:
    """What a tool returns: the new artifact ids (the last one is the main result) and one line for the chat."""

    outputs: list[str]
    text: str
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> str:
        return self.outputs[-1]


@dataclass
class ToolContext:
    """Shared state of one run's tool calls."""

    store: ArtifactStore
    loader: PipelineLoader
    profile: Profile
    seed: int = 0
    on_event: EventSink | None = None
    timings: dict[str, float] = field(default_factory=lambda: {"generate": 0.0})
    _calls: int = 0  # seeds of the run's sequence handed out so far (after a resume: :func:`seeds_taken`)

    def next_seed(self, seed: int | None) -> int:
        """The seed for a tool call: the explicit one, or the next seed of the run's sequence."""
        return self.next_seeds(seed, 1)[0]

    def next_seeds(self, seed: int | None, n: int) -> list[int]:
        """``n`` consecutive seeds for one tool call (one per segment): from the explicit ``seed`` on, or the next
        ``n`` of the run's sequence (run seed + seeds handed out so far), reserved so that no later call reuses one."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
            return list(range(seed, seed + n))
        first = self.seed + self._calls
        self._calls += n
        return list(range(first, first + n))

    def emit(self, event: Event) -> None:
        if self.on_event:
            self.on_event(event)

    def model_prompt(self, text: str, kind: str = "scene") -> str:
        """The text a pipeline gets for ``text``: rewritten into the profile's ``prompt_vocabulary`` (``kind``:
        ``scene`` for a description, ``edit`` for an instruction) where it names something that vocabulary knows,
        else ``text`` unchanged."""
        if self.profile.prompt_vocabulary != "toy" or not text:
            return text
        from openmora.toy.scenes import canonical_instruction, canonical_prompt

        return (canonical_instruction(text) if kind == "edit" else canonical_prompt(text)) or text

    def params(self, role: str, part: str = "main") -> dict[str, Any]:
        cfg = self.profile.role(role)
        if part == "refiner":
            cfg = cfg.refiner
        return dict(cfg.params)


def seeds_taken(artifacts: Iterable[Artifact]) -> int:
    """How many seeds of the run's sequence the recorded tool calls took, so a resumed run hands out the seeds an
    uninterrupted one would: one per call, one per segment for ``extend_video``; ``connect_clips`` records two
    artifacts (the transition, then the joined clip) from one call. A call given an explicit seed counts as well."""
    n = 0
    for art in artifacts:
        if art.seed is None or (art.tool == "connect_clips" and len(art.parents) == 3):  # the joined clip
            continue
        n += int(art.params.get("segments", 1)) if art.tool == "extend_video" else 1
    return n


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Pipeline output (float in [0, 1], PIL images, or nested lists) -> ``uint8`` ``(T, H, W, 3)`` or ``(H, W, 3)``.

    A torch tensor (``output_type="pt"``, channels before height and width) is converted where it lies, on the GPU:
    the same clip-scale-round as the NumPy path, so the same bytes, without copying float32 frames to the host.
    """
    if isinstance(frames, torch.Tensor):
        return uint8_channels_last(frames).cpu().numpy()
    if isinstance(frames, list) and frames and not isinstance(frames[0], np.ndarray | float | int):
        frames = np.stack([np.asarray(f) for f in frames])
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr


def uint8_channels_last(frames: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` floats in [0, 1] -> ``uint8`` ``(..., H, W, C)``, on the tensor's device."""
    return (frames.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).movedim(-3, -1).contiguous()


class HostCopy:
    """A device tensor's copy on its way to the host: on CUDA into page-locked memory without waiting (the GPU's next
    work is queued while it copies); :meth:`numpy` waits for it. Elsewhere the copy is made at once."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.event = None
        if tensor.is_cuda:
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = tensor.cpu()

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


def call_pipeline(ctx: ToolContext, role: str, pipe: Any, label: str, **kwargs: Any) -> Any:
    """Run a pipeline with progress events per denoising step; time it under ``ctx.timings['generate']``.

    Only arguments the pipeline's ``__call__`` accepts may be passed: a profile parameter it does not accept is a
    profile mistake and raises :class:`InputError` naming it.
    """
    accepted = inspect.signature(pipe.__call__).parameters
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise InputError(
            f"{type(pipe).__name__} does not take {', '.join(sorted(bad))}; fix the profile's params for role {role!r}"
        )
    total = int(kwargs.get("num_inference_steps") or 0)
    if "callback_on_step_end" in accepted:

        def on_step(_pipe: Any, step: int, _t: Any, cb_kwargs: dict) -> dict:
            ctx.emit({"type": "progress", "stage": label, "role": role, "step": step + 1, "total": total})
            return cb_kwargs

        kwargs["callback_on_step_end"] = on_step
    ctx.emit({"type": "progress", "stage": label, "role": role, "step": 0, "total": total})
    start = time.perf_counter()
    with ctx.loader.runtime.using(pipe), generating(ctx):
        out = pipe(**kwargs)
    logger.debug("%s (%s) took %.2fs", label, role, time.perf_counter() - start)
    return out


@contextmanager
def generating(ctx: ToolContext) -> Iterator[None]:
    """Model work: in inference mode, its time added to ``ctx.timings['generate']``."""
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            yield
    finally:
        seconds = time.perf_counter() - start
        with _TIMINGS_LOCK:  # stories render stages in two threads
            ctx.timings["generate"] = ctx.timings.get("generate", 0.0) + seconds


def generator(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same noise on any device."""
    return torch.Generator("cpu").manual_seed(seed)


def require_text(value: str, what: str) -> str:
    from openmora.errors import ToolArgumentError

    if not isinstance(value, str) or not value.strip():
        raise ToolArgumentError(f"{what} is empty; give a short description in words")
    return value.strip()
