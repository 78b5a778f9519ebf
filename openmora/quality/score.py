"""Scores a run folder or any video file: per clip and per join (``openmora score PATH``).

A run folder's clips are its manifest's videos; the joins are where each clip's pieces meet, as its tool recorded
them (an extension's segments, a connection's transition, a story's shots). A plain video file is one clip whose
joins are the hard cuts found in it. Every figure names its method: VBench's formula where it needs no weights, an
estimator (and of what) where VBench uses a model, Mora's TCON/Tmean on the configured feature extractor.

The result is JSON-ready (``scores.json`` in a run folder) and one number per clip, ``overall``, ranks takes of the
same step (:func:`overall`).

Example:
    >>> from openmora.quality import synthetic
    >>> s = score_frames(synthetic.moving_square(16, 64, 96, speed_px=3.0, direction="right"), fps=8.0)
    >>> sorted(s["metrics"])[:2], 0.0 <= s["overall"] <= 1.0
    (['dynamic_degree', 'imaging_quality'], True)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from openmora.errors import InputError
from openmora.fileio import atomic_write_json
from openmora.quality import metrics as m
from openmora.replay import MANIFEST, SCORES, RunNotFoundError, UnsafePathError, load_run
from openmora.settings import current

VERSION = 1
# How many evenly spaced frames BRISQUE looks at per clip (it costs ~0.1 s a frame at 512 px).
BRISQUE_FRAMES = 4
# Joins whose two sides should look continuous (a cut there is a defect); a story's shots may cut on purpose.
CONTINUOUS = ("segment", "transition")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".gif", ".m4v")


# ----- the models ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Models:
    """What scores with weights, each from a user's local files when configured (nothing downloads): ``features``
    (DINO, else CLIP, else weight-free pixel statistics), ``clip`` (background consistency and the aesthetic head
    need it), ``aesthetic`` (a LAION linear head), ``iqa`` (MUSIQ as TorchScript; else BRISQUE)."""

    features: m.FeatureExtractor
    clip: m.FeatureExtractor | None = None
    aesthetic: m.AestheticHead | None = None
    iqa: m.TorchScriptIQA | None = None


@functools.lru_cache(maxsize=4)
def _models(dino: str | None, clip: str | None, aesthetic: str | None, musiq: str | None) -> Models:
    clip_fx = m.TransformersImageFeatures(clip, "clip") if clip else None
    dino_fx = m.TransformersImageFeatures(dino, "dino") if dino else None
    if aesthetic and clip_fx is None:
        raise InputError("OPENMORA_AESTHETIC is a head on CLIP embeddings: set OPENMORA_CLIP to the CLIP folder too")
    return Models(
        features=dino_fx or clip_fx or m.PixelFeatures(),
        clip=clip_fx,
        aesthetic=m.AestheticHead(aesthetic) if aesthetic else None,
        iqa=m.TorchScriptIQA(musiq) if musiq else None,
    )


def quality_models() -> Models:
    """The models the environment configures (``OPENMORA_DINO``, ``OPENMORA_CLIP``, ``OPENMORA_AESTHETIC``,
    ``OPENMORA_MUSIQ``), loaded once per process. A configured file that cannot be used is an
    :class:`~openmora.errors.InputError`."""
    s = current()
    paths = (s.dino_path, s.clip_path, s.aesthetic_path, s.musiq_path)
    return _models(*(str(p) if p else None for p in paths))


def _notes(models: Models) -> list[str]:
    notes = [
        "motion smoothness and dynamic degree are weight-free estimators (OpenCV optical flow), not VBench's AMT-S and "
        "RAFT: compare them with each other, not with VBench's tables",
    ]
    if models.iqa is None:
        notes.append("imaging quality is BRISQUE (weight-free), not VBench's MUSIQ: set OPENMORA_MUSIQ for MUSIQ")
    if not models.features.is_model:
        notes.append(
            "subject consistency and TCON/Tmean use pixel statistics (weight-free), not DINO or a video model: set "
            "OPENMORA_DINO (or OPENMORA_CLIP) to a local model folder for VBench's and Mora's figures"
        )
    if models.aesthetic is None:
        notes.append("no aesthetic quality: it needs OPENMORA_CLIP and a LAION linear head (OPENMORA_AESTHETIC)")
    return notes


# ----- one clip ------------------------------------------------------------------------------------------------------
def _series(s: Any, **extra: Any) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["value"] = float(d["value"])
    d["series"] = [round(float(v), 5) for v in d.get("series") or []]
    return {**d, **extra}


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices of ``n`` (all of them when ``n <= k``), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def clip_metrics(frames: np.ndarray, fps: float, models: Models | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Every per-clip metric of ``frames`` (uint8 ``(T, H, W, 3)``), and the frames' features (for TCON/Tmean)."""
    models = models or Models(m.PixelFeatures())
    out: dict[str, Any] = {}
    feats = models.features(frames)
    clip_feats = (feats if models.clip is models.features else models.clip(frames)) if models.clip else None
    if len(frames) >= 2:
        out["temporal_flickering"] = _series(m.temporal_flickering(frames))
        out["subject_consistency"] = _series(m.subject_consistency(feats), extractor=models.features.name)
        if clip_feats is not None and models.clip is not None:
            # VBench's background consistency: the same formula on CLIP features
            out["background_consistency"] = _series(m.subject_consistency(clip_feats), extractor=models.clip.name)
        dyn = m.dynamic_degree(frames, fps)
        out["dynamic_degree"] = {**dyn.to_dict(), "higher_is_better": True}
    if len(frames) >= 3:
        out["motion_smoothness"] = _series(m.motion_smoothness(frames))
    idx = sample_indices(len(frames), BRISQUE_FRAMES)
    if models.iqa is not None:
        out["imaging_quality"] = _series(m.imaging_quality_model(frames[idx], models.iqa, len(idx)), frames=idx)
    else:
        raw = m.brisque(frames[idx], max_frames=len(idx))
        out["imaging_quality"] = _series(
            raw,
            value=m.imaging_quality_from_brisque(float(raw.value)),
            higher_is_better=True,
            brisque=round(float(raw.value), 3),
            frames=idx,
        )
    if models.aesthetic is not None and clip_feats is not None:
        out["aesthetic_quality"] = _series(m.aesthetic_quality(clip_feats, models.aesthetic))
    return out, feats


