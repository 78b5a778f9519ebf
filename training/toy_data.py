"""Training batches for the ``toy`` models, generated on the fly from :mod:`openmora.toy.scenes` (train split only).

Every batch comes from a seeded generator, so a run is reproducible: the same ``seed`` gives the same scenes, in
the same order, whatever the device. Scenes are drawn with ``split="train"``: no held-out (shape, colour,
background) triple ever reaches a model.

The texts mimic what the OpenMora tools hand the pipelines: the scene's prompt alone, the prompt as
``enhance_prompt`` expands it (with the digital-world cue for pixel-art scenes), edit instructions as
:class:`~openmora.toy.scenes.Edit` words them, and the digital-world restyle instruction of the fixed plan.

An edit of a training scene may give a held-out triple; such edits are drawn again, so neither side of an edit
pair is ever held out. ``scenes`` has no style edit (its edits change colour, background, shape or size), so
:func:`edit_example` adds one here: a plain scene and its pixel-art twin, asked for with "make it pixel-art" or the
plan's digital-world instruction.

Example:
    >>> import numpy as np
    >>> b = image_batch(np.random.default_rng(0), 2)
    >>> b["pixels"].shape, len(b["prompts"])
    ((2, 64, 64, 3), 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from openmora.tools.enhance_prompt import DIGITAL_WORLD_EDIT, enhance_prompt
from openmora.toy.scenes import Scene, apply_edit, is_heldout, render, sample_edit, sample_scene

SIZE = 64  # frame side, px
CLIP_FRAMES = 9  # Wan takes (temporal factor) k + 1 frames: 4k + 1 (tiny), 2k + 1 (toy); 9 suits both profiles
PIXEL_ART_SHARE = 0.25  # share of scenes drawn in the pixel-art style
CONNECT_PROMPT = "a smooth continuous transition between two scenes"  # what connect_clips sends without a prompt
STYLE_EDITS = ("make it pixel-art", "make it pixel art", DIGITAL_WORLD_EDIT)


def _scene(rng: np.random.Generator, frames: int = CLIP_FRAMES, style: str | None = None) -> Scene:
    if style is None:
        style = "pixel-art" if rng.random() < PIXEL_ART_SHARE else "plain"
    return sample_scene(rng, "train", frames=frames, size=SIZE, style=style)


def prompt_for(rng: np.random.Generator, scene: Scene) -> str:
    """One of the phrasings a pipeline may get for ``scene``: its prompt, or the prompt ``enhance_prompt`` writes.

    Example:
        >>> prompt_for(np.random.default_rng(0), Scene("circle", "red", "blue")).startswith("a large red circle")
        True
    """
    text = scene.prompt()
    if rng.random() < 0.5:
        return text
    if scene.style == "pixel-art" and rng.random() < 0.5:
        # The digital-world task's wording; the plain prompt's "in pixel-art style" may then be dropped.
        base = dataclasses.replace(scene, style="plain").prompt() if rng.random() < 0.5 else text
        return enhance_prompt(base, digital_world=True)
    return enhance_prompt(text)


def image_batch(rng: np.random.Generator, batch: int) -> dict:
    """Text-to-image examples: the first frame of a clip (where a video of the prompt starts) and its prompt."""
    scenes = [_scene(rng) for _ in range(batch)]
    # Frame 0 alone: the scene's start is fixed, so it is the clip's first frame, at a ninth of the cost.
    pixels = np.stack([render(s, frames=1, size=SIZE)[0] for s in scenes])
    return {"pixels": pixels, "prompts": [prompt_for(rng, s) for s in scenes]}


def edit_example(rng: np.random.Generator) -> tuple[Scene, str, Scene]:
    """One (source scene, instruction, edited scene) triple: an attribute edit from ``scenes``, or (one in five)
    the pixel-art restyle that ``scenes`` does not offer.

    Example:
        >>> src, text, out = edit_example(np.random.default_rng(1))
        >>> isinstance(text, str) and src != out
        True
    """
    if rng.random() < 0.2:
        source = _scene(rng, style="plain")
        text = STYLE_EDITS[int(rng.integers(len(STYLE_EDITS)))]
        if text == DIGITAL_WORLD_EDIT and rng.random() < 0.5:
            text = f"{text}; {prompt_for(rng, source)}"  # the fixed plan appends the user's prompt
        return source, text, dataclasses.replace(source, style="pixel-art")
    source = _scene(rng)
    while True:
        # An edit of a training scene can land on a held-out triple: draw again (every scene has other edits).
        edit = sample_edit(rng, source)
        edited = apply_edit(source, edit)
        if not is_heldout(edited):
            return source, edit.instruction, edited


def edit_batch(rng: np.random.Generator, batch: int) -> dict:
    """InstructPix2Pix examples: source picture, instruction, edited picture (the same frame of both clips)."""
    triples = [edit_example(rng) for _ in range(batch)]
    frame = [int(rng.integers(CLIP_FRAMES)) for _ in triples]
    source = np.stack([render(s, frames=f + 1, size=SIZE)[f] for (s, _, _), f in zip(triples, frame, strict=True)])
    target = np.stack([render(e, frames=f + 1, size=SIZE)[f] for (_, _, e), f in zip(triples, frame, strict=True)])
    return {"source": source, "target": target, "prompts": [t for _, t, _ in triples]}


def clip_batch(rng: np.random.Generator, batch: int, connect_share: float = 0.5) -> dict:
    """Video examples: ``CLIP_FRAMES``-frame clips, their prompts, and which ones train the first+last-frame
    (connect) mode; a connect example's prompt is sometimes the one connect_clips sends when given none."""
    scenes = [_scene(rng) for _ in range(batch)]
    clips = np.stack([render(s, frames=CLIP_FRAMES, size=SIZE) for s in scenes])
    connect = rng.random(batch) < connect_share
    prompts = [
        CONNECT_PROMPT if c and rng.random() < 0.25 else prompt_for(rng, s)
        for s, c in zip(scenes, connect, strict=True)
    ]
    return {"clips": clips, "prompts": prompts, "connect": connect}


