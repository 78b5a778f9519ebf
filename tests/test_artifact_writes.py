"""The artifact store writes files in the background -- clips encoded while they grow, images and clips
usable at once, the manifest and the plan state naming only files on disk, failures that leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from openmora import video_io
from openmora.artifacts import ArtifactStore
from openmora.errors import ArtifactWriteError
from openmora.video_io import FrameSink, lower_thread_priority, read_frames

torch.set_num_threads(1)
pytestmark = pytest.mark.unit


def _frames(n: int, seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _files(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*") if p.is_file() and p.name != "manifest.json")


def test_a_clip_streamed_in_pieces_equals_one_written_whole(tmp_path: Path) -> None:
    a, b, c = _frames(5, 1), _frames(4, 2), _frames(3, 3)
    store = ArtifactStore(tmp_path / "run")
    stream = store.open_video(7)
    for piece in (a, b, c):
        stream.append(piece)
    streamed = stream.close(tool="test", description="streamed")
    whole = store.add_video(np.concatenate([a, b, c]), 7, tool="test")
    assert streamed.frames == whole.frames == 12 and (streamed.width, streamed.height) == (64, 48)
    assert np.array_equal(store.frames(streamed.id), np.concatenate([a, b, c]))  # usable before its files exist
    store.flush()
    assert not store.pending
    assert np.array_equal(read_frames(store.path(streamed.id).with_suffix(".lossless.mkv")), np.concatenate([a, b, c]))
    assert store.path(streamed.id).read_bytes() == store.path(whole.id).read_bytes()  # same encoder, same bytes
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [(x["id"], len(x["sha256"])) for x in manifest["artifacts"]] == [(streamed.id, 64), (whole.id, 64)]
    assert not [p for p in (tmp_path / "run").rglob("*.tmp*")]


def test_bad_frames_are_refused_at_once_and_an_aborted_clip_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "run")
    stream = store.open_video(7)
    stream.append(_frames(3))
    with pytest.raises(ValueError, match="one size: 64x48 so far, then 32x48"):
        stream.append(_frames(2, w=32))
    with pytest.raises(ValueError, match="even sizes"):
        store.add_video(_frames(2, w=63), 7, tool="test")
    with pytest.raises(ValueError, match="uint8 frames"):
        store.add_video(np.zeros((2, 48, 64, 3), np.float32), 7, tool="test")
    stream.abort()
    store.flush()
    assert _files(tmp_path / "run") == [] and store.ids() == []
    # the aborted clip's id is free again
    assert store.add_video(_frames(2), 7, tool="test").id == "clip-0001"


def test_a_failed_encode_is_reported_once_files_and_state_are_not_written(tmp_path: Path, monkeypatch) -> None:
    real = FrameSink._write

    def failing(self, frames):  # the lossless encoder fails (a full disk, a broken ffmpeg)
        if self.path.suffix == ".mkv":
            raise OSError("No space left on device")
        return real(self, frames)

    monkeypatch.setattr(FrameSink, "_write", failing)
    store = ArtifactStore(tmp_path / "run")
    saved: list[str] = []
    img = store.add_image(_frames(1)[0], tool="test")
    clip = store.add_video(_frames(4), 7, tool="test")  # returns: the failure happens in the background
    store.on_written(lambda: saved.append("state"))
    with pytest.raises(ArtifactWriteError, match=rf"writing {clip.id} .* failed: No space left on device"):
        store.flush()
    assert saved == []  # a plan state naming the clip is never written
    assert _files(tmp_path / "run") == [f"{img.id}.png"]  # the image is fine; no MP4, no temp files
    assert [a["id"] for a in json.loads((tmp_path / "run" / "manifest.json").read_text())["artifacts"]] == [img.id]
    with pytest.raises(ArtifactWriteError):  # and the store refuses more work
        store.add_image(_frames(1)[0], tool="test")


def test_writes_run_beside_the_caller_and_callbacks_follow_them_in_order(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    real = FrameSink._write

    def slow(self, frames):
        gate.wait(10)
        return real(self, frames)

    monkeypatch.setattr(FrameSink, "_write", slow)
    store = ArtifactStore(tmp_path / "run")
    order: list[str] = []
    clip = store.add_video(_frames(3), 7, tool="test")
    store.on_written(lambda: order.append(f"after {clip.id}: {store.path(clip.id).is_file()}"))
    # the caller goes on while the encoder waits: the clip is known, its pixels usable, its file not there yet
    assert store.pending == [clip.id] and store.frames(clip.id).shape == (3, 48, 64, 3)
    assert not (tmp_path / "run" / clip.path).exists() and order == []
    gate.set()
    store.flush()
    assert order == [f"after {clip.id}: True"] and store.pending == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities (nice per thread) are Linux's")
def test_encoders_run_nicer_than_the_thread_that_feeds_the_gpu(tmp_path: Path, monkeypatch) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict = {}

    def worker() -> None:
        seen["changed"] = lower_thread_priority(5)
        probe = "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"
        seen["child"] = int(subprocess.check_output([sys.executable, "-c", probe]))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["changed"] and seen["child"] == min(19, base + 5)  # a process started from the thread inherits it
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's thread keeps its own
    assert not lower_thread_priority(0)

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(video_io, "lower_thread_priority", lambda n: calls.append((threading.current_thread().name, n)))
    sink = FrameSink(tmp_path / "a.mp4", 7, **video_io.MP4_SETTINGS)
    sink.put(_frames(3))
    sink.finish()
    assert calls == [("encode-a.mp4", sink.nice)] and sink.nice == 10  # the default OPENMORA_ENCODE_NICE
    assert read_frames(tmp_path / "a.mp4").shape == (3, 48, 64, 3)


class _InterruptedWait:
    """A pending write whose wait is interrupted by Ctrl-C (KeyboardInterrupt lands in the waiting thread)."""

    def result(self) -> None:
        raise KeyboardInterrupt


def test_waiting_for_a_write_never_swallows_ctrl_c(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "run")
    store._pending["img-0001"] = _InterruptedWait()
    with pytest.raises(KeyboardInterrupt):
        store.wait("img-0001")


def test_close_waits_for_the_writes_and_stops_the_writer(tmp_path: Path) -> None:
    with ArtifactStore(tmp_path / "run") as store:
        clip = store.add_video(_frames(4), 7, tool="test")
        writer_threads = list(store._writer._threads)
    assert writer_threads and not any(t.is_alive() for t in writer_threads)
    assert store.pending == [] and (tmp_path / "run" / clip.path).is_file()
    assert [a["id"] for a in json.loads((tmp_path / "run" / "manifest.json").read_text())["artifacts"]] == [clip.id]
    store.close()  # idempotent
    store.flush()  # nothing left to wait for
    np.testing.assert_array_equal(store.frames(clip.id), _frames(4))  # still readable, from disk
    with pytest.raises(RuntimeError, match="is closed"):
        store.add_image(_frames(1)[0], tool="test")
    with pytest.raises(RuntimeError, match="is closed"):
        store.add_video(_frames(2), 7, tool="test")
    assert _files(tmp_path / "run") == [f"{clip.id}.lossless.mkv", f"{clip.id}.mp4"]


def test_frames_in_memory_stay_under_the_bound_and_dropped_clips_read_back_equal(tmp_path: Path) -> None:
    clip_bytes = _frames(4).nbytes
    bound = 2 * clip_bytes + clip_bytes // 2  # room for two clips
    store = ArtifactStore(tmp_path / "run", cache_bytes=bound)
    made = {store.add_video(_frames(4, seed), 7, tool="test").id: _frames(4, seed) for seed in range(5)}
    store.flush()
    assert store.cached_bytes <= bound
    for art_id, frames in made.items():  # the first three were dropped: read back from their lossless copies
        np.testing.assert_array_equal(store.frames(art_id), frames)
        assert store.cached_bytes <= bound
    img = store.add_image(_frames(1, 9)[0], tool="test")  # images share the bound
    store.flush()
    np.testing.assert_array_equal(store.image(img.id), _frames(1, 9)[0])
    assert store.cached_bytes <= bound
    store.close()


def test_pixels_whose_files_are_being_written_stay_in_memory(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    real = FrameSink._write

    def slow(self, frames):
        gate.wait(10)
        return real(self, frames)

    monkeypatch.setattr(FrameSink, "_write", slow)
    store = ArtifactStore(tmp_path / "run", cache_bytes=0)
    clip = store.add_video(_frames(3), 7, tool="test")
    np.testing.assert_array_equal(store.frames(clip.id), _frames(3))  # their only copy: kept over the bound
    assert store.cached_bytes == _frames(3).nbytes
    gate.set()
    store.flush()
    assert store.cached_bytes == 0  # on disk now: dropped, and read back on demand
    np.testing.assert_array_equal(store.frames(clip.id), _frames(3))
    store.close()