def _motion(dyn: dict[str, Any]) -> float:
    # Motion up to VBench's "dynamic" threshold counts fully: a still clip scores flicker and smoothness perfectly.
    threshold = float(dyn.get("threshold") or 0.0)
    return min(1.0, float(dyn.get("speed_px", 0.0)) / threshold) if threshold > 0 else 0.0


def join_continuity(join: dict[str, Any]) -> float:
    """0 at a cut, else the seam's structural similarity (clipped to 0..1)."""
    return 0.0 if join.get("cut") else float(np.clip(join.get("ssim", 0.0), 0.0, 1.0))


def overall(metrics: dict[str, Any], joins: list[dict[str, Any]] | None = None) -> float:
    """One number in 0..1 (higher is better) that ranks takes of one step: the mean of temporal flickering, motion
    smoothness, imaging quality, the motion present (speed over VBench's dynamic threshold, at most 1) and, where the
    clip has joins that should be continuous, their continuity. An image: its imaging quality."""
    parts = [float(metrics[k]["value"]) for k in ("temporal_flickering", "motion_smoothness") if k in metrics]
    if "imaging_quality" in metrics:
        parts.append(float(metrics["imaging_quality"]["value"]))
    if "dynamic_degree" in metrics:
        parts.append(_motion(metrics["dynamic_degree"]))
    seams = [join_continuity(j) for j in joins or [] if j.get("kind") in CONTINUOUS]
    if seams:
        parts.append(float(np.mean(seams)))
    return round(float(np.mean(parts)), 4) if parts else 0.0


def seam_at(frames: np.ndarray, index: int) -> dict[str, Any]:
    """The seam metrics of a join before frame ``index`` of ``frames``."""
    return m.seam(frames[:index], frames[index:]).to_dict()


