"""How long a plan will take on a profile, from measured per-step costs, without rendering (``openmora plan``).

Every figure is a measurement, from the first of two sources that has one:

1. **this machine**: ``<cache>/step_costs.json`` (the cache folder of :func:`openmora.settings.cache_root`), kept up
   to date by :meth:`StepCosts.record` (or :meth:`StepCosts.record_transcript` after a run) as an exponential moving
   average, so the figure follows the machine's current speed;
2. **the profile**: its ``step_seconds`` and ``load_seconds`` (``openmora/profiles/*.yaml``), measured by the bench
   on the hardware its YAML comment names.

Units: seconds per call, except ``image_to_video`` and ``extend_video``: seconds per segment (``extend_video`` makes
``args["segments"]``). Loads are per role (a pipeline's first load), counted once for each role a plan uses.

A step that runs a diffusion model (``ToolSpec.gpu``) with no figure makes the estimate ``None``: an honest
"unknown" rather than a guess. Tools that run no model (the prompt tool, taking a frame, joining clips) count 0
without a figure.

Example:
    >>> from openmora.group_chat.plan import template_plan
    >>> from openmora.profiles import load_profile
    >>> costs = StepCosts(path=None)  # the profile's shipped figures only
    >>> round(estimate(template_plan("text-to-video", "a fox", segments=3), load_profile("tiny"), costs), 4)
    1.3658
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmora.fileio import atomic_write_json
from openmora.profiles import ROLES, STEP_TOOLS, Profile
from openmora.settings import cache_root

if TYPE_CHECKING:
    from openmora.group_chat.plan import Plan

__all__ = ["ALPHA", "TOOL_ROLES", "StepCosts", "estimate", "step_costs_path"]

logger = logging.getLogger(__name__)

ALPHA = 0.3  # weight of a new measurement in the moving average
FILE_NAME = "step_costs.json"
VERSION = 1
# Tools measured per segment: the tool's seconds are divided by its segments when recorded, multiplied when estimated.
PER_SEGMENT = ("image_to_video", "extend_video")
# The profile role whose pipeline each model tool loads (text_to_image's refiner belongs to its role).
TOOL_ROLES = {
    "text_to_image": "text_to_image",
    "edit_image": "edit_image",
    "image_to_video": "image_to_video",
    "extend_video": "image_to_video",
    "connect_clips": "connect_frames",
}
_WRITE_LOCK = threading.Lock()  # one read-update-write at a time in this process (a story renders in two threads)
_DEFAULT: Any = object()  # "the cache's step_costs.json" (None means no file)


def step_costs_path() -> Path:
    """Where this machine's measured figures live: ``<cache root>/step_costs.json``."""
    return cache_root() / FILE_NAME


