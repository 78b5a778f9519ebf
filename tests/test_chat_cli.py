"""The interactive chat as a user drives it (stdin), and the LLM backend selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openmora.errors import InputError
from openmora.llm.clients import make_llm_client

ROOT_DIR = Path(__file__).resolve().parent.parent


def chat(args: list[str], stdin: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENMORA_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT_DIR / "orchestrator.py"), "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_chat_request_revision_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = chat(
        ["--llm", "none", "--segments", "1", "--out", str(out)],
        "a kite over the sea\nextend it by one second\n/status\n/quit\n",
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    text = first.stdout + first.stderr
    assert "task: text-to-video" in text and text.count("video: ") == 2
    events = [json.loads(line) for line in (out / "transcript.jsonl").read_text().splitlines()]
    tools = [e["tool"] for e in events if e["type"] == "tool_call"]
    assert tools == ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]
    assert "clip-0002" in text  # /status listed the artifacts

    again = chat(["--llm", "none", "--resume", str(out)], "make the sky orange\n", tmp_path)  # EOF ends the chat
    assert again.returncode == 0, again.stderr
    assert f"resumed {out}" in again.stdout + again.stderr
    events = [json.loads(line) for line in (out / "transcript.jsonl").read_text().splitlines()]
    after = [e["tool"] for e in events if e["type"] == "tool_call"][4:]
    assert after == ["edit_image", "image_to_video"]  # the first image is reused, not regenerated


def test_chat_reports_bad_input_and_goes_on(tmp_path: Path) -> None:
    r = chat(["--llm", "none", "--out", str(tmp_path / "run")], "/image /nonexistent/x.png\na boat\n", tmp_path)
    assert r.returncode == 0
    assert "error: image /nonexistent/x.png does not exist" in r.stdout + r.stderr
    assert not (tmp_path / "run").exists()


def test_openai_backend_is_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "OPENMORA_OPENAI_MODEL",
        "OPENAI_MODEL",
        "OPENMORA_OPENAI_BASE_URL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENMORA_OPENAI_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="OPENMORA_OPENAI_MODEL"):
        make_llm_client("openai")
    monkeypatch.setenv("OPENMORA_OPENAI_MODEL", "qwen2.5")
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        make_llm_client("openai")
    monkeypatch.setenv("OPENMORA_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a local server (vLLM, Ollama...)
    client = make_llm_client("openai")
    assert client.model_info["function_calling"] is True
    assert str(client._client.base_url).startswith("http://127.0.0.1:9")  # noqa: SLF001


def test_unknown_llm_is_refused() -> None:
    with pytest.raises(InputError, match="unknown --llm 'gpt'"):
        make_llm_client("gpt")
