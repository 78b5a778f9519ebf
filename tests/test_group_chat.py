"""The agents' group chat on the tiny profile, its LLM scripted with AutoGen's replay client (one script, consumed in
call order by every LLM call): the planner opens each request, the agents carry out their ready plan steps, the
planner's client picks among several ready agents and reviews a failed step; plans of ``auto``; revisions that
re-run only what changed; resume; no pixels in what is saved."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openmora import ChatSession, Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.errors import ToolArgumentError
from openmora.group_chat.executor import STATE_FILE
from openmora.group_chat.plan import TOOLS
from openmora.group_chat.plan_state import PlanState

pytestmark = pytest.mark.integration
FRAMES = 8  # the tiny profile's frames per segment; each extension segment adds FRAMES - 1
PROMPT = "A red fox bounds through deep powder snow at dusk, orange sky, low camera"
CARS = {
    "steps": [
        {"id": "s1", "tool": "text_to_image", "args": {"prompt": "a red car on a coastal road"}},
        {"id": "s2", "tool": "image_to_video", "args": {"image_id": "$s1"}},
        {"id": "s3", "tool": "text_to_image", "args": {"prompt": "a blue car on a coastal road"}},
        {"id": "s4", "tool": "image_to_video", "args": {"image_id": "$s3"}},
        {"id": "s5", "tool": "join_clips", "args": {"clip_ids": ["$s2", "$s4"]}},
    ]
}


def script(tmp_path: Path, items: list[Any], name: str = "replay.json") -> str:
    """A ``--llm replay:FILE`` spec for ``items`` (strings: the replies, in call order)."""
    path = tmp_path / name
    path.write_text(json.dumps(items))
    return f"replay:{path}"


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def calls(evts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(agent, tool) of every tool call that ran (not reused, no error), in order."""
    return [
        (e["agent"], e["tool"]) for e in evts if e["type"] == "tool_call" and not e.get("error") and not e.get("reused")
    ]


def speakers(evts: list[dict[str, Any]]) -> list[str]:
    return [e["chosen"] for e in evts if e["type"] == "planner" and e.get("decision") == "next_speaker"]


def frames_of(run_dir: Path, art_id: str) -> np.ndarray:
    return ArtifactStore(run_dir).frames(art_id)


def assert_done(run_dir: Path) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run"]["status"] == "done" and (run_dir / "final.mp4").is_file()
    last = events(run_dir)[-1]
    assert last["type"] == "run_end" and last["status"] == "done"
    return manifest


def _replace_tool(monkeypatch: pytest.MonkeyPatch, name: str, fn: Any) -> Any:
    """Swap the function behind plan tool ``name``; returns the real one."""
    spec = TOOLS[name]
    monkeypatch.setitem(TOOLS, name, dataclasses.replace(spec, fn=fn))
    return spec.fn


# ----- (1) one request through the chat ------------------------------------------------------------------------------
def test_text_to_video_through_the_chat_uses_the_scripted_prompt(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", llm=script(tmp_path, [PROMPT])).run(
        "text-to-video", prompt="a fox in snow", segments=2, out=tmp_path / "r"
    )
    manifest = assert_done(r.run_dir)
    evts = events(r.run_dir)
    assert calls(evts) == [
        ("prompt_agent", "enhance_prompt"),
        ("image_agent", "text_to_image"),
        ("video_agent", "image_to_video"),
        ("video_agent", "extend_video"),
    ]
    # The planner speaks first (the plan), then each agent whose step is ready, one candidate at a time: no model.
    assert speakers(evts) == ["planner", "prompt_agent", "image_agent", "video_agent", "video_agent"]
    assert all(e["raw_choice"] is None for e in evts if e["type"] == "planner")
    t2i = next(e for e in evts if e.get("tool") == "text_to_image")
    assert t2i["arguments"]["prompt"] == PROMPT  # what the prompt agent's LLM wrote is what the image was made from
    # The planner's template plan, no planner LLM call: an explicit task.
    plans = [e for e in evts if e["type"] == "plan"]
    assert [p["source"] for p in plans] == ["template"]
    parents = {a["id"]: a["parents"] for a in manifest["artifacts"]}
    assert parents["clip-0001"] == ["img-0001"] and parents["clip-0002"] == ["clip-0001"]
    assert r.final_id == "clip-0002" and len(frames_of(r.run_dir, r.final_id)) == FRAMES + (FRAMES - 1)
    state = PlanState.load(r.run_dir / STATE_FILE)
    assert state.complete and state.runs["s1"].text == PROMPT


