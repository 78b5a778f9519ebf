"""The interactive chat as a user drives it (stdin), and the LLM backend selection."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openmora.cli import main
from openmora.errors import InputError
from openmora.llm.clients import make_llm_client

# The console script `pip install .` puts beside the interpreter (the Docker images' entry point).
OPENMORA = Path(sys.executable).with_name("openmora")


def chat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str], stdin: str
) -> tuple[int, str]:
    """`openmora chat ARGS` in this process, the user's lines read from ``stdin``; (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width: keep long paths on one line
    code = main(["chat", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def tool_calls(run: Path) -> list[str]:
    """The tools that ran, in order (steps reused from the step cache are left out: nothing ran)."""
    events = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    return [e["tool"] for e in events if e["type"] == "tool_call" and not e.get("reused") and not e.get("error")]


@pytest.mark.slow
def test_chat_request_revision_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The first chat is the suite's one cold process of the installed command (stdin to stdout, end to end); the
    resume runs in-process."""
    assert OPENMORA.is_file(), f"{OPENMORA} is missing: `pip install -e .` installs the openmora command"
    out = tmp_path / "run"
    first = subprocess.run(
        [str(OPENMORA), "chat", "--llm", "none", "--segments", "1", "--out", str(out)],
        input="a kite over the sea\nextend it by one second\n/status\n/quit\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OPENMORA_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "400"},
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    text = first.stdout + first.stderr
    assert "Traceback" not in text
    assert "plan (template, text-to-video)" in text and text.count("video: ") == 2
    assert tool_calls(out) == ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]
    assert "clip-0002" in text  # /status listed the artifacts
    assert not (tmp_path / "runs").exists()  # --out was honoured

    code, text = chat(monkeypatch, capsys, ["--llm", "none", "--resume", str(out)], "make the sky orange\n")  # EOF ends
    assert code == 0, text
    assert f"resumed {out}" in text and text.count("video: ") == 1
    # The first image is reused, not regenerated; the motion and the extension the first revision added re-run on it.
    assert tool_calls(out)[4:] == ["edit_image", "image_to_video", "extend_video"]


@pytest.mark.unit
def test_chat_reports_bad_input_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code, text = chat(
        monkeypatch, capsys, ["--llm", "none", "--out", str(tmp_path / "run")], "/image /nonexistent/x.png\na boat\n"
    )
    assert code == 0
    assert "error: image /nonexistent/x.png does not exist" in text
    assert "Traceback" not in text
    assert not (tmp_path / "run").exists()


@pytest.mark.unit
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


@pytest.mark.unit
def test_unknown_llm_is_refused() -> None:
    with pytest.raises(InputError, match="unknown --llm 'gpt'"):
        make_llm_client("gpt")


@pytest.mark.unit
def test_chat_closes_its_session_when_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from openmora.chat import ChatSession

    closed: list[bool] = []
    monkeypatch.setattr(ChatSession, "close", lambda self: closed.append(True))
    code, _ = chat(monkeypatch, capsys, ["--llm", "none", "--out", str(tmp_path / "run")], "/quit\n")
    assert code == 0 and closed == [True]
