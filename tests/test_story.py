"""Multi-shot stories: shots split from the prompt, rendered with stage overlap, joined with transitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.story import split_shots
from openmora.video_io import read_video

STORY = "A fox wakes in its den. It runs across the snow. At dusk it reaches the river."


@pytest.mark.unit
def test_split_shots() -> None:
    assert split_shots("a; b ;c") == ["a", "b", "c"]
    assert split_shots("line one\nline two.") == ["line one", "line two"]
    assert split_shots(STORY) == ["A fox wakes in its den", "It runs across the snow", "At dusk it reaches the river"]
    assert split_shots("one shot only") == ["one shot only"]


def render(tmp_path: Path, name: str, overlap: bool) -> tuple[np.ndarray, list[dict], ArtifactStore]:
    orch = Orchestrator()
    orch.story_overlap = overlap
    r = orch.run("story", prompt=STORY, seed=3, out=tmp_path / name)
    events = [json.loads(line) for line in r.transcript.read_text().splitlines()]
    store = ArtifactStore(r.run_dir)
    return store.frames(r.final_id), events, store


@pytest.mark.integration
def test_story_overlapped_equals_serial_and_joins_shots_in_order(tmp_path: Path) -> None:
    par, events, store = render(tmp_path, "par", overlap=True)
    ser, _, _ = render(tmp_path, "ser", overlap=False)
    # Seeds are fixed per shot, so scheduling cannot change a frame.
    assert np.array_equal(par, ser)
    calls = [e for e in events if e["type"] == "tool_call"]  # a tool's notes follow its call, under its name
    shot_clips = {e["shot"]: e["outputs"][0] for e in calls if e["tool"] == "image_to_video"}
    assert sorted(shot_clips) == [1, 2, 3]
    clips = [store.frames(shot_clips[k]) for k in (1, 2, 3)]
    # The story starts with shot 1's frames, ends with shot 3's, and holds shot 2's in between.
    assert np.array_equal(par[: len(clips[0])], clips[0])
    assert np.array_equal(par[-len(clips[2]) :], clips[2])
    transitions = [e for e in calls if e["tool"] == "connect_clips"]
    assert len(transitions) == 2
    assert len(par) == sum(len(c) for c in clips) + 2 * (9 - 2)
    decoded, _ = read_video(tmp_path / "par" / "final.mp4")
    assert len(decoded) == len(par)
    prompts = [e["arguments"]["prompt"] for e in calls if e["tool"] == "text_to_image"]
    assert sorted(p.split(",")[0] for p in prompts) == sorted(split_shots(STORY))


@pytest.mark.parametrize("prompt", ["just one shot", ""])
@pytest.mark.unit
def test_story_needs_two_shots(tmp_path: Path, capsys, prompt: str) -> None:
    code = main(["run", "story", "--prompt", prompt, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and ("at least two shots" in err or "needs --prompt" in err)
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_story_can_be_extended_by_a_revision(tmp_path: Path) -> None:
    import asyncio

    async def go():
        s = Orchestrator().chat_session()
        first = await s.start("story", prompt="a ship leaves port; a storm rises", out=tmp_path / "r")
        n = len(ArtifactStore(s.run_dir).frames(first.final_id))
        second = await s.revise("extend it by one second")
        return n, second, s

    n, second, s = asyncio.run(go())
    frames = ArtifactStore(s.run_dir).frames(second.final_id)
    assert len(frames) > n