# ----- (2) every template ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task,kwargs,replies,expected",
    [
        (
            "text-to-video",
            {"prompt": "a kite"},
            ["a red kite over green hills"],
            ["enhance_prompt", "text_to_image", "image_to_video"],
        ),
        (
            "image-to-video",
            {"image": "image", "prompt": "the waves roll in"},
            ["slow waves roll onto the beach"],
            ["enhance_prompt", "image_to_video"],
        ),
        ("extend", {"videos": ["video_a"]}, [], ["extend_video"]),
        (
            "edit",
            {"videos": ["video_a"], "prompt": "make it 1920s"},
            [],
            ["take_frame", "edit_image", "image_to_video"],
        ),
        ("connect", {"videos": ["video_a", "video_b"]}, [], ["connect_clips"]),
        (
            "digital-world",
            {"prompt": "a village by a river"},
            ["a riverside village with water wheels"],
            ["enhance_prompt", "text_to_image", "image_to_video"],
        ),
        (
            "story",
            {"prompt": "a fox wakes in its den; the fox runs across a frozen lake"},
            # shot 1's prompt; then the prompt agent and the image agent are both ready: the planner's pick; shot 2's
            # prompt; then the image and the video agent are ready: the planner's pick.
            ["a fox wakes in a snowy den", "prompt_agent", "a fox runs across a frozen lake", "image_agent"],
            ["enhance_prompt", "enhance_prompt", "text_to_image", "text_to_image", "image_to_video"]
            + ["image_to_video", "connect_clips", "join_clips"],
        ),
    ],
)
def test_every_template_through_the_chat(
    tmp_path: Path, media: dict[str, Path], task: str, kwargs: dict[str, Any], replies: list[str], expected: list[str]
) -> None:
    kwargs = {
        k: ([media[x] for x in v] if k == "videos" else media[v] if k == "image" else v) for k, v in kwargs.items()
    }
    r = Orchestrator(profile="tiny", llm=script(tmp_path, replies)).run(task, segments=1, out=tmp_path / "r", **kwargs)
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    assert sorted(t for _, t in calls(evts)) == sorted(expected)
    state = PlanState.load(r.run_dir / STATE_FILE)
    assert state.complete and state.final_id == r.final_id
    prompts = [state.runs[s.id].text for s in state.plan.steps if s.tool == "enhance_prompt"]
    if task == "digital-world":
        assert prompts[0].startswith("a riverside village") and "digital world" in prompts[0].lower()
    elif replies and task != "story":
        assert prompts == replies
    if task == "story":
        assert sorted(prompts) == sorted([replies[0], replies[2]])
        assert [e["raw_choice"] for e in evts if e["type"] == "planner" and e.get("raw_choice")] == [
            "prompt_agent",
            "image_agent",
        ]
    if task == "connect":
        frames, a, b = (frames_of(r.run_dir, i) for i in (r.final_id, "clip-0001", "clip-0002"))
        assert np.array_equal(frames[: len(a)], a) and np.array_equal(frames[-len(b) :], b)
    else:
        assert len(frames_of(r.run_dir, r.final_id)) >= FRAMES


# ----- (3) auto: the planner's plan ------------------------------------------------------------------------------------
def _auto(tmp_path: Path, replies: list[Any], prompt: str = "a red car, then a blue car, joined") -> Any:
    return Orchestrator(profile="tiny", llm=script(tmp_path, replies)).run(
        "auto", prompt=prompt, segments=1, out=tmp_path / "r"
    )


def test_auto_runs_the_planners_steps(tmp_path: Path) -> None:
    # After s1 the video agent (s2) and the image agent (s3) are ready: the planner's client picks.
    r = _auto(tmp_path, [json.dumps(CARS), "image_agent"])
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    plans = [e for e in evts if e["type"] == "plan"]
    assert [(p["attempt"], p["valid"]) for p in plans] == [(1, True)]
    assert PlanState.load(r.run_dir / STATE_FILE).plan.source == "llm"
    assert calls(evts) == [
        ("image_agent", "text_to_image"),
        ("image_agent", "text_to_image"),
        ("video_agent", "image_to_video"),
        ("video_agent", "image_to_video"),
        ("connection_agent", "join_clips"),
    ]
    prompts = [e["arguments"]["prompt"] for e in evts if e.get("tool") == "text_to_image"]
    assert prompts == ["a red car on a coastal road", "a blue car on a coastal road"]
    first_tool = next(i for i, e in enumerate(evts) if e["type"] == "tool_call")
    assert first_tool > evts.index(plans[-1])
    assert len(frames_of(r.run_dir, r.final_id)) == 2 * FRAMES


