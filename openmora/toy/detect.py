"""Read a toy scene back from its frames alone, and score each task's output against what was asked.

The frames may be blurry and noisy (they come from small diffusion models), so every step is a robust statistic:

* **background**: the median colour of the frames' border ring, named by the nearest :data:`~scenes.BACKGROUNDS`
  colour in CIE Lab;
* **object mask**: pixels farther (RGB distance) from the background than half the object's typical distance,
  largest 8-connected component per frame; on noisy frames (noise read from the border) the distance is measured
  after a light blur;
* **colour**: the median colour of the mask's core (pixels near full contrast, free of blending), nearest
  :data:`~scenes.COLOURS` colour in Lab;
* **shape**: a triangle when the object's mass is skewed towards the bottom (its base), else circle or square,
  whichever template fits the mask's bounding box better (IoU); a majority over up to 8 frames;
* **size**: the mask's area turned into the side of the shape's bounding square, small below the geometric mean of
  the two :data:`~scenes.SIZES` sides (0.28 of the frame side), large above;
* **motion**: a straight line fitted to the per-frame centroids; still when it moves less than ``min_move_px``
  (default 5% of the frame side) over the clip, else the dominant direction;
* **style**: pixel-art when, on each axis, at least :data:`PIXEL_ART_MIN` of the colour edges lie on the
  :data:`~scenes.PIXEL_CELLS` grid (:func:`pixel_art_score`). A moving plain object scores about 1/4 (one pixel
  gap in four is a grid line); a still one can score up to 1/2 on clean frames, and more, rarely, when a small
  object's whole outline happens to sit on grid lines.

Measured on 300 random scenes per row (``degrade``: noise sigma / blur px): every attribute right on 100% of clean
and 10 / 0.7 and 15 / 1.0 clips, plain and pixel-art (the shape is not read on pixel-art: a small shape is a few
cells); at 20 / 1.2, 100% plain, 92% pixel-art (the style missed).

The ``score_*`` functions turn detections into a :class:`Score`: named pass/fail checks plus the numbers behind them.

Example:
    >>> from openmora.toy.scenes import Scene, degrade, render
    >>> d = describe(degrade(render(Scene("triangle", "yellow", "gray", "small", "up"))))
    >>> d.shape, d.colour, d.background, d.size, d.motion
    ('triangle', 'yellow', 'gray', 'small', 'up')
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from openmora.errors import InputError
from openmora.toy.scenes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    PIXEL_CELLS,
    RGB,
    SIZES,
    Edit,
    PromptAttributes,
    Scene,
    parse_edit,
    parse_prompt,
    shape_coverage,
)

# RGB distance below which a pixel cannot be the object (the vocabulary's weakest object/background pair is ~100).
MIN_CONTRAST = 45.0
MIN_AREA_FRACTION = 0.002  # a component smaller than this share of the frame is noise, not the object
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # share of its bounding box each shape covers
LARGE_SIDE = math.sqrt(SIZES["small"] * SIZES["large"])
PIXEL_ART_MIN = 0.55  # share of edges on the cell grid from which a clip is pixel-art (plain: 0.5 at most)
FRAME_MAE_MAX = 16.0  # mean absolute error (grey levels) under which two frames count as the same picture
STEP_FACTOR, STEP_SLACK_PX = 2.5, 2.0  # a centroid step above factor * expected step + slack is a jump
SPEED_RATIO = (0.5, 2.0)  # accepted new/old speed ratios for a continuation
SMOOTH_ABOVE, SMOOTH_SIGMA = 4.0, 0.7  # noise sigma (grey levels) above which the mask is found on blurred frames
TRIANGLE_SKEW = -0.25  # the vertical skew below which a shape is a triangle (a triangle's: -0.57)
SHAPE_PAD = 2  # px around the mask whose soft coverage the skew counts (the blurred outline)
MAX_SHAPE_FRAMES = 8  # frames whose shape is classified (evenly spread), for speed


def _lab(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb, np.float32).reshape(1, -1, 3) / 255.0
    return cv2.cvtColor(a, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def nearest_colour(rgb: np.ndarray | tuple[float, float, float], palette: dict[str, RGB]) -> tuple[str, float]:
    """The palette's name nearest to ``rgb`` in CIE Lab, and a confidence: 1 - (nearest / second-nearest distance).

    Example:
        >>> from openmora.toy.scenes import COLOURS
        >>> nearest_colour((230, 50, 45), COLOURS)[0]
        'red'
    """
    names, labs = list(palette), _lab(np.array(list(palette.values())))
    d = np.linalg.norm(labs - _lab(np.asarray(rgb, np.float32))[0], axis=1)
    order = np.argsort(d)
    conf = 1.0 - float(d[order[0]]) / max(float(d[order[1]]), 1e-6) if len(d) > 1 else 1.0
    return names[int(order[0])], conf


@dataclass(frozen=True)
class Detection:
    """What :func:`describe` read from a clip. ``colour``, ``shape``, ``size`` and ``motion`` are ``None`` when no
    object was found; ``centroids`` has one (x, y) in px per frame (``None`` where that frame has no object);
    ``speed`` is in px/frame, ``velocity`` its (dx, dy); ``confidence`` maps each attribute to 0..1."""

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    motion: str | None
    style: str
    speed: float
    velocity: tuple[float, float]
    centroids: tuple[tuple[float, float] | None, ...]
    area_fraction: float
    style_score: float
    confidence: dict[str, float]
    background_rgb: tuple[float, float, float]
    colour_rgb: tuple[float, float, float] | None

    @property
    def found(self) -> bool:
        """Whether every frame holds the object."""
        return all(c is not None for c in self.centroids)

    def attributes(self) -> dict[str, str | None]:
        """The detected :data:`~scenes.ATTRIBUTES`, comparable with ``Scene.attributes()``.

        Example:
            >>> from openmora.toy.scenes import Scene, render
            >>> s = Scene("square", "green", "black", "small", "right")
            >>> describe(render(s)).attributes() == s.attributes()
            True
        """
        return {a: getattr(self, a) for a in ATTRIBUTES}


def _as_clip(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0 or min(arr.shape[1:3]) < 8:
        raise InputError(
            f"frames of shape {arr.shape} and dtype {arr.dtype}: accepted are uint8 RGB (T, H, W, 3) or (H, W, 3), "
            "sides >= 8"
        )
    return arr


def _border_rgb(f: np.ndarray) -> np.ndarray:
    """A robust mean of the border ring: the per-channel median, then the mean of pixels near it."""
    h, w = f.shape[1:3]
    b = max(1, min(h, w) // 32)
    ring = np.concatenate(
        [f[:, :b].reshape(-1, 3), f[:, -b:].reshape(-1, 3), f[:, :, :b].reshape(-1, 3), f[:, :, -b:].reshape(-1, 3)]
    )
    med = np.median(ring, axis=0)
    near = ring[np.linalg.norm(ring - med, axis=1) < MIN_CONTRAST]
    return near.mean(axis=0) if len(near) else med


def _noise(f: np.ndarray, bg: np.ndarray) -> float:
    """The noise's standard deviation (grey levels), from the border ring's spread around the background colour."""
    h, w = f.shape[1:3]
    b = max(1, min(h, w) // 32)
    ring = np.concatenate([f[:, :b].reshape(-1, 3), f[:, -b:].reshape(-1, 3)])
    return 1.4826 * float(np.median(np.abs(ring - bg)))


def _distance(f: np.ndarray, bg: np.ndarray, noise: float) -> np.ndarray:
    """Each pixel's RGB distance from the background colour, ``(T, H, W)``; on noisy frames (noise above
    ``SMOOTH_ABOVE``) measured after a light Gaussian blur, which shrinks the noise far more than the shape."""
    if noise > SMOOTH_ABOVE:
        f = np.stack([cv2.GaussianBlur(x, (0, 0), SMOOTH_SIGMA) for x in f])
    return np.linalg.norm(f - bg, axis=-1)


def _classify_shape(mask: np.ndarray, soft: np.ndarray) -> tuple[str, float]:
    """One frame's shape and a 0..1 margin. ``mask`` is the object's pixels in its bounding box; ``soft`` its
    coverage estimate (0..1) in the same box padded by ``SHAPE_PAD`` px on every side.

    A triangle is told by its skew: its mass sits low (towards the base), a circle's and a square's are symmetric.
    Blur keeps a shape's third cumulant and only adds to its variance, so the skew survives where corners do not.
    Circle and square are told apart by which template fits the mask's bounding box better (IoU).
    """
    ys = np.arange(soft.shape[0], dtype=np.float64)[:, None]
    total = float(soft.sum())
    mean = float((soft * ys).sum()) / total
    var = float((soft * (ys - mean) ** 2).sum()) / total
    skew = float((soft * (ys - mean) ** 3).sum()) / total / max(var, 1e-6) ** 1.5
    if skew < TRIANGLE_SKEW:
        return "triangle", min(1.0, (TRIANGLE_SKEW - skew) / 0.2)
    h, w = mask.shape
    ious = []
    for shape in ("circle", "square"):
        template = shape_coverage(shape, (0.0, 0.0, float(w), float(h)), h, w) >= 0.5
        union = np.logical_or(mask, template).sum()
        ious.append(float(np.logical_and(mask, template).sum()) / max(float(union), 1.0))
    best = int(np.argmax(ious))
    # A triangle's skew is -0.57, the others' 0: how far from the triangle cut is part of the margin too.
    return ("circle", "square")[best], min(abs(ious[0] - ious[1]) / 0.1, (skew - TRIANGLE_SKEW) / 0.2, 1.0)


def _shifted(a: np.ndarray, axis: int, by: int) -> np.ndarray:
    """``a`` moved ``by`` places along ``axis``, zeros shifted in."""
    out = np.zeros_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = (slice(None, -by), slice(by, None)) if by > 0 else (slice(-by, None), slice(None, by))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _grid_edge_share(f: np.ndarray, bg: np.ndarray, obj: np.ndarray) -> float:
    """The share of strong colour edges (steps along the background -> object axis) that lie on the pixel-art grid."""
    h, w = f.shape[1:3]
    if h % PIXEL_CELLS or w % PIXEL_CELLS or min(h, w) // PIXEL_CELLS < 2:
        return 0.0
    axis = obj - bg
    contrast = float(np.linalg.norm(axis))
    if contrast < MIN_CONTRAST:
        return 0.0
    p = f @ (axis / contrast).astype(np.float32)  # (T, H, W): each pixel's position between background and object
    # Steps across x on rows averaged in threes along y (and the other way round): a pixel-art edge runs straight
    # for a whole cell, noise does not, so this cuts the noise without moving the edge.
    along_y = (p + _shifted(p, 1, 1) + _shifted(p, 1, -1)) / 3
    along_x = (p + _shifted(p, 2, 1) + _shifted(p, 2, -1)) / 3
    dx, dy = np.abs(np.diff(along_y, axis=2))[:, 1:-1], np.abs(np.diff(along_x, axis=1))[:, :, 1:-1]
    # Noise from the median step (most steps are flat background): a strong edge clears it by 4 sigma.
    # (A quarter of the steps, strided, is plenty for a median.)
    noise = 1.4826 * float(np.median(np.concatenate([dx[:, ::2, ::2].ravel(), dy[:, ::2, ::2].ravel()])))
    thr = max(0.15 * contrast, 4.0 * noise)
    cx, cy = w // PIXEL_CELLS, h // PIXEL_CELLS
    on_x = (np.arange(w - 1) + 1) % cx == 0
    on_y = (np.arange(h - 1) + 1) % cy == 0
    # An edge is where the step peaks (at least its two neighbours along the axis): a blurred step spreads over
    # several steps, its peak stays where the colour changes.
    sx = (dx > thr) & (dx >= _shifted(dx, 2, 1)) & (dx >= _shifted(dx, 2, -1))
    sy = (dy > thr) & (dy >= _shifted(dy, 1, 1)) & (dy >= _shifted(dy, 1, -1))
    # Each axis on its own, the lower share kept: a still object's straight edge can sit on a grid line by chance,
    # but in pixel-art every edge, across and along, does.
    if not (sx.any() and sy.any()):
        return 0.0
    return min(float(sx[:, :, on_x].sum()) / int(sx.sum()), float(sy[:, on_y, :].sum()) / int(sy.sum()))


@dataclass(frozen=True)
class _Object:
    """The object in one frame: its pixels, bounding box (x, y, width, height), area (px) and centroid (x, y)."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]


