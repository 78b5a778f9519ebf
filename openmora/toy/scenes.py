"""Toy scenes: one shape of one colour moving in a straight line over a plain background, and its prompt.

The vocabulary is closed so that a detector can read every attribute back from pixels (``openmora.toy.detect``):

* shapes: circle, square (axis-aligned), triangle (apex up; as tall as it is wide)
* colours of the object: :data:`COLOURS`, seven hues far apart in RGB and in Lab
* backgrounds: :data:`BACKGROUNDS`; a scene's background never has its object's colour name
* sizes: the side of the object's bounding square, a fraction of the frame side (:data:`SIZES`)
* motions: left, right, up, down (straight, constant speed in px/frame) or still
* styles: ``plain`` or ``pixel-art`` (see :func:`render`), the "digital world" look

**The held-out split.** A (shape, colour, background) triple is held out when
``(shape_index + 3 * colour_index + 5 * background_index) % 8 == 0`` (indices into :data:`SHAPES`, :data:`COLOURS`,
:data:`BACKGROUNDS`, in their order). That holds out 11 of the 96 allowed triples, and because 1, 3 and 5 are
invertible mod 8, each pair of attribute values (shape + colour, shape + background, colour + background) loses at
most one of its triples: every pair and every single value is still seen in training. Sizes, motions and styles are
not split; held-out prompts differ from training ones by their combination of shape, colour and background.

Example:
    >>> import numpy as np
    >>> scene = sample_scene(np.random.default_rng(0), split="heldout")
    >>> is_heldout(scene), render(scene).shape
    (True, (16, 64, 64, 3))
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from openmora.errors import InputError

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 235),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
}
# Darker than the object colours of the same name (blue, green) so that every allowed pair keeps a strong contrast.
BACKGROUNDS: dict[str, RGB] = {
    "black": (15, 15, 15),
    "gray": (120, 120, 120),
    "blue": (25, 45, 120),
    "green": (25, 100, 45),
    "white": (250, 250, 250),
}
SIZES: dict[str, float] = {"small": 0.2, "large": 0.4}
MOTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
STYLES: tuple[str, ...] = ("plain", "pixel-art")
# The pixel-art grid: this many cells per frame side (4x4-pixel cells on a 64-pixel frame).
PIXEL_CELLS = 16
# The object's bounding square keeps this far (px) from the frame's edges for the whole clip.
MARGIN_PX = 2.0
SPEED_RANGE = (1.0, 2.0)  # px/frame, what sample_scene draws from
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background", "size", "motion", "style")


def _check(name: str, value: str, accepted: Collection[str]) -> None:
    if value not in accepted:
        raise InputError(f"unknown {name} {value!r}: accepted are {', '.join(accepted)}")


@dataclass(frozen=True)
class Scene:
    """One toy scene: what is drawn and how it moves.

    ``start`` is the centre of the object's bounding square in frame 0, as fractions of the frame's width and height;
    ``None`` places the path in the middle of the frame. ``speed`` is in px per frame (unused when still).

    Example:
        >>> Scene("circle", "red", "blue", "large", "left").prompt()
        'a large red circle moving left on a blue background'
    """

    shape: str
    colour: str
    background: str
    size: str = "large"
    motion: str = "still"
    start: tuple[float, float] | None = None
    speed: float = 1.5
    style: str = "plain"

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES)
        _check("colour", self.colour, COLOURS)
        _check("background", self.background, BACKGROUNDS)
        _check("size", self.size, SIZES)
        _check("motion", self.motion, MOTIONS)
        _check("style", self.style, STYLES)
        if self.colour == self.background:
            raise InputError(f"the {self.shape} and the background are both {self.colour}: pick different colours")
        if not self.speed >= 0:
            raise InputError(f"speed must be >= 0 px/frame, got {self.speed}")
        if self.start is not None and not all(0.0 <= v <= 1.0 for v in self.start):
            raise InputError(f"start must be fractions of the frame in 0..1, got {self.start}")

    def prompt(self) -> str:
        """The scene in words, in the one phrasing :func:`parse_prompt` reads back.

        Example:
            >>> Scene("square", "yellow", "gray", "small", "still", style="pixel-art").prompt()
            'a small yellow square staying still on a gray background in pixel-art style'
        """
        moving = "staying still" if self.motion == "still" else f"moving {self.motion}"
        text = f"a {self.size} {self.colour} {self.shape} {moving} on a {self.background} background"
        return text + (" in pixel-art style" if self.style == "pixel-art" else "")

    def attributes(self) -> dict[str, str]:
        """The named attributes (:data:`ATTRIBUTES`), what a detector can read back.

        Example:
            >>> Scene("circle", "red", "blue").attributes()["motion"]
            'still'
        """
        return {a: getattr(self, a) for a in ATTRIBUTES}

    def side_px(self, size: int) -> float:
        """The side of the object's bounding square in a ``size``-pixel frame.

        Example:
            >>> Scene("circle", "red", "blue", "small").side_px(64)
            12.8
        """
        return SIZES[self.size] * size

    def path(self, frames: int, size: int) -> np.ndarray:
        """The centre of the object's bounding square in each frame, ``(frames, 2)`` as (x, y) in px; raises when
        the object would leave the frame.

        Example:
            >>> Scene("square", "red", "black", "small", "right", speed=2.0).path(3, 64)[:, 0].tolist()
            [30.0, 32.0, 34.0]
        """
        dx, dy = MOTIONS[self.motion]
        speed = self.speed if self.motion != "still" else 0.0
        steps = np.arange(frames, dtype=np.float64)[:, None] * speed * np.array([dx, dy], dtype=np.float64)
        if self.start is None:
            start = np.array([size / 2, size / 2]) - steps[-1] / 2
        else:
            start = np.array(self.start, dtype=np.float64) * size
        centres = start + steps
        half = self.side_px(size) / 2
        lo, hi = centres.min(), centres.max()
        if lo - half < MARGIN_PX - 1e-6 or hi + half > size - MARGIN_PX + 1e-6:
            room = math.floor((size - 2 * MARGIN_PX - 2 * half) / max(frames - 1, 1) * 100) / 100
            raise InputError(
                f"the {self.size} {self.shape} leaves the {size}x{size} frame within {frames} frames: accepted are "
                f"a start and speed that keep it inside (at most {room:.2f} px/frame from a centred start)"
            )
        return centres


def shape_coverage(
    shape: str, box: tuple[float, float, float, float], height: int, width: int, supersample: int = 4
) -> np.ndarray:
    """How much of each pixel a shape covers (``float32`` in 0..1, ``(height, width)``): anti-aliased by drawing at
    ``supersample`` times the resolution and averaging. ``box`` is the shape's bounding box ``(x0, y0, x1, y1)`` in
    px, pixel ``i`` spanning ``[i, i + 1)``; the circle is the ellipse inscribed in it, the triangle has its apex at
    the top middle and its base along the bottom.

    Example:
        >>> float(shape_coverage("square", (1.0, 1.0, 3.0, 3.0), 4, 4).sum())
        4.0
    """
    if shape not in SHAPES:
        raise InputError(f"unknown shape {shape!r}: accepted are {', '.join(SHAPES)}")
    s = supersample
    x0, y0, x1, y1 = box
    out = np.zeros((height, width), np.float32)
    # Only the pixels the box touches are sampled.
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), width)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        return out
    # Sample points at the centres of an s x s grid inside each pixel; a point is in or out, a pixel's coverage is
    # the share of its points inside.
    ys = (np.arange(r0 * s, r1 * s, dtype=np.float32)[:, None] + 0.5) / s
    xs = (np.arange(c0 * s, c1 * s, dtype=np.float32)[None, :] + 0.5) / s
    if shape == "circle":
        rx, ry = max((x1 - x0) / 2, 1e-6), max((y1 - y0) / 2, 1e-6)
        inside = ((xs - (x0 + x1) / 2) / rx) ** 2 + ((ys - (y0 + y1) / 2) / ry) ** 2 <= 1.0
    elif shape == "square":
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    else:
        # Apex (mid, y0), base from (x0, y1) to (x1, y1): below the two slanted sides and above the base.
        mid, half, tall = (x0 + x1) / 2, max((x1 - x0) / 2, 1e-6), max(y1 - y0, 1e-6)
        inside = (ys < y1) & (np.abs(xs - mid) <= (ys - y0) / tall * half)
    out[r0:r1, c0:c1] = inside.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3), dtype=np.float32)
    return out


def render(scene: Scene, frames: int = 16, size: int = 64) -> np.ndarray:
    """Draw ``scene`` as ``(frames, size, size, 3)`` RGB ``uint8`` frames; the same scene always gives the same pixels.

    Plain style: the shape is anti-aliased (its colour blended with the background by pixel coverage).
    **Pixel-art style** (the "digital world" look): the frame is a grid of :data:`PIXEL_CELLS` x :data:`PIXEL_CELLS`
    square cells (4x4 px at 64), each cell one flat colour of the scene's two-colour palette: the object's colour
    where the shape covers at least half the cell, else the background's. Its pixel signature, checked by
    ``detect.pixel_art_score``: every colour edge lies on the cell grid. ``size`` must then be a multiple of 16.

    Example:
        >>> clip = render(Scene("circle", "red", "blue", "large", "left"), frames=4)
        >>> clip.shape, clip.dtype.name, clip[0, 0, 0].tolist()
        ((4, 64, 64, 3), 'uint8', [25, 45, 120])
    """
    if frames < 1 or size < 16:
        raise InputError(f"render size {frames} frames x {size} px: accepted are >= 1 frame, >= 16 px")
    if scene.style == "pixel-art" and size % PIXEL_CELLS:
        raise InputError(f"pixel-art frames must be a multiple of {PIXEL_CELLS} px, got {size}")
    obj = np.array(COLOURS[scene.colour], np.float32)
    bg = np.array(BACKGROUNDS[scene.background], np.float32)
    half = scene.side_px(size) / 2
    out = np.empty((frames, size, size, 3), np.uint8)
    for t, (cx, cy) in enumerate(scene.path(frames, size)):
        alpha = shape_coverage(scene.shape, (cx - half, cy - half, cx + half, cy + half), size, size)
        if scene.style == "pixel-art":
            cell = size // PIXEL_CELLS
            cells = alpha.reshape(PIXEL_CELLS, cell, PIXEL_CELLS, cell).mean(axis=(1, 3)) >= 0.5
            alpha = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1).astype(np.float32)
        out[t] = np.rint(alpha[..., None] * obj + (1.0 - alpha[..., None]) * bg).astype(np.uint8)
    return out


def degrade(frames: np.ndarray, sigma: float = 10.0, blur: float = 0.7, seed: int = 0) -> np.ndarray:
    """``frames`` as a small diffusion model might give them back: Gaussian-blurred (``blur`` px; 0: none) plus
    Gaussian noise of ``sigma`` grey levels, seeded.

    Example:
        >>> clip = render(Scene("circle", "red", "blue"), frames=2)
        >>> degrade(clip).shape == clip.shape, bool((degrade(clip) == degrade(clip)).all())
        (True, True)
    """
    out = frames.astype(np.float32)
    if blur > 0:
        out = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in out])
    out += np.random.default_rng(seed).normal(0.0, sigma, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----- the train / held-out split -----


def is_heldout(scene: Scene) -> bool:
    """Whether the scene's (shape, colour, background) triple is held out of training (rule: the module docstring).

    Example:
        >>> is_heldout(Scene("circle", "red", "black"))
        True
    """
    return _heldout(scene.shape, scene.colour, scene.background)


def _heldout(shape: str, colour: str, background: str) -> bool:
    i, j, k = SHAPES.index(shape), list(COLOURS).index(colour), list(BACKGROUNDS).index(background)
    return (i + 3 * j + 5 * k) % 8 == 0


def triples(split: str) -> tuple[tuple[str, str, str], ...]:
    """The (shape, colour, background) triples of ``split`` (``train`` or ``heldout``), in vocabulary order.

    Example:
        >>> len(triples("train")), len(triples("heldout"))
        (85, 11)
    """
    if split not in ("train", "heldout"):
        raise InputError(f"unknown split {split!r}: accepted are train, heldout")
    return tuple(
        (s, c, b)
        for s in SHAPES
        for c in COLOURS
        for b in BACKGROUNDS
        if c != b and _heldout(s, c, b) == (split == "heldout")
    )


def sample_scene(
    rng: np.random.Generator, split: str = "train", frames: int = 16, size: int = 64, style: str = "plain"
) -> Scene:
    """A random scene of ``split``: a triple of the split, a size and a motion drawn uniformly, a speed in
    :data:`SPEED_RANGE` (lower where the frame is too small for it) and a start that keeps the object inside the
    frame for ``frames`` frames. The path fits a large object whatever the size drawn, so a size edit stays
    renderable.

    Example:
        >>> a = sample_scene(np.random.default_rng(3))
        >>> a == sample_scene(np.random.default_rng(3)), is_heldout(a)
        (True, False)
    """
    _check("style", style, STYLES)
    pool = triples(split)
    shape, colour, background = pool[int(rng.integers(len(pool)))]
    size_name = list(SIZES)[int(rng.integers(len(SIZES)))]
    motion = list(MOTIONS)[int(rng.integers(len(MOTIONS)))]
    half = max(SIZES.values()) * size / 2
    lo_b, hi_b = half + MARGIN_PX, size - half - MARGIN_PX
    speed = 0.0
    if motion != "still" and frames > 1:
        fastest = (hi_b - lo_b) / (frames - 1)
        speed = round(float(rng.uniform(min(SPEED_RANGE[0], fastest), min(SPEED_RANGE[1], fastest))), 3)
    travel = np.array(MOTIONS[motion], np.float64) * speed * max(frames - 1, 0)
    # The start's range on each axis: the whole path (start .. start + travel) inside [lo_b, hi_b]; a hair inside,
    # so that rounding the fractions cannot push it out.
    lo = lo_b - np.minimum(travel, 0.0) + 0.01
    hi = hi_b - np.maximum(travel, 0.0) - 0.01
    centre = rng.uniform(lo, np.maximum(lo, hi))
    start = (round(float(centre[0]) / size, 5), round(float(centre[1]) / size, 5))
    return Scene(shape, colour, background, size_name, motion, start, speed, style)


# ----- prompts -----

_SHAPE_WORDS = {"circle": "circle", "disc": "circle", "disk": "circle", "ball": "circle", "dot": "circle"}
_SHAPE_WORDS |= {"square": "square", "box": "square", "triangle": "triangle"}
_SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large"}
_SIZE_WORDS |= {"huge": "large"}
_MOTION_WORDS = {"left": "left", "leftward": "left", "leftwards": "left", "right": "right", "rightward": "right"}
_MOTION_WORDS |= {"rightwards": "right", "up": "up", "upward": "up", "upwards": "up", "rising": "up", "down": "down"}
_MOTION_WORDS |= {"downward": "down", "downwards": "down", "falling": "down", "still": "still"}
_MOTION_WORDS |= {"stationary": "still", "static": "still", "motionless": "still"}
_COLOUR_WORDS = {c: c for c in (*COLOURS, *BACKGROUNDS)} | {"grey": "gray", "violet": "purple"}
_STYLE_WORDS = {"pixelart": "pixel-art", "pixel": "pixel-art", "pixelated": "pixel-art", "blocky": "pixel-art"}
_STYLE_WORDS |= {"minecraft": "pixel-art", "voxel": "pixel-art"}
_BACKGROUND_NOUNS = {"background", "backdrop", "bg"}
_BEFORE_BACKGROUND = {"on", "against", "over"}
# Words that may sit between "on" and the background's colour ("on a plain dark blue ...").
_FILLER = {"a", "an", "the", "plain", "dark", "light", "solid", "bright", "pale", "flat", "is", "of", "colour", "color"}


@dataclass(frozen=True)
class PromptAttributes:
    """The attributes a prompt names; ``None`` for those it does not.

    Example:
        >>> parse_prompt("a red circle").named
        ('shape', 'colour')
    """

    shape: str | None = None
    colour: str | None = None
    background: str | None = None
    size: str | None = None
    motion: str | None = None
    style: str | None = None

    @property
    def named(self) -> tuple[str, ...]:
        """The attributes the prompt named, in :data:`ATTRIBUTES` order."""
        return tuple(a for a in ATTRIBUTES if getattr(self, a) is not None)

    def values(self) -> dict[str, str]:
        """The named attributes and their values.

        Example:
            >>> parse_prompt("a blue square moving up").values()
            {'shape': 'square', 'colour': 'blue', 'motion': 'up'}
        """
        return {a: getattr(self, a) for a in self.named}

    def to_scene(self, start: tuple[float, float] | None = None, speed: float = 1.5) -> Scene:
        """The scene the prompt describes; shape, colour and background must be named, the others default to
        :class:`Scene`'s.

        Example:
            >>> parse_prompt("a small green triangle on black, moving down").to_scene().motion
            'down'
        """
        missing = [a for a in ("shape", "colour", "background") if getattr(self, a) is None]
        if missing:
            raise InputError(
                f"the prompt names no {', '.join(missing)}: a toy scene needs a shape ({', '.join(SHAPES)}), "
                f"a colour ({', '.join(COLOURS)}) and a background ({', '.join(BACKGROUNDS)})"
            )
        extra = {a: v for a, v in self.values().items() if a in ("size", "motion", "style")}
        return Scene(self.shape, self.colour, self.background, start=start, speed=speed, **extra)  # type: ignore[arg-type]


def _words(text: str) -> list[str]:
    text = re.sub(r"pixel[\s-]*art", "pixelart", text.lower())
    return re.findall(r"[a-z]+", text)


def _is_background_position(words: list[str], i: int) -> bool:
    """Whether the colour word at ``i`` names the background: "... blue background", "on (a) blue", "background
    (is/of) blue"."""
    if i + 1 < len(words) and words[i + 1] in _BACKGROUND_NOUNS:
        return True
    j = i - 1
    while j >= 0 and words[j] in _FILLER:
        j -= 1
    return j >= 0 and (words[j] in _BEFORE_BACKGROUND or words[j] in _BACKGROUND_NOUNS)