def test_auto_repairs_an_invalid_plan_once(tmp_path: Path) -> None:
    bad = {"steps": [{"id": "s1", "tool": "image_to_video", "args": {"image_id": "$s9"}}]}
    r = _auto(tmp_path, [json.dumps(bad), json.dumps(CARS), "image_agent"])
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    plans = [e for e in evts if e["type"] == "plan"]
    assert [(p["attempt"], p["valid"]) for p in plans] == [(1, False), (2, True)]
    assert plans[0]["problems"] and PlanState.load(r.run_dir / STATE_FILE).plan.source == "repaired"
    assert not any(e["type"] == "tool_call" for e in evts[: evts.index(plans[-1])])
    assert [t for _, t in calls(evts)].count("text_to_image") == 2


def test_auto_falls_back_to_the_template_after_two_invalid_plans(tmp_path: Path) -> None:
    bad = {"steps": [{"id": "s1", "tool": "paint_picture", "args": {}}]}
    r = _auto(tmp_path, ["not json at all", json.dumps(bad), "a fox in the snow"], prompt="a fox in the snow")
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    plans = [e for e in evts if e["type"] == "plan"]
    assert [p["valid"] for p in plans] == [False, False, True] and plans[-1]["source"] == "template"
    assert PlanState.load(r.run_dir / STATE_FILE).plan.source == "template"
    assert not any(e["type"] == "tool_call" for e in evts[: evts.index(plans[-1])])
    assert [t for _, t in calls(evts)] == ["enhance_prompt", "text_to_image", "image_to_video"]


# ----- (4) the planner's client picks among ready agents ---------------------------------------------------------------
def test_an_invalid_pick_still_completes(tmp_path: Path) -> None:
    # Two attempts name no candidate: AutoGen keeps the previous speaker (the image agent, whose s3 is ready).
    r = _auto(tmp_path, [json.dumps(CARS), "the director should go", "nobody"])
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    asked = [e for e in evts if e["type"] == "planner" and e.get("raw_choice")]
    assert [e["raw_choice"] for e in asked] == ["the director should go", "nobody"]
    assert all(not e["valid"] and e["fallback_used"] for e in asked)
    assert asked[0]["candidates"] == ["video_agent", "image_agent"]
    assert [t for _, t in calls(evts)].count("image_to_video") == 2


def test_the_scripted_pick_decides_who_goes_next(tmp_path: Path) -> None:
    r = _auto(tmp_path, [json.dumps(CARS), "video_agent"])
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    (asked,) = [e for e in evts if e["type"] == "planner" and e.get("raw_choice")]
    assert asked["candidates"] == ["video_agent", "image_agent"] and asked["chosen"] == "video_agent"
    assert [t for _, t in calls(evts)][:3] == ["text_to_image", "image_to_video", "text_to_image"]


# ----- (5) a failed step: the planner reviews ---------------------------------------------------------------------------
def test_a_failed_step_is_retried_with_another_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds: list[int] = []

    def flaky(ctx: Any, **kwargs: Any) -> Any:
        seeds.append(kwargs["seed"])
        if len(seeds) == 1:
            raise ToolArgumentError("image_to_video: the picture came out black (test)")
        return real(ctx, **kwargs)

    real = _replace_tool(monkeypatch, "image_to_video", flaky)
    review = json.dumps({"action": "retry", "reason": "a black picture is a bad seed"})
    r = Orchestrator(profile="tiny", llm=script(tmp_path, [PROMPT, review])).run(
        "text-to-video", prompt="a fox", segments=1, out=tmp_path / "r"
    )
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    failed = [e for e in evts if e["type"] == "tool_call" and e.get("error")]
    assert len(failed) == 1 and "came out black" in failed[0]["error"]
    (decision,) = [e for e in evts if e["type"] == "planner" and e.get("decision") == "review"]
    assert decision["chosen"] == "retry" and decision["step_id"] == "s3"
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    assert [t for _, t in calls(evts)][-1] == "image_to_video"


