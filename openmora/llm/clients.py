"""The LLM behind the planner and the agents, chosen by ``--llm`` (or ``$OPENMORA_LLM``).

| spec | what |
|---|---|
| ``none`` | no LLM: the task's fixed plan (reproducible batch work) |
| ``local`` | embedded Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF from PyPI chunk packages) on llama.cpp, offline |
| ``local-small`` | embedded Qwen2.5-Coder-0.5B-Instruct, faster, a little less reliable |
| ``openai`` | any OpenAI-compatible endpoint: ``OPENMORA_OPENAI_BASE_URL`` (or ``OPENAI_BASE_URL``), ``OPENMORA_OPENAI_MODEL``, key from ``OPENAI_API_KEY`` |
| ``replay:FILE`` | scripted replies from a JSON file, for tests and demos |

A replay file is a JSON list consumed in call order; each item is a string (a text reply, or a planner choice) or
``{"tool": NAME, "arguments": {...}}`` (a tool call).

Example:
    >>> client = make_llm_client("replay:tests/data/none.json")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from openmora.errors import InputError, first_line
from openmora.settings import current

LLM_SPECS = ("none", "local", "local-small", "openai", "replay:FILE")


def check_llm_spec(spec: str) -> str:
    """Validate an ``--llm`` value early (before anything is written); returns it normalised."""
    spec = (spec or "none").strip()
    if spec in ("none", "local", "local-small", "openai"):
        return spec
    if spec.startswith("replay:"):
        path = Path(spec.removeprefix("replay:")).expanduser()
        if not path.is_file():
            raise InputError(f"--llm {spec}: replay file {path} does not exist; give a JSON list of scripted replies")
        _load_replay(path)
        return spec
    raise InputError(f"unknown --llm {spec!r}; use one of: {', '.join(LLM_SPECS)}")


def _load_replay(path: Path) -> list[Any]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"replay file {path} is not valid JSON: {first_line(err)}") from None
    if not isinstance(items, list) or not all(
        isinstance(i, str) or (isinstance(i, dict) and isinstance(i.get("tool"), str)) for i in items
    ):
        raise InputError(
            f'replay file {path} must be a JSON list of strings and {{"tool": ..., "arguments": ...}} items'
        )
    return items


def replay_client(items: list[Any]) -> Any:
    """AutoGen's ``ReplayChatCompletionClient`` scripted with text replies and tool calls."""
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    replies: list[Any] = []
    for item in items:
        if isinstance(item, str):
            replies.append(item)
        else:
            call = FunctionCall(
                id=f"call_{uuid.uuid4().hex[:8]}", name=item["tool"], arguments=json.dumps(item.get("arguments", {}))
            )
            replies.append(
                CreateResult(
                    finish_reason="function_calls",
                    content=[call],
                    usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                    cached=False,
                )
            )
    # The replay client's default model_info says "no function calling": agents with tools would refuse it.
    info = ModelInfo(
        vision=False, function_calling=True, json_output=True, family=ModelFamily.UNKNOWN, structured_output=False
    )
    return ReplayChatCompletionClient(replies, model_info=info)


def make_llm_client(spec: str) -> Any:
    """Build the AutoGen model client for ``spec`` (see the module table). ``none`` returns ``None``."""
    spec = check_llm_spec(spec)
    if spec == "none":
        return None
    if spec in ("local", "local-small"):
        from openmora.llm.local import INSTALL_HINT, LocalLlamaClient, LocalModelMissing

        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise InputError(
                f"--llm {spec} needs the embedded LLM: run `{INSTALL_HINT}` (builds llama-cpp-python, then adds its "
                "weights)"
            ) from None
        try:
            return LocalLlamaClient(spec)
        except LocalModelMissing as err:
            raise InputError(str(err)) from None
    if spec == "openai":
        from autogen_core.models import ModelFamily, ModelInfo
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        settings = current()
        model = settings.openai_model
        if not model:
            raise InputError(
                "--llm openai needs OPENMORA_OPENAI_MODEL (e.g. gpt-4o-mini, or your vLLM/Ollama model name)"
            )
        base_url, api_key = settings.openai_base_url, settings.openai_api_key
        if not api_key and not base_url:
            raise InputError("--llm openai needs OPENAI_API_KEY (or OPENMORA_OPENAI_BASE_URL for a local server)")
        kwargs: dict[str, Any] = {"model": model, "api_key": api_key or "not-needed"}
        if base_url:
            kwargs["base_url"] = base_url
            # Non-OpenAI servers: say what the model can do instead of looking its name up in OpenAI's list.
            kwargs["model_info"] = ModelInfo(
                vision=False,
                function_calling=True,
                json_output=True,
                family=ModelFamily.UNKNOWN,
                structured_output=False,
            )
        # Greedy decoding, as the embedded client: the same request gets the same plan. A server that refuses
        # OpenAI's structured-output shape (llama-cpp-python's) is asked again in its own.
        from openmora.llm.structured import with_structured_fallback

        kwargs.update(temperature=0.0, seed=0)
        return with_structured_fallback(OpenAIChatCompletionClient(**kwargs))
    return replay_client(_load_replay(Path(spec.removeprefix("replay:")).expanduser()))


def supports_choices(client: Any) -> bool:
    """Whether the client can force its reply to one of a list of strings (``extra_create_args={"choices": ...}``)."""
    try:
        from openmora.llm.local import LocalLlamaClient
    except ImportError:  # pragma: no cover - local_llm imports nothing optional at module level
        return False
    while hasattr(client, "inner"):
        client = client.inner
    return isinstance(client, LocalLlamaClient)


class TimedClient:
    """Wraps a model client and adds up the seconds spent in it (``seconds``), for the run's timings."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.create(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    async def create_stream(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            async for item in self.inner.create_stream(*args, **kwargs):
                yield item
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class ExtraArgsClient:
    """Adds fixed ``extra_create_args`` (e.g. ``{"max_tokens": 120}``) to every call of a client it wraps.

    AutoGen agents cannot pass per-call arguments; this caps one agent's replies (the prompt agent's) without
    loading the model twice.
    """

    def __init__(self, inner: Any, **extra: Any) -> None:
        self.inner = inner
        self.extra = extra

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, *args: Any, extra_create_args: dict | None = None, **kwargs: Any) -> Any:
        return await self.inner.create(*args, extra_create_args={**self.extra, **(extra_create_args or {})}, **kwargs)

    def create_stream(self, *args: Any, extra_create_args: dict | None = None, **kwargs: Any) -> Any:
        return self.inner.create_stream(*args, extra_create_args={**self.extra, **(extra_create_args or {})}, **kwargs)