def join_scores(frames: np.ndarray, joins: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Each join's seam metrics (``{"frame": index, "kind": ...}`` in, the seam's figures added; joins at the
    clip's ends are skipped)."""
    return [{**j, **seam_at(frames, int(j["frame"]))} for j in joins or [] if 0 < int(j["frame"]) < len(frames)]


def score_frames(
    frames: np.ndarray,
    fps: float,
    joins: list[dict[str, Any]] | None = None,
    models: Models | None = None,
    known: dict[str, Any] | None = None,
    key: str = "",
) -> dict[str, Any]:
    """A clip's scores: its metrics, each join's seam, and ``overall``. ``known``: a dict that keeps the metrics and
    features under ``key`` for :func:`score_run` (a run scores each clip once)."""
    metrics, feats = clip_metrics(frames, fps, models or quality_models())
    if known is not None and key:
        known[key] = (metrics, feats)
    scored = join_scores(frames, joins)
    return {"metrics": metrics, "joins": scored, "overall": overall(metrics, scored)}


def score_image(image: np.ndarray) -> dict[str, Any]:
    """An image's scores: its imaging quality (BRISQUE) and ``overall``."""
    raw = m.brisque(image[None], max_frames=1)
    metrics = {
        "imaging_quality": _series(
            raw, value=m.imaging_quality_from_brisque(float(raw.value)), higher_is_better=True, brisque=raw.value
        )
    }
    return {"metrics": metrics, "overall": overall(metrics)}


def summary(scores: dict[str, Any]) -> dict[str, float]:
    """The numbers an artifact keeps in the manifest: overall and each metric's value."""
    out = {"overall": float(scores["overall"])}
    out.update({k: float(v["value"]) for k, v in scores["metrics"].items()})
    return out


# ----- cuts in a plain video -------------------------------------------------------------------------------------------
def find_cuts(frames: np.ndarray) -> list[int]:
    """Indices of the first frame after each hard cut: a frame difference far above the clip's usual one that the
    seam metrics also call a cut."""
    if len(frames) < 2:
        return []
    small = frames[:, :: max(1, frames.shape[1] // 64), :: max(1, frames.shape[2] // 64)].astype(np.int16)
    diffs = np.abs(np.diff(small, axis=0)).mean(axis=(1, 2, 3))
    typical = float(np.median(diffs))
    candidates = [i + 1 for i, d in enumerate(diffs) if d > 3.0 * typical + 8.0]
    return [i for i in candidates if m.seam(frames[:i], frames[i:]).cut]


# ----- a file or a run folder --------------------------------------------------------------------------------------
def _read_video(path: Path, fps: float | None = None) -> tuple[np.ndarray, float]:
    """A clip's frames and frame rate; a run's lossless copy (whose rate the manifest gives) is read exactly."""
    from openmora.video_io import read_frames, read_video

    if fps and path.name.endswith(".lossless.mkv"):
        return read_frames(path), float(fps)
    return read_video(path)


def score_video(path: str | Path, models: Models | None = None) -> dict[str, Any]:
    """Score one video file: its metrics and the hard cuts found in it (as joins)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"{path} is not a file or run folder; give a video ({', '.join(VIDEO_SUFFIXES)}) or a run folder"
        )
    try:
        frames, fps = _read_video(p)
    except Exception as err:  # noqa: BLE001 - ffmpeg's reasons vary; the user needs the file and what is accepted
        raise InputError(
            f"{path} could not be read as a video ({str(err).splitlines()[0][:120]}); give an MP4/MKV/WebM file"
        ) from None
    if not len(frames):
        raise InputError(f"{path} has no frames; give a video with at least one frame")
    models = models or quality_models()
    start = time.perf_counter()
    joins = [{"frame": i, "kind": "detected cut"} for i in find_cuts(frames)]
    clip = score_frames(frames, fps, joins, models)
    h, w = frames.shape[1:3]
    entry = {"id": p.name, "path": str(p), "tool": None, "frames": len(frames), "fps": fps, "width": w, "height": h}
    return _result("video", None, [{**entry, **clip}], models, time.perf_counter() - start)


def _result(
    source: str, final: str | None, clips: list[dict[str, Any]], models: Models, seconds: float
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "source": source,
        "final": final,
        "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "extractors": {
            "features": {"name": models.features.name, "is_model": models.features.is_model},
            "imaging": models.iqa.name if models.iqa else "brisque",
            "aesthetic": models.aesthetic.name if models.aesthetic else None,
        },
        "notes": _notes(models),
        "clips": clips,
    }


def score_run(
    run_dir: str | Path,
    models: Models | None = None,
    write: bool = True,
    frames: Any = None,
    known: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every clip of a run folder (and each join its tool recorded); writes ``scores.json`` there (atomically)
    when ``write``. The takes best-of-N recorded come along from the manifest.

    In a run's own process: ``frames(id)`` gives a clip's frames (the store's, in memory) and ``known`` the metrics
    its steps were already scored with (:func:`score_frames`), so nothing is decoded or measured twice."""
    try:
        run = load_run(run_dir)
    except RunNotFoundError as err:
        raise InputError(str(err)) from None
    models = models or quality_models()
    start = time.perf_counter()
    feats: dict[str, np.ndarray] = {}
    frames_of: dict[str, np.ndarray] = {}
    clips: list[dict[str, Any]] = []
    for art_id, art in run.artifacts.items():
        if art.get("kind") != "video":
            continue
        try:
            path = run.path(art.get("frames_path") or art["path"])
        except UnsafePathError as err:
            raise InputError(f"{art_id}: {err}; the manifest may only name files inside the run folder") from None
        if frames is not None:
            pixels, fps = frames(art_id), float(art.get("fps") or 0)
        else:
            pixels, fps = _read_video(path, art.get("fps"))
        frames_of[art_id] = pixels
        fps = float(art.get("fps") or fps)
        if known is not None and art_id in known:
            metrics, feats[art_id] = known[art_id]
        else:
            metrics, feats[art_id] = clip_metrics(pixels, fps, models)
        joins = join_scores(pixels, art.get("joins"))
        clips.append(
            {
                "id": art_id,
                "path": art.get("path"),
                "tool": art.get("tool"),
                "frames": len(pixels),
                "fps": fps,
                "width": int(pixels.shape[2]),
                "height": int(pixels.shape[1]),
                "metrics": metrics,
                "joins": joins,
                "overall": overall(metrics, joins),
                "takes": (run.meta.get("takes") or {}).get(art_id) or [],
            }
        )
    for clip in clips:
        mora = _mora(run.artifacts[clip["id"]], feats, frames_of)
        if mora:
            clip["mora"] = mora
    result = _result("run", run.meta.get("final"), clips, models, time.perf_counter() - start)
    if write:
        atomic_write_json(run.run_dir / SCORES, result, indent=1)
    return result


def _mora(art: dict[str, Any], feats: dict[str, np.ndarray], frames_of: dict[str, np.ndarray]) -> dict[str, float]:
    """Mora's own figures where the clip's task has them: TCON of an extension against the clip it continues (its
    new frames' features vs the original's), Tmean of a transition with the clips either side."""
    parents = [p for p in art.get("parents") or [] if p in feats]
    if art.get("tool") == "extend_video" and parents:
        n = len(frames_of[parents[0]])
        new = feats[art["id"]][n:]
        if len(new):
            return {"tcon": round(m.tcon(feats[parents[0]], new), 4)}
    if art.get("tool") == "connect_clips" and len(parents) == 2:
        return {"tmean": round(m.tmean(feats[parents[0]], feats[art["id"]], feats[parents[1]]), 4)}
    return {}


def score_path(path: str | Path, write: bool = True) -> dict[str, Any]:
    """``openmora score PATH``: a run folder (it has a manifest) or a video file."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            raise InputError(f"{path} is a folder without {MANIFEST}; give a run folder or a video file")
        return score_run(p, write=write)
    return score_video(p)


# ----- showing it --------------------------------------------------------------------------------------------------
_SHOWN = (
    ("temporal_flickering", "flicker"),
    ("motion_smoothness", "smooth"),
    ("dynamic_degree", "dynamic"),
    ("imaging_quality", "imaging"),
    ("subject_consistency", "subject"),
)


def format_table(scores: dict[str, Any]) -> str:
    """The scores as a plain-text table: a row per clip, then a row per join, then the notes."""
    head = f"{'clip':<14} {'tool':<15} {'frames':>6} " + " ".join(f"{s:>8}" for _, s in _SHOWN) + f" {'overall':>8}"
    lines = [head]
    for c in scores["clips"]:
        cells = []
        for key, _ in _SHOWN:
            v = c["metrics"].get(key, {}).get("value")
            cells.append(f"{v:>8.3f}" if isinstance(v, int | float) else f"{'-':>8}")
        extra = "".join(f"  {k} {v:.3f}" for k, v in (c.get("mora") or {}).items())
        lines.append(
            f"{str(c['id'])[:14]:<14} {str(c.get('tool') or '-'):<15} {c['frames']:>6} "
            + " ".join(cells)
            + f" {c['overall']:>8.3f}{extra}"
        )
    joins = [(c["id"], j) for c in scores["clips"] for j in c.get("joins") or []]
    if joins:
        lines.append("")
        lines.append(f"{'join in':<14} {'frame':>5} {'kind':<13} {'psnr':>6} {'ssim':>6} {'hist':>6} {'flow':>6}  cut")
        for cid, j in joins:
            lines.append(
                f"{str(cid)[:14]:<14} {j['frame']:>5} {str(j.get('kind'))[:13]:<13} {j['psnr']:>6.1f} {j['ssim']:>6.3f} "
                f"{j['hist_distance']:>6.3f} {j['flow_jump']:>6.2f}  {'CUT' if j['cut'] else 'no'}"
            )
    lines += ["", *(f"note: {n}" for n in scores.get("notes") or [])]
    lines.append(f"scored in {scores['seconds']:.2f} s")
    return "\n".join(lines)


def to_json(scores: dict[str, Any]) -> str:
    return json.dumps(scores, ensure_ascii=False)
