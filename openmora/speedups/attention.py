"""Leaner attention for video UNets, same outputs: what the ``lean_attention`` speedup installs.

Stable Video Diffusion's UNet spends ~0.11 s of its 0.48 s step in attention (H100, Mora's shapes), a third of it in
two kinds of call that do little work:

* cross-attention on ONE conditioning token (SVD's CLIP image embedding): softmax over a single key is exactly 1, so
  every query's output is that key's value. The processor returns ``to_out(to_v(context))`` broadcast over the
  queries and skips ``to_q`` and the attention kernel (the same numbers up to GEMM rounding).
* temporal self-attention over 25 frames (18,432 sequences of 25 tokens): FlashAttention pads each to a 128-token
  tile; the memory-efficient kernel runs these ~2x faster at the same precision, and the Triton kernel of
  :mod:`openmora.speedups.short_attention` (CUDA builds of torch) ~2x faster again (1.05 -> 0.50 ms at the finest
  level), with q, k and v from one GEMM over the concatenated weights (the input read once).

Every other call (masks, spatial norms, group norms, long sequences, CPU) goes through diffusers' own
``AttnProcessor2_0`` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from openmora.speedups import short_attention

SHORT_SEQUENCE = short_attention.MAX_TOKENS  # keys up to this length: the Triton kernel (or memory-efficient) on CUDA


def _default_processor() -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0

    return AttnProcessor2_0()


class LeanAttnProcessor:
    """``AttnProcessor2_0`` with the shortcuts above; falls back to it for anything else.

    ``short_kernel``: short self-attention through :mod:`openmora.speedups.short_attention`'s Triton kernel (CUDA with Triton).
    ``fuse_qkv``: a self-attention's q, k, v projections as one GEMM (short sequences; ``fuse_long_qkv`` for long ones).
    """

    def __init__(self, short_kernel: bool = True, fuse_qkv: bool = True, fuse_long_qkv: bool = False) -> None:
        self.fallback = _default_processor()
        self.short_kernel = short_kernel
        self.fuse_qkv = fuse_qkv
        self.fuse_long_qkv = fuse_long_qkv

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        plain = (
            hidden_states.ndim == 3
            and attention_mask is None
            and attn.spatial_norm is None
            and attn.group_norm is None
            and not args
            and kwargs.get("scale") is None
        )
        if not plain:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        cross = encoder_hidden_states is not None
        short = context.shape[1] <= SHORT_SEQUENCE
        if cross and encoder_hidden_states.shape[1] == 1:
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            out = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # (B, 1, C): each query's output
            out = out.expand(hidden_states.shape[0], hidden_states.shape[1], out.shape[-1])
        elif hidden_states.is_cuda and (short or (not cross and self.fuse_long_qkv)):
            out = self._attend(attn, hidden_states, context, cross, short)
        else:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _attend(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor, cross: bool, short: bool
    ) -> torch.Tensor:
        batch = hidden_states.shape[0]
        fuse = not cross and (self.fuse_qkv if short else self.fuse_long_qkv)
        fused = _fused_qkv(attn, hidden_states) if fuse else None
        if fused is not None:
            query, key, value = fused
        else:
            query = attn.to_q(hidden_states)
            if cross and attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if short and self.short_kernel and not cross and short_attention.supported(query, key, value):
            out = short_attention.short_attention(query, key, value)  # already (batch, tokens, heads * dim)
            return attn.to_out[1](attn.to_out[0](out))
        if short and head_dim % 8 == 0 and query.dtype in (torch.float16, torch.bfloat16):
            # The aten op picks the memory-efficient kernel explicitly and traces cleanly under torch.compile.
            out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, False)[0]
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def _plain_linear(layer: Any, x: torch.Tensor) -> bool:
    """A bare ``nn.Linear`` whose stored weight is what its forward uses (no hooks: no offload, no layerwise casting)."""
    return (
        type(layer) is torch.nn.Linear
        and not layer._forward_hooks
        and not layer._forward_pre_hooks
        and layer.weight.dtype == x.dtype
        and layer.weight.device == x.device
    )


def _fused_qkv(attn: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """q, k, v of a self-attention as one GEMM over ``x`` (read once instead of three times), or None where the three
    projections are not plain linears of one shape. The concatenated weight is built per call (0.6 MB at SVD's finest
    level, against 295 MB of activations per projection): nothing extra stays in memory."""
    layers = (attn.to_q, attn.to_k, attn.to_v)
    if not all(_plain_linear(layer, x) for layer in layers):
        return None
    if len({layer.weight.shape for layer in layers}) != 1 or len({layer.bias is None for layer in layers}) != 1:
        return None
    weight = torch.cat([layer.weight for layer in layers])
    bias = None if attn.to_q.bias is None else torch.cat([layer.bias for layer in layers])
    return F.linear(x, weight, bias).chunk(3, dim=-1)


def install_lean_attention(module: torch.nn.Module) -> int:
    """Give every attention layer of ``module`` that runs diffusers' default SDPA processor the lean one.

    Returns how many layers changed (layers with other processors -- fused, IP-adapter, custom -- are left alone).
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    lean = LeanAttnProcessor()
    changed = 0
    for sub in module.modules():
        if isinstance(sub, Attention) and type(sub.processor) is AttnProcessor2_0:
            sub.set_processor(lean)
            changed += 1
    return changed


def prefer_cudnn_attention(module: torch.nn.Module) -> None:
    """Run ``module``'s SDPA calls with cuDNN's fused attention first (then Flash, memory-efficient, math): the
    ``cudnn_attention`` speedup. Where a backend cannot take a call, the next one in the order does."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    forward = module.forward

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel(order, set_priority=True):
            return forward(*args, **kwargs)

    module.forward = wrapped
