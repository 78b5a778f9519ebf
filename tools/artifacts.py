"""The artifact store: one folder per run, every image and clip written atomically and recorded in manifest.json.

Artifacts are named by id (``img-0003``, ``clip-0002``); tools pass ids, never pixels. Each video also keeps its
exact frames losslessly (``clips/clip-0002.lossless.mkv``) so the next clip chains on the pipeline's own last frame,
not on a lossy decode of the MP4. Ids and paths from outside (a prompt, an LLM, a user) are checked so they can
never resolve outside the run folder.

Example:
    >>> import numpy as np, tempfile
    >>> from tools.artifacts import ArtifactStore
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> art = store.add_image(np.zeros((64, 96, 3), np.uint8), tool="example")
    >>> art.id, art.path
    ('img-0001', 'images/img-0001.png')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tools.errors import ToolArgumentError
from tools.video_io import read_frames, write_image, write_lossless, write_video

MANIFEST = "manifest.json"
ID_PATTERN = re.compile(r"^(img|clip)-(\d{4,6})$")
_PREFIX = {"image": "img", "video": "clip"}


@dataclass
class Artifact:
    """One recorded image or clip. ``path`` is relative to the run folder."""

    id: str
    kind: str  # "image" | "video"
    path: str
    sha256: str
    width: int
    height: int
    tool: str
    parents: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0
    description: str = ""
    frames: int | None = None
    fps: float | None = None
    frames_path: str | None = None
    created: str = ""

    def summary(self) -> str:
        """A one-line description for the chat and the transcript."""
        if self.kind == "video":
            dur = (self.frames or 0) / (self.fps or 1)
            what = f"video {self.width}x{self.height}, {self.frames} frames at {self.fps:g} fps ({dur:.1f} s)"
        else:
            what = f"image {self.width}x{self.height}"
        return f"{self.id}: {what}" + (f" - {self.description}" if self.description else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_clip_files(frames: np.ndarray, fps: float, mp4: Path, lossless: Path) -> None:
    """The MP4 and its lossless copy, encoded at the same time (two ffmpeg processes; bench/bench_encode.py
    measures serial against parallel). If either fails, neither file is left behind."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode") as pool:
        jobs = [pool.submit(write_video, frames, fps, mp4), pool.submit(write_lossless, frames, fps, lossless)]
        errors = [job.exception() for job in jobs]
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        for path in (mp4, lossless):
            path.unlink(missing_ok=True)
        raise failed