def _segments(tool: str, args: dict[str, Any]) -> int | None:
    """How many segments a call of ``tool`` with ``args`` makes (1 for the other tools); None if not a count."""
    if tool != "extend_video":
        return 1
    n = args.get("segments", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    return n


def _seconds(value: Any) -> float | None:
    """``value`` as seconds if it is a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        return None
    return float(value)


class StepCosts:
    """Per-(profile name, tool) seconds and per-(profile name, role) load seconds: this machine's measurements first,
    then the profile's shipped figures.

    Args:
        path: the measurements file; default ``<cache root>/step_costs.json`` (``OPENMORA_CACHE`` as it is when this
            object is made). ``None``: no file: the profile's figures only, and :meth:`record` keeps figures in memory.
    """

    def __init__(self, path: str | Path | None = _DEFAULT) -> None:
        self.path: Path | None = step_costs_path() if path is _DEFAULT else None if path is None else Path(path)
        self._data: dict[str, Any] | None = None  # the file's figures, read when first needed

    # ----- reading ------------------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        """The measurements file's profiles as ``{profile: {"steps": {tool: {"seconds", "n"}}, "load": {...}}}``;
        a missing file is empty, an unreadable or malformed one is ignored with a warning (never an error)."""
        empty: dict[str, Any] = {}
        path = self.path
        if path is None or not path.exists():
            return empty
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            logger.warning("ignoring %s: not readable JSON (%s); measured step costs start afresh", path, err)
            return empty
        profiles = data.get("profiles") if isinstance(data, dict) else None
        if not isinstance(profiles, dict):
            logger.warning("ignoring %s: no 'profiles' mapping; measured step costs start afresh", path)
            return empty
        out: dict[str, Any] = {}
        dropped = 0
        for name, entry in profiles.items():
            if not isinstance(entry, dict):
                dropped += 1
                continue
            clean: dict[str, dict[str, Any]] = {"steps": {}, "load": {}}
            for kind, names in (("steps", STEP_TOOLS), ("load", ROLES)):
                figures = entry.get(kind, {})
                for key, fig in figures.items() if isinstance(figures, dict) else ():
                    seconds = _seconds(fig.get("seconds")) if isinstance(fig, dict) else None
                    count = fig.get("n", 1) if isinstance(fig, dict) else None
                    if key not in names or seconds is None or not isinstance(count, int) or count < 1:
                        dropped += 1
                        continue
                    clean[kind][key] = {"seconds": seconds, "n": count}
            out[str(name)] = clean
        if dropped:
            logger.warning("ignoring %d malformed entries of %s", dropped, path)
        return out

    def _measured(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._read()
        return self._data

    def measured(self, profile_name: str, tool: str) -> float | None:
        """This machine's figure for ``tool`` on ``profile_name`` (seconds per call, or per segment), if any."""
        fig = self._measured().get(profile_name, {}).get("steps", {}).get(tool)
        return None if fig is None else float(fig["seconds"])

    def measured_load(self, profile_name: str, role: str) -> float | None:
        """This machine's first-load figure for ``role`` on ``profile_name``, if any."""
        fig = self._measured().get(profile_name, {}).get("load", {}).get(role)
        return None if fig is None else float(fig["seconds"])

    def step_s(self, profile: Profile, tool: str) -> float | None:
        """Seconds per call of ``tool`` (per segment for image_to_video, extend_video): measured here, else the
        profile's figure, else None."""
        here = self.measured(profile.name, tool)
        return here if here is not None else profile.step_seconds.get(tool)

    def load_s(self, profile: Profile, role: str) -> float | None:
        """First-load seconds of ``role``'s pipeline(s): measured here, else the profile's figure, else None."""
        here = self.measured_load(profile.name, role)
        return here if here is not None else profile.load_seconds.get(role)

    # ----- recording ----------------------------------------------------------------------------------------------
    def record(self, profile_name: str, tool: str, seconds: float, segments: int = 1) -> float:
        """Fold one measured call of ``tool`` (``seconds`` of wall time making ``segments`` segments) into this
        machine's figure for ``profile_name``; returns the new figure (per call, or per segment)."""
        if tool not in STEP_TOOLS:
            raise ValueError(f"unknown tool {tool!r}; accepted: {', '.join(STEP_TOOLS)}")
        value = self._value(seconds, "seconds")
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ValueError(f"segments must be a whole number >= 1, got {segments!r}")
        per = value / segments if tool in PER_SEGMENT else value
        return self._update([(profile_name, "steps", tool, per)])[0]

    def record_load(self, profile_name: str, role: str, seconds: float) -> float:
        """Fold one measured first load of ``role``'s pipeline(s) into this machine's figure; returns it."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; accepted: {', '.join(ROLES)}")
        return self._update([(profile_name, "load", role, self._value(seconds, "seconds"))])[0]

    def record_transcript(self, profile_name: str, transcript_path: str | Path) -> int:
        """Fold a run's successful tool calls (``transcript.jsonl``) into this machine's figures; returns how many.

        Counted: ``"type": "tool_call"`` lines with a ``tool`` and ``seconds``, no ``error``, not ``"reused"``; an
        extend_video call's segments come from its ``arguments`` (or ``args``), default 1. A call's seconds include
        its pipeline's first load when that happened in the run: a line's ``load_seconds``, when given, is taken
        off (and recorded as the role's load); without it, when the run loaded anything (its ``run_end`` line's
        ``timings.load_s`` > 0, or no ``run_end`` line to tell), the first call of each role is left out.
        """
        from openmora.group_chat.transcript import Transcript

        lines = Transcript.read(transcript_path)
        end = next((e for e in reversed(lines) if e.get("type") == "run_end"), None)
        timings = end.get("timings") if isinstance(end, dict) else None
        run_load = _seconds(timings.get("load_s")) if isinstance(timings, dict) else None
        may_include_load = run_load is None or run_load > 0
        seen_roles: set[str] = set()
        updates: list[tuple[str, str, str, float]] = []
        for line in lines:
            tool, seconds = line.get("tool"), _seconds(line.get("seconds"))
            if line.get("type") != "tool_call" or tool not in STEP_TOOLS or seconds is None:
                continue
            if line.get("error") is not None or line.get("reused") is True:
                continue
            args = line.get("arguments", line.get("args"))
            segments = _segments(str(tool), args if isinstance(args, dict) else {})
            if segments is None:
                continue
            role = TOOL_ROLES.get(str(tool))
            first_use = role is not None and role not in seen_roles
            if role is not None:
                seen_roles.add(role)
            load = _seconds(line.get("load_seconds"))
            if load is not None:
                if role is not None and load > 0:
                    updates.append((profile_name, "load", role, load))
                seconds = max(0.0, seconds - load)
            elif first_use and may_include_load:
                continue
            per = seconds / segments if tool in PER_SEGMENT else seconds
            updates.append((profile_name, "steps", str(tool), per))
        if updates:
            self._update(updates)
        return sum(1 for u in updates if u[1] == "steps")

    @staticmethod
    def _value(seconds: Any, what: str) -> float:
        value = _seconds(seconds)
        if value is None:
            raise ValueError(f"{what} must be a finite number >= 0, got {seconds!r}")
        return value

    def _update(self, updates: Iterable[tuple[str, str, str, float]]) -> list[float]:
        """Apply ``(profile, kind, key, seconds)`` measurements to the latest file content (another process may have
        written since we read it) and write it back atomically; returns the new figures."""
        with _WRITE_LOCK:
            return self._update_locked(updates)

    def _update_locked(self, updates: Iterable[tuple[str, str, str, float]]) -> list[float]:
        data = self._read() if self.path is not None else self._measured()
        new: list[float] = []
        for profile_name, kind, key, seconds in updates:
            entry = data.setdefault(profile_name, {"steps": {}, "load": {}}).setdefault(kind, {})
            old = entry.get(key)
            if old is None:
                fig = {"seconds": seconds, "n": 1}
            else:
                fig = {"seconds": ALPHA * seconds + (1 - ALPHA) * old["seconds"], "n": old["n"] + 1}
            entry[key] = fig
            new.append(fig["seconds"])
        self._data = data
        path = self.path
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, {"version": VERSION, "alpha": ALPHA, "profiles": data}, indent=1)
            except OSError as err:  # a read-only cache must not fail the run that measured
                logger.warning("could not write measured step costs to %s: %s", path, err)
        return new


def estimate(
    plan: Plan,
    profile: Profile,
    costs: StepCosts | None = None,
    include_load: bool = False,
    skip: Iterable[str] = frozenset(),
    takes: Callable[[str, int | None], int] | None = None,
) -> float | None:
    """Estimated seconds of ``plan`` on ``profile``: the sum of its steps' measured figures (segments counted).

    Args:
        plan: the plan to run.
        profile: the profile it runs on (its name keys this machine's figures, its ``step_seconds`` the fallback).
        costs: where the figures come from; default :class:`StepCosts` on the cache's ``step_costs.json``.
        include_load: add each used role's first-load seconds once (a fresh process loads every pipeline).
        skip: ids of steps left out (their outputs will be reused).
        takes: ``takes(tool, step.best_of)``: how many takes a step renders (best-of-N; default 1), each costing
            the step's figure.

    Returns:
        Seconds, or None when a model step (or, with ``include_load``, a used role's load) has no figure or a step
        names an unknown tool or a segment count that is not one.
    """
    from openmora.group_chat.plan import TOOLS

    costs = StepCosts() if costs is None else costs
    skipped = set(skip)
    total = 0.0
    roles: set[str] = set()
    for step in plan.steps:
        if step.id in skipped:
            continue
        spec = TOOLS.get(step.tool)
        n = _segments(step.tool, step.args)
        if spec is None or n is None:
            return None
        per = costs.step_s(profile, step.tool)
        if per is None:
            if spec.gpu:
                return None
            continue  # no model: host work, counted 0 without a figure
        total += per * n * (takes(step.tool, step.best_of) if takes else 1)
        if step.tool in TOOL_ROLES:
            roles.add(TOOL_ROLES[step.tool])
    if include_load:
        for role in sorted(roles):
            load = costs.load_s(profile, role)
            if load is None:
                return None
            total += load
    return total
