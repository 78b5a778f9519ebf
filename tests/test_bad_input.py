"""Bad input: a one-line message naming the problem and what is accepted, exit code 2, nothing written."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.errors import ToolArgumentError

ROOT_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once for every case (a 9000-px PNG, an ffmpeg-made MP4), read-only: no case may change them."""
    tmp_path = tmp_path_factory.mktemp("bad-input")
    files = {}
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("just some words\n")
    files["fake_png"] = tmp_path / "fake.png"
    files["fake_png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    files["fake_mp4"] = tmp_path / "fake.mp4"
    files["fake_mp4"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    files["tiny_png"] = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files["tiny_png"])
    files["huge_png"] = tmp_path / "huge.png"
    Image.fromarray(np.zeros((20, 9000, 3), np.uint8)).save(files["huge_png"])
    files["empty"] = tmp_path / "empty.mp4"
    files["empty"].write_bytes(b"")
    # A real MP4 container holding only audio: zero video frames.
    import imageio_ffmpeg

    files["audio_only"] = tmp_path / "audio.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=8000:cl=mono",
            "-t",
            "0.5",
            "-c:a",
            "aac",
            str(files["audio_only"]),
        ],
        check=True,
    )
    files["a_file"] = tmp_path / "occupied"
    files["a_file"].write_text("not a folder")
    for path in files.values():  # shared by every case: one that writes to a file fails instead of changing it
        path.chmod(0o444)
    return files


