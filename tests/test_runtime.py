"""The runtime and settings: one owner of process resources, every OPENMORA_* variable read in one place."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openmora.errors import InputError
from openmora.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.unit
def test_every_openmora_variable_in_the_code_is_a_documented_setting() -> None:
    used: set[str] = set()
    for folder in ("openmora", "tools", "agents", "group_chat"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"OPENMORA_[A-Z_]+[A-Z]", path.read_text()))
    assert used <= set(VARIABLES), f"not in openmora/settings.py: {sorted(used - set(VARIABLES))}"
    doc = sys.modules["openmora.settings"].__doc__ or ""
    assert all(f"``{name}``" in doc for name in VARIABLES), "every variable has a row in the settings table"
    # Only settings.py reads them from the environment (replay.py also asks whether OPENMORA_RUNS is set at all).
    readers = {
        str(p.relative_to(ROOT))
        for folder in ("openmora", "tools", "agents", "group_chat")
        for p in (ROOT / folder).rglob("*.py")
        if re.search(r"environ(\.get)?[\[(]\s*\"OPENMORA_", p.read_text())
    }
    assert readers <= {"openmora/settings.py", "openmora/replay.py"}, readers


@pytest.mark.unit
def test_settings_read_their_values_and_reject_bad_ones_in_one_line() -> None:
    s = Settings.from_env(
        {"HOME": "/h", "OPENMORA_RUNS": "/r", "OPENMORA_ENCODE_NICE": "3", "OPENMORA_PINNED_EVICTIONS": "0"}
    )
    assert (s.runs_dir, s.cache_dir, s.llm_cache_dir) == (
        Path("/r"),
        Path("/h/.cache/openmora"),
        Path("/h/.cache/openmora/llm"),
    )
    assert s.encode_nice == 3 and s.pinned_evictions is False and s.torch_threads is None
    for name, bad in (
        ("OPENMORA_TORCH_THREADS", "two"),
        ("OPENMORA_TORCH_THREADS", "0"),
        ("OPENMORA_PINNED_EVICTIONS", "maybe"),
    ):
        with pytest.raises(InputError, match=name) as err:
            Settings.from_env({"HOME": "/h", name: bad})
        assert "\n" not in str(err.value) and repr(bad) in str(err.value)


@pytest.mark.unit
def test_importing_and_constructing_leave_process_state_alone() -> None:
    """No torch thread change, no environment writes at import or construction: only a first load sets threads."""
    code = (
        "import os, torch\n"
        "torch.set_num_threads(1)\n"
        "env = dict(os.environ)\n"
        "import openmora, openmora.engine, openmora.cli, openmora.loader, openmora.speedups\n"
        "from openmora import Orchestrator\n"
        "from openmora.loader import PipelineLoader\n"
        "o = Orchestrator(profile='tiny', runs_dir='unused')\n"
        "PipelineLoader(o.profile, runtime=o.runtime)\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
        "changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}\n"
        "assert not changed, changed\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENMORA_TORCH_THREADS"}
    env["OPENMORA_TORCH_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.unit
def test_runtime_sets_torch_threads_from_its_settings_on_demand() -> None:
    from openmora.runtime import Runtime

    before = torch.get_num_threads()
    rt = Runtime(Settings.from_env({"HOME": "/h", "OPENMORA_TORCH_THREADS": "1"}))
    try:
        assert rt.configure_torch() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.integration
def test_two_streams_on_one_orchestrator_keep_their_own_events(tmp_path: Path) -> None:
    """run_stream listens to its own run: two concurrent streams never see each other's events, while the
    orchestrator's own on_event hears both."""
    from openmora import Orchestrator

    heard: list[dict] = []
    orch = Orchestrator(profile="tiny", on_event=heard.append)

    async def collect(name: str, prompt: str) -> list[dict]:
        return [e async for e in orch.run_stream("text-to-video", prompt=prompt, out=tmp_path / name, segments=1)]

    async def both() -> tuple[list[dict], list[dict]]:
        return await asyncio.gather(collect("a", "a red kite"), collect("b", "a blue boat"))

    a, b = asyncio.run(both())
    for events, mine, other in ((a, "a", "b"), (b, "b", "a")):
        assert events[-1]["type"] == "result" and events[-1]["result"].run_dir == tmp_path / mine
        paths = {
            str(v) for e in events for v in e.get("event", {}).values() if isinstance(v, str) and str(tmp_path) in v
        }
        assert not any(str(tmp_path / other) + "/" in p or p == str(tmp_path / other) for p in paths)
        texts = " ".join(str(e) for e in events[:-1])
        assert ("red kite" in texts) == (mine == "a") and ("blue boat" in texts) == (mine == "b")
    assert len(heard) == len(a) - 1 + len(b) - 1  # the orchestrator's listener heard every event of both runs
