"""Known-answer clips for the quality metrics: deterministic generators whose motion, flicker and cuts are known.

Every generator returns ``uint8`` frames shaped ``(T, H, W, 3)`` (RGB) and is deterministic (seeded), so a metric's
value on it can be asserted: a static clip does not flicker, a square moving at ``speed_px`` moves at that speed, a
hard cut is a cut. :func:`pan` slides a crop across a real photo (scikit-image's bundled samples, offline) and
:func:`ffmpeg_testsrc` renders ffmpeg's ``testsrc2`` pattern, for footage that is not drawn by hand.

Example:
    >>> from openmora.quality import synthetic
    >>> synthetic.moving_square(8, 64, 64, speed_px=4.0).shape
    (8, 64, 64, 3)
"""

from __future__ import annotations

import subprocess

import cv2
import numpy as np

from openmora.errors import InputError

DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}
PHOTOS = ("astronaut", "coffee", "chelsea")


def _check_size(t: int, h: int, w: int, min_t: int = 1) -> None:
    if t < min_t or h < 8 or w < 8:
        raise InputError(f"clip size {t}x{h}x{w} (frames x height x width): accepted are >= {min_t} frames, sides >= 8")


def texture(h: int, w: int, seed: int = 0, cell: int = 8, lo: int = 64, hi: int = 191) -> np.ndarray:
    """A smooth random RGB picture (noise on a ``cell``-pixel grid, cubic-upsampled), values in ``lo..hi``.

    Smooth and structured, so optical flow can track it; mid-range, so brightness changes do not clip.
    """
    rng = np.random.default_rng(seed)
    gh, gw = max(2, h // cell + 1), max(2, w // cell + 1)
    grid = rng.random((gh, gw, 3)).astype(np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    up = (up - up.min()) / max(float(up.max() - up.min()), 1e-6)
    return (lo + up * (hi - lo)).round().astype(np.uint8)


def static(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``t`` identical frames of a smooth textured picture: no motion, no flicker."""
    _check_size(t, h, w)
    return np.repeat(texture(h, w, seed)[None], t, axis=0)


def noise(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``t`` frames of independent uniform noise: every pair differs everywhere, no coherent motion."""
    _check_size(t, h, w)
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def moving_square(
    t: int,
    h: int,
    w: int,
    speed_px: float,
    direction: str = "right",
    size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A textured square moving ``speed_px`` pixels per frame over a static textured background.

    ``direction``: right, left, down or up. ``size`` (default 0.4 x the short side) keeps the square above 5% of the
    frame, so the top-5% flow magnitudes (VBench's dynamic degree) are the square's speed. The square wraps around
    the frame's edges; sub-pixel speeds are placed by bilinear warping, so the motion is exactly ``speed_px``.
    """
    _check_size(t, h, w)
    if direction not in DIRECTIONS:
        raise InputError(f"direction {direction!r}: accepted are {', '.join(DIRECTIONS)}")
    side = size if size is not None else max(4, int(0.4 * min(h, w)))
    if not 1 <= side <= min(h, w):
        raise InputError(f"square size {side}: accepted is 1..{min(h, w)} (the frame's short side)")
    background = texture(h, w, seed, cell=16, lo=90, hi=160)
    # The square: a full-frame layer (square texture in a corner, mask beside it) that is shifted and wrapped.
    layer = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), np.float32)
    y0, x0 = (h - side) // 2, (w - side) // 2
    layer[y0 : y0 + side, x0 : x0 + side] = texture(side, side, seed + 1, cell=6, lo=0, hi=255)
    mask[y0 : y0 + side, x0 : x0 + side] = 1.0
    dx, dy = DIRECTIONS[direction]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        shift = np.array([[1, 0, dx * speed_px * i], [0, 1, dy * speed_px * i]], np.float32)
        lay = cv2.warpAffine(layer, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        m = cv2.warpAffine(mask, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)[..., None]
        out[i] = (lay * m + background * (1.0 - m)).round().clip(0, 255).astype(np.uint8)
    return out


def _same_size(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:]:
        raise InputError(f"clips shaped {a.shape} and {b.shape}: accepted are (T, H, W, 3) clips of one frame size")


def hard_cut(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Clip ``a`` then clip ``b`` with no transition: the join (after ``len(a)`` frames) is a cut."""
    _same_size(a, b)
    return np.concatenate([a, b])


def cross_fade(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Clip ``a`` dissolving into clip ``b`` over ``n`` frames: a's last ``n`` frames are blended with b's first ``n``.

    Blend ``j`` (0-based) weighs b by ``(j + 1) / (n + 1)``, so every step between frames changes by the same amount
    and no join between two frames is a jump. The result has ``len(a) + len(b) - n`` frames.
    """
    _same_size(a, b)
    if not 1 <= n <= min(len(a), len(b)):
        raise InputError(f"cross-fade length {n}: accepted is 1..{min(len(a), len(b))} (the shorter clip's frames)")
    alpha = (np.arange(1, n + 1, dtype=np.float32) / (n + 1))[:, None, None, None]
    blend = (a[-n:].astype(np.float32) * (1 - alpha) + b[:n].astype(np.float32) * alpha).round().astype(np.uint8)
    return np.concatenate([a[:-n], blend, b[n:]])


def flicker(t: int, h: int, w: int, period: int = 1, amplitude: float = 20.0, seed: int = 0) -> np.ndarray:
    """A static picture whose brightness toggles by ``amplitude`` grey levels every ``period`` frames.

    The picture lies in 64..191, so an amplitude up to 64 does not clip: each toggling pair differs by exactly
    ``round(amplitude)`` in every pixel and VBench's temporal flickering is known in closed form.
    """
    _check_size(t, h, w)
    if period < 1 or not 0 <= amplitude <= 64:
        raise InputError(f"flicker period {period}, amplitude {amplitude}: accepted are period >= 1, amplitude 0..64")
    base = texture(h, w, seed).astype(np.int16)
    up = ((np.arange(t) // period) % 2).astype(np.int16) * int(round(amplitude))
    return (base[None] + up[:, None, None, None]).clip(0, 255).astype(np.uint8)


def photo(name: str = "astronaut") -> np.ndarray:
    """One of scikit-image's bundled sample photos (astronaut 512x512, coffee 400x600, chelsea 300x451), RGB uint8.

    They ship inside the scikit-image wheel: no download.
    """
    if name not in PHOTOS:
        raise InputError(f"photo {name!r}: accepted are {', '.join(PHOTOS)}")
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def pan(
    image: np.ndarray, t: int, speed_px: float, crop: tuple[int, int] | None = None, direction: str = "right"
) -> np.ndarray:
    """A ``crop`` (height, width) window sliding ``speed_px`` pixels per frame across ``image``: a camera pan.

    The content moves opposite to ``direction`` (right or down) at exactly ``speed_px`` per frame (sub-pixel
    positions are bilinear). Default crop: the image's height x half its width (or half its height for ``down``).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image shaped {image.shape} ({image.dtype}): accepted is an RGB uint8 (H, W, 3) array")
    if direction not in ("right", "down"):
        raise InputError(f"pan direction {direction!r}: accepted are right, down")
    ih, iw = image.shape[:2]
    ch, cw = crop if crop is not None else ((ih, iw // 2) if direction == "right" else (ih // 2, iw))
    travel = speed_px * (t - 1)
    room = (iw - cw) if direction == "right" else (ih - ch)
    if t < 1 or ch < 8 or cw < 8 or ch > ih or cw > iw or travel > room:
        raise InputError(
            f"pan of {t} frames at {speed_px} px/frame with a {ch}x{cw} crop needs {travel:.0f} px of travel; "
            f"the {ih}x{iw} image has {room} px: use fewer frames, a lower speed or a smaller crop"
        )
    src = image.astype(np.float32)
    out = np.empty((t, ch, cw, 3), np.uint8)
    for i in range(t):
        off = speed_px * i
        ox, oy = (off, 0.0) if direction == "right" else (0.0, off)
        shift = np.array([[1, 0, -ox], [0, 1, -oy]], np.float32)
        out[i] = cv2.warpAffine(src, shift, (cw, ch), flags=cv2.INTER_LINEAR).round().clip(0, 255).astype(np.uint8)
    return out


def ffmpeg_testsrc(t: int, w: int, h: int, rate: int = 24) -> np.ndarray:
    """``t`` frames of ffmpeg's ``testsrc2`` pattern (moving colour bars, a ticking counter), via imageio-ffmpeg's
    bundled binary, decoded as raw RGB through a pipe (no file)."""
    _check_size(t, h, w)
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={w}x{h}:rate={rate}",
        "-frames:v",
        str(t),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=120)
    want = t * h * w * 3
    if proc.returncode != 0 or len(proc.stdout) != want:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg testsrc2 gave {len(proc.stdout)} of {want} bytes: {err[-1] if err else 'no error'}")
    return np.frombuffer(proc.stdout, np.uint8).reshape(t, h, w, 3).copy()