def parse_prompt(text: str) -> PromptAttributes:
    """Read the toy vocabulary back from a prompt, whatever the word order; unknown words are ignored, and the
    first word of each kind wins. A colour names the background when it is followed by "background" or comes
    after "on"/"against"/"over" (articles and words like "plain", "dark" may sit between); otherwise the object's.

    Example:
        >>> p = parse_prompt("A red circle on a blue background, moving left")
        >>> p.values()
        {'shape': 'circle', 'colour': 'red', 'background': 'blue', 'motion': 'left'}
    """
    words = _words(text)
    found: dict[str, str] = {}
    for i, w in enumerate(words):
        if w in _SHAPE_WORDS:
            found.setdefault("shape", _SHAPE_WORDS[w])
        elif w in _SIZE_WORDS:
            found.setdefault("size", _SIZE_WORDS[w])
        elif w in _MOTION_WORDS:
            found.setdefault("motion", _MOTION_WORDS[w])
        elif w in _STYLE_WORDS:
            found.setdefault("style", _STYLE_WORDS[w])
        elif w in _COLOUR_WORDS:
            c = _COLOUR_WORDS[w]
            if _is_background_position(words, i):
                if c in BACKGROUNDS:
                    found.setdefault("background", c)
            elif c in COLOURS:
                found.setdefault("colour", c)
    return PromptAttributes(**found)


