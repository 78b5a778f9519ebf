"""Each of Mora's six tasks end to end on the tiny profile: real pipelines, real MP4s, continuity, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.runtime import Runtime
from openmora.video_io import read_video

W, H, FPS = 96, 64, 7
TRANSCRIPT_KEYS = {"step", "agent", "tool", "inputs", "outputs", "seconds"}


def check_run(out: Path) -> tuple[np.ndarray, dict, list[dict]]:
    """The run folder holds final.mp4, manifest.json and transcript.jsonl, and they agree."""
    assert (out / "final.mp4").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    events = [json.loads(line) for line in (out / "transcript.jsonl").read_text().splitlines()]
    assert manifest["run"]["status"] == "done"
    assert all(TRANSCRIPT_KEYS <= set(e) for e in events)
    assert [e["step"] for e in events] == list(range(1, len(events) + 1))
    for art in manifest["artifacts"]:
        assert (out / art["path"]).is_file()
        assert not Path(art["path"]).is_absolute()
    frames, fps = read_video(out / "final.mp4")
    assert fps == pytest.approx(FPS)
    assert frames.shape[1:] == (H, W, 3)
    store = ArtifactStore(out)
    exact = store.frames(manifest["run"]["final"])
    assert frames.shape == exact.shape
    # H.264 is lossy; the MP4 must still be a faithful encoding of the exact frames.
    assert np.abs(frames.astype(int) - exact.astype(int)).mean() < 20
    return exact, manifest, events


def tools_used(events: list[dict]) -> list[str]:
    return [e["tool"] for e in events if e["type"] == "tool_call"]


@pytest.mark.integration
def test_text_to_video_chains_segments(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny").run(
        "text-to-video", prompt="a fox running through snow at dusk", out=tmp_path / "r", segments=3
    )
    frames, manifest, events = check_run(r.run_dir)
    assert tools_used(events) == ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]
    # 3 segments of 8 frames; each continuation drops its duplicated first frame.
    assert len(frames) == 8 + 7 + 7
    first_clip = ArtifactStore(r.run_dir).frames("clip-0001")
    assert np.array_equal(frames[:8], first_clip)
    assert r.final_video == r.run_dir / "final.mp4"
    assert {a.kind for a in r.artifacts} == {"image", "video"}


@pytest.mark.integration
def test_image_to_video_fits_input_and_says_so(tmp_path: Path, media: dict) -> None:
    r = Orchestrator().run("image-to-video", image=media["image"], prompt="the waves roll in", out=tmp_path / "r")
    frames, manifest, events = check_run(r.run_dir)
    notes = [e["text"] for e in events if e["type"] == "note"]
    assert any("fitted 200x150 to 96x64" in n and "centre-cropped" in n for n in notes)
    assert tools_used(events) == ["enhance_prompt", "image_to_video"]
    assert len(frames) == 8
    parents = {a["id"]: a["parents"] for a in manifest["artifacts"]}
    assert parents[manifest["run"]["final"]] == ["img-0001"]


@pytest.mark.integration
def test_extend_output_starts_with_input_frames(tmp_path: Path, media: dict) -> None:
    r = Orchestrator().run("extend", videos=[media["video_a"]], segments=2, out=tmp_path / "r")
    frames, manifest, events = check_run(r.run_dir)
    store = ArtifactStore(r.run_dir)
    original = store.frames("clip-0001")  # the imported, fitted input
    assert store.get("clip-0001").tool == "input"
    # 10 frames at 30 fps resampled to 7 fps: 3 frames.
    assert len(original) == 3
    assert np.array_equal(frames[: len(original)], original)
    assert len(frames) == len(original) + 2 * 7
    assert any("resampled 30 fps" in e.get("text", "") for e in events)


@pytest.mark.integration
def test_edit_regenerates_from_edited_first_frame(tmp_path: Path, media: dict) -> None:
    r = Orchestrator().run(
        "edit", videos=[media["video_b"]], prompt="make it 1920s black and white", out=tmp_path / "r"
    )
    frames, manifest, events = check_run(r.run_dir)
    # The 4 input frames (12 at 24 fps resampled to 7 fps) fit in one 8-frame segment: no extension needed.
    assert tools_used(events) == ["take_frame", "edit_image", "image_to_video"]
    input_frames = ArtifactStore(r.run_dir).frames("clip-0001")
    assert len(frames) >= len(input_frames)  # at least the original's length of motion
    by_id = {a["id"]: a for a in manifest["artifacts"]}
    edited = [a for a in manifest["artifacts"] if a["tool"] == "edit_image"][0]
    assert by_id[edited["parents"][0]]["tool"] == "take_frame"


@pytest.mark.integration
def test_connect_starts_with_a_and_ends_with_b(tmp_path: Path, media: dict) -> None:
    r = Orchestrator().run("connect", videos=[media["video_a"], media["video_b"]], out=tmp_path / "r")
    frames, manifest, events = check_run(r.run_dir)
    store = ArtifactStore(r.run_dir)
    a, b = store.frames("clip-0001"), store.frames("clip-0002")
    transition = store.frames("clip-0003")
    assert np.array_equal(frames[: len(a)], a)
    assert np.array_equal(frames[-len(b) :], b)
    assert len(frames) == len(a) + len(transition) - 2 + len(b)
    assert tools_used(events) == ["connect_clips"]


@pytest.mark.integration
def test_digital_world_from_text_adds_style_cue(tmp_path: Path) -> None:
    r = Orchestrator().run("digital-world", prompt="a village by a river", segments=1, out=tmp_path / "r")
    frames, manifest, events = check_run(r.run_dir)
    image = [a for a in manifest["artifacts"] if a["tool"] == "text_to_image"][0]
    assert "digital world style" in image["params"]["prompt"]


@pytest.mark.integration
def test_digital_world_restyles_an_input_image(tmp_path: Path, media: dict) -> None:
    r = Orchestrator().run("digital-world", image=media["image"], out=tmp_path / "r")
    frames, manifest, events = check_run(r.run_dir)
    assert tools_used(events) == ["edit_image", "image_to_video"]
    edit = [a for a in manifest["artifacts"] if a["tool"] == "edit_image"][0]
    assert "digital world" in edit["params"]["instruction"]


@pytest.mark.integration
def test_same_seed_same_frames_and_other_seed_differs(tmp_path: Path) -> None:
    runs = [
        Orchestrator().run("text-to-video", prompt="a lighthouse", seed=seed, segments=2, out=tmp_path / f"r{i}")
        for i, seed in enumerate((7, 7, 8))
    ]
    decoded = [read_video(r.final_video)[0] for r in runs]
    exact = [ArtifactStore(r.run_dir).frames(r.final_id) for r in runs]
    assert np.array_equal(exact[0], exact[1])
    assert np.array_equal(decoded[0], decoded[1])
    assert not np.array_equal(exact[0], exact[2])


@pytest.mark.integration
def test_loader_loads_each_pipeline_once(tmp_path: Path, media: dict) -> None:
    rt = Runtime()  # shared by three orchestrators: each pipeline loads once for all of them
    Orchestrator(runtime=rt).run("text-to-video", prompt="a boat", segments=2, out=tmp_path / "a")
    Orchestrator(runtime=rt).run("connect", videos=[media["video_a"], media["video_b"]], out=tmp_path / "b")
    Orchestrator(runtime=rt).run("edit", videos=[media["video_a"]], prompt="make it snow", out=tmp_path / "c")
    tiny = {k: n for k, n in rt.load_counts.items() if k[1].startswith("tiny:")}
    assert {k[1] for k in tiny} == {
        "tiny:text_to_image",
        "tiny:image_to_video",
        "tiny:connect_frames",
        "tiny:edit_image",
    }
    assert set(tiny.values()) == {1}


@pytest.mark.integration
def test_cli_run_prints_final_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    code = main(["run", "text-to-video", "--prompt", "a kite", "--segments", "1", "--out", str(out), "--seed", "3"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out / "final.mp4")
    check_run(out)


@pytest.mark.integration
def test_user_profile_file(tmp_path: Path) -> None:
    import yaml

    from openmora.profiles import PROFILES_DIR

    data = yaml.safe_load((PROFILES_DIR / "tiny.yaml").read_text())
    data["name"] = "mine"
    data["roles"]["image_to_video"]["params"]["num_frames"] = 6
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    r = Orchestrator(profile=str(path)).run("text-to-video", prompt="a kite", segments=1, out=tmp_path / "r")
    frames, manifest, _ = check_run(r.run_dir)
    assert len(frames) == 6
    assert manifest["run"]["profile"] == "mine"


@pytest.mark.unit
def test_lossless_copy_is_bit_exact(tmp_path: Path) -> None:
    from openmora.video_io import read_frames, write_lossless

    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 96, 3), dtype=np.uint8)
    write_lossless(frames, 7, tmp_path / "x.mkv")
    assert np.array_equal(read_frames(tmp_path / "x.mkv"), frames)
    store = ArtifactStore(tmp_path / "run")
    art = store.add_video(frames, 7, tool="test")
    assert art.frames_path.endswith(".lossless.mkv")
    store.flush()  # files are written in the background
    assert np.array_equal(ArtifactStore(tmp_path / "run").frames(art.id), frames)  # a fresh store reads the file


@pytest.mark.unit
def test_a_call_that_takes_several_seeds_reserves_them() -> None:
    from openmora.tools.context import ToolContext

    ctx = ToolContext(store=None, loader=None, profile=None, seed=10)
    assert ctx.next_seeds(None, 3) == [10, 11, 12]  # an extend of three segments
    assert ctx.next_seed(None) == 13  # the next call starts after them
    assert ctx.next_seeds(7, 2) == [7, 8] and ctx.next_seed(None) == 14  # an explicit seed takes none of the run's


@pytest.mark.unit
def test_a_resume_counts_the_seeds_the_recorded_calls_took() -> None:
    from openmora.artifacts import Artifact
    from openmora.tools.context import seeds_taken

    def art(tool: str, seed: int | None, parents: tuple = (), **params) -> Artifact:
        return Artifact(id="x", kind="video", path="x", sha256="", width=2, height=2, tool=tool, seed=seed,
                        parents=list(parents), params=params)  # fmt: skip

    made = [
        art("input", None),
        art("text_to_image", 0),
        art("image_to_video", 1),
        art("extend_video", 2, segments=3),
        art("connect_clips", 5, ("clip-0001", "clip-0002")),  # the transition...
        art("connect_clips", 5, ("clip-0001", "clip-0003", "clip-0002")),  # ...and the joined clip: one call
    ]
    assert seeds_taken(made) == 1 + 1 + 3 + 1


@pytest.mark.integration
def test_consecutive_extends_never_share_a_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from openmora.tools import extend_video, image_to_video

    seeds: list[int] = []
    real = image_to_video.render_segment

    def recording(ctx, image, prompt, seed, on_frames=None):
        seeds.append(seed)
        return real(ctx, image, prompt, seed, on_frames)

    monkeypatch.setattr(image_to_video, "render_segment", recording)
    monkeypatch.setattr(extend_video, "render_segment", recording)

    async def conversation() -> None:
        session = Orchestrator().chat_session()
        await session.start("text-to-video", prompt="a kite", segments=3, seed=4, out=tmp_path / "r")
        await session.revise("extend it by one second")  # a second extend right after the first
        await session.revise("animate it again")  # image-to-video after an extend
        session.close()

    asyncio.run(conversation())
    assert len(seeds) >= 5 and len(set(seeds)) == len(seeds), seeds


@pytest.mark.integration
def test_a_run_stops_its_store_writer_when_it_returns(tmp_path: Path) -> None:
    import threading

    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("artifacts")}

    before = writers()
    r = Orchestrator().run("text-to-video", prompt="a kite", segments=1, out=tmp_path / "r")
    assert writers() <= before  # the run's writer thread is gone
    check_run(r.run_dir)  # and every file it wrote is there
