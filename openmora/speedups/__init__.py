"""The speedups a profile turns on by name (a role's ``speedups:`` list), in one registry.

Each :class:`Speedup` says what it does and what it measured (its ``doc``), whether it keeps the output, whether its
gain needs CUDA, and when the loader applies it: ``load`` (after ``from_pretrained``, before the pipeline is placed)
or ``resident`` (once the pipeline is resident on its CUDA device: CUDA graphs capture device memory, so they cannot
be made before the weights are there, and never under offload hooks). :func:`apply_speedups` applies the asked names
in the registry's order, which is fixed and matters: ``channels_last`` before ``compile`` (the compiled graph is
traced for the weights' layout), ``cl_group_norm`` and ``lean_attention`` before ``compile`` (they replace forwards
the compiler then traces), ``fused_qkv`` before ``lean_attention`` (the lean processor leaves fused layers alone).

``python -m openmora.speedups`` prints the table. The output-changing options of the fast mode (fp8 weight storage, a
diffusers cache) take settings rather than a name: see :mod:`openmora.speedups.output_changing`.

Example:
    >>> from openmora.speedups import REGISTRY, check_speedups
    >>> REGISTRY["compile"].when, REGISTRY["cuda_graphs"].when
    ('load', 'resident')
    >>> check_speedups(["compile", "warp"], "role x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    openmora.speedups.UnknownSpeedup: role x: unknown speedup 'warp'; known: batched_cfg, ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from openmora.errors import InputError

if TYPE_CHECKING:
    from openmora.profiles import RoleConfig

logger = logging.getLogger(__name__)

When = Literal["load", "resident"]


class UnknownSpeedup(InputError):
    """A speedup name that is not in :data:`REGISTRY` (a typo in a profile, or a speedup this version lacks)."""


@dataclass(frozen=True)
class Speedup:
    """One named speedup.

    ``apply(pipe, names)`` patches the pipeline in place and returns whether it changed anything (False: it does not
    apply to this pipeline, which is harmless); ``names`` are all the speedups asked for the pipeline, for a speedup
    that acts on what another one does (``cl_group_norm`` changes only the modules that ``compile`` and
    ``vae_compile`` compile). ``doc``: its first line says what it does, the rest why, with the measured number.
    ``output_preserving``: the output stays the same up to rounding (the final latents' error against fp32 at most
    twice the fp16 baseline's); options that change it more belong in a role's ``fast:`` block. ``needs_cuda``: its
    gain exists only on a CUDA device (elsewhere it is applied and harmless, or for ``resident`` not applied).
    ``when``: ``load`` or ``resident`` (see the module). ``unapplied``: why ``apply`` returned False, for the log.
    """

    name: str
    apply: Callable[[Any, frozenset[str]], bool]
    doc: str
    output_preserving: bool = True
    needs_cuda: bool = False
    when: When = "load"
    unapplied: str = "it does not apply to this pipeline"

    @property
    def summary(self) -> str:
        """The doc's first line."""
        return self.doc.split("\n", 1)[0]


REGISTRY: dict[str, Speedup] = {}  # in the order of application (within each ``when``)


def register(speedup: Speedup) -> Speedup:
    """Add ``speedup`` to :data:`REGISTRY`, applied after every speedup registered before it; returns it."""
    if speedup.name in REGISTRY:
        raise ValueError(f"speedup {speedup.name!r} is already registered")
    if speedup.when not in ("load", "resident"):
        raise ValueError(f"speedup {speedup.name!r}: when must be 'load' or 'resident', got {speedup.when!r}")
    REGISTRY[speedup.name] = speedup
    return speedup


def check_speedups(names: Iterable[str], where: str = "speedups") -> None:
    """Raise :class:`UnknownSpeedup` (one line, listing the known names) for the first name not registered."""
    for name in names:
        if name not in REGISTRY:
            raise UnknownSpeedup(f"{where}: unknown speedup {name!r}; known: {', '.join(sorted(REGISTRY))}")


def apply_speedups(pipe: Any, names: Iterable[str], when: When = "load") -> list[str]:
    """Apply the speedups among ``names`` registered for ``when`` to ``pipe``, in :data:`REGISTRY`'s order (not the
    order of ``names``); returns the names that changed something. Unknown names raise :class:`UnknownSpeedup`."""
    asked = frozenset(names)
    check_speedups(sorted(asked))
    applied = []
    for speedup in REGISTRY.values():
        if speedup.name not in asked or speedup.when != when:
            continue
        if speedup.apply(pipe, asked):
            applied.append(speedup.name)
        else:
            logger.info("%s not applied to %s: %s", speedup.name, type(pipe).__name__, speedup.unapplied)
    return applied


def speedups_for(cfg: RoleConfig, role: str) -> list[str]:
    """The role's speedups, less ``compile`` where a diffusers cache (the fast mode's) is on: the cache's hooks decide
    on the host, per step, whether the remaining blocks run, which breaks a compiled block's graph."""
    names = list(cfg.speedups)
    if cfg.cache and "compile" in names:
        names.remove("compile")
        logger.info(
            "%s: compile off while the %s cache is on (its hooks decide per step which blocks run)",
            role,
            cfg.cache.get("type"),
        )
    return names


# ----- the speedups, in the order of application ----------------------------------------------------------------------
# The implementations are imported when applied, so that importing this registry (profiles do, to check names) stays
# free of torch and diffusers.


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def _channels_last(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.channels_last import to_channels_last

    modules = [m for m in (_denoiser(pipe), getattr(pipe, "vae", None)) if m is not None]
    for module in modules:
        to_channels_last(module)
    return bool(modules)


def _fused_qkv(pipe: Any, names: frozenset[str]) -> bool:
    den = _denoiser(pipe)
    if den is None or not hasattr(den, "fuse_qkv_projections"):
        return False
    try:
        den.fuse_qkv_projections()
    except (ValueError, AttributeError, NotImplementedError) as err:  # not every denoiser supports it
        logger.debug("fused_qkv: %s refused: %s", type(den).__name__, err)
        return False
    return True


def _lean_attention(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.attention import install_lean_attention

    den = _denoiser(pipe)
    return den is not None and install_lean_attention(den) > 0


def _cudnn_attention(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.attention import prefer_cudnn_attention

    den = _denoiser(pipe)
    if den is None:
        return False
    prefer_cudnn_attention(den)
    return True


def _gpu_image_prep(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.gpu_image_prep import install_gpu_image_prep

    return install_gpu_image_prep(pipe)


def _no_step_sync(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.no_step_sync import install_no_step_sync

    return install_no_step_sync(pipe)


def _batched_cfg(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.batched_cfg import install_batched_cfg

    return install_batched_cfg(pipe)


def _cl_group_norm(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.group_norm import install_cl_group_norm

    compiled = {"compile": _denoiser(pipe), "vae_compile": getattr(getattr(pipe, "vae", None), "decoder", None)}
    return sum(install_cl_group_norm(m) for name, m in compiled.items() if name in names and m is not None) > 0


def _compile(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.compile import compile_regions, persistent_compile_cache

    den = _denoiser(pipe)
    if den is None:
        return False
    persistent_compile_cache()
    compile_regions(den)
    return True


def _vae_compile(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.compile import deferred, persistent_compile_cache

    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    if decoder is None:
        return False
    persistent_compile_cache()
    deferred(decoder, f"{type(decoder).__name__}")
    return True


def _cuda_graphs(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.cuda_graphs import install_graphs

    return bool(install_graphs(pipe, ("cuda_graphs",)))


def _encoder_graphs(pipe: Any, names: frozenset[str]) -> bool:
    from openmora.speedups.cuda_graphs import install_graphs

    return bool(install_graphs(pipe, ("encoder_graphs",)))


register(
    Speedup(
        "channels_last",
        _channels_last,
        "Conv weights of the denoiser and the VAE channels-last (4-D NHWC, 5-D NDHWC).\n"
        "cuDNN then runs its tensor-core kernels without layout transposes. Compiled SVD UNet 0.496 -> 0.478 s/step; "
        "with the 5-D (temporal) weights too, the compiled 25-frame VAE decode 0.795 -> 0.734 s (H100). Eager it is "
        "slower (0.683 -> 0.754 s/step): pair it with compile.",
        unapplied="no denoiser or VAE",
    )
)
register(
    Speedup(
        "fused_qkv",
        _fused_qkv,
        "One matmul for q, k and v in the denoiser's self-attention (diffusers' fuse_qkv_projections).\n"
        "Fewer, larger GEMMs where the denoiser supports it. Measured no change on SVD's eager UNet "
        "(0.686 -> 0.686 s/step, H100).",
        unapplied="the denoiser does not support fused q/k/v projections",
    )
)
register(
    Speedup(
        "lean_attention",
        _lean_attention,
        "Single-token cross-attention as its value projection, short self-attention on a short-sequence kernel.\n"
        "Softmax over one key is exactly 1, so SVD's image cross-attention is to_out(to_v(context)); its temporal "
        "self-attention over 25 frames runs the Triton short-attention kernel (CUDA) or the memory-efficient one "
        "instead of FlashAttention's 128-token tiles. Compiled SVD UNet 0.476 -> 0.434 s/step, the Triton kernel "
        "0.4020 -> 0.3943 s/step more (H100); error against fp32 0.92x the baseline's.",
        unapplied="no attention layer on diffusers' default processor",
    )
)
register(
    Speedup(
        "cudnn_attention",
        _cudnn_attention,
        "The denoiser's SDPA calls prefer cuDNN's fused attention (then Flash, memory-efficient, math).\n"
        "cuDNN has Hopper-specific attention kernels. Measured no change on SVD's eager UNet (0.683 -> 0.686 s/step, "
        "H100).",
        needs_cuda=True,
        unapplied="no denoiser",
    )
)
register(
    Speedup(
        "gpu_image_prep",
        _gpu_image_prep,
        "SVD's CLIP image input (blur and resize of the conditioning frame to 224x224) made on the GPU.\n"
        "diffusers makes it on the CPU from the full 1024x576 frame: 80 ms per segment with the GPU idle, 0.24 s of "
        "idle GPU per text-to-video (H100 host); the embedding stays within 1e-4 of the CPU path's.",
        needs_cuda=True,
        unapplied="it has no CLIP image preparation",
    )
)
register(
    Speedup(
        "no_step_sync",
        _no_step_sync,
        "SVD's loop decides once per call, not twice per step, whether to batch CFG.\n"
        "Its do_classifier_free_guidance reads the per-frame guidance tensor on the GPU, so the host waited for the "
        "GPU at every step (~2.7 ms per step, 0.2 s per text-to-video on the H100 host; end to end within the ~1% "
        "run-to-run spread). Bit-identical.",
        needs_cuda=True,
        unapplied="not a Stable Video Diffusion pipeline",
    )
)
register(
    Speedup(
        "batched_cfg",
        _batched_cfg,
        "One transformer call of batch 2 per step instead of a cond and an uncond call of batch 1 (Wan).\n"
        "Under group offload the weights then stream from the CPU once per step instead of twice. Wan FLF2V "
        "2.146 -> 2.126 s/step offloaded, 1.715 -> 1.746 s/step resident (H100); error against fp32 1.00x the "
        "baseline's.",
        unapplied="it does not make separate cond/uncond calls",
    )
)
register(
    Speedup(
        "cl_group_norm",
        _cl_group_norm,
        "GroupNorm statistics as per-channel sums first, in the modules that compile or vae_compile compile.\n"
        "Compiled channels-last GroupNorm then reads memory along its order instead of with a stride: compiled SVD "
        "UNet 0.4334 -> 0.4098 s/step, compiled 25-frame decode 0.7317 -> 0.5433 s (H100). Eager it would only add "
        "kernels, so without a compile speedup it changes nothing.",
        unapplied="no compiled module with GroupNorm",
    )
)
register(
    Speedup(
        "compile",
        _compile,
        "Regional torch.compile of the denoiser: each down/mid/up block, or one graph for repeated transformer blocks.\n"
        "Compile time stays in seconds per distinct block and shapes stay static. SVD UNet 0.683 -> 0.478 s/step, Wan "
        "FLF2V 1.695 -> 1.305 s/step (H100); error against fp32 0.92x (SVD) and 0.91x (Wan) the baseline's. The "
        "one-off compile (SVD UNet and VAE decoder) is 193 s with an empty cache and 29 s once inductor's cache is "
        "kept in the OpenMora cache; regions compile in the background while the render runs eagerly "
        "(OPENMORA_COMPILE), so a fresh H200 process wrote Mora's text-to-video at 106 s instead of waiting 231 s "
        "before the first frame. Left off while a diffusers cache is on (its per-step decision breaks the graph).",
        unapplied="no denoiser",
    )
)
register(
    Speedup(
        "vae_compile",
        _vae_compile,
        "torch.compile of the VAE decoder.\n"
        "SVD's 25-frame decode 2.35 -> 0.72 s, peak memory 13.8 -> 8.8 GB (H100); pixels within 3.8e-3 of eager.",
        unapplied="no VAE decoder",
    )
)
register(
    Speedup(
        "cuda_graphs",
        _cuda_graphs,
        "CUDA-graph replay of the denoiser, once the pipeline is resident on its GPU.\n"
        "Launch-bound denoisers gain most: SDXL's UNet runs 2,350 kernels in 28 ms of GPU time but took 76 ms eager. "
        "SDXL base 2.61 -> 0.93 s, refiner 0.64 -> 0.25 s per image, bit-identical; compiled SVD UNet 30.33 -> "
        "30.00 s for 75 passes (H100).",
        needs_cuda=True,
        when="resident",
        unapplied="no denoiser",
    )
)
register(
    Speedup(
        "encoder_graphs",
        _encoder_graphs,
        "CUDA-graph replay of the prompt and image encoders, once the pipeline is resident on its GPU.\n"
        "CLIP text and vision transformers at batch 1 launch ~15 small kernels per layer with the GPU idle between "
        "them; equal to fp16 rounding. Not measured alone: with two other changes, text-to-video 35.65 -> 34.71 s "
        "(H100). A module shared by two pipelines (SDXL's second text encoder) gets one graph set.",
        needs_cuda=True,
        when="resident",
        unapplied="no text or image encoder",
    )
)