# ----- (6) revisions re-run only what changed ---------------------------------------------------------------------------
def _start(tmp_path: Path, task: str, prompt: str, segments: int = 1) -> ChatSession:
    session = Orchestrator(profile="tiny", llm="none").chat_session()
    asyncio.run(session.start(task, prompt=prompt, segments=segments, out=tmp_path / "r"))
    return session


def _statuses(session: ChatSession) -> dict[str, tuple[str, str]]:
    """step id -> (tool, status) of the current request."""
    state = session.state
    assert state is not None
    return {s.id: (s.tool, state.run_of(s.id).status) for s in state.plan.steps}


def _ran(session: ChatSession) -> list[str]:
    return sorted(t for t, status in _statuses(session).values() if status == "done")


def test_extend_reuses_every_earlier_step(tmp_path: Path) -> None:
    session = _start(tmp_path, "text-to-video", "a lighthouse at night", segments=2)
    before = frames_of(session.run_dir, session.state.final_id)
    shas = {a.id: a.sha256 for a in ArtifactStore(session.run_dir).artifacts()}
    result = asyncio.run(session.revise("extend it by one second"))
    assert _ran(session) == ["extend_video"]
    assert {t for t, s in _statuses(session).values() if s == "reused"} >= {"text_to_image", "image_to_video"}
    extended = frames_of(session.run_dir, result.final_id)
    assert np.array_equal(extended[: len(before)], before) and len(extended) > len(before)
    assert {a.id: a.sha256 for a in ArtifactStore(session.run_dir).artifacts() if a.id in shas} == shas
    session.close()


def test_a_style_change_edits_the_image_and_reuses_it(tmp_path: Path) -> None:
    session = _start(tmp_path, "text-to-video", "a lighthouse at night")
    asyncio.run(session.revise("make it look like the 1920s"))
    statuses = _statuses(session)
    assert "edit_image" in _ran(session) and "text_to_image" not in _ran(session)
    assert ("text_to_image", "reused") in statuses.values()
    assert len([a for a in ArtifactStore(session.run_dir).artifacts() if a.tool == "text_to_image"]) == 1
    session.close()


def test_a_rewrite_runs_the_image_again_with_the_new_words(tmp_path: Path) -> None:
    session = _start(tmp_path, "text-to-video", "a lighthouse at night")
    asyncio.run(session.revise("make it brighter, like early morning"))
    assert "text_to_image" in _ran(session)
    t2i = [e for e in events(session.run_dir) if e.get("tool") == "text_to_image" and not e.get("reused")][-1]
    words = t2i["arguments"]["prompt"].lower()
    assert "morning" in words and "night" not in words
    session.close()


def test_a_story_revision_reruns_only_that_shot(tmp_path: Path) -> None:
    session = _start(tmp_path, "story", "a fox wakes in its den; the fox runs across a lake; the fox sleeps by a fire")
    asyncio.run(session.revise("make shot 2 darker"))
    state = session.state
    assert state is not None
    ran = {s.id for s in state.plan.steps if state.run_of(s.id).status == "done"}
    shot2 = {s.id for s in state.plan.steps if s.shot == 2}
    connects = {s.id for s in state.plan.steps if s.tool == "connect_clips"}
    join = {s.id for s in state.plan.steps if s.tool == "join_clips"}
    touching = {s.id for s in state.plan.steps if s.id in connects and any(d in shot2 for d in s.deps())}
    assert len(touching) == 2
    assert ran - shot2 == touching | join  # besides shot 2: the two transitions into and out of it, and the join
    assert ran & shot2 and all(state.run_of(s.id).status == "reused" for s in state.plan.steps if s.shot in (1, 3))
    session.close()