CASES = {
    "missing image": (["run", "image-to-video", "--image", "{tmp}/nope.png"], "does not exist"),
    "text as image": (["run", "image-to-video", "--image", "{text}"], "not a readable image"),
    "corrupt image": (["run", "image-to-video", "--image", "{fake_png}"], "not a readable image"),
    "image too small": (["run", "image-to-video", "--image", "{tiny_png}"], "between 16 and 8192"),
    "image too large": (["run", "image-to-video", "--image", "{huge_png}"], "between 16 and 8192"),
    "missing video": (["run", "extend", "--video", "{tmp}/nope.mp4"], "does not exist"),
    "text as video": (["run", "extend", "--video", "{text}"], "not a readable video"),
    "corrupt video": (["run", "extend", "--video", "{fake_mp4}"], "not a readable video"),
    "empty video file": (["run", "extend", "--video", "{empty}"], "not a readable video"),
    "zero-frame video": (["run", "extend", "--video", "{audio_only}"], "has no video frames"),
    "folder as video": (["run", "extend", "--video", "{tmp}"], "is a folder"),
    "unknown task": (["run", "make-movie", "--prompt", "x"], "invalid choice"),
    "unknown option": (["run", "text-to-video", "--prompt", "x", "--colour", "red"], "unrecognized arguments"),
    "unknown profile": (["run", "text-to-video", "--prompt", "x", "--profile", "huge"], "unknown profile 'huge'"),
    "missing profile file": (["run", "text-to-video", "--prompt", "x", "--profile", "{tmp}/p.yaml"], "does not exist"),
    "empty prompt": (["run", "text-to-video", "--prompt", "  "], "--prompt is empty"),
    "prompt too long": (["run", "text-to-video", "--prompt", "fox " * 600], "--prompt is 2399 characters; at most"),
    "edit prompt too long": (["run", "edit", "--video", "{tmp}/x.mp4", "--prompt", "x" * 2001], "at most 2000"),
    "story shot too long": (["run", "story", "--prompt", "A fox wakes. " + "y" * 2100], "story shot 2 is 2100"),
    "no prompt": (["run", "text-to-video"], "needs --prompt"),
    "edit without prompt": (["run", "edit", "--video", "{tmp}/x.mp4"], "needs --prompt"),
    "connect with one video": (["run", "connect", "--video", "{tmp}/x.mp4"], "--video twice"),
    "image for text-to-video": (["run", "text-to-video", "--prompt", "x", "--image", "{text}"], "takes no --image"),
    "out is a file": (["run", "text-to-video", "--prompt", "x", "--out", "{a_file}"], "is a file"),
    "bad segments": (["run", "text-to-video", "--prompt", "x", "--segments", "0"], "--segments"),
    "negative seed": (["run", "text-to-video", "--prompt", "x", "--seed", "-1"], "--seed"),
    "unknown llm": (["run", "text-to-video", "--prompt", "x", "--llm", "gpt-99"], "unknown --llm"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_exit_2_nothing_written(case: str, bad_files: dict, tmp_path: Path, capsys) -> None:
    argv, expected = CASES[case]
    names = {k: str(v) for k, v in bad_files.items()} | {"tmp": str(tmp_path)}
    argv = [a.format(**names) for a in argv]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    shared = next(iter(bad_files.values())).parent
    before = sorted(p.name for p in tmp_path.iterdir())
    shared_before = sorted(p.name for p in shared.iterdir())
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in shared.iterdir()) == shared_before


def test_out_folder_with_files_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "run", "text-to-video", "--prompt", "x", "--out", str(out))
    assert code == 2 and "already holds files" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_orchestrator_script_bad_input_has_no_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    """`python orchestrator.py ...` as a script (its __main__ block), in-process: the cold process of the command is
    tests/test_chat_cli.py's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["orchestrator.py", "run", "extend", "--video", str(tmp_path / "missing.mp4")])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT_DIR / "orchestrator.py"), run_name="__main__")
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().splitlines() == [
        f"error: video {tmp_path / 'missing.mp4'} does not exist; pass an MP4, MOV, WebM or AVI file"
    ]
    assert not (tmp_path / "runs").exists()


def test_help_explains_every_option(capsys) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--prompt", "--image", "--video", "--profile", "--out", "--seed", "--segments", "--llm"):
        assert option in text
    for task in ("text-to-video", "image-to-video", "extend", "edit", "connect", "digital-world"):
        assert task in text


@pytest.mark.parametrize(
    "bad_id", ["../../etc/passwd", "/etc/passwd", "img-0001/../../x", "clip-9999", "img-1", "IMG-0001; rm -rf /"]
)
def test_ids_from_outside_never_leave_the_run_folder(tmp_path: Path, bad_id: str) -> None:
    store = ArtifactStore(tmp_path / "run")
    store.add_image(np.zeros((64, 96, 3), np.uint8), tool="test")
    with pytest.raises(ToolArgumentError) as exc:
        store.path(bad_id)
    assert len(str(exc.value).splitlines()) == 1
    assert "img-0001" in str(exc.value)  # the message lists what would be accepted


@pytest.mark.parametrize("rel", ["../x.png", "/etc/passwd", "images/../../x"])
def test_paths_from_outside_never_leave_the_run_folder(tmp_path: Path, rel: str) -> None:
    store = ArtifactStore(tmp_path / "run")
    with pytest.raises(ToolArgumentError):
        store.resolve(rel)


def test_wrong_kind_of_artifact_is_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "run")
    img = store.add_image(np.zeros((64, 96, 3), np.uint8), tool="test")
    with pytest.raises(ToolArgumentError, match="is an image, but a video is needed"):
        store.frames(img.id)


def test_odd_sizes_are_refused_by_the_writer(tmp_path: Path) -> None:
    from openmora.video_io import write_video

    with pytest.raises(ValueError, match="even sizes"):
        write_video(np.zeros((3, 63, 96, 3), np.uint8), 7, tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []


def test_bad_profile_yaml_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nroles:\n  text_to_image: {pipeline: StableDiffusionPipeline}\n")
    code, err = run_cli(
        capsys, "run", "text-to-video", "--prompt", "x", "--profile", str(bad), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "'model' must be a non-empty string" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("roles: [unclosed\n")
    code, err = run_cli(
        capsys, "run", "text-to-video", "--prompt", "x", "--profile", str(broken), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "not readable YAML" in err
