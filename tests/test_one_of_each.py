"""One of each: atomic writes (openmora.fileio), an error's first line (openmora.errors.first_line), one tool-call
recorder for every plan step, whoever runs it (group_chat/executor.PlanExecutor through
group_chat/transcript.record_tool_call), and a TypedDict for every event the CLI renders (openmora.events)."""

from __future__ import annotations

import dataclasses
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
from openmora.group_chat.executor import PlanExecutor
from openmora.group_chat.plan import TOOLS, Plan, PlanStep
from openmora.group_chat.plan_state import PlanState
from openmora.group_chat.transcript import Transcript
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


class _Store:
    """The little of an artifact store the executor reads: the run folder, digests, which ids exist."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_written(self, callback: Any) -> None:
        callback()

    def digest(self, artifact_id: str) -> str:
        return f"sha-of-{artifact_id}"

    def has(self, artifact_id: str) -> bool:
        return artifact_id in ("img-0001", "clip-0001")


def _executor(tmp_path: Path, tool: Any, monkeypatch: pytest.MonkeyPatch, shot: int | None = None) -> Any:
    """A PlanExecutor over a one-step plan (image_to_video of the input image) whose tool is ``tool``."""
    monkeypatch.setitem(TOOLS, "image_to_video", dataclasses.replace(TOOLS["image_to_video"], fn=tool))
    plan = Plan([PlanStep("s1", "image_to_video", {"image_id": "$image", "prompt": "a fox"}, shot=shot)])
    state = PlanState.new("image-to-video", "a fox", plan, seed=0, inputs={"$image": "img-0001"})
    ctx = SimpleNamespace(
        store=_Store(tmp_path), loader=SimpleNamespace(load_seconds=0.0), profile=SimpleNamespace(name="tiny"), seed=0
    )
    monkeypatch.setattr("openmora.estimates.StepCosts.record", lambda *a, **k: None)  # no cost file in the home
    return PlanExecutor(ctx, Transcript(tmp_path / f"t{shot}.jsonl"), state)


def test_a_plan_step_records_its_tool_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--llm none and the group chat's agents run steps through the same executor: one way of recording."""
    ex = _executor(tmp_path, _image_to_video, monkeypatch)
    outcome = ex.run_step(ex.state.plan.steps[0], by="video_agent")
    call, note = _lines(ex.transcript)
    common = {"step", "type", "agent", "tool", "inputs", "outputs", "seconds", "time", "arguments", "result"}
    assert set(call) == common | {"plan_step"}
    assert call["type"] == "tool_call" and call["agent"] == "video_agent" and call["tool"] == "image_to_video"
    assert call["inputs"] == ["img-0001"] and call["outputs"] == ["clip-0001"] and call["plan_step"] == "s1"
    assert call["arguments"] == {"prompt": "a fox", "seed": 0} and call["result"] == RESULT.text
    assert note["type"] == "note" and note["text"] == "resampled the image" and note["tool"] == "image_to_video"
    assert outcome.outputs == ["clip-0001"] and ex.state.run_of("s1").status == "done"
    assert (tmp_path / "plan_state.json").is_file()  # saved after the step


def test_a_story_step_says_its_shot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = _executor(tmp_path, _image_to_video, monkeypatch, shot=2)
    ex.run_step(ex.state.plan.steps[0])
    call = _lines(ex.transcript)[0]
    assert call["shot"] == 2 and call["agent"] == "video_agent"  # the step's own agent by default


def test_a_failed_step_records_the_error_and_the_arguments_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = _executor(tmp_path, _failing_image_to_video, monkeypatch)
    with pytest.raises(ToolArgumentError):
        ex.run_step(ex.state.plan.steps[0])
    (call,) = _lines(ex.transcript)
    common = {"step", "type", "agent", "tool", "inputs", "outputs", "seconds", "time", "arguments", "error"}
    assert set(call) == common | {"plan_step"}
    assert call["error"] == "img-0001 is not an image"
    assert call["arguments"] == {**ARGS, "seed": 0} and call["inputs"] == [] and call["outputs"] == []
    run = ex.state.run_of("s1")
    assert run.status == "failed" and run.attempts == 1 and run.error == "img-0001 is not an image"


