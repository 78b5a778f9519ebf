"""Quality metrics of generated clips that need no model weights: VBench's formulas where they need none, and
documented estimators where VBench uses a network.

Frames are RGB ``uint8`` arrays shaped ``(T, H, W, 3)``. Every result carries ``method``: ``"vbench"`` where the value
is VBench's formula, ``"estimator: ..."`` where a weight-free stand-in replaces VBench's network (and which one).

| metric | VBench | here |
|---|---|---|
| :func:`temporal_flickering` | mean abs diff of consecutive frames | the same formula |
| :func:`motion_smoothness` | AMT-S frame interpolation | optical-flow-warp interpolation (OpenCV DIS) |
| :func:`dynamic_degree` | RAFT flow, top-5% magnitudes | OpenCV DIS flow, the same procedure |
| :func:`brisque` (imaging quality) | MUSIQ | BRISQUE (natural-scene statistics + an SVR) |
| :func:`subject_consistency` | DINO features | the same formula on any :class:`FeatureExtractor` |

Join continuity (:func:`seam`) and Mora's TCON / Tmean (:func:`tcon`, :func:`tmean`) compare clips.
Optical flow runs on frames downscaled to a long side of :data:`FLOW_SIDE` px; magnitudes are reported in pixels of
the original frames.

Example:
    >>> from openmora.quality import metrics, synthetic
    >>> metrics.temporal_flickering(synthetic.static(4, 32, 32)).value
    1.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import cv2
import numpy as np

from openmora.errors import InputError

FLOW_SIDE = 256  # long side (px) optical flow is computed at
SMOOTH_SIDE = 512  # long side (px) motion_smoothness rebuilds and compares frames at (4x less work than 1024)
BRISQUE_SIDE = 512  # long side (px) frames are scored at (VBench resizes to this for MUSIQ)
TOP_FRACTION = 0.05  # VBench's dynamic degree: mean of the top 5% flow magnitudes per pair
PSNR_CAP = 100.0  # dB reported for identical frames
FLOW_FLOOR = 0.5  # px at flow resolution: the least "within" motion flow_jump divides by (static frames)
DIFF_EPS = 0.5  # grey levels added to the within-context diff of seam_diff_ratio (static frames)


# ----------------------------------------------------------------------------------------------------------------
# results


@dataclass
class Series:
    """A per-clip value and the per-pair (or per-frame) values it is the mean of."""

    value: float
    series: list[float]
    higher_is_better: bool
    method: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class DynamicDegree:
    """VBench's dynamic degree of one clip (``dynamic``, ``value`` 1.0/0.0) and the flow magnitudes behind it.

    ``magnitudes``: per sampled pair, the mean of the top 5% flow magnitudes (original pixels). ``threshold``: the
    magnitude a pair must exceed (original pixels). ``count_needed``: how many pairs must exceed it. ``speed_px``: the
    median of ``magnitudes`` divided by the sampling interval, i.e. pixels per original frame.
    """

    dynamic: bool
    value: float
    magnitudes: list[float]
    threshold: float
    count_needed: int
    speed_px: float
    interval: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class Seam:
    """Continuity at the join of two clips (clip a's last frame, clip b's first frame); see :func:`seam`."""

    psnr: float
    ssim: float
    hist_distance: float
    flow_jump: float
    seam_diff_ratio: float
    cut: bool
    flow_across_px: float
    flow_within_px: float
    method: str = "estimator: pixel and OpenCV DIS-flow statistics of the join (no VBench equivalent)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _check_frames(frames: Any, min_t: int, what: str) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(
            f"{what}: frames shaped {arr.shape} ({arr.dtype}); accepted are RGB uint8 frames shaped (T, H, W, 3)"
        )
    if arr.shape[0] < min_t:
        raise InputError(f"{what}: {arr.shape[0]} frame(s); it needs at least {min_t}")
    return arr


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    # cv2.norm L1 sums |a - b| in one pass without an int16 copy (~10x numpy on 1024x576).
    return float(cv2.norm(a, b, cv2.NORM_L1)) / a.size


def _flow_scale(h: int, w: int) -> float:
    return min(1.0, FLOW_SIDE / max(h, w))


def _small_gray(frames: np.ndarray, scale: float) -> list[np.ndarray]:
    h, w = frames.shape[1:3]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    out = []
    for f in frames:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        out.append(g if scale == 1.0 else cv2.resize(g, size, interpolation=cv2.INTER_AREA))
    return out


def _dis() -> Any:
    # DIS (medium preset) ranks the known answers right and measures their speeds within ~10% at ~10 ms a pair on
    # 256x144 (2 busy cores); Farneback (5 levels, window 15) was as accurate but ~1.7x slower.
    return cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_MEDIUM)


def _top_magnitude(flow: np.ndarray) -> float:
    """VBench's per-pair score: the mean of the top 5% flow magnitudes."""
    rad = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).ravel()
    k = max(1, int(rad.size * TOP_FRACTION))
    return float(np.partition(rad, rad.size - k)[rad.size - k :].mean())


