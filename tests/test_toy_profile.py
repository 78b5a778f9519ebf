"""The ``toy`` profile: trained pipelines shipped in the package, run like any profile, scored at the pixels on
prompts held out of training (bench/bench_toy.py is the same harness with more cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import bench_toy
from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.errors import InputError
from openmora.toy import WEIGHTS, weights_folder
from openmora.toy.scenes import Scene, is_heldout, render
from openmora.video_io import write_video


@pytest.fixture(scope="module")
def toy() -> Orchestrator:
    return Orchestrator(profile="toy", llm="none", report=False)


@pytest.mark.unit
def test_the_trained_weights_ship_in_the_package_as_safetensors_under_30_mb() -> None:
    for name in ("text_to_image", "edit_image", "image_to_video"):
        assert (weights_folder(name) / "model_index.json").is_file()
    files = [f for f in WEIGHTS.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(f.stat().st_size for f in files if f.suffix == ".safetensors") <= 30e6
    with pytest.raises(InputError, match="unknown toy model 'video': accepted are edit_image, image_to_video"):
        weights_folder("video")


@pytest.mark.slow
def test_cli_text_to_video_on_toy_writes_the_clip_and_says_what_the_detector_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from openmora.cli import main

    prompt = "a large red circle moving left on a blue background"
    rc = main(["run", "text-to-video", "--profile", "toy", "--llm", "none", "--no-report", "--prompt", prompt,
               "--out", str(tmp_path / "run")])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("toy world: "))
    assert "asked: shape circle, colour red, background blue, size large, motion left; the video shows: shape" in line
    with ArtifactStore(tmp_path / "run") as store:
        final = store.frames(store.meta["final"])
    assert final.shape == (17, 64, 64, 3)  # two 9-frame segments, the shared frame once
    assert (tmp_path / "run" / "final.mp4").stat().st_size > 0


@pytest.mark.integration
def test_extend_of_an_uploaded_clip_without_a_prompt_runs_on_a_text_conditioned_video_model(
    toy: Orchestrator, tmp_path: Path
) -> None:
    # Wan refuses a call without a prompt; an uploaded clip has none, so the empty prompt goes in.
    source = render(Scene("square", "yellow", "blue", "large", "right", speed=1.5), frames=9)
    clip = write_video(source, 8.0, tmp_path / "in.mp4")
    result = toy.run("extend", videos=[clip], segments=1, out=tmp_path / "run")
    with ArtifactStore(result.run_dir) as store:
        final = store.frames(result.final_id)
        made = [a for a in result.artifacts if a.tool == "extend_video"]
        assert made and made[-1].params["prompt"] == ""
    assert final.shape == (17, 64, 64, 3)
    assert np.abs(final[:9].astype(int) - source.astype(int)).mean() < 8  # the source, through one MP4 encode


@pytest.mark.unit
def test_the_held_out_cases_are_held_out_and_reproducible() -> None:
    for task in bench_toy.TASKS:
        cases = bench_toy.cases(task, 4, seed=0)
        assert [c["scene"] for c in cases] == [c["scene"] for c in bench_toy.cases(task, 4, seed=0)]
        assert all(is_heldout(c["scene"]) for c in cases)
        if task in ("image-to-video", "extend", "connect"):
            assert all(c["scene"].motion != "still" for c in cases)


@pytest.fixture(scope="module")
def held_out() -> dict:
    """Text-to-video, image-to-video and extend on 8 held-out cases each (seed 0), as `bench.bench_toy` runs them."""
    return bench_toy.evaluate("toy", n=8, seed=0, tasks=("text-to-video", "image-to-video", "extend"))


# Floors under what the shipped weights reach on these cases (bench/results/toy.json; one CPU thread gives the same
# frames every run), far above chance: a regression in the weights, the loader, the tools or the profile's call
# parameters shows here. The goals (90% per attribute) are not reached by these weights.
@pytest.mark.slow
def test_held_out_text_to_video_follows_the_background_it_is_asked_for(held_out: dict) -> None:
    t2v = held_out["text-to-video"]
    assert t2v["checks"]["background"] >= 0.6  # chance: 1 in 6 backgrounds
    assert t2v["checks"]["style"] >= 0.6  # plain, as asked (the other style is pixel-art)


@pytest.mark.slow
def test_held_out_image_to_video_keeps_the_picture_and_moves(held_out: dict) -> None:
    i2v = held_out["image-to-video"]["checks"]
    assert i2v["first_frame_kept"] >= 0.75 and i2v["background_kept"] >= 0.75 and i2v["size_kept"] >= 0.75
    assert i2v["moves"] >= 0.6


@pytest.mark.slow
def test_held_out_extend_keeps_the_source_and_joins_without_a_jump(held_out: dict) -> None:
    ext = held_out["extend"]["checks"]
    assert ext["source_kept"] >= 0.75 and ext["no_jump"] >= 0.75 and ext["background_kept"] >= 0.75


@pytest.mark.unit
def test_prompts_are_rewritten_into_the_phrasing_the_toy_models_learned() -> None:
    from openmora.toy.scenes import canonical_instruction, canonical_prompt

    assert canonical_prompt("A large, red circle is moving left across a blue background.") == (
        "a large red circle moving left on a blue background"
    )
    assert canonical_prompt("a tiny green box, static, against a black backdrop, Minecraft style") == (
        "a small green square staying still on a black background in pixel-art style"
    )
    assert canonical_prompt("a fox running through snow at dusk") is None  # nothing the toy world knows
    assert canonical_instruction("Could you turn the background white?") == "make the background white"
    assert canonical_instruction("turn it into a triangle") == "make it a triangle"
    assert canonical_instruction("make it 1920s") is None


@pytest.mark.unit
def test_an_unknown_prompt_vocabulary_is_refused_naming_the_accepted_ones(tmp_path: Path) -> None:
    from openmora.profiles import load_profile

    text = (Path(__file__).parent.parent / "openmora" / "profiles" / "toy.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("prompt_vocabulary: toy", "prompt_vocabulary: klingon"))
    with pytest.raises(InputError, match="prompt_vocabulary 'klingon' is not one of: None, toy"):
        load_profile(str(bad))


@pytest.mark.integration
def test_a_rephrased_prompt_reaches_the_model_in_its_vocabulary_and_the_record_keeps_both(
    toy: Orchestrator, tmp_path: Path
) -> None:
    asked = "A large, red circle is moving left across a blue background."
    result = toy.run("text-to-video", prompt=asked, segments=1, out=tmp_path / "run")
    image = next(a for a in result.artifacts if a.tool == "text_to_image")
    assert image.params["model_prompt"] == "a large red circle moving left on a blue background"
    assert asked.rstrip(".") in image.params["prompt"]  # what the agent wrote (enhanced) stays on record


@pytest.mark.slow
def test_free_form_requests_run_end_to_end_on_toy_and_are_scored_at_the_pixels(tmp_path: Path) -> None:
    from openmora import Orchestrator

    orch = Orchestrator(profile="toy", llm="none", report=False)
    picked = {r["name"]: r for r in bench_toy.requests()}
    for name in ("plain", "edit-upload"):
        row = bench_toy.run_request(orch, picked[name], tmp_path / name)
        assert row["checks"]["tools"], row  # the word templates pick text-to-video and edit for these two
        assert set(picked[name]["want"]) <= set(row["checks"])  # every attribute asked for was read and judged
        assert row["passed"] == all(row["checks"].values())
    assert all(is_heldout(r["upload"][0]) for r in picked.values() if r.get("upload"))


@pytest.mark.unit
def test_the_shipped_configs_name_no_folder_of_the_training_machine() -> None:
    assert not [c for c in WEIGHTS.rglob("*.json") if "_name_or_path" in c.read_text() or "/tmp/" in c.read_text()]
