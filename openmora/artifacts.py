"""The artifact store: one folder per run, every image and clip written atomically and recorded in manifest.json.

Artifacts are named by id (``img-0003``, ``clip-0002``); tools pass ids, never pixels. Each video also keeps its
exact frames losslessly (``clips/clip-0002.lossless.mkv``) so the next clip chains on the pipeline's own last frame,
not on a lossy decode of the MP4. Ids and paths from outside (a prompt, an LLM, a user) are checked so they can
never resolve outside the run folder.

Example:
    >>> import numpy as np, tempfile
    >>> from openmora.artifacts import ArtifactStore
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> art = store.add_image(np.zeros((64, 96, 3), np.uint8), tool="example")
    >>> art.id, art.path
    ('img-0001', 'images/img-0001.png')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from openmora.errors import ArtifactWriteError, ToolArgumentError, first_line
from openmora.events import EventSink
from openmora.fileio import atomic_write_json
from openmora.video_io import LOSSLESS_SETTINGS, MP4_SETTINGS, FrameSink, read_frames, write_image

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Pixels kept in memory by default: about four of Mora's clips (a 25-frame 1024x576 clip is 44 MB of uint8 frames, a
# 73-frame Wan clip 130 MB); older ones are read back from their lossless copy when asked for.
DEFAULT_CACHE_BYTES = 512 << 20
ID_PATTERN = re.compile(r"^(img|clip)-(\d{4,6})$")
# What an artifact is; a video's ids are "clip-...", an image's "img-...".
ArtifactKind = Literal["image", "video"]
_PREFIX: dict[ArtifactKind, str] = {"image": "img", "video": "clip"}
# The stores open in this process, by run folder (see open_store).
_OPEN: weakref.WeakValueDictionary[Path, ArtifactStore] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


def open_store(run_dir: str | Path) -> ArtifactStore | None:
    """The store open on ``run_dir`` in this process (not yet closed), or None: a server's previews take the
    pixels of a running job's artifacts from it instead of decoding their files.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with ArtifactStore(folder) as store:
        ...     open_store(folder) is store
        True
        >>> open_store(folder) is None  # closed
        True
    """
    with _OPEN_LOCK:
        return _OPEN.get(Path(run_dir).resolve())


@dataclass
class Artifact:
    """One recorded image or clip. ``path`` is relative to the run folder."""

    id: str
    kind: ArtifactKind
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
    # Where the clip's pieces meet: one {"frame": index of the first frame after the join, "kind": "segment" |
    # "transition" | "shot", "before": ..., "after": ...} per join, in frame order (what `openmora score` checks).
    joins: list[dict[str, Any]] = field(default_factory=list)
    # Quality scores once measured (openmora.quality): "overall" and each metric's value.
    scores: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A one-line description for the chat and the transcript."""
        if self.kind == "video":
            dur = (self.frames or 0) / (self.fps or 1)
            what = f"video {self.width}x{self.height}, {self.frames} frames at {self.fps:g} fps ({dur:.1f} s)"
        else:
            what = f"image {self.width}x{self.height}"
        return f"{self.id}: {what}" + (f" - {self.description}" if self.description else "")


def piece_joins(pieces: list[tuple[str, int, list[dict[str, Any]]]], kind: str | list[str]) -> list[dict[str, Any]]:
    """The joins of a clip made of ``pieces`` played end to end, each ``(label, frames, its own joins)``: every
    piece's joins shifted to where it starts, and one join of ``kind`` (or ``kind[i - 1]`` before piece ``i``)
    between neighbours.

    Example:
        >>> [j["frame"] for j in piece_joins([("a", 8, []), ("b", 7, [{"frame": 3, "kind": "segment"}])], "shot")]
        [8, 11]
    """
    out: list[dict[str, Any]] = []
    start = 0
    for i, (label, n, own) in enumerate(pieces):
        if i:
            what = kind if isinstance(kind, str) else kind[i - 1]
            out.append({"frame": start, "kind": what, "before": pieces[i - 1][0], "after": label})
        out += [dict(j, frame=int(j["frame"]) + start) for j in own]
        start += n
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_clip_files(frames: np.ndarray, fps: float, mp4: Path, lossless: Path) -> None:
    """The MP4 and its lossless copy, encoded at the same time (two ffmpeg processes; bench/bench_encode.py
    measures serial against parallel). If either fails, neither file is left behind."""
    _check_frames(frames)
    sinks = _clip_sinks(fps, mp4, lossless)
    for sink in sinks:
        sink.put(frames)
    _finish_sinks(sinks)