# ----------------------------------------------------------------------------------------------------------------
# VBench formulas and estimators


def temporal_flickering(frames: np.ndarray) -> Series:
    """VBench's temporal flickering: per consecutive pair ``(255 - mean abs diff) / 255``; value = their mean.

    1.0 for a static clip; lower with more frame-to-frame change (flicker, but also motion). Higher is better.
    """
    arr = _check_frames(frames, 2, "temporal_flickering")
    series = [(255.0 - _mean_abs_diff(arr[i], arr[i + 1])) / 255.0 for i in range(len(arr) - 1)]
    return Series(float(np.mean(series)), series, True, "vbench")


def motion_smoothness(frames: np.ndarray) -> Series:
    """Motion smoothness by frame interpolation: each odd frame rebuilt from its even neighbours, compared with it.

    For odd ``i`` with ``i + 1 < T``: dense flow F from frame ``i - 1`` to ``i + 1`` (OpenCV DIS at a long side of
    FLOW_SIDE px, upsampled), the mid frame ``0.5 * (I[i-1](x - F/2) + I[i+1](x + F/2))``, and the score
    ``(255 - mean abs diff vs frame i) / 255`` (frames compared at a long side of at most SMOOTH_SIDE px); value =
    the mean. ~1 for static or constant-speed motion, lower for
    jerky motion or noise. An estimator of VBench's metric, which interpolates with the AMT-S network.
    """
    arr = _check_frames(frames, 3, "motion_smoothness")
    t, h0, w0 = arr.shape[:3]
    s = min(1.0, SMOOTH_SIDE / max(h0, w0))
    if s < 1.0:
        size = (round(w0 * s), round(h0 * s))
        arr = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in arr])
    h, w = arr.shape[1:3]
    scale = _flow_scale(h, w)
    gray = _small_gray(arr, scale)
    dis = _dis()
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    series = []
    for i in range(1, t - 1, 2):
        flow = dis.calc(gray[i - 1], gray[i + 1], None)
        if scale != 1.0:
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(0.5 / scale)
        else:
            flow = flow * np.float32(0.5)
        # Backward warping with the flow read at the target pixel: the usual cheap approximation of the mid flow.
        fx, fy = flow[..., 0], flow[..., 1]
        prev = cv2.remap(arr[i - 1], gx - fx, gy - fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        nxt = cv2.remap(arr[i + 1], gx + fx, gy + fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mid = cv2.addWeighted(prev, 0.5, nxt, 0.5, 0.0)
        series.append((255.0 - _mean_abs_diff(mid, arr[i])) / 255.0)
    return Series(float(np.mean(series)), series, True, "estimator: flow-warp interpolation (OpenCV DIS), not AMT-S")


def dynamic_degree(frames: np.ndarray, fps: float) -> DynamicDegree:
    """VBench's dynamic degree with OpenCV DIS flow in place of RAFT.

    Frames are sampled at ~8 fps (every ``max(1, round(fps / 8))``-th frame); per consecutive sampled pair the mean
    of the top 5% flow magnitudes; the clip is dynamic when at least ``round(4 * count / 16)`` pairs (``count``: the
    sampled frames; at least 1 pair) exceed ``6 * min(H, W) / 256`` px. VBench's loop also leaves out the last two
    pairs; this counts every pair. A clip shorter than one interval compares its first and last frames. Flow runs at a long side of FLOW_SIDE px; magnitudes and threshold are in original pixels (flow
    scales with resolution, so the decision is the same as at full size).
    """
    arr = _check_frames(frames, 2, "dynamic_degree")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        fps = float("nan")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"dynamic_degree: fps {fps!r}; accepted is a positive number")
    interval = max(1, round(fps / 8))
    sampled = arr[::interval]
    if len(sampled) < 2:
        interval = len(arr) - 1
        sampled = arr[[0, -1]]
    h, w = arr.shape[1:3]
    scale = _flow_scale(h, w)
    gray = _small_gray(sampled, scale)
    dis = _dis()
    mags = [_top_magnitude(dis.calc(gray[i], gray[i + 1], None)) / scale for i in range(len(gray) - 1)]
    threshold = 6.0 * min(h, w) / 256.0
    # At least one pair: VBench's loop can only say True after seeing a pair over the threshold.
    count_needed = max(1, round(4 * len(sampled) / 16))
    over = sum(m > threshold for m in mags)
    dynamic = over >= count_needed
    return DynamicDegree(
        dynamic=bool(dynamic),
        value=1.0 if dynamic else 0.0,
        magnitudes=[float(m) for m in mags],
        threshold=float(threshold),
        count_needed=int(count_needed),
        speed_px=float(np.median(mags)) / interval,
        interval=int(interval),
        method="estimator: VBench's dynamic degree procedure with OpenCV DIS flow, not RAFT",
    )


# ----------------------------------------------------------------------------------------------------------------
# BRISQUE
#
# The brisque package (0.2.0) fails under NumPy 2 (``float()`` of 1-element arrays in its feature scaling is a
# TypeError since NumPy 2.x), and its per-image convolutions are slow. The features are computed here the way the
# package computes them (skimage grey in 0..1, 7x7 Gaussian of sigma 7/6 with zero padding, C = 1/255, the AGGD fit,
# the image and its half-size cubic downscale), and scored with the package's shipped SVR model (svm.txt) and feature
# ranges (normalize.pickle) through libsvm's svmutil, so the scores match the package's (to within 0.1%).


@functools.lru_cache(maxsize=1)
def _brisque_model() -> tuple[Any, np.ndarray, np.ndarray]:
    import importlib.util

    from libsvm import svmutil

    # Found without importing the brisque package: its __init__ imports requests, skimage.io and scipy (~1.5 s).
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("BRISQUE needs the brisque package (its SVR model files): pip install brisque")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    model = svmutil.svm_load_model(str(models / "svm.txt"))
    with open(models / "normalize.pickle", "rb") as f:
        params = pickle.load(f)
    lo = np.array([float(np.asarray(v).ravel()[0]) for v in params["min_"]], np.float64)
    hi = np.array([float(np.asarray(v).ravel()[0]) for v in params["max_"]], np.float64)
    return model, lo, hi


@functools.lru_cache(maxsize=1)
def _gauss_kernel() -> np.ndarray:
    y, x = np.indices((7, 7)) - 3
    sigma = 7 / 6
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return (k / k.sum()).astype(np.float64)


def _aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit (alpha, mean, sigma_l**2, sigma_r**2) as the brisque package fits it."""
    from scipy import optimize, special

    x = x.ravel()
    r_hat = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x**2))
    left, right = x[x < 0], x[x >= 0]
    left_sq = float(np.mean(left**2)) if left.size else 0.0
    right_sq = float(np.mean(right**2)) if right.size else 0.0
    gamma = math.sqrt(left_sq) / math.sqrt(right_sq)
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2

    def phi(a: np.ndarray) -> np.ndarray:
        return special.gamma(2 / a) ** 2 / (special.gamma(1 / a) * special.gamma(3 / a)) - big_r

    alpha = float(optimize.root(phi, [0.2]).x[0])
    const = math.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    sl, sr = math.sqrt(left_sq), math.sqrt(right_sq)
    mean = (sr - sl) * const * (special.gamma(2 / alpha) / special.gamma(1 / alpha))
    return alpha, float(mean), left_sq, right_sq


def _brisque_features(gray: np.ndarray) -> list[float]:
    k = _gauss_kernel()
    # filter2D with a zero constant border is scipy's convolve2d(..., "same") for this symmetric kernel, ~20x faster.
    mu = cv2.filter2D(gray, cv2.CV_64F, k, borderType=cv2.BORDER_CONSTANT)
    var = cv2.filter2D(gray * gray, cv2.CV_64F, k, borderType=cv2.BORDER_CONSTANT)
    mscn = (gray - mu) / (np.sqrt(np.abs(mu * mu - var)) + 1 / 255)
    pairs = [
        mscn[:, :-1] * mscn[:, 1:],
        mscn[:-1, :] * mscn[1:, :],
        mscn[:-1, :-1] * mscn[1:, 1:],
        mscn[1:, :-1] * mscn[:-1, 1:],
    ]
    alpha, _, sl2, sr2 = _aggd(mscn)
    feats = [alpha, (sl2 + sr2) / 2]
    for p in pairs:
        feats.extend(_aggd(p))
    return feats


def brisque_score(image: np.ndarray) -> float:
    """The raw BRISQUE score of one RGB uint8 image (roughly 0..100 on photos, lower is better; flat synthetic
    graphics can score above 100), equal to the brisque package's ``BRISQUE(url=False).score(image)`` to within 0.1%.
    A frame without structure (one colour) has no statistics: 100."""
    from libsvm import svmutil

    # skimage.color.rgb2gray's weights on 0..1 (what the package feeds its features), without importing skimage.
    gray = np.asarray(image)[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]) / 255.0
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    with np.errstate(all="ignore"):
        try:
            feats = np.array(_brisque_features(gray) + _brisque_features(half), np.float64)
        except (ZeroDivisionError, ValueError):
            return 100.0
    if not np.all(np.isfinite(feats)):
        return 100.0
    model, lo, hi = _brisque_model()
    scaled = -1 + 2.0 / (hi - lo) * (feats - lo)
    x, _ = svmutil.gen_svm_nodearray([float(v) for v in scaled], isKernel=False)
    prob = (svmutil.c_double * 1)()
    return float(svmutil.libsvm.svm_predict_probability(model, x, prob))


def brisque(frames: np.ndarray, max_frames: int = 4) -> Series:
    """Imaging quality by BRISQUE on up to ``max_frames`` evenly spaced frames (each resized to a long side of at
    most 512 px, as VBench resizes for MUSIQ). ``series``: the raw score per sampled frame (roughly 0..100, LOWER is
    better); value = their mean. An estimator of VBench's imaging quality, which uses MUSIQ; see
    :func:`imaging_quality_from_brisque` for a 0..1 higher-is-better reading."""
    arr = _check_frames(frames, 1, "brisque")
    if max_frames < 1:
        raise InputError(f"brisque: max_frames {max_frames}; accepted is >= 1")
    idx = sorted({int(round(v)) for v in np.linspace(0, len(arr) - 1, min(max_frames, len(arr)))})
    h, w = arr.shape[1:3]
    s = min(1.0, BRISQUE_SIDE / max(h, w))
    scores = []
    for i in idx:
        f = arr[i]
        if s < 1.0:
            f = cv2.resize(f, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        scores.append(brisque_score(f))
    return Series(float(np.mean(scores)), scores, False, "estimator: BRISQUE (brisque package's SVR), not MUSIQ")


def imaging_quality_from_brisque(score: float) -> float:
    """``clip(1 - score / 100, 0, 1)``: a BRISQUE score read as 0..1, higher is better, like VBench's imaging
    quality. Not MUSIQ's scale: the two are not comparable number for number."""
    return float(np.clip(1.0 - score / 100.0, 0.0, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# seams


def _gray_limited(frame: np.ndarray, side: int = 512) -> np.ndarray:
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    s = min(1.0, side / max(h, w))
    return g if s == 1.0 else cv2.resize(g, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(cv2.norm(a, b, cv2.NORM_L2SQR)) / a.size
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def _hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    ha, hb = (
        cv2.calcHist([cv2.cvtColor(x, cv2.COLOR_RGB2HSV)], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256])
        for x in (a, b)
    )
    return float(np.clip(cv2.compareHist(ha, hb, cv2.HISTCMP_BHATTACHARYYA), 0.0, 1.0))


def seam_diff_ratio(a: np.ndarray, b: np.ndarray, context: int = 3) -> float:
    """Mean abs diff across the join (a[-1] vs b[0]) over the median mean abs diff of consecutive frames within
    ``a[-context:]`` and ``b[:context]`` (+ 0.5 grey levels, so static context does not divide by zero).

    ~1 where the join changes as much as the frames around it, large at a jump. A cheap cut detector."""
    a = _check_frames(a, 1, "seam_diff_ratio (clip a)")
    b = _check_frames(b, 1, "seam_diff_ratio (clip b)")
    return _diff_ratio(a[-context:], b[:context])


def _diff_ratio(ca: np.ndarray, cb: np.ndarray) -> float:
    across = _mean_abs_diff(ca[-1], cb[0])
    within = [_mean_abs_diff(c[i], c[i + 1]) for c in (ca, cb) for i in range(len(c) - 1)]
    return across / ((float(np.median(within)) if within else 0.0) + DIFF_EPS)


def seam(a: np.ndarray, b: np.ndarray, context: int = 3) -> Seam:
    """Continuity at the join of clip ``a`` (its last ``context`` frames) and clip ``b`` (its first ``context``).

    - ``psnr``: dB, a[-1] vs b[0] (identical frames: 100).
    - ``ssim``: grayscale SSIM of a[-1] vs b[0] (at a long side of at most 512 px).
    - ``hist_distance``: Bhattacharyya distance (0 same .. 1 disjoint) of the HSV histograms of a[-1] and b[0].
    - ``flow_jump``: the flow magnitude across the join (top-5% mean, a[-1] to b[0]) over the median of that
      magnitude within the context pairs on both sides, the latter floored at 0.5 px (flow resolution) so static
      frames do not divide by zero. ~1 or less for motion that continues across the join; large where the join
      needs motion the frames around it do not have, or where unrelated pictures give the flow garbage (a cut).
    - ``seam_diff_ratio``: see :func:`seam_diff_ratio`.
    - ``cut``: the join changes much more than the frames around it AND the change is large in itself:
      ``seam_diff_ratio > 2.5 and (flow_jump > 3 or hist_distance > 0.3) and psnr < 25``. The ratios catch a jump
      relative to the clip's own motion (a fast pan is not a cut); the flow/histogram test asks that the pictures
      are not the same content shifted; the PSNR floor keeps a small glitch between static frames from counting.
    """
    a = _check_frames(a, 1, "seam (clip a)")
    b = _check_frames(b, 1, "seam (clip b)")
    if a.shape[1:] != b.shape[1:]:
        raise InputError(f"seam: clips of frame sizes {a.shape[1:3]} and {b.shape[1:3]}; accepted is one frame size")
    if context < 1:
        raise InputError(f"seam: context {context}; accepted is >= 1")
    ca, cb = a[-context:], b[:context]
    last, first = ca[-1], cb[0]
    from skimage.metrics import structural_similarity

    ssim = float(structural_similarity(_gray_limited(last), _gray_limited(first), data_range=255))
    h, w = a.shape[1:3]
    scale = _flow_scale(h, w)
    ga, gb = _small_gray(ca, scale), _small_gray(cb, scale)
    dis = _dis()
    across = _top_magnitude(dis.calc(ga[-1], gb[0], None))
    within_l = [_top_magnitude(dis.calc(g[i], g[i + 1], None)) for g in (ga, gb) for i in range(len(g) - 1)]
    within = float(np.median(within_l)) if within_l else 0.0
    flow_jump = across / max(within, FLOW_FLOOR)
    psnr = _psnr(last, first)
    hist = _hist_distance(last, first)
    ratio = _diff_ratio(ca, cb)
    cut = ratio > 2.5 and (flow_jump > 3.0 or hist > 0.3) and psnr < 25.0
    return Seam(
        psnr=float(psnr),
        ssim=ssim,
        hist_distance=hist,
        flow_jump=float(flow_jump),
        seam_diff_ratio=float(ratio),
        cut=bool(cut),
        flow_across_px=float(across / scale),
        flow_within_px=float(within / scale),
    )


# ----------------------------------------------------------------------------------------------------------------
# features, subject consistency, TCON


@runtime_checkable
class FeatureExtractor(Protocol):
    """Per-frame features: ``__call__(frames)`` gives a ``(T, D)`` float32 array of L2-normalised rows.

    ``name`` says which features (in reports); ``is_model`` whether they come from a network's weights."""

    name: str
    is_model: bool

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def _l2_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def _unit_centred(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


@dataclass
class PixelFeatures:
    """Weight-free frame features: an HSV histogram (16 hue + 8 saturation + 8 value bins, square-rooted) and a
    16x16 grayscale thumbnail, each standardised (centred, unit norm) and weighted ``hist_weight`` : 1, then the
    row L2-normalised. Sees colour and layout, not identity: a stand-in for DINO/CLIP features."""

    hist_weight: float = 0.7
    name: str = field(default="pixel-stats", init=False)
    is_model: bool = field(default=False, init=False)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        arr = _check_frames(frames, 1, "PixelFeatures")
        hists, thumbs = [], []
        for f in arr:
            small = cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
            hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
            hs = [
                cv2.calcHist([hsv], [c], None, [n], [0, top]).ravel()
                for c, n, top in ((0, 16, 180), (1, 8, 256), (2, 8, 256))
            ]
            hist = np.concatenate(hs) / (64 * 64)
            hists.append(np.sqrt(hist))
            thumbs.append(cv2.resize(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA))
        h = _unit_centred(np.array(hists, np.float32)) * self.hist_weight
        t = _unit_centred(np.array(thumbs, np.float32).reshape(len(arr), -1))
        return _l2_rows(np.concatenate([h, t], axis=1))


class TransformersImageFeatures:
    """Frame features from a local DINO (``kind="dino"``: transformers ``AutoModel``, the CLS token of the last
    hidden state, or the pooler output where there is no sequence) or CLIP (``kind="clip"``:
    ``CLIPModel.get_image_features``) saved with ``save_pretrained`` in ``path`` next to its image processor.

    Loaded with ``local_files_only=True``: nothing downloads. A missing or unusable folder is an InputError."""

    is_model = True

    def __init__(self, path: str | Path, kind: str = "dino", device: str = "cpu", batch_size: int = 16) -> None:
        if kind not in ("dino", "clip"):
            raise InputError(f"feature model kind {kind!r}: accepted are dino, clip")
        p = Path(path).expanduser()
        expected = "a folder saved with save_pretrained (config.json, weights and preprocessor_config.json)"
        if not p.is_dir():
            raise InputError(f"feature model folder {path} does not exist; expected {expected}")
        if not (p / "config.json").is_file():
            raise InputError(f"feature model folder {path} has no config.json; expected {expected}")
        import torch  # noqa: F401  (transformers' model classes need it)
        from transformers import AutoImageProcessor, AutoModel, CLIPModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
            model = (CLIPModel if kind == "clip" else AutoModel).from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise InputError(
                f"feature model folder {path} cannot be loaded as {kind} ({first}); expected {expected}"
            ) from None
        # cast: transformers types ``PreTrainedModel.to`` through a decorator that mypy reads as taking a model.
        self.model = cast(Any, model).to(device).eval()
        self.kind = kind
        self.device = device
        self.batch_size = batch_size
        self.name = f"{kind}:{p.name}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch

        arr = _check_frames(frames, 1, self.name)
        rows = []
        with torch.no_grad():
            for s in range(0, len(arr), self.batch_size):
                batch = self.processor(images=list(arr[s : s + self.batch_size]), return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device)
                if self.kind == "clip":
                    out = self.model.get_image_features(pixel_values=pixels)
                    # Some transformers versions return a model output rather than the projected tensor.
                    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
                else:
                    out = self.model(pixel_values=pixels)
                    hidden = getattr(out, "last_hidden_state", None)
                    emb = hidden[:, 0] if hidden is not None and hidden.ndim == 3 else out.pooler_output
                rows.append(emb.float().cpu().numpy().reshape(emb.shape[0], -1))
        return _l2_rows(np.concatenate(rows))


def _check_features(f: Any, what: str) -> np.ndarray:
    arr = np.asarray(f, np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise InputError(f"{what}: features shaped {arr.shape}; accepted is a (T, D) array from a FeatureExtractor")
    return _l2_rows(arr)


def subject_consistency(features: np.ndarray) -> Series:
    """VBench's subject consistency on any features: per frame ``i >= 1`` the mean of ``max(0, cos(f[i-1], f[i]))``
    and ``max(0, cos(f[0], f[i]))``; value = their mean. 1.0 for an unchanging clip; higher is better.

    ``method`` says "vbench" (the formula); which features fed it is the extractor's ``name``."""
    f = _check_features(features, "subject_consistency")
    if len(f) < 2:
        raise InputError("subject_consistency: 1 frame of features; it needs at least 2")
    prev = np.maximum(0.0, np.sum(f[:-1] * f[1:], axis=1))
    first = np.maximum(0.0, f[1:] @ f[0])
    series = [float(v) for v in (prev + first) / 2]
    return Series(float(np.mean(series)), series, True, "vbench")


def _clip_vector(f: np.ndarray) -> np.ndarray:
    m = f.mean(axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def tcon(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Mora's TCON: the cosine similarity of two clips' features (each clip: the mean of its rows, re-normalised)."""
    a = _clip_vector(_check_features(feats_a, "tcon (clip a)"))
    b = _clip_vector(_check_features(feats_b, "tcon (clip b)"))
    if a.shape != b.shape:
        raise InputError(f"tcon: feature sizes {a.shape[0]} and {b.shape[0]}; accepted are features of one extractor")
    return float(a @ b)


def tmean(prev_feats: np.ndarray | None, feats: np.ndarray, next_feats: np.ndarray | None) -> float:
    """Mora's Tmean: the mean of TCON with the clip before and the clip after (either may be None: the one there is)."""
    parts = [tcon(other, feats) for other in (prev_feats, next_feats) if other is not None]
    if not parts:
        raise InputError("tmean: neither a previous nor a next clip's features; pass at least one")
    return float(np.mean(parts))


# ----------------------------------------------------------------------------------------------------------------
# Model-based scores from a user's local files (nothing downloads): VBench's aesthetic quality (a LAION linear head
# on CLIP image embeddings) and imaging quality (MUSIQ). Without them the weight-free estimators stand in.


class AestheticHead:
    """A LAION-style linear aesthetic head (``score = w . e + b`` on L2-normalised CLIP image embeddings ``e``,
    roughly 1..10) from a ``.safetensors`` or torch ``.pt``/``.pth`` file holding ``weight`` (``(1, D)`` or ``(D,)``)
    and ``bias`` (keys may carry a prefix such as ``linear.``). An unreadable file is an InputError."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path).expanduser()
        expected = "a .safetensors or .pt file with a linear head's weight (1, D) and bias (1,)"
        if not p.is_file():
            raise InputError(f"aesthetic head {path} is not a file; expected {expected}")
        try:
            if p.suffix == ".safetensors":
                from safetensors.numpy import load_file

                tensors: dict[str, Any] = dict(load_file(str(p)))
            else:
                import torch

                tensors = {k: v.float().numpy() for k, v in torch.load(str(p), map_location="cpu").items()}
        except Exception as err:  # noqa: BLE001 - any reason a file cannot be read: one line naming it
            raise InputError(
                f"aesthetic head {path} cannot be read ({str(err).splitlines()[0][:100]}); expected {expected}"
            ) from None
        weight = next((np.asarray(v, np.float32) for k, v in tensors.items() if k.endswith("weight")), None)
        bias = next((np.asarray(v, np.float32) for k, v in tensors.items() if k.endswith("bias")), None)
        if weight is None or weight.size == 0 or (weight.ndim == 2 and weight.shape[0] != 1) or weight.ndim > 2:
            raise InputError(f"aesthetic head {path} has no linear weight of shape (1, D); expected {expected}")
        self.weight = weight.reshape(-1)
        self.bias = float(bias.reshape(-1)[0]) if bias is not None and bias.size else 0.0
        self.name = f"aesthetic:{p.name}"

    def __call__(self, clip_features: np.ndarray) -> np.ndarray:
        f = _check_features(clip_features, self.name)
        if f.shape[1] != self.weight.size:
            raise InputError(
                f"{self.name} takes {self.weight.size}-wide CLIP embeddings, got {f.shape[1]}: use the CLIP model "
                "the head was trained on (OPENMORA_CLIP)"
            )
        return f @ self.weight + self.bias


def aesthetic_quality(clip_features: np.ndarray, head: AestheticHead) -> Series:
    """VBench's aesthetic quality: the head's score per frame / 10, averaged (higher is better)."""
    per_frame = [float(v) / 10.0 for v in head(clip_features)]
    return Series(float(np.mean(per_frame)), per_frame, True, f"vbench: LAION linear head ({head.name}) on CLIP")


class TorchScriptIQA:
    """A no-reference image-quality model exported with ``torch.jit`` (e.g. MUSIQ): it takes ``(1, 3, H, W)``
    float RGB in 0..1 and returns one score (MUSIQ: 0..100). Frames are resized so the long side is at most 512 px,
    as VBench does for MUSIQ."""

    def __init__(self, path: str | Path, scale: float = 100.0) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"image-quality model {path} is not a file; expected a TorchScript file (torch.jit.save)")
        import torch

        try:
            self.model = torch.jit.load(str(p), map_location="cpu").eval()
        except Exception as err:  # noqa: BLE001
            raise InputError(
                f"image-quality model {path} cannot be loaded ({str(err).splitlines()[0][:100]}); "
                "expected a TorchScript file (torch.jit.save)"
            ) from None
        self.scale = scale
        self.name = f"torchscript:{p.name}"

    def __call__(self, frame: np.ndarray) -> float:
        import torch

        h, w = frame.shape[:2]
        s = min(1.0, BRISQUE_SIDE / max(h, w))
        if s < 1.0:
            frame = cv2.resize(frame, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return float(self.model(x).reshape(-1)[0])


def imaging_quality_model(frames: np.ndarray, model: TorchScriptIQA, max_frames: int = 4) -> Series:
    """VBench's imaging quality with a local model: per sampled frame score / ``model.scale``, averaged."""
    arr = _check_frames(frames, 1, "imaging_quality_model")
    idx = sorted({int(round(v)) for v in np.linspace(0, len(arr) - 1, min(max_frames, len(arr)))})
    per = [model(arr[i]) / model.scale for i in idx]
    return Series(float(np.mean(per)), per, True, f"vbench: {model.name} (frames at most 512 px)")
