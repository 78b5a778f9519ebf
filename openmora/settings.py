"""Every ``OPENMORA_*`` environment variable, read in one place into one typed :class:`Settings` object.

| variable | default | what it sets |
|---|---|---|
| ``OPENMORA_RUNS`` | ``runs`` | where run folders go when ``--out`` / ``out=`` is not given |
| ``OPENMORA_CACHE`` | ``$XDG_CACHE_HOME/openmora``, else ``~/.cache/openmora`` | the cache: tiny models, compiled kernels, the LLM |
| ``OPENMORA_LLM_CACHE`` | ``$OPENMORA_CACHE/llm`` | where the embedded LLM's assembled GGUF files live (1.1 GB) |
| ``OPENMORA_LLM`` | ``none`` for ``run``, ``local`` for ``chat`` | the CLI's default ``--llm`` |
| ``OPENMORA_OPENAI_MODEL`` | ``$OPENAI_MODEL`` | the model name for ``--llm openai`` (required there) |
| ``OPENMORA_OPENAI_BASE_URL`` | ``$OPENAI_BASE_URL``, else OpenAI's | an OpenAI-compatible server (vLLM, Ollama, llama.cpp) |
| ``OPENMORA_OPENAI_API_KEY`` | ``$OPENAI_API_KEY`` | its key (a local server may need none) |
| ``OPENMORA_TORCH_THREADS`` | half the CPU cores | torch's CPU threads, set when the first pipeline loads |
| ``OPENMORA_ENCODE_THREADS`` | ``0`` (ffmpeg decides) | threads of each clip's ffmpeg encoder |
| ``OPENMORA_ENCODE_NICE`` | ``10`` | niceness of the background encoders, so they never slow the GPU's feeder |
| ``OPENMORA_PINNED_EVICTIONS`` | ``1`` | ``0``: evict pipelines to plain (not pinned) host memory |
| ``OPENMORA_COMPILE`` | ``background`` | the ``compile`` speedups: ``background`` (render eagerly while compiling, switch when ready), ``blocking`` (compile at first use), ``off`` |
| ``OPENMORA_COMPILE_CACHED`` | ``foreground`` | with ``background``: a signature compiled on this machine before compiles ``foreground`` (from the cache, before its first use) or in the ``background`` like a new one |
| ``OPENMORA_RUN`` | the newest run | the run folder the Jupyter replay shows |
| ``OPENMORA_DINO`` | unset | a local DINO model folder (transformers): subject consistency and TCON as VBench/Mora compute them |
| ``OPENMORA_CLIP`` | unset | a local CLIP model folder, used for the features when no DINO is set |
| ``OPENMORA_AESTHETIC`` | unset | a LAION linear aesthetic head (``.safetensors``/``.pt``) on ``OPENMORA_CLIP``'s embeddings |
| ``OPENMORA_MUSIQ`` | unset | a TorchScript image-quality model (MUSIQ) for imaging quality instead of BRISQUE |
| ``OPENMORA_API_TOKEN`` | unset | ``openmora serve``'s bearer token (``--token``): every request must send it; required off loopback |
| ``OPENMORA_MAX_UPLOAD_MB`` | ``200`` | ``openmora serve``: the largest upload (an input image or video) it accepts, in MB |
| ``OPENMORA_TEST_CACHE`` | a fresh folder per test session | tests only: reuse one tiny-model cache across test sessions |

Library code never writes to the environment; a bad value raises :class:`~openmora.errors.InputError` naming the
variable and what it accepts.

Example:
    >>> s = Settings.from_env({"OPENMORA_TORCH_THREADS": "2", "HOME": "/home/me"})
    >>> s.torch_threads, str(s.cache_dir)
    (2, '/home/me/.cache/openmora')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from openmora.errors import InputError

VARIABLES = (
    "OPENMORA_RUNS",
    "OPENMORA_CACHE",
    "OPENMORA_LLM_CACHE",
    "OPENMORA_LLM",
    "OPENMORA_OPENAI_MODEL",
    "OPENMORA_OPENAI_BASE_URL",
    "OPENMORA_OPENAI_API_KEY",
    "OPENMORA_TORCH_THREADS",
    "OPENMORA_ENCODE_THREADS",
    "OPENMORA_ENCODE_NICE",
    "OPENMORA_PINNED_EVICTIONS",
    "OPENMORA_COMPILE",
    "OPENMORA_COMPILE_CACHED",
    "OPENMORA_RUN",
    "OPENMORA_DINO",
    "OPENMORA_CLIP",
    "OPENMORA_AESTHETIC",
    "OPENMORA_MUSIQ",
    "OPENMORA_API_TOKEN",
    "OPENMORA_MAX_UPLOAD_MB",
    "OPENMORA_TEST_CACHE",
)


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InputError(f"{name} must be 1 or 0, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


COMPILE_MODES = ("background", "blocking", "off")
COMPILE_CACHED_MODES = ("foreground", "background")


@dataclass(frozen=True)
class Settings:
    """OpenMora's configuration from the environment (see the module's table). Build it with :meth:`from_env`."""

    runs_dir: Path
    cache_dir: Path
    llm_cache_dir: Path
    llm: str | None
    openai_model: str | None
    openai_base_url: str | None
    openai_api_key: str | None
    torch_threads: int | None
    encode_threads: int
    encode_nice: int
    pinned_evictions: bool
    replay_run: str | None
    dino_path: Path | None = None
    clip_path: Path | None = None
    aesthetic_path: Path | None = None
    musiq_path: Path | None = None
    api_token: str | None = None
    max_upload_mb: int = 200
    compile_mode: str = "background"
    compile_cached: str = "foreground"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable once from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        cache = env.get("OPENMORA_CACHE")
        if cache:
            cache_dir = Path(cache).expanduser()
        else:
            xdg = env.get("XDG_CACHE_HOME")
            home = Path(env["HOME"]) if env.get("HOME") else Path.home()
            cache_dir = (Path(xdg).expanduser() if xdg else home / ".cache") / "openmora"
        llm_cache = env.get("OPENMORA_LLM_CACHE")
        return cls(
            runs_dir=Path(env.get("OPENMORA_RUNS") or "runs").expanduser(),
            cache_dir=cache_dir,
            llm_cache_dir=Path(llm_cache).expanduser() if llm_cache else cache_dir / "llm",
            llm=env.get("OPENMORA_LLM") or None,
            openai_model=env.get("OPENMORA_OPENAI_MODEL") or env.get("OPENAI_MODEL") or None,
            openai_base_url=env.get("OPENMORA_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL") or None,
            openai_api_key=env.get("OPENMORA_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or None,
            torch_threads=_int(env, "OPENMORA_TORCH_THREADS", None, 1),
            encode_threads=_int(env, "OPENMORA_ENCODE_THREADS", 0, 0) or 0,
            encode_nice=_int(env, "OPENMORA_ENCODE_NICE", 10, 0) or 0,
            pinned_evictions=_flag(env, "OPENMORA_PINNED_EVICTIONS", True),
            replay_run=env.get("OPENMORA_RUN") or None,
            dino_path=Path(env["OPENMORA_DINO"]).expanduser() if env.get("OPENMORA_DINO") else None,
            clip_path=Path(env["OPENMORA_CLIP"]).expanduser() if env.get("OPENMORA_CLIP") else None,
            aesthetic_path=Path(env["OPENMORA_AESTHETIC"]).expanduser() if env.get("OPENMORA_AESTHETIC") else None,
            musiq_path=Path(env["OPENMORA_MUSIQ"]).expanduser() if env.get("OPENMORA_MUSIQ") else None,
            api_token=env.get("OPENMORA_API_TOKEN") or None,
            max_upload_mb=_int(env, "OPENMORA_MAX_UPLOAD_MB", 200, 1) or 200,
            compile_mode=_choice(env, "OPENMORA_COMPILE", "background", COMPILE_MODES),
            compile_cached=_choice(env, "OPENMORA_COMPILE_CACHED", "foreground", COMPILE_CACHED_MODES),
        )


def current() -> Settings:
    """The settings as the environment says now (cheap: call it where a value is needed, never cache it in a global)."""
    return Settings.from_env()


def cache_root() -> Path:
    """The OpenMora cache folder (``OPENMORA_CACHE``): the one place that computes it."""
    return current().cache_dir
