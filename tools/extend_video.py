"""Tool: make a clip longer by continuing from its last frame, segment after segment."""

from __future__ import annotations

import time
from functools import partial

import numpy as np

from openmora.artifacts import ClipStream, piece_joins
from openmora.errors import ToolArgumentError
from openmora.tools.context import ToolContext, ToolResult
from openmora.tools.image_to_video import render_segment

MAX_SEGMENTS = 12


def _append_new(stream: ClipStream, lengths: list[int], frames: np.ndarray, first_index: int) -> None:
    """Append a segment's frames to the clip, without the segment's frame 0 (its conditioning frame, redrawn);
    ``lengths[-1]`` counts the current segment's frames."""
    if first_index == 0:
        frames = frames[1:]
    if len(frames):
        stream.append(frames)
        lengths[-1] += len(frames)


def extend_video(
    ctx: ToolContext, clip_id: str, prompt: str = "", segments: int = 1, seed: int | None = None
) -> ToolResult:
    """Continue a video: generate new segments that start from its last frame and append them.
    The result begins with every frame of the original clip.

    Args:
        clip_id: the artifact id of the clip to continue (e.g. clip-0001).
        prompt: what should happen next (used by models that take text; optional).
        segments: how many new segments to add, 1 to 12 (each adds about one image-to-video clip of length).
        seed: random seed for reproducible results (optional); segment i uses seed + i.

    Returns:
        The extended clip's artifact id and a one-line description.
    """
    if not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS:
        raise ToolArgumentError(f"segments must be a whole number from 1 to {MAX_SEGMENTS}, got {segments!r}")
    source = ctx.store.get(clip_id, "video")
    seeds = ctx.next_seeds(seed, segments)  # one per segment, all reserved: the next call starts after them
    start = time.perf_counter()
    notes: list[str] = []
    # The new clip is encoded while it grows: the original's frames and each finished segment go to the encoders
    # while the next segment renders, so only the last segment's encoding is left when the GPU is done.
    stream = ctx.store.open_video(ctx.profile.fps)
    lengths: list[int] = []  # each new segment's frames
    try:
        last = ctx.store.frames(source.id)
        stream.append(last)
        for i in range(segments):
            lengths.append(0)
            # Chain on the exact last frame array (lossless), not on a decode of the lossy MP4. The segment's frames
            # go to the encoders as they are decoded; the first re-draws the conditioning frame: dropped, so no frame
            # is shown twice.
            frames, seg_notes = render_segment(ctx, last[-1], prompt, seeds[i], partial(_append_new, stream, lengths))
            notes += [n for n in seg_notes if n not in notes]
            last = frames
    except BaseException:
        stream.abort()
        raise
    art = stream.close(
        tool="extend_video",
        parents=[source.id],
        params={"prompt": prompt, "segments": segments},
        seed=seeds[0],
        seconds=time.perf_counter() - start,
        description=f"{source.id} extended by {segments} segment{'s' if segments > 1 else ''}",
        joins=piece_joins(
            [(source.id, int(source.frames or 0), source.joins)]
            + [(f"{stream.id} segment {i + 1}", n, []) for i, n in enumerate(lengths)],
            "segment",
        ),
    )
    return ToolResult(outputs=[art.id], text=art.summary(), notes=notes)
