"""The speedup registry (openmora.speedups): it knows every name the shipped profiles use, refuses unknown names when
a profile loads, and applies speedups in its documented order. No pipeline runs here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import openmora.speedups as speedups
from openmora.profiles import available_profiles, fast_variant, load_profile, profile_from_dict
from openmora.speedups import REGISTRY, Speedup, UnknownSpeedup, apply_speedups, register
from openmora.speedups.__main__ import table

pytestmark = pytest.mark.unit

# The order of application, as the registry documents it (channels_last, cl_group_norm and lean_attention before
# compile; fused_qkv before lean_attention; the CUDA graphs once resident).
ORDER = [
    "channels_last",
    "fused_qkv",
    "lean_attention",
    "cudnn_attention",
    "gpu_image_prep",
    "no_step_sync",
    "batched_cfg",
    "cl_group_norm",
    "compile",
    "vae_compile",
    "cuda_graphs",
    "encoder_graphs",
]


def _role_configs(profile):
    for cfg in profile.roles.values():
        yield cfg
        if cfg.refiner is not None:
            yield cfg.refiner


@pytest.mark.parametrize("name", available_profiles())
def test_every_speedup_a_shipped_profile_names_is_registered_and_keeps_the_output(name: str) -> None:
    profile = load_profile(name)
    used = [s for p in (profile, fast_variant(profile)) for cfg in _role_configs(p) for s in cfg.speedups]
    assert set(used) <= set(REGISTRY), set(used) - set(REGISTRY)
    assert all(REGISTRY[s].output_preserving for s in used)  # output-changing options belong in a fast: block


def test_an_unknown_speedup_fails_at_profile_load_with_the_known_names(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nroles:\n  image_to_video:\n    pipeline: StableVideoDiffusionPipeline\n"
        "    model: tiny:image_to_video\n    speedups: [compile, warp]\n",
        encoding="utf-8",
    )
    with pytest.raises(UnknownSpeedup) as err:
        load_profile(path)
    message = str(err.value)
    assert "\n" not in message and "'warp'" in message and "role 'image_to_video'" in message
    assert all(name in message for name in REGISTRY)
    with pytest.raises(UnknownSpeedup, match="'warp'"):  # a refiner's list is checked too
        profile_from_dict(
            {
                "name": "x",
                "roles": {
                    "text_to_image": {
                        "pipeline": "StableDiffusionXLPipeline",
                        "model": "x",
                        "refiner": {"pipeline": "StableDiffusionXLImg2ImgPipeline", "model": "y", "speedups": ["warp"]},
                    }
                },
            }
        )


def test_the_registry_applies_in_its_documented_order() -> None:
    assert list(REGISTRY) == ORDER
    assert [n for n, s in REGISTRY.items() if s.when == "resident"] == ["cuda_graphs", "encoder_graphs"]
    assert all(s.doc and s.summary and "\n" not in s.summary for s in REGISTRY.values())


def test_apply_speedups_follows_the_registry_not_the_asked_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, frozenset[str]]] = []

    def recorder(name: str, result: bool = True):
        def apply(pipe: object, names: frozenset[str]) -> bool:
            calls.append((name, names))
            return result

        return apply

    fake = {
        "first": Speedup("first", recorder("first"), "first."),
        "second": Speedup("second", recorder("second", result=False), "second."),
        "graphs": Speedup("graphs", recorder("graphs"), "graphs.", when="resident"),
    }
    monkeypatch.setattr(speedups, "REGISTRY", fake)
    assert apply_speedups(object(), ["graphs", "second", "first"]) == ["first"]  # "second" reported not applied
    assert [c[0] for c in calls] == ["first", "second"]
    assert calls[0][1] == {"first", "second", "graphs"}  # each sees every asked name (cl_group_norm needs to)
    calls.clear()
    assert apply_speedups(object(), ["first", "graphs"], when="resident") == ["graphs"]
    assert [c[0] for c in calls] == ["graphs"]
    with pytest.raises(UnknownSpeedup, match="known: first, graphs, second"):
        apply_speedups(object(), ["first", "nope"])
    assert apply_speedups(object(), []) == []


def test_register_refuses_a_second_speedup_of_the_same_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(Speedup("compile", lambda pipe, names: True, "again."))


def test_the_table_lists_every_speedup() -> None:
    rows = table().splitlines()
    assert rows[0].startswith("| name | when | output_preserving | needs_cuda |")
    assert [row.split("`")[1] for row in rows[2:]] == ORDER


def test_profiles_check_names_without_importing_torch() -> None:
    """The registry imports its implementations when applied, so loading a profile stays light."""
    code = "import sys, openmora.profiles as p; p.load_profile('mora'); assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
