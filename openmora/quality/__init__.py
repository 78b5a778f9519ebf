"""Quality you can measure: weight-free metrics of clips and joins, the best-of-N gate, the run report.

- ``metrics``: VBench's formulas where they need no weights, named estimators where they do (frames ``uint8``
  ``(T, H, W, 3)``), seam continuity at joins, Mora's TCON/Tmean on a pluggable feature extractor.
- ``synthetic``: clips whose answers are known (static, noise, a moving square, cuts, cross-fades, flicker, pans).
- ``score``: a run folder or a video file, per clip and per join (``openmora score``).
- ``gate``: best-of-N takes and the quality gate the planner decides on.
- ``report``: ``report.html`` (``openmora report``).

The submodules import OpenCV and SciPy only when used: the gate's settings load with the engine.
"""
