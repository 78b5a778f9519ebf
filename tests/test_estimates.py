"""A plan's estimated seconds from measured per-step costs (openmora/estimates.py) and the profiles' shipped figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from openmora.errors import InputError
from openmora.estimates import ALPHA, StepCosts, estimate, step_costs_path
from openmora.group_chat.plan import TOOLS, template_plan
from openmora.group_chat.transcript import Transcript, record_tool_call
from openmora.profiles import PROFILES_DIR, STEP_TOOLS, fast_variant, load_profile


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own: nothing reads or writes the real ``step_costs.json``."""
    root = tmp_path / "cache"
    monkeypatch.setenv("OPENMORA_CACHE", str(root))
    return root


def _t2v():
    return template_plan("text-to-video", "x", segments=3)  # s1 enhance, s2 t2i, s3 i2v, s4 extend(2)


@pytest.mark.unit
def test_step_tools_are_the_plans_tools():
    assert set(STEP_TOOLS) == set(TOOLS)


@pytest.mark.unit
def test_tiny_text_to_video_is_the_sum_of_its_figures(cache: Path):
    tiny = load_profile("tiny")
    f = tiny.step_seconds
    assert "enhance_prompt" not in f  # no model work, not timed apart: counts 0
    expected = f["text_to_image"] + f["image_to_video"] + 2 * f["extend_video"]
    assert estimate(_t2v(), tiny) == pytest.approx(expected)  # default costs: the (empty) cache, then the profile
    assert estimate(_t2v(), tiny, StepCosts(path=None)) == pytest.approx(expected)
    assert not step_costs_path().exists()  # estimating writes nothing


@pytest.mark.unit
def test_recorded_figures_win_and_follow_a_moving_average(cache: Path):
    tiny = load_profile("tiny")
    costs = StepCosts()
    assert costs.path == cache / "step_costs.json"
    assert costs.record("tiny", "image_to_video", 2.0) == 2.0
    assert costs.record("tiny", "extend_video", 6.0, segments=2) == 3.0  # per segment
    f = tiny.step_seconds
    assert estimate(_t2v(), tiny, costs) == pytest.approx(f["text_to_image"] + 2.0 + 2 * 3.0)
    # A second measurement moves the figure by ALPHA; a fresh object reads it back from the file.
    assert costs.record("tiny", "image_to_video", 4.0) == pytest.approx(ALPHA * 4.0 + (1 - ALPHA) * 2.0)
    again = StepCosts()
    assert again.step_s(tiny, "image_to_video") == pytest.approx(2.6)
    assert estimate(_t2v(), tiny) == pytest.approx(f["text_to_image"] + 2.6 + 6.0)
    # Figures are per profile name: mora's shipped figures are untouched by tiny's.
    mora = load_profile("mora")
    assert again.step_s(mora, "image_to_video") == mora.step_seconds["image_to_video"]
    stored = json.loads((cache / "step_costs.json").read_text())
    assert stored["profiles"]["tiny"]["steps"]["image_to_video"]["n"] == 2
    assert not list(cache.glob(".*tmp*"))  # atomic writes leave no temp file
    with pytest.raises(ValueError, match="unknown tool 'paint'"):
        costs.record("tiny", "paint", 1.0)
    with pytest.raises(ValueError, match="seconds must be a finite number"):
        costs.record("tiny", "image_to_video", -1.0)


@pytest.mark.unit
def test_a_corrupt_step_costs_file_is_ignored(cache: Path, caplog: pytest.LogCaptureFixture):
    tiny = load_profile("tiny")
    shipped = estimate(_t2v(), tiny, StepCosts(path=None))
    cache.mkdir(parents=True)
    path = cache / "step_costs.json"
    for text in ("{not json", "[1, 2]", '{"profiles": {"tiny": {"steps": {"image_to_video": {"seconds": -5}}}}}'):
        path.write_text(text)
        with caplog.at_level(logging.WARNING, logger="openmora.estimates"):
            caplog.clear()
            assert estimate(_t2v(), tiny, StepCosts()) == pytest.approx(shipped)
        assert "ignoring" in caplog.text
    path.write_bytes(b"\xff\xfe\x00")  # not UTF-8
    assert estimate(_t2v(), tiny) == pytest.approx(shipped)
    # The next measurement replaces the unreadable file with a valid one.
    StepCosts().record("tiny", "text_to_image", 1.0)
    assert json.loads(path.read_text())["profiles"]["tiny"]["steps"]["text_to_image"]["seconds"] == 1.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("step_seconds", {"make_magic": 1.0}, "step_seconds has unknown tool 'make_magic'; accepted: enhance_prompt"),
        ("step_seconds", {"text_to_image": -1}, "step_seconds.text_to_image must be a number of seconds >= 0"),
        ("step_seconds", {"text_to_image": "fast"}, "step_seconds.text_to_image must be a number of seconds >= 0"),
        ("step_seconds", [1, 2], "step_seconds must map tool names to seconds"),
        ("load_seconds", {"image_agent": 2.0}, "load_seconds has unknown role 'image_agent'; accepted: text_to_image"),
    ],
)
def test_bad_step_seconds_in_a_profile_file_are_refused_in_one_line(tmp_path: Path, key, value, message):
    data = yaml.safe_load((PROFILES_DIR / "tiny.yaml").read_text())
    data[key] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.unit