def test_a_step_with_an_unchanged_key_is_reused_and_recorded_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    def counting(ctx: Any, **kwargs: Any) -> ToolResult:
        ran.append(1)
        return RESULT

    ex = _executor(tmp_path, counting, monkeypatch)
    step = ex.state.plan.steps[0]
    ex.run_step(step)
    ex.state.begin_request(ex.state.plan.copy())  # the next request, the same step: its key is unchanged
    outcome = ex.run_step(ex.state.plan.steps[0])
    assert ran == [1] and outcome.reused and ex.state.run_of("s1").status == "reused"
    reused = [e for e in _lines(ex.transcript) if e["type"] == "tool_call"][-1]
    assert reused["reused"] is True and reused["outputs"] == ["clip-0001"] and reused["seconds"] == 0.0


def test_an_agents_call_that_differs_from_its_step_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = _executor(tmp_path, _image_to_video, monkeypatch)
    with pytest.raises(ToolArgumentError):
        ex.run_step(ex.state.plan.steps[0], "video_agent", call={"image_id": "img-0009", "prompt": "a fox"})
    assert ex.state.run_of("s1").status == "pending" and not ex.transcript.path.exists()  # nothing ran


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
        "name": "UNetSpatioTemporalConditionModel.down_blocks.0",
        "pending": 0,
        "estimate_s": 12.5,
        "background": True,
        "ok": True,
    }
    sample = {key: values[key] for key in hints if key not in ("type", "phase")}
    for key in ("type", "phase"):
        if key in hints:
            (sample[key],) = typing.get_args(hints[key])
    assert set(sample) == event_type.__required_keys__ | event_type.__optional_keys__
    return sample


def test_every_event_kind_is_typed_and_the_cli_renders_each(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from openmora.cli import _CliProgress

    samples = [_sample(t) for t in EVENT_TYPES]
    kinds = {(s["type"], s.get("phase")) for s in samples}
    assert kinds == {
        ("load", "start"),
        ("load", "end"),
        ("progress", None),
        ("encode", "start"),
        ("encode", "end"),
        ("compile", "queued"),
        ("compile", "end"),
        ("transcript", None),
        ("chat", None),
    }
    transcript_lines = [
        _line("message", text="I will animate img-0001"),
        _line(
            "planner",
            agent="planner",
            decision="next_speaker",
            chosen="video_agent",
            candidates=["video_agent", "image_agent"],
            raw_choice="video_agent",
        ),
        _line(
            "planner",
            agent="planner",
            decision="next_speaker",
            chosen="image_agent",
            candidates=["video_agent", "image_agent"],
            raw_choice="nobody",
            fallback_used=True,
        ),
        _line("plan", agent="planner", attempt=1, valid=False, problems=["s1: unknown tool 'paint'"]),
        _line("tool_call", tool="image_to_video", inputs=["img-0001"], outputs=["clip-0001"], result="clip-0001: ok"),
        _line("tool_call", tool="image_to_video", error="img-0001 is not an image"),
        _line("note", tool="image_to_video", text="resampled"),
        _line("run_start", agent="user", task="text-to-video", prompt="a fox"),
        _line("run_end", agent="orchestrator", status="done", outputs=["clip-0001"]),
    ]
    monkeypatch.setenv("COLUMNS", "400")  # rich cuts lines at the terminal's width
    progress_steps = [dict(samples[2], step=k) for k in (1, 4)]  # a bar advances and finishes
    with _CliProgress() as cli:
        for event in samples + progress_steps + [{"type": "transcript", "event": e} for e in transcript_lines]:
            cli(event)
    err = capsys.readouterr().err
    assert "loaded image_to_video in 1.5s" in err
    assert "[3] video_agent: I will animate img-0001" in err
    assert "planner next_speaker -> image_agent (plan fallback; candidates video_agent, image_agent)" in err
    assert "planner next_speaker -> video_agent (LLM; candidates video_agent, image_agent)" in err
    assert "plan attempt 1: cannot run: s1: unknown tool 'paint'" in err
    assert "image_to_video failed: img-0001 is not an image" in err and "img-0001 -> clip-0001" in err
    assert "note: resampled" in err
    assert not cli.tasks  # every bar that started also ended
