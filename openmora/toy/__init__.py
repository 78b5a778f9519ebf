"""A toy world for checkable video generation: procedurally drawn scenes and a detector that reads them back.

``scenes`` holds the closed vocabulary (shapes, colours, backgrounds, sizes, motions, one style), the :class:`Scene`
and its prompt, the renderer, the seeded train/held-out sampler and the edits. ``detect`` reads the same attributes
back from frames alone and scores each task's output (text-to-video, image-to-video, extend, edit, connect, digital
world) as named pass/fail checks. Both are NumPy + OpenCV, CPU-only.

``weights/`` holds the ``toy`` profile's trained pipelines (``training/train_toy.py`` made them on these scenes'
train split): ``text_to_image`` (StableDiffusionPipeline), ``edit_image`` (StableDiffusionInstructPix2PixPipeline)
and ``image_to_video`` (WanImageToVideoPipeline; also the profile's first+last-frame ``connect_frames`` model).

Example:
    >>> from openmora.toy import detect, scenes
    >>> scene = scenes.Scene("circle", "red", "blue", "large", "left")
    >>> detect.describe(scenes.render(scene)).motion
    'left'
"""

from pathlib import Path

from openmora.errors import InputError

WEIGHTS = Path(__file__).resolve().parent / "weights"


def weights_folder(name: str) -> Path:
    """The folder of the embedded toy pipeline ``name`` (``toy:<name>`` in a profile).

    Example:
        >>> weights_folder("text_to_image").name
        'text_to_image'
    """
    known = sorted(p.name for p in WEIGHTS.iterdir() if (p / "model_index.json").is_file()) if WEIGHTS.is_dir() else []
    if name not in known:
        raise InputError(f"unknown toy model {name!r}: accepted are {', '.join(known) or 'none (weights/ is missing)'}")
    return WEIGHTS / name