def canonical_prompt(text: str) -> str | None:
    """``text`` in the one phrasing the toy models were trained on (:meth:`Scene.prompt`'s), keeping only the
    attributes it names; ``None`` when it names none (the text then goes to the model as it is).

    Example:
        >>> canonical_prompt("A large, red circle is moving left across a blue background.")
        'a large red circle moving left on a blue background'
        >>> canonical_prompt("a red ball"), canonical_prompt("a Minecraft village"), canonical_prompt("a fox")
        ('a red circle', 'an object in pixel-art style', None)
    """
    p = parse_prompt(text)
    if not p.named:
        return None
    thing = " ".join(v for v in (p.size, p.colour, p.shape or "object") if v)
    words = [f"{'an' if thing[0] in 'aeiou' else 'a'} {thing}"]
    if p.motion is not None:
        words.append("staying still" if p.motion == "still" else f"moving {p.motion}")
    if p.background is not None:
        words.append(f"on a {p.background} background")
    if p.style == "pixel-art":
        words.append("in pixel-art style")
    return " ".join(words)


def canonical_instruction(text: str) -> str | None:
    """An edit instruction in the toy models' phrasing (:attr:`Edit.instruction`'s, or "make it pixel-art" for a
    restyle); ``None`` when no toy edit can be read from it.

    Example:
        >>> canonical_instruction("Please change the backdrop to black"), canonical_instruction("turn it into voxel art")
        ('make the background black', 'make it pixel-art')
    """
    if parse_prompt(text).style == "pixel-art":
        return "make it pixel-art"
    try:
        return parse_edit(text).instruction
    except InputError:
        return None


