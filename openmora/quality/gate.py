"""The best-of-N quality gate: a step renders N takes with different seeds, each is scored, the best is kept.

Which steps and how many takes: ``--best-of N`` (every model step that takes a seed), a profile's ``best_of``
(``{tool: N}``), or a plan step's own ``best_of``; the step's setting wins, then the profile's, then the command's.
With a ``min_quality`` (``--min-quality X`` or the profile's), a step whose best take scores below it goes to the
planner, which may ask for another take (up to ``max_retakes``) or accept it. Take ``k`` of a step with seed ``s``
uses seed ``s + 1000 k``: the same plan and seed give the same takes, and so the same frames.

Example:
    >>> g = GateSettings(best_of=2)
    >>> g.takes_for("image_to_video", None), g.takes_for("join_clips", None), take_seed(3, 2)
    (2, 1, 2003)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from openmora.errors import InputError

# The steps that render with a seed: the ones a take can differ in.
GATED_TOOLS = ("text_to_image", "edit_image", "image_to_video", "extend_video", "connect_clips")
MAX_BEST_OF = 8
MAX_RETAKES = 4
TAKE_SEED_STRIDE = 1000


def take_seed(seed: int, take: int) -> int:
    """The seed of take ``take`` (0-based) of a step whose seed is ``seed``."""
    return int(seed) + TAKE_SEED_STRIDE * int(take)


def check_best_of(value: Any, where: str = "--best-of") -> int:
    """A number of takes, 1 to :data:`MAX_BEST_OF`; else a one-line :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BEST_OF:
        raise InputError(f"{where} must be a whole number of takes from 1 to {MAX_BEST_OF}, got {value!r}")
    return value


def check_min_quality(value: Any, where: str = "--min-quality") -> float | None:
    """A gate threshold in 0..1 (an overall score), or None; else a one-line :class:`InputError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{where} must be an overall score from 0 to 1, got {value!r}")
    return float(value)


@dataclass
class GateSettings:
    """How many takes each step renders and when the planner is asked for another (see the module)."""

    best_of: int = 1
    per_tool: dict[str, int] = field(default_factory=dict)
    min_quality: float | None = None
    max_retakes: int = 2

    def __post_init__(self) -> None:
        check_best_of(self.best_of)
        for tool, n in self.per_tool.items():
            if tool not in GATED_TOOLS:
                raise InputError(
                    f"best_of names {tool!r}; only steps that render take several: {', '.join(GATED_TOOLS)}"
                )
            check_best_of(n, f"best_of.{tool}")
        self.min_quality = check_min_quality(self.min_quality)
        if (
            isinstance(self.max_retakes, bool)
            or not isinstance(self.max_retakes, int)
            or not 0 <= self.max_retakes <= MAX_RETAKES
        ):
            raise InputError(f"max_retakes must be a whole number from 0 to {MAX_RETAKES}, got {self.max_retakes!r}")

    def takes_for(self, tool: str, step_best_of: int | None) -> int:
        """Takes of a step: its own setting, else the profile's for its tool, else the command's (1 for steps that
        render nothing)."""
        if tool not in GATED_TOOLS:
            return 1
        if step_best_of is not None:
            return check_best_of(step_best_of, "a plan step's best_of")
        return self.per_tool.get(tool, self.best_of)


@dataclass
class Take:
    """One take of a step: its seed, what it made, its scores (``overall`` first) and whether it was kept."""

    index: int
    seed: int
    outputs: list[str]
    overall: float
    scores: dict[str, float] = field(default_factory=dict)
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_take(takes: list[Take]) -> Take:
    """The take with the highest overall score (the earliest on a tie), marked kept."""
    best = max(takes, key=lambda t: (t.overall, -t.index))
    for t in takes:
        t.kept = t is best
    return best


def gate_rule(takes: list[Take], settings: GateSettings, retakes: int) -> tuple[str, str]:
    """The planner's decision without an LLM: another take while the best is under ``min_quality`` and retakes are
    left, else accept."""
    best = max(t.overall for t in takes)
    if settings.min_quality is None or best >= settings.min_quality:
        return "accept", f"best overall {best:.3f}" + (
            f" >= {settings.min_quality:.3f}" if settings.min_quality is not None else ""
        )
    if retakes >= settings.max_retakes:
        return "accept", f"best overall {best:.3f} < {settings.min_quality:.3f}, but {retakes} retake(s) already"
    return "retake", f"best overall {best:.3f} < {settings.min_quality:.3f}"