class ArtifactStore:
    """The run folder and its manifest.

    Args:
        run_dir: the run folder; created if missing. If it holds a manifest, the store continues it (resume).
        meta: run metadata recorded in the manifest (task, profile, seed...).
    """

    def __init__(self, run_dir: str | Path, meta: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._artifacts: dict[str, Artifact] = {}
        self._frames_cache: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self.encode_seconds = 0.0
        self.on_event = None  # set by the orchestrator: receives {"type": "encode", ...} progress events
        manifest = self.run_dir / MANIFEST
        if manifest.exists():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            self.meta = data.get("run", {})
            for item in data.get("artifacts", []):
                art = Artifact(**item)
                self._artifacts[art.id] = art
        if meta:
            self.meta.update(meta)
        self._save()

    # ----- ids and paths -----------------------------------------------------------------------------------
    def _next_id(self, kind: str) -> str:
        prefix = _PREFIX[kind]
        n = sum(1 for a in self._artifacts.values() if a.kind == kind) + 1
        while f"{prefix}-{n:04d}" in self._artifacts:
            n += 1
        return f"{prefix}-{n:04d}"

    def resolve(self, relative: str | Path) -> Path:
        """The absolute path of ``relative`` inside the run folder; refuses anything that would leave it."""
        candidate = (self.run_dir / relative).resolve()
        if candidate != self.run_dir and self.run_dir not in candidate.parents:
            raise ToolArgumentError(f"path {relative!s} is outside the run folder; use artifact ids such as img-0001")
        return candidate

    def get(self, artifact_id: str, kind: str | None = None) -> Artifact:
        """The artifact with this id; a :class:`ToolArgumentError` naming the known ids if there is none."""
        text = str(artifact_id).strip()
        if not ID_PATTERN.match(text):
            raise ToolArgumentError(
                f"{artifact_id!r} is not an artifact id; ids look like img-0001 or clip-0001 "
                f"(known: {', '.join(self.ids(kind)) or 'none yet'})"
            )
        art = self._artifacts.get(text)
        if art is None:
            raise ToolArgumentError(
                f"no artifact {text} in this run; known {kind or 'artifact'} ids: {', '.join(self.ids(kind)) or 'none'}"
            )
        if kind and art.kind != kind:
            raise ToolArgumentError(
                f"{text} is a{'n' if art.kind == 'image' else ''} {art.kind}, but a{'n' if kind == 'image' else ''} "
                f"{kind} is needed here; {kind} ids: {', '.join(self.ids(kind)) or 'none'}"
            )
        return art

    def ids(self, kind: str | None = None) -> list[str]:
        return [a.id for a in self._artifacts.values() if kind is None or a.kind == kind]

    def artifacts(self) -> list[Artifact]:
        return list(self._artifacts.values())

    def path(self, artifact_id: str) -> Path:
        return self.resolve(self.get(artifact_id).path)

    # ----- reading -------------------------------------------------------------------------------------------
    def image(self, artifact_id: str) -> np.ndarray:
        """The exact pixels of an image artifact, as an RGB ``uint8`` array."""
        from PIL import Image

        with Image.open(self.path(self.get(artifact_id, "image").id)) as im:
            return np.asarray(im.convert("RGB"))

    def frames(self, artifact_id: str) -> np.ndarray:
        """The exact frames of a clip (from its lossless copy), ``(T, H, W, 3)`` ``uint8``."""
        art = self.get(artifact_id, "video")
        cached = self._frames_cache.get(art.id)
        if cached is not None:
            return cached
        if art.frames_path and art.frames_path.endswith(".npz"):  # runs made before the lossless video copy
            with np.load(self.resolve(art.frames_path)) as data:
                frames = data["frames"]
        elif art.frames_path:
            frames = read_frames(self.resolve(art.frames_path))
        else:  # a clip recorded without a lossless copy: decode the MP4
            from tools.video_io import read_video

            frames, _ = read_video(self.resolve(art.path))
        self._frames_cache[art.id] = frames
        return frames

    # ----- writing -------------------------------------------------------------------------------------------
    def _record(self, art: Artifact) -> Artifact:
        with self._lock:
            self._artifacts[art.id] = art
            self._save()
        return art

    def add_image(
        self,
        image: np.ndarray,
        *,
        tool: str,
        parents: list[str] | tuple[str, ...] = (),
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        seconds: float = 0.0,
        description: str = "",
    ) -> Artifact:
        """Write an RGB ``uint8`` image as PNG and record it."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image shaped (H, W, 3), got {image.dtype} {image.shape}")
        with self._lock:
            art_id = self._next_id("image")
            rel = f"images/{art_id}.png"
            out = self.resolve(rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_image(image, out)
            art = Artifact(
                id=art_id,
                kind="image",
                path=rel,
                sha256=_sha256(out),
                width=image.shape[1],
                height=image.shape[0],
                tool=tool,
                parents=list(parents),
                params=dict(params or {}),
                seed=seed,
                seconds=round(seconds, 4),
                description=description,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            return self._record(art)

    def add_video(
        self,
        frames: np.ndarray,
        fps: float,
        *,
        tool: str,
        parents: list[str] | tuple[str, ...] = (),
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        seconds: float = 0.0,
        description: str = "",
    ) -> Artifact:
        """Write frames as an H.264 MP4 plus a lossless frame copy, and record the clip."""
        frames = np.ascontiguousarray(frames)
        with self._lock:
            art_id = self._next_id("video")
            rel = f"clips/{art_id}.mp4"
            rel_frames = f"clips/{art_id}.lossless.mkv"
            out = self.resolve(rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            if self.on_event:
                self.on_event({"type": "encode", "phase": "start", "id": art_id, "frames": int(frames.shape[0])})
            write_clip_files(frames, fps, out, self.resolve(rel_frames))
            self.encode_seconds += time.perf_counter() - start
            if self.on_event:
                self.on_event({"type": "encode", "phase": "end", "id": art_id})
            art = Artifact(
                id=art_id,
                kind="video",
                path=rel,
                sha256=_sha256(out),
                width=frames.shape[2],
                height=frames.shape[1],
                tool=tool,
                parents=list(parents),
                params=dict(params or {}),
                seed=seed,
                seconds=round(seconds, 4),
                description=description,
                frames=int(frames.shape[0]),
                fps=float(fps),
                frames_path=rel_frames,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            self._frames_cache[art_id] = frames
            return self._record(art)

    def update_meta(self, **values: Any) -> None:
        with self._lock:
            self.meta.update(values)
            self._save()

    def _save(self) -> None:
        data = {"run": self.meta, "artifacts": [dataclasses.asdict(a) for a in self._artifacts.values()]}
        _atomic_write_text(self.run_dir / MANIFEST, json.dumps(data, indent=2, default=str))
