"""One of each: atomic writes (openmora.fileio), an error's first line (openmora.errors.first_line), one tool-call
recorder for the plan, the group chat and stories (group_chat/transcript.record_tool_call), and a TypedDict for every
event the CLI renders (openmora.events)."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openmora import fileio
from openmora.errors import ToolArgumentError, first_line
from openmora.events import EVENT_TYPES, TranscriptLine
from openmora.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_writer, commit, temp_path
from openmora.group_chat import executor as executor_module
from openmora.group_chat.executor import PlanExecutor
from openmora.group_chat.plan_state import PlanState, Step
from openmora.group_chat.session import GroupChatSession
from openmora.group_chat.transcript import Transcript
from openmora.story import StoryRenderer
from openmora.tools.context import ToolResult

pytestmark = pytest.mark.unit


# ----- atomic writes -----------------------------------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_atomic_writes_write_text_bytes_and_json(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "a.txt", "héllo") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"path": tmp_path, "n": 1}, indent=2)  # a Path is written as its str
    assert json.loads((tmp_path / "c.json").read_text()) == {"path": str(tmp_path), "n": 1}
    assert _leftovers(tmp_path) == []


def test_an_atomic_write_replaces_the_file_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def watching(src: Any, dst: Any) -> None:
        # At the moment of the rename the new content is complete in a temp file beside the target.
        assert Path(src).parent == tmp_path and Path(src).read_text() == "new" and Path(dst).read_text() == "old"
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", watching)
    with open(target) as reader:  # a reader that opened the old file keeps reading all of it
        atomic_write_text(target, "new")
        assert reader.read() == "old"
    assert target.read_text() == "new" and [dst for _, dst in replaced] == [target]
    assert replaced[0][0].name.startswith(".state.") and _leftovers(tmp_path) == []


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="encoder died"), atomic_writer(target) as f:
        f.write(b"half of it")
        raise RuntimeError("encoder died")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"run": "new"})
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "fresh.bin", b"data")
    assert target.read_text() == "old" and not (tmp_path / "fresh.bin").exists() and _leftovers(tmp_path) == []


def test_a_named_temp_file_keeps_its_suffix_and_commits_by_rename(tmp_path: Path) -> None:
    target = tmp_path / "clip-0001.mp4"
    tmp = temp_path(target)
    assert tmp.parent == tmp_path and tmp.name.startswith(".clip-0001.") and tmp.suffix == ".mp4"
    assert temp_path(target) != tmp  # two writers of one target never share a temp file
    tmp.write_bytes(b"frames")
    commit(tmp, target)
    assert target.read_bytes() == b"frames" and not tmp.exists()


# ----- first_line ----------------------------------------------------------------------------------------------------
def test_first_line_of_an_error() -> None:
    assert first_line(ValueError("bad size 63x48\nTraceback details\nmore")) == "bad size 63x48"
    assert first_line(OSError("\n\n  the real message  \nrest")) == "the real message"
    assert first_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert first_line(RuntimeError("   \n ")) == "RuntimeError"
    assert first_line("one\ntwo") == "one"
    assert first_line("") == ""


# ----- the tool-call recorder ----------------------------------------------------------------------------------------
ARGS = {"image_id": "img-0001", "prompt": "a fox"}
RESULT = ToolResult(["clip-0001"], "clip-0001: video 64x48", notes=["resampled the image"])


def _lines(transcript: Transcript) -> list[dict[str, Any]]:
    return Transcript.read(transcript.path)


def _image_to_video(ctx: Any, **kwargs: Any) -> ToolResult:
    return RESULT


def _failing_image_to_video(ctx: Any, **kwargs: Any) -> ToolResult:
    raise ToolArgumentError("img-0001 is not an image\nsecond line the transcript does not need")


# A story records a tool by its function's name.
_image_to_video.__name__ = _failing_image_to_video.__name__ = "image_to_video"


def _record_three_ways(tmp_path: Path, tool: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict]]:
    """The same call recorded by the fixed plan, a group chat agent and a story: name -> its transcript lines."""
    store = SimpleNamespace(run_dir=tmp_path, on_written=lambda callback: callback())
    ctx = SimpleNamespace(store=store, seed=0)
    lines: dict[str, list[dict]] = {}

    plan = Transcript(tmp_path / "plan.jsonl")
    state = PlanState(
        task="image-to-video", prompt="a fox", image_id="img-0001", steps=[Step("video_agent", "image_to_video")]
    )
    monkeypatch.setitem(executor_module.TOOLS, "image_to_video", tool)
    try:
        PlanExecutor(ctx, plan, state).run_step(state.steps[0])
    except ToolArgumentError:
        pass
    lines["plan"] = _lines(plan)

    chat = Transcript(tmp_path / "chat.jsonl")
    session = SimpleNamespace(
        transcript=chat,
        state=PlanState(task="image-to-video", image_id="img-0001", steps=[Step("video_agent", "image_to_video")]),
        _save_state=lambda: None,
        fatal=None,
    )
    try:
        result = tool(ctx, **ARGS)
    except ToolArgumentError as err:
        GroupChatSession.tool_failed(session, "video_agent", "image_to_video", err, dict(ARGS), 0.5)
    else:
        GroupChatSession.tool_succeeded(session, "video_agent", "image_to_video", result, dict(ARGS), 0.5)
    lines["chat"] = _lines(chat)

    story = Transcript(tmp_path / "story.jsonl")
    try:
        StoryRenderer(ctx, story)._call("video_agent", tool, 1, 0, **ARGS)
    except ToolArgumentError:
        pass
    lines["story"] = _lines(story)
    return lines


# Each caller's own key: the plan's fallback says whom it stood in for (absent here: not a fallback), the group chat
# whether the call completed a plan step, a story which shot it belongs to.
OWN_KEYS = {"plan": set(), "chat": {"plan_step"}, "story": {"shot"}}


def test_the_plan_the_group_chat_and_a_story_record_a_tool_call_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _record_three_ways(tmp_path, _image_to_video, monkeypatch)
    common = {"step", "type", "agent", "tool", "inputs", "outputs", "seconds", "time", "arguments", "result"}
    for name, lines in recorded.items():
        call, note = lines
        assert set(call) == common | OWN_KEYS[name], name
        assert call["type"] == "tool_call" and call["agent"] == "video_agent" and call["tool"] == "image_to_video"
        assert call["inputs"] == ["img-0001"] and call["outputs"] == ["clip-0001"], name
        assert call["arguments"] == {"prompt": "a fox"} and call["result"] == RESULT.text, name
        assert note["type"] == "note" and note["text"] == "resampled the image" and note["tool"] == "image_to_video"
    assert recorded["chat"][0]["plan_step"] is True and recorded["story"][0]["shot"] == 0


def test_the_three_callers_record_a_failed_tool_call_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _record_three_ways(tmp_path, _failing_image_to_video, monkeypatch)
    common = {"step", "type", "agent", "tool", "inputs", "outputs", "seconds", "time", "arguments", "error"}
    for name, lines in recorded.items():
        (call,) = lines
        assert set(call) == common | (OWN_KEYS[name] - {"plan_step"}), name
        assert call["error"] == "img-0001 is not an image", name
        assert call["arguments"] == ARGS and call["inputs"] == [] and call["outputs"] == [], name  # ids as given


def test_a_fallback_call_says_whom_it_stood_in_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = SimpleNamespace(store=SimpleNamespace(run_dir=tmp_path, on_written=lambda callback: callback()), seed=0)
    transcript = Transcript(tmp_path / "t.jsonl")
    state = PlanState(
        task="image-to-video", prompt="a fox", image_id="img-0001", steps=[Step("video_agent", "image_to_video")]
    )
    monkeypatch.setitem(executor_module.TOOLS, "image_to_video", _image_to_video)
    PlanExecutor(ctx, transcript, state, as_fallback=True).run_step(state.steps[0])
    call = _lines(transcript)[0]
    assert call["agent"] == "plan_runner" and call["fallback_for"] == "video_agent" and call["inputs"] == ["img-0001"]


# ----- typed events --------------------------------------------------------------------------------------------------
def _line(kind: str, **extra: Any) -> TranscriptLine:
    base = {"step": 3, "type": kind, "agent": "video_agent", "tool": None, "inputs": [], "outputs": []}
    return typing.cast(TranscriptLine, {**base, "seconds": 0.25, "time": "2026-01-01T00:00:00.000+00:00", **extra})


def _sample(event_type: type) -> dict[str, Any]:
    """A sample of an event TypedDict whose ``type`` and ``phase`` come from its own Literal annotations."""
    hints = typing.get_type_hints(event_type)
    values: dict[str, Any] = {
        "role": "image_to_video",
        "model": "tiny:image_to_video",
        "seconds": 1.5,
        "placement": "resident",
        "stage": "image_to_video",
        "step": 0,
        "total": 4,
        "id": "clip-0001",
        "frames": 25,
        "event": _line("message", text="hello"),
        "source": "image_agent",
        "text": "calling text_to_image",
    }
    sample = {key: values[key] for key in hints if key not in ("type", "phase")}
    for key in ("type", "phase"):
        if key in hints:
            (sample[key],) = typing.get_args(hints[key])
    assert set(sample) == event_type.__required_keys__ | event_type.__optional_keys__
    return sample


def test_every_event_kind_is_typed_and_the_cli_renders_each(capsys: pytest.CaptureFixture[str]) -> None:
    from openmora.cli import _CliProgress

    samples = [_sample(t) for t in EVENT_TYPES]
    kinds = {(s["type"], s.get("phase")) for s in samples}
    assert kinds == {
        ("load", "start"),
        ("load", "end"),
        ("progress", None),
        ("encode", "start"),
        ("encode", "end"),
        ("transcript", None),
        ("chat", None),
    }
    transcript_lines = [
        _line("message", text="I will animate img-0001"),
        _line("planner", agent="planner", chosen="video_agent", candidates=["video_agent"], raw_choice="video_agent"),
        _line("planner", agent="planner", chosen="plan_runner", candidates=["video_agent"], fallback_used=True),
        _line("tool_call", tool="image_to_video", inputs=["img-0001"], outputs=["clip-0001"], result="clip-0001: ok"),
        _line("tool_call", tool="image_to_video", error="img-0001 is not an image"),
        _line("note", tool="image_to_video", text="resampled"),
        _line("run_start", agent="user", task="text-to-video", prompt="a fox"),
        _line("run_end", agent="orchestrator", status="done", outputs=["clip-0001"]),
    ]
    progress_steps = [dict(samples[2], step=k) for k in (1, 4)]  # a bar advances and finishes
    with _CliProgress() as cli:
        for event in samples + progress_steps + [{"type": "transcript", "event": e} for e in transcript_lines]:
            cli(event)
    err = capsys.readouterr().err
    assert "loaded image_to_video in 1.5s" in err
    assert "[3] video_agent: I will animate img-0001" in err
    assert "planner -> plan_runner (plan fallback" in err and "planner -> video_agent (LLM" in err
    assert "image_to_video failed: img-0001 is not an image" in err and "img-0001 -> clip-0001" in err
    assert "note: resampled" in err
    assert not cli.tasks  # every bar that started also ended
