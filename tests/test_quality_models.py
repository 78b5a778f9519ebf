"""Model-based scores from a user's local files, with tiny random models built here (nothing downloads): DINO and
CLIP features (subject and background consistency), a LAION-style aesthetic head on CLIP, a TorchScript
image-quality model in MUSIQ's place; and the one-line errors when a configured file cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from openmora.errors import InputError
from openmora.quality import metrics as M
from openmora.quality import synthetic as S
from openmora.quality.score import _models, quality_models, score_frames

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
PROJECTION = 12  # the tiny CLIP's embedding width


def _tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=PROJECTION,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _head(path: Path, weight: np.ndarray, bias: float) -> Path:
    from safetensors.numpy import save_file

    save_file(
        {"linear.weight": weight.astype(np.float32)[None], "linear.bias": np.array([bias], np.float32)}, str(path)
    )
    return path


class _MeanBrightness(torch.nn.Module):
    """A stand-in for MUSIQ with a known answer: 100 x the mean of the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean() * 100.0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    clip = _tiny_clip(root / "clip")
    rng = np.random.default_rng(0)
    head = _head(root / "head.safetensors", rng.normal(size=PROJECTION), 5.0)
    musiq = root / "musiq.pt"
    torch.jit.script(_MeanBrightness()).save(str(musiq))
    return {"clip": clip, "head": head, "musiq": musiq}


def test_configured_models_replace_the_estimators(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMORA_CLIP", str(files["clip"]))
    monkeypatch.setenv("OPENMORA_AESTHETIC", str(files["head"]))
    monkeypatch.setenv("OPENMORA_MUSIQ", str(files["musiq"]))
    models = quality_models()
    assert models.features.is_model and models.features.name.startswith("clip:")
    frames = S.pan(S.photo("coffee"), 10, speed_px=3.0, crop=(64, 96))
    scored = score_frames(frames, 8.0, models=models)["metrics"]
    # imaging quality from the TorchScript model: the sampled frames' mean brightness / 255 (its known answer)
    idx = scored["imaging_quality"]["frames"]
    expected = float(np.mean([frames[i].astype(np.float32).mean() / 255.0 for i in idx]))
    assert scored["imaging_quality"]["value"] == pytest.approx(expected, rel=1e-4)
    assert scored["imaging_quality"]["method"].startswith("vbench: torchscript:musiq.pt")
    # the aesthetic head: (w . e + b) / 10 per frame on the CLIP embeddings
    assert models.clip is not None and models.aesthetic is not None
    clip_feats = models.clip(frames)
    w = models.aesthetic.weight
    assert scored["aesthetic_quality"]["value"] == pytest.approx(float(np.mean((clip_feats @ w + 5.0) / 10)), rel=1e-4)
    # VBench's background consistency on CLIP, and subject consistency on the configured features
    assert 0.0 < scored["background_consistency"]["value"] <= 1.0
    assert scored["subject_consistency"]["extractor"] == models.features.name


def test_subject_consistency_ranks_with_a_model_too(files: dict[str, Path]) -> None:
    fx = M.TransformersImageFeatures(files["clip"], "clip")
    same = S.static(8, 64, 96)
    cut = S.hard_cut(S.static(4, 64, 96, seed=1), S.noise(4, 64, 96, seed=2))
    assert M.subject_consistency(fx(same)).value == pytest.approx(1.0, abs=1e-5)
    assert M.subject_consistency(fx(cut)).value < M.subject_consistency(fx(same)).value


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OPENMORA_AESTHETIC": "head"}, "set OPENMORA_CLIP to the CLIP folder too"),
        ({"OPENMORA_CLIP": "clip", "OPENMORA_AESTHETIC": "missing.safetensors"}, "is not a file"),
        ({"OPENMORA_MUSIQ": "missing.pt"}, "is not a file; expected a TorchScript file"),
        ({"OPENMORA_MUSIQ": "head"}, "cannot be loaded"),
        ({"OPENMORA_DINO": "nowhere"}, "does not exist"),
    ],
)
def test_a_configured_file_that_cannot_be_used_is_one_line(
    env: dict[str, str], says: str, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _models.cache_clear()
    for name, value in env.items():
        known = {"head": files["head"], "clip": files["clip"]}.get(value)
        monkeypatch.setenv(name, str(known or tmp_path / value))
    with pytest.raises(InputError, match=says) as info:
        quality_models()
    assert "\n" not in str(info.value)


def test_an_aesthetic_head_of_the_wrong_width_says_which(files: dict[str, Path], tmp_path: Path) -> None:
    head = M.AestheticHead(_head(tmp_path / "wide.safetensors", np.ones(PROJECTION + 4), 0.0))
    fx = M.TransformersImageFeatures(files["clip"], "clip")
    with pytest.raises(InputError, match=f"takes {PROJECTION + 4}-wide CLIP embeddings, got {PROJECTION}"):
        M.aesthetic_quality(fx(S.static(2, 64, 96)), head)
