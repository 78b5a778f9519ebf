"""``--llm openai`` against a real OpenAI-compatible server: llama-cpp-python's own, on loopback, with the embedded model.

The module's fixture starts ``python -m llama_cpp.server`` on a free 127.0.0.1 port serving the embedded
Qwen2.5-Coder-0.5B (``local-small``, assembled from its chunk packages like ``--llm local`` does), waits until it
answers ``GET /v1/models`` and stops it at the end, whatever happened. The client under test is the one
``make_llm_client("openai")`` builds from the environment (AutoGen's ``OpenAIChatCompletionClient``), so the requests
go through the OpenAI SDK and HTTP exactly as they would to a remote server.

Needs requirements-llm.txt (llama-cpp-python and its server extras) and requirements-llm-weights.txt; skipped with
the reason when they are not installed. About 25 s on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from autogen_core.models import SystemMessage, UserMessage

from openmora.group_chat.plan import planner_schema
from openmora.llm.clients import make_llm_client
from openmora.llm.structured import (
    StructuredFallbackClient,
    is_response_format_rejection,
    response_format_for,
    with_structured_fallback,
)

pytestmark = [pytest.mark.llm, pytest.mark.slow]

ALIAS = "openmora-local"
START_TIMEOUT_S = 60.0
# The server samples at temperature 0.8 unless told otherwise: greedy decoding makes every reply reproducible.
GREEDY = {"temperature": 0.0, "seed": 0}
# What `python -m llama_cpp.server` imports beyond llama_cpp itself (llama-cpp-python's "server" extra).
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
PLAN_SYSTEM = (
    "You plan short videos. Reply with JSON only: "
    '{"template": "text-to-video", "prompt": "<a one-sentence visual description>"}.'
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_env() -> dict[str, str]:
    """This environment without what the server would read as its own settings.

    llama-cpp-python's settings are pydantic-settings models (each field also read from the variable of its name,
    any case) and its ``main`` lets ``$HOST`` and ``$PORT`` override ``--host`` and ``--port``: a stray ``PORT`` or
    ``MODEL`` in the test's environment must not change the server the fixture asked for.
    """
    from llama_cpp.server.settings import Settings

    own = {name.lower() for name in Settings.model_fields} | {"host", "port", "config_file"}
    return {k: v for k, v in os.environ.items() if k.lower() not in own}


def _log_tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT/v1``) of a llama-cpp-python server serving ``local-small``."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"llama-cpp-python's server needs {', '.join(missing)}: pip install -r requirements-llm.txt (or `make`)"
        )
    from openmora.llm.local import LocalModelMissing, ensure_local_model

    try:
        model = ensure_local_model("local-small")
    except LocalModelMissing as err:
        pytest.skip(f"the embedded model is not installed: {err}")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model_alias",
        ALIAS,
        "--n_ctx",
        "4096",
        "--n_threads",
        "2",
        "--n_threads_batch",
        "2",
    ]
    base = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_server_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode} before answering:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
                    models = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer in {START_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")
                time.sleep(0.25)
        assert [m["id"] for m in models["data"]] == [ALIAS], models
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def openai_env(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment ``--llm openai`` reads, pointed at the loopback server (and no real key sent to it)."""
    monkeypatch.setenv("OPENMORA_OPENAI_BASE_URL", server)
    monkeypatch.setenv("OPENMORA_OPENAI_MODEL", ALIAS)
    for name in ("OPENMORA_OPENAI_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return server


def _create(client: Any, messages: list[Any], **extra: Any) -> Any:
    """One greedy ``client.create`` in its own event loop, closing the client's HTTP pool in that loop."""

    async def go() -> Any:
        try:
            return await client.create(messages, extra_create_args={**GREEDY, **extra})
        finally:
            await client.close()

    return asyncio.run(go())


def _plan_messages() -> list[Any]:
    return [
        SystemMessage(content=PLAN_SYSTEM),
        UserMessage(content="a fox running through snow at dusk", source="user"),
    ]


def test_plain_reply(openai_env: str) -> None:
    client = make_llm_client("openai")
    result = _create(client, [UserMessage(content="Say hello in one word.", source="user")], max_tokens=16)
    assert isinstance(result.content, str) and result.content.strip(), result
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0  # counted by the server


def test_structured_plan_matches_the_schema(openai_env: str) -> None:
    client = with_structured_fallback(make_llm_client("openai"))
    schema = planner_schema()
    result = _create(client, _plan_messages(), response_format=response_format_for(schema, "plan"), max_tokens=300)
    data = json.loads(result.content)
    assert isinstance(data, dict) and ("template" in data or "steps" in data), data
    jsonschema.validate(data, schema)
    # This server refused the standard shape, so the request went again as json_object + schema.
    assert isinstance(client, StructuredFallbackClient) and client.llama_cpp_shape


def test_the_schema_is_enforced_not_just_json(openai_env: str) -> None:
    """A value the model would never write on its own: only a grammar built from the schema produces it."""
    client = with_structured_fallback(make_llm_client("openai"))
    schema = {"type": "object", "properties": {"colour": {"enum": ["vermilion-7"]}}, "required": ["colour"]}
    question = [UserMessage(content="What colour is the sky? Answer in JSON.", source="user")]
    result = _create(client, question, response_format=response_format_for(schema, "colour"), max_tokens=20)
    assert json.loads(result.content) == {"colour": "vermilion-7"}


def test_server_refuses_openais_json_schema_shape(openai_env: str) -> None:
    """Why the fallback exists: llama-cpp-python's server answers type json_schema with a 500 naming response_format.

    If this starts failing, the server has learnt OpenAI's shape and StructuredFallbackClient has nothing to do there.
    """
    import openai

    client = make_llm_client("openai").inner  # the OpenAI client itself, without the fallback make_llm_client adds
    with pytest.raises(openai.APIStatusError) as caught:
        _create(client, _plan_messages(), response_format=response_format_for(planner_schema(), "plan"), max_tokens=8)
    assert is_response_format_rejection(caught.value), caught.value


def test_planner_plans_through_the_server(openai_env: str) -> None:
    """The planner, end to end over HTTP: its structured plan request, checked, becomes a runnable plan."""
    planner_mod = pytest.importorskip("openmora.group_chat.planner")
    from openmora.profiles import load_profile

    # make_llm_client("openai") is greedy and falls back to llama.cpp's structured shape: the planner's own client.
    client = make_llm_client("openai")

    async def go() -> Any:
        try:
            return await planner_mod.Planner(client, load_profile("tiny")).plan(
                "a fox running through snow at dusk", has_image=False, n_videos=0
            )
        finally:
            await client.close()

    plan = asyncio.run(go())
    assert plan.source in ("llm", "repaired"), plan.describe()
    assert any(s.tool == "text_to_image" for s in plan.steps), plan.describe()
