"""A toy world for checkable video generation: procedurally drawn scenes and a detector that reads them back.

``scenes`` holds the closed vocabulary (shapes, colours, backgrounds, sizes, motions, one style), the :class:`Scene`
and its prompt, the renderer, the seeded train/held-out sampler and the edits. ``detect`` reads the same attributes
back from frames alone and scores each task's output (text-to-video, image-to-video, extend, edit, connect, digital
world) as named pass/fail checks. Both are NumPy + OpenCV, CPU-only.

Example:
    >>> from openmora.toy import detect, scenes
    >>> scene = scenes.Scene("circle", "red", "blue", "large", "left")
    >>> detect.describe(scenes.render(scene)).motion
    'left'
"""
