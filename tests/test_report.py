"""The run report (openmora.quality.report): a real tiny story run, with and without scores, offline, escaped, and
refused (with nothing written) when the manifest points outside the run folder."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from openmora import Orchestrator
from openmora.errors import InputError
from openmora.quality import report as report_module
from openmora.quality.report import REPORT, report_summary, write_report
from openmora.replay import UnsafePathError

pytestmark = pytest.mark.integration

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def story_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-shot story on the tiny profile, scored and reported by the engine as it finishes (read-only for the
    tests: each one that changes it copies it first)."""
    out = tmp_path_factory.mktemp("report") / "run"
    Orchestrator(profile="tiny", llm="none", report=True).run("story", prompt=f"a fox {EVIL}; a deer", out=out)
    return out


def copy_run(run: Path, tmp_path: Path, scored: bool = True) -> Path:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    if not scored:
        (copy / "scores.json").unlink()
        (copy / REPORT).unlink()
    return copy


def assert_offline_and_escaped(text: str) -> None:
    """Nothing to fetch (no URL, no root-relative source); the prompt's script is text, never markup."""
    assert "http://" not in text and "https://" not in text and 'src="/' not in text
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def synthetic_scores(run: Path) -> dict[str, Any]:
    """Scores shaped like scores.json for every clip; the final clip's joins sit where its parts meet, the second
    one marked as a cut, and the first clip records two takes."""
    m = manifest(run)
    arts = {a["id"]: a for a in m["artifacts"]}
    clips = []
    for a in (a for a in m["artifacts"] if a["kind"] == "video"):
        n = a["frames"]
        clip: dict[str, Any] = {
            "id": a["id"],
            "path": a["path"],
            "frames": n,
            "fps": a["fps"],
            "overall": 0.5,
            "metrics": {
                "temporal_flickering": {
                    "value": 0.93,
                    "higher_is_better": True,
                    "method": "vbench",
                    "series": [0.9 + 0.001 * i for i in range(n - 1)],
                },
                "imaging_quality": {
                    "value": 0.55,
                    "higher_is_better": True,
                    "method": "estimator: BRISQUE",
                    "brisque": 45.0,
                    "series": [44.0, 46.0],
                    "frames": [0, n - 1],
                },
            },
        }
        if a["tool"] == "join_clips":
            joins, at = [], 0
            for i, (before, after) in enumerate(zip(a["parents"], a["parents"][1:], strict=False)):
                at += arts[before]["frames"]
                joins.append(
                    {"frame": at, "kind": "shot", "before": before, "after": after, "psnr": 20.0 - i, "cut": i == 1}
                )
            clip["joins"] = joins
        clips.append(clip)
    clips[0]["takes"] = [
        {"seed": 1, "outputs": [clips[0]["id"]], "overall": 0.71, "kept": True},
        {"seed": 1001, "outputs": ["clip-0099"], "overall": 0.64, "kept": False},
    ]
    return {"version": 1, "source": "run", "final": m["run"]["final"], "notes": ["pixel statistics"], "clips": clips}


def png_of(report: str, alt: str) -> Image.Image:
    match = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="' + re.escape(alt) + '"', report)
    assert match, f"no inline PNG with alt {alt!r}"
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.format == "PNG"
    return image