def test_skipped_steps_are_left_out(cache: Path):
    tiny = load_profile("tiny")
    f, full = tiny.step_seconds, estimate(_t2v(), tiny)
    assert full is not None
    assert estimate(_t2v(), tiny, skip={"s2"}) == pytest.approx(full - f["text_to_image"])
    assert estimate(_t2v(), tiny, skip={"s1", "s2", "s3"}) == pytest.approx(2 * f["extend_video"])
    assert estimate(_t2v(), tiny, skip={"s1", "s2", "s3", "s4"}) == 0.0


@pytest.mark.unit
def test_a_missing_figure_gives_none_not_a_guess(cache: Path):
    modern, tiny = load_profile("modern"), load_profile("tiny")
    assert modern.step_seconds == {}
    assert estimate(_t2v(), modern) is None
    assert estimate(_t2v(), modern, skip={"s2", "s3", "s4"}) == 0.0  # only the prompt step: no model work
    lowvram = load_profile("mora-lowvram")
    assert "text_to_image" not in lowvram.step_seconds and estimate(_t2v(), lowvram) is None
    extend = template_plan("extend", "more", segments=2)
    assert estimate(extend, lowvram) == pytest.approx(2 * lowvram.step_seconds["extend_video"])
    # The fast variant runs other settings: the shipped figures (measured without it) do not apply.
    assert estimate(_t2v(), fast_variant(tiny)) is None
    # Loads: tiny ships connect_frames' first load, not text_to_image's.
    connect = template_plan("connect", "")
    f, loads = tiny.step_seconds, tiny.load_seconds
    assert estimate(connect, tiny, include_load=True) == pytest.approx(f["connect_clips"] + loads["connect_frames"])
    assert estimate(_t2v(), tiny, include_load=True) is None
    StepCosts().record_load("tiny", "text_to_image", 1.5)
    StepCosts().record_load("tiny", "image_to_video", 2.5)
    assert estimate(_t2v(), tiny, include_load=True) == pytest.approx(estimate(_t2v(), tiny) + 4.0)


@pytest.mark.unit
def test_a_runs_transcript_updates_the_figures(cache: Path, tmp_path: Path):
    tiny = load_profile("tiny")

    def run(name: str, load_s: float) -> Path:
        (tmp_path / name).mkdir()
        t = Transcript(tmp_path / name / "transcript.jsonl")
        record_tool_call(t, "prompt_agent", "enhance_prompt", {"prompt": "x"}, result="a red x", seconds=0.5)
        record_tool_call(t, "image_agent", "text_to_image", {"prompt": "x"}, result="img", seconds=3.0)
        record_tool_call(t, "video_agent", "image_to_video", {"image_id": "image-0001"}, error=ValueError("no"))
        record_tool_call(t, "video_agent", "image_to_video", {"image_id": "image-0001"}, result="c1", seconds=9.0)
        args = {"clip_id": "clip-0001", "segments": 2}
        record_tool_call(t, "video_agent", "extend_video", args, result="c2", seconds=8.0)
        record_tool_call(t, "video_agent", "extend_video", args, result="c2", seconds=0.0, reused=True)
        t.record("run_end", agent="orchestrator", seconds=21.0, status="done", timings={"load_s": load_s})
        return t.path

    costs = StepCosts()
    # Nothing loaded in this run (a warm process): every successful, not-reused call counts.
    assert costs.record_transcript("tiny", run("warm", 0.0)) == 4
    assert costs.step_s(tiny, "enhance_prompt") == 0.5
    assert costs.step_s(tiny, "text_to_image") == 3.0
    assert costs.step_s(tiny, "image_to_video") == 9.0  # the failed call is not a figure
    assert costs.step_s(tiny, "extend_video") == 4.0  # 8 s for 2 segments; the reused line is not a call
    # A run that loaded pipelines: each role's first call held its load, so it is left out.
    assert StepCosts().record_transcript("tiny", run("cold", 5.0)) == 2  # enhance_prompt and extend_video
    again = StepCosts()
    assert again.step_s(tiny, "text_to_image") == 3.0 and again.step_s(tiny, "image_to_video") == 9.0
    assert again.measured("tiny", "extend_video") == pytest.approx(4.0)