# ----- (7) resume ------------------------------------------------------------------------------------------------------
def test_resume_after_an_interrupt_gives_the_frames_of_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupting(ctx: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    real = _replace_tool(monkeypatch, "extend_video", interrupting)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        Orchestrator(profile="tiny", llm=script(tmp_path, [PROMPT])).run(
            "text-to-video", prompt="a harbour", segments=2, seed=5, out=out
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["status"] == "interrupted" and not (out / "final.mp4").exists()
    assert [s.tool for s in PlanState.load(out / STATE_FILE).pending()] == ["extend_video"]

    monkeypatch.setitem(TOOLS, "extend_video", dataclasses.replace(TOOLS["extend_video"], fn=real))
    session = asyncio.run(ChatSession.resume(Orchestrator(profile="tiny", llm=script(tmp_path, [], "none.json")), out))
    assert session.result is not None and session.result.final_video.is_file()
    ran = [t for _, t in calls(events(out))]
    assert ran.count("text_to_image") == 1 and ran.count("image_to_video") == 1 and ran.count("extend_video") == 1
    whole = Orchestrator(profile="tiny", llm=script(tmp_path, [PROMPT], "whole.json")).run(
        "text-to-video", prompt="a harbour", segments=2, seed=5, out=tmp_path / "whole"
    )
    resumed = frames_of(out, session.result.final_id)
    assert len(resumed) == FRAMES + FRAMES - 1
    assert np.array_equal(resumed, frames_of(whole.run_dir, whole.final_id))
    session.close()


# ----- (8) a vision-capable planner sees a thumbnail; nothing saved holds pixels ----------------------------------------
def test_vision_planner_sees_a_thumbnail_but_nothing_saved_holds_pixels(tmp_path: Path) -> None:
    from autogen_core import Image as AGImage

    revision = json.dumps({"change": "animate", "text": "more motion"})
    orch = Orchestrator(profile="tiny", llm=script(tmp_path, [PROMPT, revision]))
    replay = orch.client("planner").inner
    replay._model_info["vision"] = True  # noqa: SLF001 - the replay client says what a model can do here only

    async def go() -> ChatSession:
        s = orch.chat_session()
        await s.start("text-to-video", prompt="a fox", segments=1, out=tmp_path / "r")
        await s.revise("more motion please")
        return s

    session = asyncio.run(go())
    assert_done(session.run_dir)
    queries = [c["messages"][-1].content for c in replay.create_calls]
    with_image = [q for q in queries if isinstance(q, list)]
    assert len(with_image) == 1 and "more motion please" in with_image[0][0]
    assert isinstance(with_image[0][1], AGImage) and max(with_image[0][1].image.size) <= 256
    for name in ("team_state.json", "transcript.jsonl", STATE_FILE):
        text = (session.run_dir / name).read_text()
        assert "base64" not in text and "data:image" not in text and len(text) < 200_000, name
    session.close()


# ----- the command line ------------------------------------------------------------------------------------------------
DATA = Path(__file__).resolve().parent / "data" / "t2v_replay.json"


def test_the_shipped_replay_script_drives_a_run_from_the_command_line(tmp_path: Path) -> None:
    from openmora.cli import main

    out = tmp_path / "r"
    code = main(
        ["run", "text-to-video", "--prompt", "a fox", "--llm", f"replay:{DATA}", "--segments", "2", "--out", str(out)]
    )
    assert code == 0
    assert_done(out)
    t2i = next(e for e in events(out) if e.get("tool") == "text_to_image")
    assert t2i["arguments"]["prompt"] == json.loads(DATA.read_text())[0]
    final = json.loads((out / "manifest.json").read_text())["run"]["final"]
    assert len(frames_of(out, final)) == FRAMES + FRAMES - 1


def test_bad_replay_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openmora.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = main(["run", "text-to-video", "--prompt", "x", "--llm", f"replay:{bad}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not valid JSON" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_a_revisions_estimate_counts_only_the_steps_that_will_run(tmp_path: Path, monkeypatch) -> None:
    from openmora.estimates import StepCosts, estimate
    from openmora.group_chat.plan import Plan

    # The figures stay as they are during the test (each step would fold its own time into them).
    monkeypatch.setattr(StepCosts, "record", lambda self, *a, **k: 0.0)

    async def go():
        s = Orchestrator().chat_session()
        await s.start("text-to-video", prompt="a kite", segments=2, out=tmp_path / "r")
        await s.revise("extend it by two seconds")
        s.close()
        return s

    s = asyncio.run(go())
    notes = [e for e in events(s.run_dir) if e["type"] == "note" and "estimate_s" in e]
    plan = s.state.plan
    new = plan.step(plan.final)
    assert new.tool == "extend_video"
    # The revision's plan was announced after the cache completed every unchanged step: only the extension is left.
    assert notes[-1]["estimate_s"] == pytest.approx(estimate(Plan([new]), s.orch.profile))
    assert notes[-1]["estimate_s"] < estimate(plan, s.orch.profile)
