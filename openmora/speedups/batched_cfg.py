"""Batched classifier-free guidance for pipelines that call their transformer twice per step (the ``batched_cfg``
speedup).

Wan's image-to-video pipeline runs the transformer once for the prompt and once for the negative prompt, each with
batch 1 (``cache_context("cond")`` then ``cache_context("uncond")``). SVD, SDXL and InstructPix2Pix concatenate
the two into one batch; Wan does not. Where the weights stream from the CPU every pass (group offload, the 24 GB
mode: 28 GB of blocks per pass for Wan 2.1 14B), two passes per step stream the weights twice; one pass of batch 2
streams them once. On a resident model, batch 2 fills the GPU better than two calls of batch 1.

How it works: the pipeline's ``encode_prompt`` is wrapped to remember the negative prompt's embeddings. When the
transformer is called inside ``cache_context("cond")`` while the pipeline does guidance, the wrapper runs one call
on ``[cond; uncond]`` (the same latents, timestep and image embeddings twice, the prompt and negative embeddings
stacked) and keeps the unconditional half. The ``"uncond"`` call that follows gets that half back when its inputs
are the ones the batch used (the same latents and timestep objects, equal negative embeddings); any other call runs
as usual. Each half of the batch is the same function of the same inputs as the separate call, so the output only
changes by the kernels' rounding at another batch size (Wan FLF2V, 10 steps: final latents 2.7593e-2 from an fp32
transformer batched, 2.7596e-2 separate).

Example:
    >>> from openmora.speedups.batched_cfg import install_batched_cfg
    >>> install_batched_cfg(pipe)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

_DENOISERS = ("transformer", "transformer_2")


@dataclass
class _Pending:
    """The unconditional half of the last batched call, waiting for the ``"uncond"`` call it answers."""

    hidden_states: torch.Tensor
    timestep: Any
    negative: torch.Tensor
    out: torch.Tensor

    def answers(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any) -> bool:
        if hidden_states is not self.hidden_states or timestep is not self.timestep:
            return False
        if encoder_hidden_states is self.negative:
            return True
        return (
            isinstance(encoder_hidden_states, torch.Tensor)
            and encoder_hidden_states.shape == self.negative.shape
            and torch.equal(encoder_hidden_states, self.negative)
        )


@dataclass
class _PerThread:
    """What one thread's pipeline call is in the middle of."""

    negative: torch.Tensor | None = None  # the negative prompt's embeddings from this call's encode_prompt
    context: str | None = None  # the transformer's cache_context ("cond", "uncond") being run
    pending: _Pending | None = None


class BatchedCFG:
    """The state one pipeline's wrapped transformers share; per thread, since a pipeline call runs in one thread."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.enabled = True  # False: every call runs as the pipeline makes it
        self._local = threading.local()
        self.batched_calls = 0  # cond+uncond pairs run as one batch
        self.served = 0  # "uncond" calls answered from a batch
        self.unmatched = 0  # "uncond" calls that had to run on their own

    def mine(self) -> _PerThread:
        """This thread's state."""
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _PerThread()
        return state

    def guiding(self) -> bool:
        return self.enabled and bool(getattr(self.pipe, "do_classifier_free_guidance", False))


def install_batched_cfg(pipe: Any) -> bool:
    """Make ``pipe``'s cond/uncond transformer calls run as one batch. Returns False (and changes nothing) when the
    pipeline does not have the shape this needs: an ``encode_prompt`` returning (prompt, negative) embeddings and a
    transformer with ``cache_context``."""
    dens = [getattr(pipe, n) for n in _DENOISERS if getattr(pipe, n, None) is not None]
    if not dens or not callable(getattr(pipe, "encode_prompt", None)):
        return False
    if not all(callable(getattr(d, "cache_context", None)) for d in dens):
        return False
    if getattr(pipe, "_openmora_batched_cfg", None) is not None:
        return True
    state = BatchedCFG(pipe)
    encode = pipe.encode_prompt

    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        out = encode(*args, **kwargs)
        mine = state.mine()
        mine.negative = out[1] if isinstance(out, tuple) and len(out) >= 2 else None
        mine.pending = None
        return out

    pipe.encode_prompt = encode_prompt
    for den in dens:
        _wrap(den, state)
    pipe._openmora_batched_cfg = state
    return True


def _wrap(den: torch.nn.Module, state: BatchedCFG) -> None:
    forward = den.forward
    cache_context = den.cache_context

    @contextlib.contextmanager
    def tracking_context(name: str) -> Iterator[None]:
        mine = state.mine()
        previous, mine.context = mine.context, name
        try:
            with cache_context(name):
                yield
        finally:
            mine.context = previous

    def batched_forward(
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *args: Any,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        mine = state.mine()
        context = mine.context
        if context == "uncond":
            pending, mine.pending = mine.pending, None
            if pending is not None and pending.answers(hidden_states, timestep, encoder_hidden_states):
                state.served += 1
                return _output(pending.out, return_dict)
            if pending is not None:
                state.unmatched += 1
                logger.debug("batched_cfg: the uncond call did not match the batch; running it on its own")
        negative = mine.negative
        batchable = (
            context == "cond"
            and not args
            and state.guiding()
            and negative is not None
            and negative.shape == encoder_hidden_states.shape
            and isinstance(timestep, torch.Tensor)
        )
        if not batchable:
            return forward(hidden_states, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        negative = negative.to(device=encoder_hidden_states.device, dtype=encoder_hidden_states.dtype)
        doubled = {k: _twice(v) for k, v in kwargs.items()}
        out = forward(
            _twice(hidden_states),
            _twice(timestep),
            torch.cat([encoder_hidden_states, negative]),
            return_dict=False,
            **doubled,
        )[0]
        cond, uncond = out.chunk(2)
        mine.pending = _Pending(hidden_states, timestep, negative, uncond)
        state.batched_calls += 1
        return _output(cond, return_dict)

    den.cache_context = tracking_context
    den.forward = batched_forward


def _twice(value: Any) -> Any:
    """Batch tensors are repeated along dim 0; everything else (attention kwargs, None) passes unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return torch.cat([value, value])
    return value


def _output(sample: torch.Tensor, return_dict: bool) -> Any:
    if not return_dict:
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)