# ----- edits -----

EDIT_ATTRIBUTES: tuple[str, ...] = ("colour", "background", "shape", "size")


@dataclass(frozen=True)
class Edit:
    """Change one attribute of a scene to ``value``; :attr:`instruction` says it in words.

    Example:
        >>> Edit("size", "large").instruction, Edit("background", "black").instruction
        ('make it bigger', 'make the background black')
    """

    attribute: str
    value: str

    def __post_init__(self) -> None:
        _check("edit attribute", self.attribute, EDIT_ATTRIBUTES)
        vocab = {"colour": COLOURS, "background": BACKGROUNDS, "shape": SHAPES, "size": SIZES}[self.attribute]
        _check(self.attribute, self.value, vocab)

    @property
    def instruction(self) -> str:
        """The edit as an instruction: "make it green", "make the background black", "make it a square",
        "make it bigger" / "make it smaller"."""
        if self.attribute == "colour":
            return f"make it {self.value}"
        if self.attribute == "background":
            return f"make the background {self.value}"
        if self.attribute == "shape":
            return f"make it a {self.value}"
        return "make it bigger" if self.value == "large" else "make it smaller"


def parse_edit(text: str) -> Edit:
    """The :class:`Edit` an instruction asks for ("make the background black", "turn it into a triangle", ...).

    Example:
        >>> parse_edit("Make it smaller")
        Edit(attribute='size', value='small')
    """
    words = _words(text)
    for w in words:
        if w in ("bigger", "larger"):
            return Edit("size", "large")
        if w == "smaller":
            return Edit("size", "small")
    p = parse_prompt(text)
    if any(w in _BACKGROUND_NOUNS for w in words):
        colour = next((_COLOUR_WORDS[w] for w in words if w in _COLOUR_WORDS), None)
        if colour in BACKGROUNDS:
            return Edit("background", colour)
    elif p.shape is not None:
        return Edit("shape", p.shape)
    elif p.colour is not None:
        return Edit("colour", p.colour)
    elif p.size is not None:
        return Edit("size", p.size)
    raise InputError(
        f"cannot read an edit from {text!r}: accepted are e.g. 'make it green', 'make the background black', "
        "'make it a square', 'make it bigger'"
    )


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """``scene`` with the edit applied; everything else (motion, path, style) kept. An edit that changes nothing or
    would give the object the background's colour is refused.

    Example:
        >>> apply_edit(Scene("circle", "red", "blue"), Edit("colour", "green")).prompt()
        'a large green circle staying still on a blue background'
    """
    if getattr(scene, edit.attribute) == edit.value:
        raise InputError(f"the scene's {edit.attribute} is already {edit.value}: an edit must change something")
    edited: dict[str, Any] = {edit.attribute: edit.value}
    colour, background = edited.get("colour", scene.colour), edited.get("background", scene.background)
    if colour == background:
        raise InputError(f"'{edit.instruction}' would make the {scene.shape} and the background both {colour}")
    return dataclasses.replace(scene, **edited)


def sample_edit(rng: np.random.Generator, scene: Scene) -> Edit:
    """A random edit that :func:`apply_edit` accepts on ``scene``, drawn uniformly from all of them.

    Example:
        >>> scene = Scene("circle", "red", "blue")
        >>> getattr(apply_edit(scene, sample_edit(np.random.default_rng(0), scene)), "shape") in SHAPES
        True
    """
    options: list[Edit] = []
    for attr in EDIT_ATTRIBUTES:
        vocab = {"colour": COLOURS, "background": BACKGROUNDS, "shape": SHAPES, "size": SIZES}[attr]
        for value in vocab:
            if value == getattr(scene, attr):
                continue
            if (attr == "colour" and value == scene.background) or (attr == "background" and value == scene.colour):
                continue
            options.append(Edit(attr, value))
    return options[int(rng.integers(len(options)))]
