"""The replay notebook and its helper: a real tiny run, executed headless; find_run; unsafe manifest paths refused."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from openmora import Orchestrator, replay

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "replay.ipynb"
HEAVY = ("torch", "diffusers", "transformers")
# Appended to the notebook in memory only: which interpreter ran the kernel, and what the helper imported.
PROBE = f"import json, sys\nprint(json.dumps({{'prefix': sys.prefix, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"


@pytest.fixture(scope="module")
def fox_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "fox"
    Orchestrator(profile="tiny").run("text-to-video", prompt="a fox running through snow at dusk", segments=2, out=out)
    return out


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _execute(cwd: Path) -> tuple[str, dict]:
    """Run the notebook with a python3 kernel started in ``cwd``; return its HTML/text output and the probe's."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(cwd)}}).execute()
    chunks = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            if output["output_type"] == "stream":
                chunks.append(output["text"])
            else:
                chunks += [output["data"].get("text/html", ""), output["data"].get("text/plain", "")]
    probe = json.loads(nb.cells[-1]["outputs"][0]["text"])
    return "\n".join(chunks), probe


@pytest.mark.parametrize("cwd", ["notebooks", "."], ids=["cwd-notebooks", "cwd-root"])
@pytest.mark.integration
def test_notebook_replays_the_run(fox_run: Path, cwd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMORA_RUN", str(fox_run))
    html, probe = _execute(ROOT / cwd)
    manifest = _manifest(fox_run)
    images = [a for a in manifest["artifacts"] if a["kind"] == "image"]
    clips = [a for a in manifest["artifacts"] if a["kind"] == "video"]
    assert images and len(clips) == 2
    # Each image once, each clip once where it was made, the final video once more at the end; all embedded.
    assert html.count("<img ") == len(images)
    assert html.count("<video") == len(clips) + 1
    for art in manifest["artifacts"]:
        assert _b64(fox_run / art["path"]) in html
    assert _b64(fox_run / "final.mp4") in html.split("Final video", 1)[1]
    events = [json.loads(line) for line in (fox_run / "transcript.jsonl").read_text().splitlines()]
    for name in {e["tool"] for e in events if e["tool"]} | {e["agent"] for e in events}:
        assert name in html
    assert "a fox running through snow at dusk" in html and "tiny" in html
    # The same quality scores as scores.json (and the report): each clip's overall and its joins.
    scores = json.loads((fox_run / "scores.json").read_text())
    assert "Quality scores" in html
    for clip in scores["clips"]:
        assert f"<b>{clip['id']}</b> ({clip['tool']}): overall {clip['overall']:.3f}" in html
    assert f"frame {scores['clips'][-1]['joins'][0]['frame']} (segment)" in html
    # The kernel is this venv's interpreter, and the helper loaded no model library.
    assert Path(probe["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert probe["heavy"] == []


@pytest.mark.integration
def test_notebook_replays_a_group_chat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner's plan, its turns and the agents' messages, from an ``auto`` chat scripted with the replay client
    (one script: the planner's plan, then the prompt agent's prompt)."""
    prompt = "A red fox bounds through deep powder snow at dusk"
    script = tmp_path / "replay.json"
    script.write_text(json.dumps([json.dumps({"template": "text-to-video", "prompt": "a fox in snow"}), prompt]))
    r = Orchestrator(profile="tiny", llm=f"replay:{script}").run(
        "auto", prompt="a fox in snow", segments=1, out=tmp_path / "chat"
    )
    monkeypatch.setenv("OPENMORA_RUN", str(r.run_dir))
    html, probe = _execute(ROOT / "notebooks")
    events = [json.loads(line) for line in (r.run_dir / "transcript.jsonl").read_text().splitlines()]
    planner = [e for e in events if e["type"] == "planner"]
    assert planner and [e for e in events if e["type"] == "message"]
    assert "raw choice" in html and "(next_speaker) candidates: planner" in html
    assert "plan attempt 1" in html and "s2 image_agent: text_to_image(prompt=$s1)" in html
    assert "prompt_agent</b> says:" in html and prompt in html
    assert html.count("<img ") == 1 and html.count("<video") == 2
    assert probe["heavy"] == []


@pytest.mark.integration
def test_helper_imports_no_model_library(fox_run: Path) -> None:
    code = (
        "import json, sys\n"
        "from openmora import replay\n"
        "run = replay.load_run(replay.find_run())\n"
        "html = [replay.render_event(e, run).data for e in run.events]\n"
        "replay.show_conversation()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "OPENMORA_RUN": str(fox_run)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _fake_run(folder: Path, mtime: float) -> Path:
    folder.mkdir(parents=True)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"run": {"task": "extend"}, "artifacts": []}))
    os.utime(manifest, (mtime, mtime))
    return folder


@pytest.mark.unit
def test_find_run_argument_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _fake_run(tmp_path / "a", 1_000)
    b = _fake_run(tmp_path / "b", 2_000)
    monkeypatch.setenv("OPENMORA_RUN", str(a))
    assert replay.find_run() == a.resolve()
    assert replay.find_run(b) == b.resolve()
    monkeypatch.setenv("OPENMORA_RUN", str(tmp_path / "nowhere"))
    with pytest.raises(replay.RunNotFoundError, match="OPENMORA_RUN"):
        replay.find_run()


@pytest.mark.unit
def test_find_run_falls_back_to_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENMORA_RUN", raising=False)
    monkeypatch.setenv("OPENMORA_RUNS", str(tmp_path / "runs"))
    _fake_run(tmp_path / "runs" / "zzz-older", 1_000)
    newest = _fake_run(tmp_path / "runs" / "aaa-newer", 3_000)
    (tmp_path / "runs" / "not-a-run").mkdir()  # newer, but no manifest
    assert replay.find_run() == newest.resolve()


@pytest.mark.unit
def test_find_run_says_so_when_there_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENMORA_RUN", raising=False)
    monkeypatch.setenv("OPENMORA_RUNS", str(tmp_path))
    with pytest.raises(replay.RunNotFoundError) as err:
        replay.find_run()
    message = str(err.value)
    assert "\n" not in message and "OPENMORA_RUN" in message and "openmora run" in message


@pytest.mark.integration
def test_paths_outside_the_run_are_refused(fox_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(fox_run, run)
    # Real files outside the run folder, of the kinds the replay would embed.
    secret_png = tmp_path / "secret.png"
    secret_png.write_bytes(b"\x89PNG secret image outside the run")
    secret_mp4 = tmp_path / "secret.mp4"
    secret_mp4.write_bytes(b"secret video outside the run")
    (run / "clips" / "link.mp4").symlink_to(secret_mp4)
    manifest = _manifest(run)
    paths = {"img-0001": "../../etc/passwd", "clip-0001": "../secret.png", "clip-0002": str(secret_mp4)}
    for art in manifest["artifacts"]:
        art["path"] = paths[art["id"]]
    manifest["run"]["final_video"] = "clips/link.mp4"
    (run / "manifest.json").write_text(json.dumps(manifest))

    shown: list = []
    monkeypatch.setattr(replay, "display", lambda *objs, **kw: shown.extend(objs))
    replay.show_conversation(run)
    html = "\n".join(obj.data for obj in shown)
    assert "<img" not in html and "<video" not in html
    assert html.count("refused") == 4
    for secret in (secret_png, secret_mp4):
        assert _b64(secret) not in html
    assert "root:" not in html
    with pytest.raises(replay.UnsafePathError):
        replay.load_run(run).path("../../etc/passwd")


@pytest.mark.unit
def test_planner_message_and_error_events_render() -> None:
    run = replay.Run(Path("/nonexistent"), meta={})
    planner = replay.render_event(
        {
            "step": 4,
            "type": "planner",
            "agent": "planner",
            "candidates": ["image_agent", "video_agent"],
            "raw_choice": "the video agent please",
            "valid": False,
            "fallback_used": True,
            "chosen": "video_agent",
            "decision": "next",
            "reason": "the clip is missing",
        },
        run,
    ).data
    assert "image_agent, video_agent" in planner and "the video agent please" in planner
    assert "fallback used" in planner and "invalid" in planner
    assert "(next)" in planner and "the clip is missing" in planner
    message = replay.render_event({"step": 5, "type": "message", "agent": "video_agent", "text": "<b>hi</b>"}, run).data
    assert "video_agent" in message and "&lt;b&gt;hi&lt;/b&gt;" in message
    error = replay.render_event(
        {"step": 6, "type": "tool_call", "agent": "video_agent", "tool": "extend_video", "error": "no clip-0009"}, run
    ).data
    assert "color:#c62828" in error and "no clip-0009" in error
    plan = replay.render_event(
        {
            "step": 2,
            "type": "plan",
            "agent": "planner",
            "attempt": 1,
            "source": "llm",
            "valid": False,
            "problems": ["s1: unknown tool 'paint'"],
            "steps": [{"id": "s1", "agent": "", "tool": "paint", "args": {"prompt": "a fox", "seed": 3}}],
        },
        run,
    ).data
    assert "plan attempt 1 (llm)" in plan and "cannot run" in plan and "problem: s1: unknown tool" in plan
    assert "s1 ?: paint(prompt=a fox)" in plan and "seed" not in plan
    reused = replay.render_event(
        {"step": 8, "type": "tool_call", "agent": "image_agent", "tool": "text_to_image", "reused": True}, run
    ).data
    assert "reused from the step cache" in reused
    failed = replay.render_event(
        {"step": 7, "type": "message", "agent": "video_agent", "text": "Error: x", "error": True}, run
    )
    assert "color:#c62828" in failed.data and "True" not in failed.data