def test_report_shows_plan_clips_plots_joins_offline(story_run: Path, tmp_path: Path) -> None:
    run = copy_run(story_run, tmp_path)
    scores = synthetic_scores(run)
    path = write_report(run, scores)
    assert path == run / REPORT and path.is_file()
    text = path.read_text()
    steps = json.loads((run / "plan_state.json").read_text())["plan"]["steps"]
    assert {s["tool"] for s in steps} >= {"enhance_prompt", "text_to_image", "image_to_video", "join_clips"}
    for s in steps:
        assert f"<code>{s['tool']}</code>" in text
    clip_ids = [a["id"] for a in manifest(run)["artifacts"] if a["kind"] == "video"]
    assert len(clip_ids) == 4
    for cid in clip_ids:
        assert f"Clip {cid}" in text
        sheet = png_of(text, f"contact sheet of {cid}")
        # 8 frames of 96x64 in 4 columns, labelled: 2 rows of cells at the clip's own size.
        assert 4 * 96 <= sheet.width <= 4 * 320 + 64 and 2 * 64 < sheet.height < 2 * 64 + 80
        plot = png_of(text, f"metric series of {cid}")
        assert plot.width > 300 and plot.height > 100
    # The final clip joins 3 parts: 2 joins with the frame pair at each, the cut highlighted.
    final = manifest(run)["run"]["final"]
    assert "<h3>Joins</h3>" in text and text.count('class="join') == 2 and text.count('class="join cut"') == 1
    first_join = next(c for c in scores["clips"] if c["id"] == final)["joins"][0]["frame"]
    pair = png_of(text, f"frames {first_join - 1} and {first_join}")
    assert pair.width == 2 * 96 + 6
    assert "Takes (best of N)" in text and "clip-0099" in text and "dropped" in text
    assert "temporal_flickering" in text and "estimator: BRISQUE" in text and "brisque=45.000" in text
    assert "<h2>Timings</h2>" in text and "<h2>Images</h2>" in text and "img-0002" in text
    assert '<video controls loop muted style="min-width:320px"><source src="data:video/mp4;base64,' in text
    assert_offline_and_escaped(text)
    assert len(path.read_bytes()) < 2 * 2**20
    assert report_summary(run) == f"report: {path} ({path.stat().st_size / 1024:.0f} KB)"


def test_engine_report_shows_the_real_scores(story_run: Path) -> None:
    scores = json.loads((story_run / "scores.json").read_text())
    text = (story_run / REPORT).read_text()
    assert_offline_and_escaped(text)
    final = next(c for c in scores["clips"] if c["id"] == scores["final"])
    assert f"<p>overall: <b>{final['overall']:.3f}</b></p>" in text
    for name in final["metrics"]:
        assert f"<b>{name}</b>" in text
    assert text.count('class="join') == len(final["joins"]) == 2
    for key in ("psnr", "ssim", "hist_distance", "flow_jump"):
        assert f"<th>{key}</th>" in text
    png_of(text, f"metric series of {final['id']}")
    assert "not scored yet" not in text


def test_report_without_scores_says_how_to_score(
    story_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(story_run, tmp_path, scored=False)
    # A final video over the embedding limit is linked relative to the report, not embedded.
    monkeypatch.setattr(report_module, "MAX_INLINE_VIDEO_BYTES", 1000)
    text = write_report(run).read_text()
    assert '<a href="final.mp4">final.mp4</a>' in text and "data:video/mp4" not in text
    assert "not scored yet (run: openmora score RUN)" in text
    assert "temporal_flickering" not in text
    # Unscored, the joined clip's joins still show where its parts meet (from the manifest's frame counts).
    assert text.count('class="join"') == 2 and 'class="join cut"' not in text
    png_of(text, "contact sheet of clip-0001")
    # scores.json in the run folder is read when no scores are passed, and partial scores do not break it.
    (run / "scores.json").write_text(json.dumps({"clips": [{"id": "clip-0002", "overall": 0.42, "metrics": {}}]}))
    text = write_report(run).read_text()
    assert "not scored yet" in text  # the clips without scores still say so
    assert "overall: <b>0.420</b>" in text
    with pytest.raises(InputError, match="scores must be"):
        write_report(run, ["not", "a", "dict"])  # type: ignore[arg-type]


def test_manifest_path_outside_run_is_refused_and_nothing_written(story_run: Path, tmp_path: Path) -> None:
    run = copy_run(story_run, tmp_path, scored=False)
    old = write_report(run).read_bytes()
    data = manifest(run)
    clip = next(a for a in data["artifacts"] if a["kind"] == "video")
    clip["frames_path"] = None
    clip["path"] = "../../outside.mp4"
    (run / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UnsafePathError, match="outside the run folder"):
        write_report(run)
    assert (run / REPORT).read_bytes() == old  # the last good report stays, whole
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    (run / REPORT).unlink()
    with pytest.raises(UnsafePathError):
        write_report(run, synthetic_scores(story_run))
    assert not (run / REPORT).exists() and not [p for p in run.iterdir() if ".tmp" in p.name]
