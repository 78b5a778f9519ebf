"""The opt-in fast mode (output-changing: fewer steps, diffusers caches, fp8 weights) on the tiny profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from openmora import Orchestrator
from openmora.artifacts import ArtifactStore
from openmora.cli import main
from openmora.errors import InputError, ModelLoadError
from openmora.loader import PipelineLoader
from openmora.profiles import fast_variant, load_profile, profile_from_dict
from openmora.runtime import Runtime

torch.set_num_threads(1)


@pytest.mark.unit
def test_fast_variant_applies_overrides_and_leaves_the_original_alone():
    tiny = load_profile("tiny")
    fast = fast_variant(tiny)
    assert fast.name == "tiny+fast" and fast.fast and not tiny.fast
    assert fast.roles["image_to_video"].params["num_inference_steps"] == 2
    assert tiny.roles["image_to_video"].params["num_inference_steps"] == 4
    # other parameters are kept
    assert fast.roles["image_to_video"].params["motion_bucket_id"] == 180
    assert fast.roles["connect_frames"].cache == {"type": "FirstBlockCacheConfig", "threshold": 0.2}
    assert fast_variant(fast) is fast
    mora = fast_variant(load_profile("mora-lowvram"))
    assert mora.roles["connect_frames"].storage_dtype == "float8_e4m3fn"
    assert mora.roles["image_to_video"].params["num_inference_steps"] == 15


@pytest.mark.integration
def test_fast_text_to_video_runs_fewer_steps_same_length(tmp_path: Path):
    steps: list[int] = []

    def on_event(e: dict) -> None:
        if e.get("type") == "progress" and e.get("role") == "image_to_video" and e.get("step") == e.get("total"):
            steps.append(e["total"])

    normal = Orchestrator(profile="tiny").run("text-to-video", prompt="a kite", segments=2, out=tmp_path / "n")
    fast = Orchestrator(profile="tiny", fast=True, on_event=on_event).run(
        "text-to-video", prompt="a kite", segments=2, out=tmp_path / "f"
    )
    a = ArtifactStore(normal.run_dir).frames(normal.final_id)
    b = ArtifactStore(fast.run_dir).frames(fast.final_id)
    assert a.shape == b.shape  # same video length and size
    assert not np.array_equal(a, b)  # fewer steps: a different video
    clip = ArtifactStore(fast.run_dir).get("clip-0001")
    assert clip.params["num_inference_steps"] == 2
    assert steps and set(steps) == {2}


@pytest.mark.integration
def test_fast_connect_installs_first_block_cache(tmp_path: Path, media: dict):
    orch = Orchestrator(profile="tiny", fast=True)
    r = orch.run("connect", videos=[media["video_a"], media["video_b"]], out=tmp_path / "c")
    pipe = PipelineLoader(orch.profile, runtime=orch.runtime).get("connect_frames")
    assert pipe.transformer.is_cache_enabled
    hooks = {n for block in pipe.transformer.blocks for n in block._diffusers_hook.hooks}
    assert {"fbc_leader_block_hook", "fbc_block_hook"} <= hooks
    assert (r.run_dir / "final.mp4").is_file()


@pytest.mark.unit
def test_fp8_weight_storage_on_the_tiny_wan(tmp_path: Path):
    data = load_profile("tiny").to_dict()
    data["roles"]["connect_frames"]["storage_dtype"] = "float8_e4m3fn"
    data["name"] = "tiny-fp8"
    for key in ("fast", "source"):
        data.pop(key, None)
    profile = profile_from_dict(data)
    pipe = PipelineLoader(profile).get("connect_frames")
    dtypes = {p.dtype for n, p in pipe.transformer.named_parameters() if n.endswith("weight") and p.dim() == 2}
    assert torch.float8_e4m3fn in dtypes


@pytest.mark.unit
def test_cache_on_a_unet_is_a_one_line_load_error():
    data = load_profile("tiny").to_dict()
    data["roles"]["image_to_video"]["cache"] = {"type": "FirstBlockCacheConfig", "threshold": 0.1}
    data["name"] = "tiny-bad-cache"
    for key in ("fast", "source"):
        data.pop(key, None)
    with pytest.raises(ModelLoadError, match="does not support diffusers caches") as err:
        PipelineLoader(profile_from_dict(data)).get("image_to_video")
    assert "\n" not in str(err.value)


@pytest.mark.unit
def test_bad_fast_block_names_the_accepted_keys():
    role = {"pipeline": "StableVideoDiffusionPipeline", "model": "tiny:image_to_video"}
    with pytest.raises(InputError, match="params, cache, storage_dtype, notes"):
        profile_from_dict({"name": "x", "roles": {"image_to_video": {**role, "fast": {"steps": 3}}}})
    with pytest.raises(InputError, match="storage_dtype must be one of"):
        profile_from_dict({"name": "x", "roles": {"image_to_video": {**role, "fast": {"storage_dtype": "int3"}}}})


@pytest.mark.integration
def test_cli_fast_flag(tmp_path: Path, capsys):
    code = main(["run", "image-to-video", "--image", str(_image(tmp_path)), "--fast", "--out", str(tmp_path / "r")])
    assert code == 0
    clip = ArtifactStore(tmp_path / "r").get("clip-0001")
    assert clip.params["num_inference_steps"] == 2


def _image(folder: Path) -> Path:
    from PIL import Image

    path = folder / "in.png"
    Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(path)
    return path


@pytest.mark.unit
def test_profile_file_can_turn_fast_on_and_round_trips(tmp_path: Path):
    import yaml

    data = load_profile("tiny").to_dict()
    data.pop("source")
    data["fast"] = True
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = load_profile(path)
    assert profile.fast and profile.name == "tiny+fast"
    assert profile.roles["image_to_video"].params["num_inference_steps"] == 2
    again = profile_from_dict({k: v for k, v in profile.to_dict().items() if k != "source"})
    assert again.name == "tiny+fast" and again.roles["image_to_video"].params == profile.roles["image_to_video"].params
    data["fast"] = "yes"
    with pytest.raises(InputError, match="fast must be true or false"):
        profile_from_dict(data)


@pytest.mark.unit
def test_compile_is_left_off_while_a_cache_is_on():
    """First Block Cache decides on the host, per step, whether the other blocks run: a compiled block graph cannot
    hold that, so the fast mode drops the role's regional compile (mora's Wan) and keeps it otherwise."""
    from openmora.speedups.compile import DeferredCompile

    assert "compile" in load_profile("mora").roles["connect_frames"].speedups
    normal, fast = load_profile("tiny"), fast_variant(load_profile("tiny"))
    for profile in (normal, fast):
        profile.roles["connect_frames"].speedups = ["compile"]
    rt = Runtime()
    try:
        compiled = PipelineLoader(normal, runtime=rt).get("connect_frames").transformer
        assert all(isinstance(b.forward, DeferredCompile) for b in compiled.blocks)
        cached = PipelineLoader(fast, runtime=rt).get("connect_frames").transformer
        assert cached.is_cache_enabled
        assert not any(isinstance(b.forward, DeferredCompile) for b in cached.blocks)
    finally:
        rt.clear()
