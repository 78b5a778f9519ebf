"""The Dockerfiles stay consistent with requirements.txt and the CLI (static checks: no Docker engine needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from openmora.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "cuda": ROOT / "docker" / "Dockerfile.cuda"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in instructions(path) if kind == "ARG" and "=" in a)


def runs_of(path: Path) -> str:
    return "\n".join(a for kind, a in instructions(path) if kind == "RUN")


def torch_pin() -> str:
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert len(pins) == 1, "requirements.txt must pin torch on exactly one 'torch==' line (the images filter it out)"
    return pins[0].removeprefix("torch==").strip()


def test_cpu_image_installs_the_pinned_torch_from_the_cpu_index() -> None:
    args = args_of(DOCKERFILES["cpu"])
    assert args["TORCH_VERSION"] == torch_pin()
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert instructions(DOCKERFILES["cpu"])[0] == ("FROM", "python:3.11-slim")


def test_cuda_image_pairs_its_torch_with_its_cuda() -> None:
    args = args_of(DOCKERFILES["cuda"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"]), "pin an exact torch version"
    index = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)(\d)", args["TORCH_INDEX"])
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(runtime|base)-ubuntu[\d.]+", args["CUDA_IMAGE"])
    assert index and base, (args["TORCH_INDEX"], args["CUDA_IMAGE"])
    assert index.groups() == base.groups()[:2], "the base image's CUDA must match the torch wheel's"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_installs_requirements_around_its_torch(name: str) -> None:
    path = DOCKERFILES[name]
    run = runs_of(path)
    torch_pin()  # the filter below relies on the single 'torch==' line
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in run
    assert "grep -v '^torch==' requirements.txt > /tmp/requirements-no-torch.txt" in run
    assert "pip install -r /tmp/requirements-no-torch.txt" in run
    # The constraint keeps pip from swapping the torch build while resolving the rest.
    assert 'echo "torch==${TORCH_VERSION}" > /etc/openmora/constraints.txt' in run
    assert ("ENV", "PIP_CONSTRAINT=/etc/openmora/constraints.txt") in instructions(path)
    assert run.index("--index-url") < run.index("requirements-no-torch.txt")
    llm = re.search(r'if \[ "\$\{INSTALL_LLM\}" = "1" \]; then(.*?)fi', run, re.S)
    assert llm and "pip install -r requirements-llm.txt" in llm.group(1)
    assert args_of(path)["INSTALL_LLM"] == "0"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_copies_what_exists_and_runs_the_demo(name: str) -> None:
    steps = instructions(DOCKERFILES[name])
    for kind, arg in steps:
        if kind == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert source == "." or (ROOT / source).is_file(), f"COPY {source}: no such file in the repo"
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    assert entrypoint == ["python", "orchestrator.py"] and (ROOT / entrypoint[1]).is_file()
    cmd = json.loads(dict(steps)["CMD"])
    parsed = build_parser().parse_args(cmd)
    assert parsed.command == "run" and parsed.task == "text-to-video" and parsed.prompt
    env = " ".join(a for kind, a in steps if kind == "ENV")
    assert "OPENMORA_CACHE=/cache" in env and "OPENMORA_RUNS=/runs" in env
    assert set(json.loads(dict(steps)["VOLUME"])) == {"/runs", "/cache"}


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs", "**/__pycache__", ".pytest_cache", ".ruff_cache"} <= ignored
