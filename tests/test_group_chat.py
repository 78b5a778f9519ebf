"""The agents' group chat, scripted with AutoGen's replay client: planner picks, tool calls, artifacts flowing
between agents, termination, retries and fallbacks, revisions and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from openmora import ChatSession, Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.errors import InputError
from openmora.group_chat.executor import STATE_FILE
from openmora.group_chat.plan_state import PlanState


def script(tmp_path: Path, items: list) -> str:
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(items))
    return f"replay:{path}"


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def calls(evts: list[dict]) -> list[tuple[str, str]]:
    return [(e["agent"], e["tool"]) for e in evts if e["type"] == "tool_call" and not e.get("error")]


def planner(evts: list[dict]) -> list[dict]:
    return [e for e in evts if e["type"] == "planner"]


def assert_done(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run"]["status"] == "done"
    assert (run_dir / "final.mp4").is_file()
    evts = events(run_dir)
    assert evts[-1]["type"] == "run_end" and evts[-1]["status"] == "done"
    return manifest


@pytest.mark.integration
def test_text_to_video_prompt_agent_then_tools(tmp_path: Path) -> None:
    llm = script(
        tmp_path,
        [
            "prompt_agent",
            "A red fox bounds through deep powder snow at dusk, orange sky, low camera",
            {"tool": "text_to_image", "arguments": {"prompt": "A red fox bounds through deep powder snow at dusk"}},
            {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
            {"tool": "extend_video", "arguments": {"clip_id": "clip-0001", "segments": 1}},
        ],
    )
    r = Orchestrator(llm=llm).run("text-to-video", prompt="a fox in snow", segments=2, out=tmp_path / "r")
    manifest = assert_done(r.run_dir)
    evts = events(r.run_dir)
    assert calls(evts) == [
        ("image_agent", "text_to_image"),
        ("video_agent", "image_to_video"),
        ("video_agent", "extend_video"),
    ]
    first = planner(evts)[0]
    assert first["candidates"] == ["prompt_agent", "image_agent"]
    assert first["raw_choice"] == "prompt_agent" and first["valid"] and not first["fallback_used"]
    assert any(e["type"] == "message" and e["agent"] == "prompt_agent" and "fox bounds" in e["text"] for e in evts)
    # Artifacts flow: the clip is animated from the image, the extension from the clip.
    parents = {a["id"]: a["parents"] for a in manifest["artifacts"]}
    assert parents["clip-0001"] == ["img-0001"] and parents["clip-0002"] == ["clip-0001"]
    assert r.final_id == "clip-0002"
    state = PlanState.load(r.run_dir / STATE_FILE)
    assert state.complete and state.current_prompt.startswith("A red fox bounds")
    # No pixels in the saved conversation: ids and text only.
    team_state = (r.run_dir / "team_state.json").read_text()
    assert "img-0001" in team_state and "base64" not in team_state and len(team_state) < 200_000


@pytest.mark.parametrize(
    "task,kwargs,replies,expected",
    [
        (
            "image-to-video",
            {"image": "image", "prompt": "the waves roll in"},
            [
                "video_agent",
                {"tool": "image_to_video", "arguments": {"image_id": "img-0001", "prompt": "waves roll in"}},
            ],
            [("video_agent", "image_to_video")],
        ),
        (
            "extend",
            {"videos": ["video_a"]},
            [{"tool": "extend_video", "arguments": {"clip_id": "clip-0001", "segments": 1}}],
            [("video_agent", "extend_video")],
        ),
        (
            "edit",
            {"videos": ["video_a"], "prompt": "make it 1920s"},
            [
                {"tool": "edit_image", "arguments": {"image_id": "img-0001", "instruction": "make it 1920s"}},
                {"tool": "image_to_video", "arguments": {"image_id": "img-0002"}},
            ],
            [("edit_agent", "first_frame"), ("edit_agent", "edit_image"), ("video_agent", "image_to_video")],
        ),
        (
            "connect",
            {"videos": ["video_a", "video_b"]},
            [{"tool": "connect_clips", "arguments": {"first_clip_id": "clip-0001", "second_clip_id": "clip-0002"}}],
            [("connection_agent", "connect_clips")],
        ),
        (
            "digital-world",
            {"prompt": "a village by a river"},
            [
                "prompt_agent",
                "a riverside village with water wheels",
                {"tool": "text_to_image", "arguments": {"prompt": "a riverside village, in digital world style"}},
                {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
            ],
            [("image_agent", "text_to_image"), ("video_agent", "image_to_video")],
        ),
    ],
)
@pytest.mark.integration
def test_every_task_through_the_group_chat(tmp_path: Path, media: dict, task, kwargs, replies, expected) -> None:
    kwargs = {
        k: ([media[x] for x in v] if k == "videos" else media[v] if k == "image" else v) for k, v in kwargs.items()
    }
    r = Orchestrator(llm=script(tmp_path, replies)).run(task, segments=1, out=tmp_path / "r", **kwargs)
    assert_done(r.run_dir)
    assert calls(events(r.run_dir)) == expected
    if task == "digital-world":
        assert "digital world style" in PlanState.load(r.run_dir / STATE_FILE).current_prompt
    if task == "connect":
        store = ArtifactStore(r.run_dir)
        frames, a, b = store.frames(r.final_id), store.frames("clip-0001"), store.frames("clip-0002")
        assert np.array_equal(frames[: len(a)], a) and np.array_equal(frames[-len(b) :], b)


@pytest.mark.integration
def test_invalid_planner_choice_is_retried_then_the_plan_decides(tmp_path: Path) -> None:
    llm = script(
        tmp_path,
        [
            "the director should go",  # names no candidate
            "prompt_agent and image_agent",  # names two
            "a fox in the snow at dusk",  # prompt_agent, chosen by the plan's fallback
            {"tool": "text_to_image", "arguments": {"prompt": "a fox in the snow at dusk"}},
            {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
        ],
    )
    r = Orchestrator(llm=llm).run("text-to-video", prompt="a fox", segments=1, out=tmp_path / "r")
    assert_done(r.run_dir)
    first = planner(events(r.run_dir))[0]
    assert first["raw_choice"] == "the director should go"
    assert first["retry_choice"] == "prompt_agent and image_agent"
    assert first["fallback_used"] and not first["valid"] and first["chosen"] == "prompt_agent"


@pytest.mark.integration
def test_malformed_tool_arguments_retry_then_plan_runner(tmp_path: Path, media: dict) -> None:
    llm = script(
        tmp_path,
        [
            {"tool": "edit_image", "arguments": {"image_id": "../../etc/passwd", "instruction": "make it 1920s"}},
            {"tool": "edit_image", "arguments": {"picture": "img-0001"}},  # not even the right parameter names
            {"tool": "image_to_video", "arguments": {"image_id": "img-0002"}},
        ],
    )
    r = Orchestrator(llm=llm).run(
        "edit", videos=[media["video_a"]], prompt="make it 1920s", segments=1, out=tmp_path / "r"
    )
    assert_done(r.run_dir)
    evts = events(r.run_dir)
    errors = [e for e in evts if e["type"] == "tool_call" and e.get("error")]
    assert errors and "outside" not in errors[0]["error"] and "not an artifact id" in errors[0]["error"]
    decisions = [(e["decision"], e["chosen"]) for e in planner(evts)]
    assert ("retry", "edit_agent") in decisions and ("fallback", "plan_runner") in decisions
    fallback = [e for e in evts if e["type"] == "tool_call" and e["agent"] == "plan_runner"]
    assert fallback[0]["tool"] == "edit_image" and fallback[0]["fallback_for"] == "edit_agent"
    assert fallback[0]["inputs"] == ["img-0001"]
    assert calls(evts)[-1] == ("video_agent", "image_to_video")
    assert not (tmp_path / "etc").exists()


@pytest.mark.unit
def test_turn_limit_stops_with_a_clear_reason(tmp_path: Path, capsys) -> None:
    # The agents only chat and never call tools; the plan runner would take over, but the limit comes first.
    llm = script(tmp_path, ["image_agent", "I would rather talk about foxes."] + ["hello"] * 10)
    code = main(
        ["run", "text-to-video", "--prompt", "a fox", "--llm", llm, "--max-turns", "3", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "stopped before the final video existed" in err and "Maximum number of messages 3 reached" in err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["run"]["status"] == "failed"


@pytest.mark.integration
def test_revisions_rerun_only_what_changed(tmp_path: Path) -> None:
    async def conversation() -> ChatSession:
        session = Orchestrator(llm="none").chat_session()
        await session.start("text-to-video", prompt="a lighthouse at night", segments=2, out=tmp_path / "r")
        return session

    session = asyncio.run(conversation())
    store = ArtifactStore(session.run_dir)
    before = {a.id: a.sha256 for a in store.artifacts()}
    first_final = session.state.final_id
    n_first = len(store.frames(first_final))

    result = asyncio.run(session.revise("extend it by two seconds"))
    evts = events(session.run_dir)
    after_revision = evts[[i for i, e in enumerate(evts) if e["type"] == "message" and e["agent"] == "user"][0] :]
    assert calls(after_revision) == [("video_agent", "extend_video")]
    store = ArtifactStore(session.run_dir)
    assert {a.id: a.sha256 for a in store.artifacts() if a.id in before} == before  # nothing earlier rewritten
    extended = store.frames(result.final_id)
    assert np.array_equal(extended[:n_first], store.frames(first_final))
    assert len(extended) >= n_first + 14  # 2 s at 7 fps

    result = asyncio.run(session.revise("keep the first image but change the sky to stormy"))
    evts = events(session.run_dir)
    last = evts[[i for i, e in enumerate(evts) if e["type"] == "message" and e["agent"] == "user"][-1] :]
    assert calls(last) == [
        ("edit_agent", "edit_image"),
        ("video_agent", "image_to_video"),
        ("video_agent", "extend_video"),
    ]
    edit = [e for e in last if e.get("tool") == "edit_image"][0]
    assert edit["inputs"] == ["img-0001"]  # the original first image is reused, not regenerated
    assert len([a for a in store.artifacts() if a.tool == "text_to_image"]) == 1
    assert json.loads((session.run_dir / "manifest.json").read_text())["run"]["final"] == result.final_id


@pytest.mark.integration
def test_revision_intent_chosen_by_the_planner_llm(tmp_path: Path) -> None:
    llm = script(
        tmp_path,
        [
            "image_agent",
            {"tool": "text_to_image", "arguments": {"prompt": "a lighthouse"}},
            {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
            "animate",  # the planner's reading of the revision
            {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
        ],
    )

    async def conversation() -> ChatSession:
        session = Orchestrator(llm=llm).chat_session()
        await session.start("text-to-video", prompt="a lighthouse", segments=1, out=tmp_path / "r")
        await session.revise("make the waves crash harder")
        return session

    session = asyncio.run(conversation())
    evts = events(session.run_dir)
    revision = [e for e in planner(evts) if e["decision"] == "revision"][0]
    assert revision["raw_choice"] == "animate" and not revision["fallback_used"]
    assert calls(evts)[-1] == ("video_agent", "image_to_video")
    assert len([a for a in ArtifactStore(session.run_dir).artifacts() if a.tool == "text_to_image"]) == 1


@pytest.mark.integration
def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    def interrupt_after_first_clip(event: dict) -> None:
        e = event.get("event", {})
        if event["type"] == "transcript" and e.get("tool") == "image_to_video" and e.get("outputs"):
            raise KeyboardInterrupt

    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        Orchestrator(on_event=interrupt_after_first_clip).run(
            "text-to-video", prompt="a harbour", segments=3, seed=5, out=out
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["status"] == "interrupted" and not (out / "final.mp4").exists()
    assert [s["tool"] for s in json.loads((out / STATE_FILE).read_text())["steps"] if s["status"] == "pending"] == [
        "extend_video"
    ]

    # Another profile (here the fast mode) would finish the plan with other settings: refused, nothing written.
    before = (out / "manifest.json").read_bytes(), (out / "transcript.jsonl").read_bytes()
    with pytest.raises(InputError, match=r"made with profile 'tiny', not 'tiny\+fast'.*--profile tiny so"):
        asyncio.run(ChatSession.resume(Orchestrator(fast=True), out))
    assert ((out / "manifest.json").read_bytes(), (out / "transcript.jsonl").read_bytes()) == before

    session = asyncio.run(ChatSession.resume(Orchestrator(), out))
    assert session.result is not None and session.result.final_video.is_file()
    tools = [e["tool"] for e in events(out) if e["type"] == "tool_call"]
    assert tools.count("text_to_image") == 1 and tools.count("image_to_video") == 1 and tools.count("extend_video") == 1
    # Resuming gives the same frames as an uninterrupted run with the same seed.
    whole = Orchestrator().run("text-to-video", prompt="a harbour", segments=3, seed=5, out=tmp_path / "whole")
    assert np.array_equal(
        ArtifactStore(out).frames(session.result.final_id), ArtifactStore(whole.run_dir).frames(whole.final_id)
    )


@pytest.mark.unit
def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a resumable run folder"):
        asyncio.run(ChatSession.resume(Orchestrator(), tmp_path))


@pytest.mark.integration
def test_stream_of_events_ends_with_the_result(tmp_path: Path) -> None:
    async def collect() -> list[dict]:
        return [
            e async for e in Orchestrator().run_stream("text-to-video", prompt="a kite", segments=1, out=tmp_path / "r")
        ]

    evts = asyncio.run(collect())
    kinds = {e["type"] for e in evts}
    assert {"transcript", "progress", "encode", "result"} <= kinds
    assert evts[-1]["type"] == "result" and evts[-1]["result"].final_video.is_file()


@pytest.mark.unit
def test_bad_replay_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = main(["run", "text-to-video", "--prompt", "x", "--llm", f"replay:{bad}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not valid JSON" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_vision_planner_sees_a_thumbnail_but_the_chat_keeps_no_pixels(tmp_path: Path) -> None:
    from autogen_core import Image as AGImage

    replies = [
        {"tool": "text_to_image", "arguments": {"prompt": "a fox"}},
        {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
        "animate",
        {"tool": "image_to_video", "arguments": {"image_id": "img-0001"}},
    ]
    orch = Orchestrator(llm=script(tmp_path, ["image_agent", *replies]))
    replay = orch.client("planner").inner
    replay._model_info["vision"] = True

    async def go() -> ChatSession:
        s = orch.chat_session()
        await s.start("text-to-video", prompt="a fox", segments=1, out=tmp_path / "r")
        await s.revise("more motion please")
        return s

    session = asyncio.run(go())
    revision_query = replay.create_calls[-2]["messages"][0].content
    assert isinstance(revision_query, list) and isinstance(revision_query[1], AGImage)
    assert revision_query[1].image.size[0] <= 256
    assert "base64" not in (session.run_dir / "team_state.json").read_text()


@pytest.mark.integration
def test_a_revision_after_a_resume_gives_the_frames_of_one_without(tmp_path: Path) -> None:
    """The seeds continue where the recorded calls left them: an extend of three segments took three."""

    async def revised(out: Path, resume: bool) -> np.ndarray:
        session = Orchestrator().chat_session()
        await session.start("text-to-video", prompt="a harbour", segments=3, seed=5, out=out)
        if resume:
            session.close()
            session = await ChatSession.resume(Orchestrator(), out)
        result = await session.revise("extend it by one second")
        session.close()
        return ArtifactStore(out).frames(result.final_id)

    assert np.array_equal(asyncio.run(revised(tmp_path / "whole", False)), asyncio.run(revised(tmp_path / "b", True)))
