"""Softmax attention over short sequences (a video UNet's temporal layers) as one Triton kernel.

Stable Video Diffusion's temporal self-attention attends over the 25 frames of each pixel: 18,432 sequences of 25
tokens x 5 heads of 64 at the finest level. Every library kernel is built for long sequences: FlashAttention and cuDNN
pad each sequence to a 64-128-token tile, the memory-efficient kernel (the fastest of them here) still reads and
writes at ~1.2 TB/s, where the H100 moves ~3 TB/s. The work is tiny (25x25 scores per head): the cost is reading
Q, K, V and writing the output once. Here one program loads one (sequence, head)'s Q, K and V tiles (rows padded to
32 in registers, not in memory), computes the scores and the softmax in fp32 and writes the output straight into the
(batch, tokens, heads x dim) layout the output projection reads.

Inference only (no backward). Used by ``openmora.speedups.attention.LeanAttnProcessor`` on CUDA when Triton is importable;
anything else falls back to torch's kernels.
"""

from __future__ import annotations

import math

import torch

try:  # Triton ships with CUDA builds of torch; CPU builds lack it (and have no use for the kernel)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

MAX_TOKENS = 64  # sequences up to this length (keys = queries) use the kernel
HEAD_DIMS = (16, 32, 64, 128)
NUM_WARPS = 4

if triton is not None:

    @triton.jit
    def _short_attention_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        o_ptr,
        heads,
        tokens,
        sq_b,
        sq_h,
        sq_l,
        sk_b,
        sk_h,
        sk_l,
        sv_b,
        sv_h,
        sv_l,
        qk_scale,
        BLOCK_L: tl.constexpr,
        D: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        b = pid // heads
        h = pid % heads
        rows = tl.arange(0, BLOCK_L)
        cols = tl.arange(0, D)
        valid = rows[:, None] < tokens
        q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_l + cols[None, :], mask=valid, other=0.0)
        k = tl.load(k_ptr + b * sk_b + h * sk_h + rows[:, None] * sk_l + cols[None, :], mask=valid, other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + rows[:, None] * sv_l + cols[None, :], mask=valid, other=0.0)
        # scores in fp32, scaled by log2(e)/sqrt(D) so that exp2 gives the softmax's exp
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(rows[None, :] < tokens, s, float("-inf"))
        m = tl.max(s, 1)
        p = tl.exp2(s - m[:, None])
        denom = tl.sum(p, 1)
        o = tl.dot(p.to(v.dtype), v) / denom[:, None]
        # output (batch, tokens, heads, D) contiguous = (batch, tokens, heads * D)
        o_offs = b * tokens * heads * D + rows[:, None] * (heads * D) + h * D + cols[None, :]
        tl.store(o_ptr + o_offs, o.to(o_ptr.dtype.element_ty), mask=valid)

    @torch.library.triton_op("openmora::short_attention", mutates_args=())
    def _short_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, heads, tokens, dim = query.shape
        out = torch.empty((batch, tokens, heads * dim), device=query.device, dtype=query.dtype)
        qk_scale = (1.0 / math.sqrt(dim)) * 1.4426950408889634  # log2(e)
        torch.library.wrap_triton(_short_attention_kernel)[(batch * heads,)](
            query,
            key,
            value,
            out,
            heads,
            tokens,
            *query.stride()[:3],
            *key.stride()[:3],
            *value.stride()[:3],
            qk_scale,
            BLOCK_L=max(16, triton.next_power_of_2(tokens)),
            D=dim,
            num_warps=NUM_WARPS,
        )
        return out


def supported(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether :func:`short_attention` takes these (batch, heads, tokens, dim) tensors."""
    return (
        triton is not None
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and query.shape == key.shape == value.shape
        and query.dtype == key.dtype == value.dtype
        and query.shape[-1] in HEAD_DIMS
        and 0 < query.shape[2] <= MAX_TOKENS
        and all(t.stride(-1) == 1 for t in (query, key, value))
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)))
    )


def short_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for (batch, heads, tokens, dim) inputs, returned as (batch, tokens, heads*dim).

    Self-attention only (as many keys as queries), no mask, no dropout; check :func:`supported` first.
    """
    if not supported(query, key, value):
        raise ValueError(
            "short_attention takes CUDA fp16/bf16 (batch, heads, tokens, dim) tensors of one shape, "
            f"tokens <= {MAX_TOKENS}, dim in {HEAD_DIMS}, last dim contiguous; got {tuple(query.shape)} "
            f"{query.dtype} on {query.device}"
        )
    return _short_attention_op(query, key, value)
