"""Scores in runs: joins recorded by the tools, best-of-N takes (seeds, scores, the best kept, reproducible), the
quality gate's planner decision (rule and scripted LLM), `openmora score` / `openmora report` on run folders and
plain video files, and their bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.errors import InputError
from openmora.profiles import PROFILES_DIR, load_profile, profile_from_dict
from openmora.quality import synthetic
from openmora.quality.gate import GateSettings, Take, best_take, gate_rule, take_seed
from openmora.quality.score import find_cuts, overall, score_path
from openmora.video_io import write_video

FRAMES = 8  # tiny: frames per segment


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.integration
def test_extension_records_its_segment_joins_and_the_run_scores_them(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny").run("text-to-video", prompt="a fox", segments=3, out=tmp_path / "r")
    final = next(a for a in manifest(r.run_dir)["artifacts"] if a["id"] == r.final_id)
    assert [(j["frame"], j["kind"]) for j in final["joins"]] == [(FRAMES, "segment"), (2 * FRAMES - 1, "segment")]
    scores = json.loads((r.run_dir / "scores.json").read_text())
    clip = next(c for c in scores["clips"] if c["id"] == r.final_id)
    # a batch run with one take per step scores each clip once, at the end, into scores.json and the manifest
    assert final["scores"]["overall"] == pytest.approx(clip["overall"], abs=1e-4)
    assert not [e for e in events(r.run_dir) if e["type"] == "tool_call" and "scores" in e]
    assert [j["frame"] for j in clip["joins"]] == [FRAMES, 2 * FRAMES - 1]
    assert {"psnr", "ssim", "hist_distance", "flow_jump", "cut"} <= set(clip["joins"][0])
    assert 0.0 <= clip["overall"] <= 1.0
    assert {"temporal_flickering", "motion_smoothness", "dynamic_degree", "imaging_quality"} <= set(clip["metrics"])
    assert "tcon" in clip["mora"]  # an extension: TCON against the clip it continues
    assert (r.run_dir / "report.html").is_file()


@pytest.mark.integration
def test_story_joins_are_its_shots_and_transitions(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny").run("story", prompt="a fox; a deer", segments=1, out=tmp_path / "r")
    arts = {a["id"]: a for a in manifest(r.run_dir)["artifacts"]}
    final = arts[r.final_id]
    assert final["tool"] == "join_clips"
    shot1, transition, shot2 = (arts[p] for p in final["parents"])
    assert [j["frame"] for j in final["joins"]] == [shot1["frames"], shot1["frames"] + transition["frames"]]
    assert {j["kind"] for j in final["joins"]} == {"transition"}
    assert sum(a["frames"] for a in (shot1, transition, shot2)) == final["frames"]


@pytest.mark.integration
def test_best_of_three_keeps_the_best_take_with_reproducible_seeds(tmp_path: Path) -> None:
    runs = [
        Orchestrator(profile="tiny", best_of=3, report=False).run(
            "image-to-video", prompt="waves", image=str(_image(tmp_path)), out=tmp_path / f"r{i}"
        )
        for i in range(2)
    ]
    run_dir = runs[0].run_dir
    takes = [e for e in events(run_dir) if e["type"] == "take"]
    assert len(takes) == 3
    base = takes[0]["seed"]
    assert [t["seed"] for t in takes] == [take_seed(base, k) for k in range(3)]
    recorded = manifest(run_dir)["run"]["takes"][runs[0].final_id]
    assert [t["seed"] for t in recorded] == [t["seed"] for t in takes]
    best = max(recorded, key=lambda t: t["overall"])
    assert [t["kept"] for t in recorded] == [t is best for t in recorded]
    assert runs[0].final_id == best["outputs"][-1]
    # every take's clip stays in the run with its scores; the final video is the kept one
    arts = {a["id"]: a for a in manifest(run_dir)["artifacts"]}
    assert all(arts[t["outputs"][-1]]["scores"]["overall"] == pytest.approx(t["overall"], abs=1e-4) for t in recorded)
    assert np.array_equal(ArtifactStore(run_dir).frames(runs[0].final_id), _final_frames(run_dir))
    # the same seed makes the same takes and keeps the same one
    other = manifest(runs[1].run_dir)["run"]["takes"][runs[1].final_id]
    assert [(t["seed"], t["kept"]) for t in other] == [(t["seed"], t["kept"]) for t in recorded]
    assert np.array_equal(_final_frames(runs[1].run_dir), _final_frames(run_dir))


@pytest.mark.integration
def test_take_zero_is_the_run_without_best_of(tmp_path: Path) -> None:
    a = Orchestrator(profile="tiny", report=False).run("text-to-video", prompt="a fox", segments=1, out=tmp_path / "a")
    b = Orchestrator(profile="tiny", best_of=2, report=False).run(
        "text-to-video", prompt="a fox", segments=1, out=tmp_path / "b"
    )
    stepped = {e["plan_step"]: e for e in events(b.run_dir) if e["type"] == "tool_call" and e.get("takes")}
    assert set(stepped) == {"s2", "s3"}  # text_to_image and image_to_video; the prompt step takes no seed
    # take 0 of a step uses the step's own seed, so it makes the single-take run's pixels
    img_a = next(x.id for x in a.artifacts if x.kind == "image")
    img_b0 = stepped["s2"]["takes"][0]["outputs"][-1]
    assert np.array_equal(ArtifactStore(a.run_dir).image(img_a), ArtifactStore(b.run_dir).image(img_b0))
    assert stepped["s2"]["takes"][1]["seed"] == take_seed(stepped["s2"]["takes"][0]["seed"], 1)


@pytest.mark.integration
def test_the_gate_asks_the_planner_and_retakes_up_to_the_limit(tmp_path: Path) -> None:
    profile = load_profile("tiny")
    profile.max_retakes = 1
    r = Orchestrator(profile=profile, min_quality=1.0, report=False).run(
        "image-to-video", prompt="waves", image=str(_image(tmp_path)), out=tmp_path / "r"
    )
    evts = events(r.run_dir)
    decisions = [e for e in evts if e["type"] == "planner" and e.get("decision") == "quality"]
    # 1.0 is out of reach: one retake (the rule, no LLM), then the best of the two is accepted
    assert [d["chosen"] for d in decisions] == ["retake", "accept"]
    assert len([e for e in evts if e["type"] == "take"]) == 2


@pytest.mark.integration
def test_the_gate_follows_the_planner_llm(tmp_path: Path) -> None:
    # replies in call order: the prompt agent's prompt, then the planner's quality call (accept the first take)
    script = tmp_path / "replay.json"
    script.write_text(json.dumps(["gentle waves at dusk", '{"action": "accept", "reason": "good enough"}']))
    r = Orchestrator(profile="tiny", llm=f"replay:{script}", min_quality=1.0, report=False).run(
        "image-to-video", prompt="waves", image=str(_image(tmp_path)), out=tmp_path / "r"
    )
    decisions = [e for e in events(r.run_dir) if e["type"] == "planner" and e.get("decision") == "quality"]
    assert [(d["chosen"], d["reason"]) for d in decisions] == [("accept", "good enough")]
    assert len([e for e in events(r.run_dir) if e["type"] == "take"]) == 1  # one take, accepted


@pytest.mark.integration
def test_score_cli_on_a_run_and_on_a_file_with_a_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = Orchestrator(profile="tiny", report=False).run("text-to-video", prompt="a fox", segments=2, out=tmp_path / "r")
    assert main(["score", str(r.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "run" and out["final"] == r.final_id
    assert {c["id"] for c in out["clips"]} == {a.id for a in r.artifacts if a.kind == "video"}
    assert (r.run_dir / "scores.json").is_file() and (r.run_dir / "report.html").is_file()
    # a plain file: a hard cut between two unrelated clips is found where it is
    a = synthetic.moving_square(10, 64, 96, speed_px=2.0, direction="right")
    b = synthetic.pan(synthetic.photo("coffee"), 10, speed_px=2.0, crop=(64, 96))
    path = write_video(synthetic.hard_cut(a, b), 8.0, tmp_path / "cut.mp4")
    assert main(["score", str(path)]) == 0
    table = capsys.readouterr().out
    assert "CUT" in table
    scored = score_path(path, write=False)
    assert [j["frame"] for j in scored["clips"][0]["joins"]] == [10]
    assert main(["report", str(r.run_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")


@pytest.mark.integration
def test_a_continuous_clip_has_no_cut() -> None:
    frames = synthetic.moving_square(20, 64, 96, speed_px=2.0, direction="right")
    assert find_cuts(frames) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["score", "no/such/file.mp4"], "is not a file or run folder"),
        (["run", "text-to-video", "--prompt", "x", "--best-of", "0"], "--best-of must be a whole number of takes"),
        (["run", "text-to-video", "--prompt", "x", "--min-quality", "2"], "--min-quality must be an overall score"),
    ],
)
@pytest.mark.integration
def test_bad_quality_input_is_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_score_refuses_a_folder_that_is_not_a_run_and_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="without manifest.json"):
        score_path(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="could not be read as a video"):
        score_path(tmp_path / "notes.txt")


@pytest.mark.integration
def test_a_manifest_path_outside_the_run_is_refused(tmp_path: Path) -> None:
    r = Orchestrator(profile="tiny", report=False).run("text-to-video", prompt="a fox", segments=1, out=tmp_path / "r")
    data = manifest(r.run_dir)
    clip = next(a for a in data["artifacts"] if a["kind"] == "video")
    clip["frames_path"] = "../../outside.mkv"
    (r.run_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="outside the run folder"):
        score_path(r.run_dir)
    assert not (r.run_dir / "scores.json").exists()


@pytest.mark.unit
def test_gate_rule_and_best_take() -> None:
    gate = GateSettings(min_quality=0.5, max_retakes=1)
    low = [Take(0, 1, ["clip-0001"], 0.4), Take(1, 1001, ["clip-0002"], 0.45)]
    assert gate_rule(low, gate, retakes=0)[0] == "retake"
    assert gate_rule(low, gate, retakes=1)[0] == "accept"
    assert gate_rule([Take(0, 1, ["clip-0001"], 0.6)], gate, retakes=0)[0] == "accept"
    tie = [Take(0, 1, ["a"], 0.5), Take(1, 1001, ["b"], 0.5)]
    assert best_take(tie).index == 0 and [t.kept for t in tie] == [True, False]
    assert overall({"imaging_quality": {"value": 0.25}}) == 0.25


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"best_of": {"join_clips": 2}}, "only steps that render"),
        ({"best_of": {"image_to_video": 9}}, "from 1 to 8"),
        ({"min_quality": 1.5}, "overall score from 0 to 1"),
        ({"max_retakes": -1}, "max_retakes"),
    ],
)
def test_profile_gate_settings_are_checked(data: dict[str, Any], says: str) -> None:
    base = yaml.safe_load((PROFILES_DIR / "tiny.yaml").read_text())
    base.update(data)
    with pytest.raises(InputError, match=says):
        profile_from_dict(base, "custom.yaml")


# ----- helpers ---------------------------------------------------------------------------------------------------
def _image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "in.png"
    if not path.exists():
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path)
    return path


def _final_frames(run_dir: Path) -> np.ndarray:
    return ArtifactStore(run_dir).frames(manifest(run_dir)["run"]["final"])


@pytest.mark.integration
def test_a_plan_step_asks_for_its_own_takes(tmp_path: Path) -> None:
    plan = {
        "steps": [
            {"id": "s1", "tool": "text_to_image", "args": {"prompt": "a lighthouse at night"}},
            {"id": "s2", "tool": "image_to_video", "args": {"image_id": "$s1"}, "best_of": 2},
        ]
    }
    script = tmp_path / "replay.json"
    script.write_text(json.dumps([json.dumps(plan)]))
    r = Orchestrator(profile="tiny", llm=f"replay:{script}", report=False).run(
        "auto", prompt="a lighthouse at night, animated", out=tmp_path / "r"
    )
    takes = [e for e in events(r.run_dir) if e["type"] == "take"]
    assert [t["plan_step"] for t in takes] == ["s2", "s2"]  # the image step renders once, the video step twice
    assert len(manifest(r.run_dir)["run"]["takes"][r.final_id]) == 2


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tool", "best_of", "says"),
    [
        ("join_clips", 2, "best_of is for steps that render"),
        ("image_to_video", 0, "from 1 to 8"),
        ("image_to_video", 9, "from 1 to 8"),
    ],
)
def test_a_plan_steps_best_of_is_checked(tool: str, best_of: int, says: str) -> None:
    from openmora.group_chat.checker import check_plan
    from openmora.group_chat.plan import Plan, PlanStep

    args = {"clip_ids": ["$video1", "$video2"]} if tool == "join_clips" else {"image_id": "$image"}
    plan = Plan([PlanStep("s1", tool, args, best_of=best_of)])
    problems = check_plan(plan, has_image=True, n_videos=2)
    assert any(says in p for p in problems), problems