def _objects(dist: np.ndarray, thr: float) -> dict[int, _Object]:
    """Per frame index, the largest 8-connected component farther than ``thr`` from the background, where one is
    big enough (``MIN_AREA_FRACTION``) to be the object."""
    h, w = dist.shape[1:]
    out = {}
    for t, frame in enumerate(dist):
        n, labels, stats, cents = cv2.connectedComponentsWithStats((frame > thr).astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area >= MIN_AREA_FRACTION * h * w:
            box = (int(stats[k, 0]), int(stats[k, 1]), int(stats[k, 2]), int(stats[k, 3]))
            # cv2's centroid counts pixel centres at integers; +0.5 puts it in the renderer's coordinates.
            out[t] = _Object(labels == k, box, area, (float(cents[k, 0]) + 0.5, float(cents[k, 1]) + 0.5))
    return out


def _frame_shape(o: _Object, coverage: np.ndarray) -> tuple[str, float]:
    """:func:`_classify_shape` on one frame's object; ``coverage`` is the frame's distance over the object's level."""
    x, y, bw, bh = o.box
    near = cv2.dilate(o.mask.astype(np.uint8), np.ones((2 * SHAPE_PAD + 1,) * 2, np.uint8)) > 0
    soft = np.clip(coverage, 0.0, 1.0) * near  # the outline's blend, without other blobs nearby
    y0, x0 = max(y - SHAPE_PAD, 0), max(x - SHAPE_PAD, 0)
    return _classify_shape(o.mask[y : y + bh, x : x + bw], soft[y0 : y + bh + SHAPE_PAD, x0 : x + bw + SHAPE_PAD])


def describe(frames: np.ndarray, min_move_px: float | None = None) -> Detection:
    """Read background, object colour, shape, size, motion and style from ``frames`` (``uint8`` RGB, ``(T, H, W, 3)``
    or a single ``(H, W, 3)`` picture, which is still). The method is in the module docstring.

    Args:
        frames: the clip or picture.
        min_move_px: the net displacement under which the object counts as still (default 5% of the frame side).

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> d = describe(render(Scene("circle", "red", "blue", "large", "left", speed=2.0)))
        >>> d.motion, round(d.speed, 1), d.found
        ('left', 2.0, True)
    """
    clip = _as_clip(frames)
    t_count, h, w, _ = clip.shape
    f = clip.astype(np.float32)
    bg = _border_rgb(f)
    background, bg_conf = nearest_colour(bg, BACKGROUNDS)
    dist = _distance(f, bg, _noise(f, bg))
    top = float(np.percentile(dist, 99.5))  # inside the object whenever it covers more than 0.5% of the frames
    strong = dist > max(MIN_CONTRAST, 0.5 * top)
    level = float(np.median(dist[strong])) if top > MIN_CONTRAST else 0.0
    thr = max(0.5 * level, 30.0)
    objects = _objects(dist, thr) if level else {}
    centroids = tuple(objects[t].centroid if t in objects else None for t in range(t_count))
    confidence = {"background": bg_conf}
    bg_rgb = (float(bg[0]), float(bg[1]), float(bg[2]))
    if not objects:
        return Detection(
            background, None, None, None, None, "plain", 0.0, (0.0, 0.0), centroids, 0.0, 0.0, confidence, bg_rgb, None
        )

    # Colour: the core of the mask (near full contrast, free of blending), pooled over frames.
    core = np.concatenate([f[t][o.mask & (dist[t] >= 0.75 * level)] for t, o in objects.items()])
    if not len(core):  # a thin or tiny object: no pixel reaches the core; use the whole mask
        core = np.concatenate([f[t][o.mask] for t, o in objects.items()])
    obj = np.median(core, axis=0)
    colour, confidence["colour"] = nearest_colour(obj, COLOURS)

    # Shape: a majority over up to MAX_SHAPE_FRAMES frames, evenly spread.
    frames_with = sorted(objects)
    picks = np.linspace(0, len(frames_with) - 1, min(len(frames_with), MAX_SHAPE_FRAMES)).round().astype(int)
    votes = [_frame_shape(objects[frames_with[i]], dist[frames_with[i]] / level) for i in picks]
    shape, n_votes = Counter(v[0] for v in votes).most_common(1)[0]
    margin = float(np.mean([v[1] for v in votes if v[0] == shape]))
    confidence["shape"] = n_votes / len(votes) * margin

    # Size: the area as the side of the shape's bounding square, relative to the frame side.
    area_fraction = float(np.median([o.area for o in objects.values()])) / (h * w)
    side = math.sqrt(area_fraction / FILL[shape])
    size = "large" if side > LARGE_SIDE else "small"
    span = math.log(SIZES["large"] / LARGE_SIDE)
    confidence["size"] = min(1.0, abs(math.log(max(side, 1e-6) / LARGE_SIDE)) / span)

    # Motion: a straight line through the centroids.
    times = np.array([t for t, c in enumerate(centroids) if c is not None], np.float64)
    pts = np.array([c for c in centroids if c is not None], np.float64)
    min_move = min_move_px if min_move_px is not None else max(2.0, 0.05 * min(h, w))
    vx = vy = 0.0
    if len(times) >= 2:
        vx, vy = (float(np.polyfit(times, pts[:, i], 1)[0]) for i in (0, 1))
    duration = float(times[-1] - times[0]) if len(times) else 0.0
    net = math.hypot(vx, vy) * duration
    if net < min_move:
        motion = "still"
        confidence["motion"] = max(0.0, 1.0 - net / min_move)
    else:
        motion = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
        confidence["motion"] = max(abs(vx), abs(vy)) / math.hypot(vx, vy)

    style_score = _grid_edge_share(f, bg, obj)
    style = "pixel-art" if style_score >= PIXEL_ART_MIN else "plain"
    confidence["style"] = min(1.0, abs(style_score - PIXEL_ART_MIN) / (1.0 - PIXEL_ART_MIN))
    return Detection(
        background, colour, shape, size, motion, style, math.hypot(vx, vy), (vx, vy), centroids,
        area_fraction, style_score, confidence, bg_rgb,
        (float(obj[0]), float(obj[1]), float(obj[2])),
    )  # fmt: skip


def pixel_art_score(frames: np.ndarray) -> float:
    """The pixel-art signature: the share of strong colour edges that lie on the :data:`~scenes.PIXEL_CELLS` grid
    (near 1 for pixel-art, about one in ``cell`` px by chance otherwise); pixel-art from :data:`PIXEL_ART_MIN`.

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> art = pixel_art_score(render(Scene("circle", "red", "blue", style="pixel-art")))
        >>> plain = pixel_art_score(render(Scene("circle", "red", "blue")))
        >>> art > PIXEL_ART_MIN > plain
        True
    """
    return describe(frames).style_score


# ----- scores -----


@dataclass(frozen=True)
class Score:
    """A task's result: named pass/fail ``checks`` and the ``numbers`` behind them; ``passed`` when all checks pass."""

    task: str
    checks: dict[str, bool]
    numbers: dict[str, float]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [k for k, ok in self.checks.items() if not ok]


def _named(prompt: str | Scene | PromptAttributes) -> PromptAttributes:
    if isinstance(prompt, Scene):
        return PromptAttributes(**prompt.attributes())
    return parse_prompt(prompt) if isinstance(prompt, str) else prompt


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise InputError(f"frames of shapes {a.shape} and {b.shape}: accepted are frames of the same size")
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _numbers(d: Detection, prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}speed": d.speed, f"{prefix}area_fraction": d.area_fraction, f"{prefix}style_score": d.style_score}
    out |= {f"{prefix}confidence_{k}": v for k, v in d.confidence.items()}
    return out


def _step(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    return math.inf if a is None or b is None else math.hypot(b[0] - a[0], b[1] - a[1])


def score_text_to_video(frames: np.ndarray, prompt: str | Scene | PromptAttributes) -> Score:
    """Text-to-video: the object is in every frame and each attribute the prompt names (shape, colour, background,
    size, motion, style) is what the frames show.

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> s = score_text_to_video(render(Scene("circle", "red", "blue", "large", "left")), "a red circle moving right")
        >>> s.passed, s.failed
        (False, ['motion'])
    """
    clip = _as_clip(frames)
    want, det = _named(prompt), describe(clip)
    got = det.attributes()
    checks = {"object_found": det.found} | {a: got[a] == v for a, v in want.values().items()}
    return Score("text-to-video", checks, _numbers(det))


def score_image_to_video(image: np.ndarray, frames: np.ndarray, motion: str | None = None) -> Score:
    """Image-to-video: the clip's first frame keeps the input picture (low pixel error, same object and background),
    the object stays the same and moves (the named way, when ``motion`` is given).

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> clip = render(Scene("square", "orange", "white", "large", "down"))
        >>> score_image_to_video(clip[0], clip, motion="down").passed
        True
    """
    img, clip = _as_clip(image)[0], _as_clip(frames)
    d0, det = describe(img), describe(clip)
    mae = _mae(clip[0], img)
    checks = {"object_found": det.found and d0.found, "first_frame_kept": mae <= FRAME_MAE_MAX}
    checks |= {f"{a}_kept": getattr(det, a) == getattr(d0, a) for a in ("shape", "colour", "background", "size")}
    checks["moves"] = det.motion not in (None, "still")
    if motion is not None:
        checks["motion"] = det.motion == motion
    start_offset = _step(d0.centroids[0], det.centroids[0])
    return Score("image-to-video", checks, _numbers(det) | {"first_frame_mae": mae, "start_offset_px": start_offset})


def score_extend(source: np.ndarray, result: np.ndarray) -> Score:
    """Extend: ``result`` begins with ``source``'s frames and continues them: same object, same direction, a speed
    within :data:`SPEED_RATIO` of the source's, and no jump where the new frames start (a centroid step within
    ``STEP_FACTOR`` x the source's speed + ``STEP_SLACK_PX``).

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> clip = render(Scene("circle", "white", "black", "small", "right", speed=1.2), frames=24)
        >>> score_extend(clip[:12], clip).passed
        True
    """
    src, res = _as_clip(source), _as_clip(result)
    n = len(src)
    if len(res) <= n:
        raise InputError(f"the extended clip has {len(res)} frames, the source {n}: accepted is a longer result")
    new = res[n:] if len(res) - n >= 2 else res[n - 1 :]
    ds, dn = describe(src), describe(new)
    mae = _mae(res[:n], src)
    join = _step(ds.centroids[-1], dn.centroids[0] if len(res) - n >= 2 else dn.centroids[-1])
    bound = STEP_FACTOR * ds.speed + STEP_SLACK_PX
    ratio = dn.speed / ds.speed if ds.speed > 0 else math.inf
    checks = {"object_found": ds.found and dn.found, "source_kept": mae <= FRAME_MAE_MAX}
    checks |= {f"{a}_kept": getattr(dn, a) == getattr(ds, a) for a in ("shape", "colour", "background", "size")}
    checks["direction_kept"] = dn.motion == ds.motion
    checks["speed_kept"] = ds.motion == "still" or SPEED_RATIO[0] <= ratio <= SPEED_RATIO[1]
    checks["no_jump"] = join <= bound
    numbers = _numbers(dn) | {"source_speed": ds.speed, "speed_ratio": ratio, "join_step_px": join}
    return Score("extend", checks, numbers | {"step_bound_px": bound, "source_mae": mae})


def score_edit(source: np.ndarray, result: np.ndarray, edit: Edit | str) -> Score:
    """Edit: the asked attribute shows the asked value and every other attribute (motion and style included) is
    what the source shows.

    Example:
        >>> from openmora.toy.scenes import Scene, apply_edit, render
        >>> scene = Scene("circle", "red", "blue", "large", "up")
        >>> score_edit(render(scene), render(apply_edit(scene, Edit("colour", "green"))), "make it green").passed
        True
    """
    e = parse_edit(edit) if isinstance(edit, str) else edit
    ds, dr = describe(_as_clip(source)), describe(_as_clip(result))
    checks = {"object_found": ds.found and dr.found, f"{e.attribute}_changed": getattr(dr, e.attribute) == e.value}
    checks |= {f"{a}_kept": getattr(dr, a) == getattr(ds, a) for a in ATTRIBUTES if a != e.attribute}
    return Score("edit", checks, _numbers(dr))


def score_connect(clip_a: np.ndarray, clip_b: np.ndarray, transition: np.ndarray) -> Score:
    """Connect: the transition starts like clip A's last frame, ends like clip B's first frame, and moves the
    object there without a jump: every centroid step from A's last frame through the transition to B's first
    frame is within ``STEP_FACTOR`` x the even step (distance / steps) + ``STEP_SLACK_PX``.

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> clip = render(Scene("triangle", "purple", "white", "large", "left"), frames=20)
        >>> score_connect(clip[:6], clip[14:], clip[5:15]).passed
        True
    """
    a, b, tr = _as_clip(clip_a), _as_clip(clip_b), _as_clip(transition)
    da, db, dt = describe(a[-1]), describe(b[0]), describe(tr)
    path = [da.centroids[0], *dt.centroids, db.centroids[0]]
    steps = [_step(p, q) for p, q in zip(path, path[1:], strict=False)]
    distance = _step(path[0], path[-1])
    bound = STEP_FACTOR * distance / len(steps) + STEP_SLACK_PX
    start_mae, end_mae = _mae(tr[0], a[-1]), _mae(tr[-1], b[0])
    checks = {
        "object_found": da.found and db.found and dt.found,
        "starts_like_a": start_mae <= FRAME_MAE_MAX and steps[0] <= bound,
        "ends_like_b": end_mae <= FRAME_MAE_MAX and steps[-1] <= bound,
        "no_jump": max(steps) <= bound,
    }
    numbers = {"start_mae": start_mae, "end_mae": end_mae, "max_step_px": max(steps), "step_bound_px": bound}
    return Score("connect", checks, numbers | {"distance_px": distance})


def score_digital_world(frames: np.ndarray, reference: np.ndarray | str | Scene | PromptAttributes) -> Score:
    """Digital world: the frames carry the pixel-art signature (:func:`pixel_art_score`) and keep the content:
    colour, background, size and motion as the reference clip shows them, or as the reference prompt names them.
    The shape is not checked: the coarse cell grid makes small shapes ambiguous.

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> scene = Scene("square", "yellow", "blue", "large", "right")
        >>> art = render(Scene("square", "yellow", "blue", "large", "right", style="pixel-art"))
        >>> score_digital_world(art, render(scene)).passed, score_digital_world(render(scene), scene).failed
        (True, ['pixel_art_style'])
    """
    det = describe(_as_clip(frames))
    kept = ("colour", "background", "size", "motion")
    checks = {"object_found": det.found, "pixel_art_style": det.style == "pixel-art"}
    if isinstance(reference, np.ndarray):
        ref = describe(_as_clip(reference))
        checks |= {f"{a}_kept": getattr(det, a) == getattr(ref, a) for a in kept}
    else:
        want = _named(reference).values()
        checks |= {a: getattr(det, a) == want[a] for a in kept if a in want}
    return Score("digital-world", checks, _numbers(det))


def reading(frames: np.ndarray, prompt: str | Scene | PromptAttributes) -> str:
    """One line comparing what ``prompt`` names with what the frames show, attribute by attribute: what the CLI
    prints after a ``toy`` run, so a user can see whether the prompt reached the pixels.

    Example:
        >>> from openmora.toy.scenes import Scene, render
        >>> reading(render(Scene("circle", "red", "blue", "large", "left")), "a red circle moving right")
        'asked: shape circle, colour red, motion right; the video shows: shape circle, colour red, motion left (2 of 3 match)'
    """
    want = _named(prompt).values()
    if not want:
        return "the prompt names nothing the toy world knows (shapes, colours, backgrounds, sizes, motions, style)"
    got = describe(_as_clip(frames)).attributes()
    match = sum(got[a] == v for a, v in want.items())
    asked = ", ".join(f"{a} {v}" for a, v in want.items())
    seen = ", ".join(f"{a} {got[a] or 'none'}" for a in want)
    return f"asked: {asked}; the video shows: {seen} ({match} of {len(want)} match)"