BATCHES = {"image": image_batch, "edit": edit_batch, "clip": clip_batch}


class _Stream(torch.utils.data.IterableDataset):
    """Endless batches of one kind; each DataLoader worker draws from its own seeded generator."""

    def __init__(self, kind: str, batch: int, seed: int) -> None:
        self.kind, self.batch, self.seed = kind, batch, seed

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        while True:
            yield BATCHES[self.kind](rng, self.batch)


def stream(kind: str, batch: int, seed: int, workers: int = 0) -> Iterator[dict]:
    """Endless batches of ``kind`` (``image``, ``edit`` or ``clip``). With ``workers`` > 0 the scenes are drawn in
    that many processes (a GPU outruns one CPU drawing them); the order is then fixed per worker count.

    Example:
        >>> next(stream("clip", 2, seed=0))["clips"].shape
        (2, 9, 64, 64, 3)
    """
    if kind not in BATCHES:
        raise ValueError(f"unknown batch kind {kind!r}; known: {', '.join(BATCHES)}")
    if workers <= 0:
        return iter(_Stream(kind, batch, seed))
    loader = torch.utils.data.DataLoader(
        _Stream(kind, batch, seed), batch_size=None, num_workers=workers, prefetch_factor=4
    )
    return _numpy(loader)


def _numpy(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    # The default collate turns arrays into tensors and bool arrays too; give back what the in-process path gives.
    for b in loader:
        yield {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in b.items()}


def to_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float in [-1, 1], channels first: ``(B, 3, H, W)`` or, for clips, ``(B, 3, T, H,
    W)`` (the layout of the VAEs)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).float() / 127.5 - 1.0
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3)
