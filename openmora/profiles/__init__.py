"""Model profiles: which diffusers pipeline plays each role, on what device and dtype, with which call parameters.

Profiles are data (YAML files in ``profiles/`` or a user's own file), loaded into small typed objects.

Example:
    >>> from openmora.profiles import load_profile
    >>> p = load_profile("tiny")
    >>> p.roles["image_to_video"].pipeline
    'StableVideoDiffusionPipeline'
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openmora.errors import InputError, first_line
from openmora.speedups import check_speedups

PROFILES_DIR = Path(__file__).resolve().parent  # the YAML files ship beside this module (package data)
ROLES = ("text_to_image", "edit_image", "image_to_video", "connect_frames")
DTYPES = ("auto", "float32", "float16", "bfloat16")
OFFLOAD = ("none", "auto", "model", "group", "sequential")
STORAGE_DTYPES = ("float8_e4m3fn", "float8_e5m2")
FAST_KEYS = ("params", "cache", "storage_dtype", "notes")
# The plan's tools (group_chat/plan.py TOOLS, kept equal by tests/test_estimates.py; not imported here: the plan
# module imports the tools and torch), the keys of a profile's ``step_seconds``.
STEP_TOOLS = (
    "enhance_prompt",
    "text_to_image",
    "take_frame",
    "edit_image",
    "image_to_video",
    "extend_video",
    "connect_clips",
    "join_clips",
)


PROMPT_VOCABULARIES = (None, "toy")  # Profile.prompt_vocabulary: None (as written) or a closed vocabulary


@dataclass
class RoleConfig:
    """One role's pipeline.

    ``model`` is a hub id, a local folder, ``tiny:<role>`` for the embedded random-weight models, or ``toy:<name>``
    for the embedded trained toy-world models (``openmora/toy/weights/<name>``).
    ``params`` are default keyword arguments of the pipeline call (steps, guidance, frames...).
    ``refiner`` is an optional second pipeline that finishes the denoising (SDXL's base + refiner split).
    """

    pipeline: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None  # None: the profile's dtype
    device: str | None = None  # None: the profile's device
    variant: str | None = None
    offload: str = "none"
    vae_tiling: bool = False
    refiner: RoleConfig | None = None
    refiner_split: float = 0.8
    notes: str = ""
    # Memory manager: GPU memory the pipeline needs beyond its weights while it runs (activations, VAE decode).
    # None: a per-class default from openmora.memory.
    reserve_gb: float | None = None
    speedups: list[str] = field(default_factory=list)
    # Output-changing options (they trade fidelity for speed or memory; docs/perf-log/SPEED_NOTES.md gives the error):
    # ``cache``: a diffusers cache on the denoiser, e.g. {type: FirstBlockCacheConfig, threshold: 0.1};
    # ``storage_dtype``: weights stored in fp8 and up-cast per layer (diffusers' layerwise casting).
    cache: dict[str, Any] | None = None
    storage_dtype: str | None = None
    # The opt-in fast mode (``--fast``): overrides of ``params``/``cache``/``storage_dtype`` applied by
    # :func:`fast_variant`. Output-changing, so never on by default.
    fast: dict[str, Any] | None = None


@dataclass
class Profile:
    """A named set of role configs plus the output video's size and frame rate."""

    name: str
    roles: dict[str, RoleConfig]
    width: int = 1024
    height: int = 576
    fps: int = 7
    segments: int = 3
    device: str = "auto"
    dtype: str = "auto"
    description: str = ""
    source: str = ""
    # GPU memory the resident pipelines may use, per device; None: the card's memory less a safety margin.
    vram_budget_gb: float | None = None
    fast: bool = False  # True once fast_variant() applied the roles' fast overrides
    # Measured seconds per plan step, shipped with the profile for ``openmora plan``'s estimate (openmora/estimates.py;
    # figures measured on this machine take precedence). Per call, except image_to_video and extend_video: per
    # segment. A tool left out has no measured figure.
    step_seconds: dict[str, float] = field(default_factory=dict)
    # Measured first-load seconds of a role's pipeline(s), counted once per role a plan uses.
    load_seconds: dict[str, float] = field(default_factory=dict)
    # The quality gate (openmora/quality/gate.py): takes per step tool ({image_to_video: 3}), the overall score under
    # which the planner is asked for another take (None: never), and how many it may ask for.
    best_of: dict[str, int] = field(default_factory=dict)
    min_quality: float | None = None
    max_retakes: int = 2
    # Models trained on a closed vocabulary get prompts rewritten into the phrasing they learned: ``toy`` (the toy
    # world's, openmora/toy/scenes.py). None: prompts reach the pipelines as the agents wrote them.
    prompt_vocabulary: str | None = None

    def role(self, name: str) -> RoleConfig:
        if name not in self.roles:
            raise InputError(f"profile {self.name!r} has no {name!r} role; it has: {', '.join(self.roles) or 'none'}")
        return self.roles[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``profiles/``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _role_from_dict(profile: str, role: str, data: Any) -> RoleConfig:
    where = f"profile {profile!r}, role {role!r}"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with 'pipeline' and 'model'")
    known = {f.name for f in dataclasses.fields(RoleConfig)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; accepted: {sorted(known)}")
    for key in ("pipeline", "model"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise InputError(f"{where}: '{key}' must be a non-empty string")
    data = dict(data)
    if data.get("refiner") is not None:
        data["refiner"] = _role_from_dict(profile, f"{role}.refiner", data["refiner"])
    if not isinstance(data.get("params", {}), dict):
        raise InputError(f"{where}: 'params' must be a mapping")
    if data.get("dtype") not in (None, *DTYPES):
        raise InputError(f"{where}: dtype {data['dtype']!r} is not one of {', '.join(DTYPES)}")
    if data.get("offload", "none") not in OFFLOAD:
        raise InputError(f"{where}: offload {data['offload']!r} is not one of {', '.join(OFFLOAD)}")
    reserve = data.get("reserve_gb")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, (int, float)) or reserve < 0):
        raise InputError(f"{where}: reserve_gb must be a number of GB >= 0, got {reserve!r}")
    speedups = data.get("speedups", [])
    if not isinstance(speedups, list) or not all(isinstance(s, str) for s in speedups):
        raise InputError(
            f"{where}: speedups must be a list of names (python -m openmora.speedups lists them), got {speedups!r}"
        )
    check_speedups(speedups, where)  # the speedup registry's names (openmora.speedups)
    cache = data.get("cache")
    if cache is not None and (not isinstance(cache, dict) or not isinstance(cache.get("type"), str)):
        raise InputError(
            f"{where}: cache must be a mapping with a 'type' (a diffusers cache config class), got {cache!r}"
        )
    if data.get("storage_dtype") not in (None, *STORAGE_DTYPES):
        raise InputError(
            f"{where}: storage_dtype must be one of {', '.join(STORAGE_DTYPES)}, got {data['storage_dtype']!r}"
        )
    fast = data.get("fast")
    if fast is not None:
        if not isinstance(fast, dict) or set(fast) - set(FAST_KEYS):
            raise InputError(f"{where}: fast must be a mapping with keys from {', '.join(FAST_KEYS)}, got {fast!r}")
        if not isinstance(fast.get("params", {}), dict):
            raise InputError(f"{where}: fast.params must be a mapping")
        _role_from_dict(
            profile,
            f"{role}.fast",
            {
                "pipeline": data["pipeline"],
                "model": data["model"],
                **{k: v for k, v in fast.items() if k in ("cache", "storage_dtype")},
            },
        )
    split = data.get("refiner_split", 0.8)
    if not isinstance(split, (int, float)) or not 0 < split < 1:
        raise InputError(f"{where}: refiner_split must be a number between 0 and 1, got {split!r}")
    return RoleConfig(**data)


def profile_from_dict(data: dict[str, Any], source: str = "") -> Profile:
    """Validate a profile mapping (as read from YAML) and build a :class:`Profile`."""
    if not isinstance(data, dict):
        raise InputError(f"profile {source or '?'}: expected a YAML mapping at the top level")
    name = str(data.get("name") or Path(source).stem or "custom")
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"profile {name!r}: unknown keys {sorted(unknown)}; accepted: {sorted(known)}")
    roles_data = data.get("roles")
    if not isinstance(roles_data, dict) or not roles_data:
        raise InputError(f"profile {name!r}: 'roles' must map role names ({', '.join(ROLES)}) to pipelines")
    bad = set(roles_data) - set(ROLES)
    if bad:
        raise InputError(f"profile {name!r}: unknown roles {sorted(bad)}; accepted: {', '.join(ROLES)}")
    roles = {role: _role_from_dict(name, role, cfg) for role, cfg in roles_data.items()}
    fields = {k: v for k, v in data.items() if k not in ("roles", "name", "source", "fast")}
    fast = data.get("fast", False)
    if not isinstance(fast, bool):
        raise InputError(
            f"profile {name!r}: fast must be true or false (true: run the roles' fast settings), got {fast!r}"
        )
    profile = Profile(name=name, roles=roles, source=source, **fields)
    for dim in ("width", "height"):
        value = getattr(profile, dim)
        if not isinstance(value, int) or value < 16 or value > 8192 or value % 16:
            raise InputError(f"profile {name!r}: {dim} must be a multiple of 16 between 16 and 8192, got {value!r}")
    if not isinstance(profile.fps, int) or not 1 <= profile.fps <= 120:
        raise InputError(f"profile {name!r}: fps must be a whole number from 1 to 120, got {profile.fps!r}")
    budget = profile.vram_budget_gb
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise InputError(f"profile {name!r}: vram_budget_gb must be a number of GB > 0, got {budget!r}")
    if profile.prompt_vocabulary not in PROMPT_VOCABULARIES:
        raise InputError(
            f"profile {name!r}: prompt_vocabulary {profile.prompt_vocabulary!r} is not one of: "
            + ", ".join(map(str, PROMPT_VOCABULARIES))
        )
    if profile.dtype not in DTYPES:
        raise InputError(f"profile {name!r}: dtype {profile.dtype!r} is not one of {', '.join(DTYPES)}")
    profile.step_seconds = _seconds_map(name, "step_seconds", profile.step_seconds, STEP_TOOLS, "tool")
    profile.load_seconds = _seconds_map(name, "load_seconds", profile.load_seconds, ROLES, "role")
    if not isinstance(profile.best_of, dict):
        raise InputError(f"profile {name!r}: best_of must map step tools to a number of takes, got {profile.best_of!r}")
    from openmora.quality.gate import GateSettings

    try:  # the gate's own checks, with the profile named
        GateSettings(per_tool=profile.best_of, min_quality=profile.min_quality, max_retakes=profile.max_retakes)
    except InputError as err:
        raise InputError(f"profile {name!r}: {err}") from None
    return fast_variant(profile) if fast else profile


def _seconds_map(profile: str, key: str, data: Any, names: tuple[str, ...], what: str) -> dict[str, float]:
    """Check a ``{name: seconds}`` mapping of a profile: known names, numbers >= 0; returns it with float values."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"profile {profile!r}: {key} must map {what} names to seconds, got {data!r}")
    out: dict[str, float] = {}
    for name, value in data.items():
        if name not in names:
            raise InputError(f"profile {profile!r}: {key} has unknown {what} {name!r}; accepted: {', '.join(names)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise InputError(f"profile {profile!r}: {key}.{name} must be a number of seconds >= 0, got {value!r}")
        out[name] = float(value)
    return out


def fast_variant(profile: Profile) -> Profile:
    """A copy of ``profile`` with every role's ``fast`` overrides applied (fewer steps, caches, fp8 weights).

    The fast mode changes the output (``mora --fast``: final SVD latents 9.38e-2 from an fp32 reference, against
    1.57e-3 without it); roles without ``fast`` stay as they are. Applying it twice is harmless.
    """
    if profile.fast:
        return profile
    out = copy.deepcopy(profile)

    def apply(cfg: RoleConfig) -> None:
        if cfg.fast:
            cfg.params = {**cfg.params, **cfg.fast.get("params", {})}
            for key in ("cache", "storage_dtype"):
                if key in cfg.fast:
                    setattr(cfg, key, cfg.fast[key])
        if cfg.refiner is not None:
            apply(cfg.refiner)

    for cfg in out.roles.values():
        apply(cfg)
    # The shipped timings were measured at the profile's own settings, not the fast ones: no figure is better than a
    # wrong one (figures measured for "<name>+fast" on this machine still apply).
    out.step_seconds, out.load_seconds = {}, {}
    out.fast = True
    out.name = profile.name if profile.name.endswith("+fast") else f"{profile.name}+fast"
    return out


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``tiny``, ``mora``, ``modern``) or a user's YAML file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = PROFILES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise InputError(
                f"unknown profile {text!r}; use one of {', '.join(available_profiles())} or a path to a YAML file"
            )
    if not path.is_file():
        raise InputError(f"profile file {text} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"profile file {text} is not readable YAML: {first_line(err)}") from None
    return profile_from_dict(data, source=str(path))