def _check_frames(frames: np.ndarray, size: tuple[int, int] | None = None) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"expected uint8 frames shaped (T, H, W, 3), got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even sizes, got {w}x{h}")
    if size is not None and (h, w) != size:
        raise ValueError(f"every frame of a clip has one size: {size[1]}x{size[0]} so far, then {w}x{h}")


def _clip_sinks(fps: float, mp4: Path, lossless: Path) -> list[FrameSink]:
    return [FrameSink(mp4, fps, **MP4_SETTINGS), FrameSink(lossless, fps, **LOSSLESS_SETTINGS)]


def _finish_sinks(sinks: list[FrameSink]) -> None:
    """Finish every sink; if one fails, remove what the others wrote and raise its error."""
    errors: list[BaseException] = []
    for sink in sinks:
        try:
            sink.finish()
        except BaseException as err:
            errors.append(err)
    if errors:
        for sink in sinks:
            sink.path.unlink(missing_ok=True)
        raise errors[0]


class ClipStream:
    """A clip encoded while it is being made (:meth:`ArtifactStore.open_video`): every :meth:`append` goes to the
    MP4 and lossless encoders at once, in their own threads, so encoding overlaps the next segment's rendering.
    :meth:`close` records the clip (its files land when the encoders finish); :meth:`abort` leaves nothing behind.
    """

    def __init__(self, store: ArtifactStore, art_id: str, fps: float) -> None:
        self.store, self.id, self.fps = store, art_id, float(fps)
        self.rel, self.rel_frames = f"clips/{art_id}.mp4", f"clips/{art_id}.lossless.mkv"
        mp4 = store.resolve(self.rel)
        mp4.parent.mkdir(parents=True, exist_ok=True)
        self._sinks = _clip_sinks(fps, mp4, store.resolve(self.rel_frames))
        self._pieces: list[np.ndarray] = []
        self._closed = False

    def append(self, frames: np.ndarray) -> None:
        """Add frames (``uint8`` ``(T, H, W, 3)``, even sizes, one size per clip) to the end of the clip."""
        if self._closed:
            raise ValueError(f"{self.id} is closed")
        frames = np.ascontiguousarray(frames)
        _check_frames(frames, self._pieces[0].shape[1:3] if self._pieces else None)
        self._pieces.append(frames)
        try:
            for sink in self._sinks:
                sink.put(frames)
        except BaseException:
            self.abort()
            raise

    def close(
        self,
        *,
        tool: str,
        parents: list[str] | tuple[str, ...] = (),
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        seconds: float = 0.0,
        description: str = "",
        joins: list[dict[str, Any]] | None = None,
    ) -> Artifact:
        """Record the clip and return it at once; its files are finished in the background
        (:meth:`ArtifactStore.flush` waits for them). ``joins``: where its pieces meet (:attr:`Artifact.joins`)."""
        if not self._pieces:
            self.abort()
            raise ValueError(f"{self.id} has no frames: append at least one before closing it")
        self._closed = True
        frames = self._pieces[0] if len(self._pieces) == 1 else np.concatenate(self._pieces)
        self._pieces = []
        art = Artifact(
            id=self.id,
            kind="video",
            path=self.rel,
            sha256="",  # set when the MP4 is on disk
            width=frames.shape[2],
            height=frames.shape[1],
            tool=tool,
            parents=list(parents),
            params=dict(params or {}),
            seed=seed,
            seconds=round(seconds, 4),
            description=description,
            frames=int(frames.shape[0]),
            fps=self.fps,
            frames_path=self.rel_frames,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            joins=list(joins or []),
        )
        sinks = self._sinks

        def finish() -> float:
            _finish_sinks(sinks)
            return max(s.seconds for s in sinks)  # the two encoders run side by side

        try:
            self.store._submit(art, frames, finish, event_frames=int(frames.shape[0]))
        except BaseException:  # the store was closed meanwhile: leave no files behind
            self.abort()
            raise
        return art

    def abort(self) -> None:
        """Stop the encoders and remove their files; the id is released."""
        self._closed = True
        for sink in self._sinks:
            sink.abort()
        self.store._release(self.id)


