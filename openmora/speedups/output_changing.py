"""The fast mode's output-changing options, set by a role's ``storage_dtype`` and ``cache`` keys (normally only
through its ``fast:`` block): fp8 weight storage and a diffusers cache on the denoiser.

They are not in the speedup registry: they take settings (a dtype, a cache config) rather than being turned on by
name, and they change the output (the fast mode's error against an fp32 reference is in bench/RESULTS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from openmora.errors import ModelLoadError

if TYPE_CHECKING:
    from openmora.profiles import RoleConfig


def apply_output_changing(pipe: Any, cfg: RoleConfig, role: str, dtype: torch.dtype) -> None:
    """Store the denoiser's weights in ``cfg.storage_dtype`` (layerwise casting to ``dtype`` per layer) and put
    ``cfg.cache`` on it (a diffusers cache config class name plus its settings); nothing where neither is set."""
    den = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if cfg.storage_dtype and den is not None:
        den.enable_layerwise_casting(storage_dtype=getattr(torch, cfg.storage_dtype), compute_dtype=dtype)
    if cfg.cache:
        import diffusers

        kind = cfg.cache["type"]
        config_cls = getattr(diffusers, kind, None)
        if config_cls is None or not kind.endswith("Config"):
            raise ModelLoadError(
                f"role {role!r}: unknown cache type {kind!r}; use a diffusers cache config class, "
                "e.g. FirstBlockCacheConfig, FasterCacheConfig, PyramidAttentionBroadcastConfig"
            )
        if den is None or not hasattr(den, "enable_cache"):
            raise ModelLoadError(
                f"role {role!r}: {type(den).__name__} does not support diffusers caches "
                f"(cache {kind}); remove 'cache' or pick a transformer model"
            )
        try:
            config = config_cls(**{k: v for k, v in cfg.cache.items() if k != "type"})
        except TypeError as err:
            raise ModelLoadError(f"role {role!r}: bad {kind} settings: {err}") from None
        den.enable_cache(config)