class _PixelCache:
    """Pixels of recent artifacts by id, least recently used dropped first once over ``limit`` bytes.

    Ids in ``pinned`` (files still being written: the pixels are their only copy) are never dropped, so the cache
    is over its limit only while more than ``limit`` bytes wait for the encoders. The caller holds the store's lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> np.ndarray | None:
        arr = self._items.get(key)
        if arr is not None:
            self._items.move_to_end(key)
        return arr

    def peek(self, key: str) -> np.ndarray | None:
        """Like :meth:`get`, leaving the order of use as it is."""
        return self._items.get(key)

    def put(self, key: str, arr: np.ndarray, pinned: Collection[str] = ()) -> None:
        self.pop(key)
        self._items[key] = arr
        self.bytes += arr.nbytes
        self.trim(pinned)

    def pop(self, key: str) -> None:
        arr = self._items.pop(key, None)
        if arr is not None:
            self.bytes -= arr.nbytes

    def trim(self, pinned: Collection[str] = ()) -> None:
        for key in list(self._items):
            if self.bytes <= self.limit:
                return
            if key not in pinned:
                self.pop(key)


class ArtifactStore:
    """The run folder and its manifest.

    Args:
        run_dir: the run folder; created if missing. If it holds a manifest, the store continues it (resume).
        meta: run metadata recorded in the manifest (task, profile, seed...).
        cache_bytes: how many bytes of pixels (clips' frames, images) to keep in memory; the least recently used
            beyond that are dropped and read back from their files when asked for. Pixels whose files are still
            being written always stay.

    Use it as a context manager, or call :meth:`close`, to wait for the last writes and stop the writer thread.
    """

    def __init__(
        self, run_dir: str | Path, meta: dict[str, Any] | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be a whole number of bytes >= 0, got {cache_bytes!r}")
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._artifacts: dict[str, Artifact] = {}
        self._cache = _PixelCache(cache_bytes)
        self._digests: dict[str, str] = {}  # artifact id -> content digest (pixels), see digest()
        self._closed = False
        # Files are written in the background, committed in order by one thread: a clip's artifact is usable at
        # once (its pixels are in memory), it enters the manifest when its files are on disk.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifacts")
        self._pending: dict[str, Future] = {}
        self._reserved: set[str] = set()
        self._failure: ArtifactWriteError | None = None
        self.meta: dict[str, Any] = {}
        self.encode_seconds = 0.0  # encoder time (clips and images), mostly overlapped with other work
        self.wait_seconds = 0.0  # time callers spent waiting for files (flush, path)
        self.on_event: EventSink | None = None  # set by the run: hears the "encode" events (openmora.events)
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
        with _OPEN_LOCK:
            _OPEN[self.run_dir] = self

    # ----- ids and paths -----------------------------------------------------------------------------------
    def _next_id(self, kind: ArtifactKind) -> str:
        prefix = _PREFIX[kind]
        n = sum(1 for a in self._artifacts.values() if a.kind == kind) + 1
        while f"{prefix}-{n:04d}" in self._artifacts or f"{prefix}-{n:04d}" in self._reserved:
            n += 1
        return f"{prefix}-{n:04d}"

    def resolve(self, relative: str | Path) -> Path:
        """The absolute path of ``relative`` inside the run folder; refuses anything that would leave it."""
        candidate = (self.run_dir / relative).resolve()
        if candidate != self.run_dir and self.run_dir not in candidate.parents:
            raise ToolArgumentError(f"path {relative!s} is outside the run folder; use artifact ids such as img-0001")
        return candidate

    def get(self, artifact_id: str, kind: ArtifactKind | None = None) -> Artifact:
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

    def has(self, artifact_id: str) -> bool:
        """Whether this run holds an artifact with this id."""
        return artifact_id in self._artifacts

    def ids(self, kind: ArtifactKind | None = None) -> list[str]:
        return [a.id for a in self._artifacts.values() if kind is None or a.kind == kind]

    def artifacts(self) -> list[Artifact]:
        return list(self._artifacts.values())

    def path(self, artifact_id: str) -> Path:
        """The artifact's file, once it is written (waits for a background write)."""
        art = self.get(artifact_id)
        self.wait(art.id)
        return self.resolve(art.path)

    # ----- reading -------------------------------------------------------------------------------------------
    def digest(self, artifact_id: str) -> str:
        """The sha256 of an artifact's exact pixels and shape: its content address, known as soon as it is made
        (the file's sha256 waits for the background encoding), and the same after a resume."""
        art = self.get(artifact_id)
        with self._lock:
            known = self._digests.get(art.id)
        if known is not None:
            return known
        pixels = self.image(art.id) if art.kind == "image" else self.frames(art.id)
        h = hashlib.sha256(f"{art.kind}:{pixels.shape}".encode())
        h.update(np.ascontiguousarray(pixels).data)
        value = h.hexdigest()
        with self._lock:
            self._digests[art.id] = value
        return value

    def image(self, artifact_id: str) -> np.ndarray:
        """The exact pixels of an image artifact, as an RGB ``uint8`` array."""
        from PIL import Image

        art = self.get(artifact_id, "image")
        with self._lock:
            cached = self._cache.get(art.id)
        if cached is not None:
            return cached
        with Image.open(self.path(art.id)) as im:
            image = np.asarray(im.convert("RGB"))
        with self._lock:
            self._cache.put(art.id, image, self._pending)
        return image

    def frames(self, artifact_id: str) -> np.ndarray:
        """The exact frames of a clip (from its lossless copy), ``(T, H, W, 3)`` ``uint8``."""
        art = self.get(artifact_id, "video")
        with self._lock:
            cached = self._cache.get(art.id)
        if cached is not None:  # always, while its files are being written (pinned)
            return cached
        if art.frames_path and art.frames_path.endswith(".npz"):  # runs made before the lossless video copy
            with np.load(self.resolve(art.frames_path)) as data:
                frames = data["frames"]
        elif art.frames_path:
            frames = read_frames(self.resolve(art.frames_path))
        else:  # a clip recorded without a lossless copy: decode the MP4
            from openmora.video_io import read_video

            frames, _ = read_video(self.resolve(art.path))
        with self._lock:
            self._cache.put(art.id, frames, self._pending)
        return frames

    def first_pixels(self, artifact_id: str) -> np.ndarray | None:
        """An image's pixels or a clip's first frame, ``(H, W, 3)`` ``uint8``, if they are in memory now; None
        otherwise (this never reads a file, and leaves the cache's order of use as it is)."""
        with self._lock:
            pixels = self._cache.peek(artifact_id)
        if pixels is None:
            return None
        return pixels[0] if pixels.ndim == 4 else pixels

    @property
    def cached_bytes(self) -> int:
        """Bytes of pixels held in memory now (see ``cache_bytes``)."""
        with self._lock:
            return self._cache.bytes

    # ----- writing -------------------------------------------------------------------------------------------
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
        """Record an RGB ``uint8`` image and return it at once; its PNG is written in the background."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image shaped (H, W, 3), got {image.dtype} {image.shape}")
        with self._lock:
            self._raise_failure()
            self._raise_closed()
            art_id = self._next_id("image")
            rel = f"images/{art_id}.png"
            out = self.resolve(rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            art = Artifact(
                id=art_id,
                kind="image",
                path=rel,
                sha256="",  # set when the PNG is on disk
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

            def finish() -> float:
                start = time.perf_counter()
                write_image(image, out)
                return time.perf_counter() - start

            self._submit(art, image, finish)
            return art

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
        joins: list[dict[str, Any]] | None = None,
    ) -> Artifact:
        """Record a clip (H.264 MP4 plus a lossless frame copy) and return it at once; its files are encoded in the
        background. To encode while the frames are still being made, use :meth:`open_video`."""
        stream = self.open_video(fps)
        stream.append(frames)
        return stream.close(
            tool=tool, parents=parents, params=params, seed=seed, seconds=seconds, description=description, joins=joins
        )

    def open_video(self, fps: float) -> ClipStream:
        """A clip to fill with :meth:`ClipStream.append` while it renders, then :meth:`ClipStream.close`."""
        with self._lock:
            self._raise_failure()
            self._raise_closed()
            art_id = self._next_id("video")
            self._reserved.add(art_id)
        try:
            return ClipStream(self, art_id, fps)
        except BaseException:
            self._release(art_id)
            raise

    # ----- background writes ---------------------------------------------------------------------------------------
    def _release(self, art_id: str) -> None:
        with self._lock:
            self._reserved.discard(art_id)

    def _submit(self, art: Artifact, pixels: np.ndarray, finish: Any, event_frames: int | None = None) -> None:
        """Make ``art`` usable now (ids, pixels) and queue ``finish`` (which writes its files, returning the encoder's
        seconds) on the writer thread, which then hashes the file and adds ``art`` to the manifest."""
        with self._lock:
            self._raise_closed()
            self._reserved.discard(art.id)
            self._artifacts[art.id] = art
            if self.on_event and event_frames is not None:
                self.on_event({"type": "encode", "phase": "start", "id": art.id, "frames": event_frames})
            self._pending[art.id] = self._writer.submit(self._commit, art, finish, event_frames is not None)
            self._cache.put(art.id, pixels, self._pending)  # pinned until its files are on disk

    def _commit(self, art: Artifact, finish: Any, is_clip: bool) -> None:
        try:
            seconds = finish()
            art.sha256 = _sha256(self.resolve(art.path))
        except BaseException as err:
            first = first_line(err)
            with self._lock:
                self._artifacts.pop(art.id, None)
                self._cache.pop(art.id)
                self._pending.pop(art.id, None)
                for rel in (art.path, art.frames_path):
                    if rel:
                        self.resolve(rel).unlink(missing_ok=True)
                self._failure = self._failure or ArtifactWriteError(
                    f"writing {art.id} to {self.run_dir} failed: {first} (check free disk space and ffmpeg)"
                )
            raise
        with self._lock:
            self.encode_seconds += seconds
            self._pending.pop(art.id, None)
            self._cache.trim(self._pending)  # its pixels can now be read back from disk
            self._save()
        if self.on_event and is_clip:
            self.on_event({"type": "encode", "phase": "end", "id": art.id})

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _raise_closed(self) -> None:
        if self._closed:
            raise RuntimeError(f"the artifact store of {self.run_dir} is closed; open a new ArtifactStore to add to it")

    def wait(self, artifact_id: str) -> None:
        """Wait until the artifact's files are written; raises :class:`ArtifactWriteError` if a write failed."""
        job = self._pending.get(artifact_id)
        if job is not None:
            start = time.perf_counter()
            try:
                job.result()
            except Exception as err:  # _commit recorded it as self._failure, raised below
                logger.debug("writing %s failed: %s", artifact_id, err)
            self.wait_seconds += time.perf_counter() - start
        self._raise_failure()

    def flush(self) -> None:
        """Wait for every background write (and callback queued with :meth:`on_written`); raises
        :class:`ArtifactWriteError` if one failed."""
        start = time.perf_counter()
        if self._closed:
            self._writer.shutdown(wait=True)  # returns once close() has seen the last write through
        else:
            self._writer.submit(lambda: None).result()  # the writer runs jobs in order: this one is last
        self.wait_seconds += time.perf_counter() - start
        self._raise_failure()

    def close(self) -> None:
        """Wait for the pending writes, then stop the writer thread and drop the cached pixels. Idempotent; the
        store stays readable (from disk), adding to it raises. A failed write is still raised by :meth:`flush`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with _OPEN_LOCK:
            if _OPEN.get(self.run_dir) is self:
                del _OPEN[self.run_dir]
        start = time.perf_counter()
        self._writer.shutdown(wait=True)
        self.wait_seconds += time.perf_counter() - start
        with self._lock:
            self._cache = _PixelCache(self._cache.limit)

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> list[str]:
        """Ids whose files are still being written."""
        return list(self._pending)

    def on_written(self, callback: Any) -> None:
        """Call ``callback()`` on the writer thread once every artifact recorded so far is on disk (not at all if a
        write failed). The plan state is saved this way: it never names an artifact whose files are missing."""

        def run() -> None:
            if self._failure is None:
                try:
                    callback()
                except BaseException as err:
                    with self._lock:
                        self._failure = self._failure or ArtifactWriteError(
                            f"saving the run's state in {self.run_dir} failed: {err}"
                        )
                    raise

        if self._closed:  # no more writes will come: run it once the last one is done
            self._writer.shutdown(wait=True)
            run()
            return
        self._writer.submit(run)

    def set_scores(self, artifact_id: str, scores: dict[str, float]) -> None:
        """Record an artifact's quality scores (in the manifest once its files are on disk)."""
        with self._lock:
            self.get(artifact_id).scores = {k: round(float(v), 4) for k, v in scores.items()}
            self._save()

    def update_meta(self, **values: Any) -> None:
        with self._lock:
            self.meta.update(values)
            self._save()

    def _save(self) -> None:
        # only artifacts whose files are on disk: a manifest never names a missing or half-written file
        done = [dataclasses.asdict(a) for a in self._artifacts.values() if a.id not in self._pending]
        data = {"run": self.meta, "artifacts": done}
        atomic_write_json(self.run_dir / MANIFEST, data, indent=2)
