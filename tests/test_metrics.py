"""The weight-free quality metrics (openmora/quality/metrics.py) on known-answer clips (openmora/quality/synthetic.py):
exact values where the formula gives one, rankings and measured speeds otherwise, real footage scored without error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openmora.errors import InputError
from openmora.quality import metrics as M
from openmora.quality import synthetic as S

unit = pytest.mark.unit
integration = pytest.mark.integration


# ----- synthetic clips -----


@unit
def test_generators_are_deterministic_and_shaped() -> None:
    for make in (
        lambda: S.static(4, 32, 48),
        lambda: S.noise(4, 32, 48, seed=3),
        lambda: S.moving_square(4, 32, 48, 2.5, "up"),
        lambda: S.flicker(4, 32, 48, 2, 10),
    ):
        a, b = make(), make()
        assert a.shape == (4, 32, 48, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert not np.array_equal(S.noise(2, 16, 16, seed=0), S.noise(2, 16, 16, seed=1))


@unit
def test_moving_square_moves_exactly_its_speed() -> None:
    clip = S.moving_square(3, 64, 64, 4.0, "right")
    moved = (clip[0] != clip[1]).any(axis=2)
    assert moved.any()
    # Away from the wrap, frame 1 is frame 0 shifted 4 px right inside the square.
    side = int(0.4 * 64)
    y0, x0 = (64 - side) // 2, (64 - side) // 2
    inner = np.s_[y0 + 2 : y0 + side - 2, x0 + 6 : x0 + side - 2]
    shifted = np.s_[y0 + 2 : y0 + side - 2, x0 + 2 : x0 + side - 6]
    assert np.array_equal(clip[1][inner], clip[0][shifted])


@unit
def test_cut_fade_pan_shapes_and_bad_input() -> None:
    a, b = S.static(5, 32, 32, 0), S.static(4, 32, 32, 1)
    assert S.hard_cut(a, b).shape[0] == 9
    fade = S.cross_fade(a, b, 3)
    assert fade.shape[0] == 6 and np.array_equal(fade[0], a[0]) and np.array_equal(fade[-1], b[-1])
    with pytest.raises(InputError, match="one frame size"):
        S.hard_cut(a, S.static(2, 16, 16))
    with pytest.raises(InputError, match="cross-fade length"):
        S.cross_fade(a, b, 9)
    img = S.photo("chelsea")
    assert img.shape == (300, 451, 3) and img.dtype == np.uint8  # bundled with scikit-image: offline
    assert S.pan(img, 5, 10.0).shape == (5, 300, 225, 3)
    with pytest.raises(InputError, match="travel"):
        S.pan(img, 100, 10.0)
    with pytest.raises(InputError, match="direction"):
        S.moving_square(2, 32, 32, 1.0, "sideways")


# ----- temporal flickering -----


@unit
def test_flicker_static_is_exactly_one_and_falls_with_amplitude() -> None:
    assert M.temporal_flickering(S.static(8, 64, 64)).value == 1.0
    values = [M.temporal_flickering(S.flicker(8, 64, 64, 1, amp)).value for amp in (5, 20, 40)]
    assert values[0] > values[1] > values[2]
    # Every pair toggles by exactly amp grey levels: (255 - amp) / 255.
    assert values[1] == pytest.approx(1 - 20 / 255, abs=1e-9)
    r = M.temporal_flickering(S.flicker(9, 32, 32, period=2, amplitude=20))
    assert r.method == "vbench" and r.higher_is_better and len(r.series) == 8
    # Period 2 toggles between pairs 1-2, 3-4, 5-6, 7-8: 4 of 8 pairs.
    assert r.value == pytest.approx(1 - 0.5 * 20 / 255, abs=1e-9)


# ----- motion smoothness -----


@unit
def test_motion_smoothness_ranks_static_square_jerky_noise() -> None:
    static = M.motion_smoothness(S.static(9, 64, 64)).value
    sq = S.moving_square(17, 64, 64, 3.0)
    smooth = M.motion_smoothness(sq)
    jerky_clip = sq.copy()
    jerky_clip[1::2] = sq[np.minimum(np.arange(1, 17, 2) + 3, 16)]  # odd frames jump ahead: motion not smooth
    jerky = M.motion_smoothness(jerky_clip).value
    noise = M.motion_smoothness(S.noise(9, 64, 64)).value
    assert static > 0.999
    assert smooth.value > 0.97 and len(smooth.series) == 8
    assert static >= smooth.value > jerky > noise
    assert noise < 0.8
    assert smooth.method.startswith("estimator:") and "AMT" in smooth.method


# ----- dynamic degree -----


@unit
def test_dynamic_degree_static_slow_fast() -> None:
    static = M.dynamic_degree(S.static(16, 64, 64), fps=8)
    slow = M.dynamic_degree(S.moving_square(16, 64, 64, 0.5), fps=8)
    fast = M.dynamic_degree(S.moving_square(16, 64, 64, 4.0), fps=8)
    assert static.threshold == pytest.approx(1.5) and static.count_needed == 4
    assert not static.dynamic and static.value == 0.0 and static.speed_px < 0.05
    assert not slow.dynamic
    assert fast.dynamic and fast.value == 1.0 and len(fast.magnitudes) == 15
    assert fast.method.startswith("estimator:") and "RAFT" in fast.method
    assert set(fast.to_dict()) >= {"dynamic", "value", "magnitudes", "threshold", "count_needed", "speed_px"}


@unit
@pytest.mark.parametrize(("h", "w", "speed"), [(64, 64, 2.0), (64, 64, 6.0), (144, 256, 3.0), (144, 256, 8.0)])
def test_dynamic_degree_measures_square_speed(h: int, w: int, speed: float) -> None:
    r = M.dynamic_degree(S.moving_square(12, h, w, speed), fps=8)
    assert r.speed_px == pytest.approx(speed, rel=0.15)


@unit
def test_dynamic_degree_samples_at_8_fps_and_reports_per_frame_speed() -> None:
    r = M.dynamic_degree(S.moving_square(25, 64, 64, 1.0), fps=24)
    assert r.interval == 3 and len(r.magnitudes) == 8  # frames 0, 3, ..., 24
    assert r.speed_px == pytest.approx(1.0, rel=0.15)  # 3 px per sampled pair, 1 px per frame
    assert r.dynamic  # 3 px per sampled pair > 1.5 px
    short = M.dynamic_degree(S.moving_square(3, 64, 64, 2.0), fps=np.float32(30))  # shorter than one interval (4)
    assert short.interval == 2 and len(short.magnitudes) == 1 and short.count_needed == 1
    assert short.speed_px == pytest.approx(2.0, rel=0.15)


@unit
def test_dynamic_degree_measures_a_photo_pan() -> None:
    for name, speed, direction in (("astronaut", 3.0, "right"), ("astronaut", 6.0, "right"), ("coffee", 8.0, "down")):
        r = M.dynamic_degree(S.pan(S.photo(name), 10, speed, direction=direction), fps=8)
        assert r.speed_px == pytest.approx(speed, rel=0.15), (name, speed, r.speed_px)
    # 512x256 frames: threshold 6 px; 3 px/frame is not dynamic, 8 px/frame is.
    assert not M.dynamic_degree(S.pan(S.photo(), 10, 3.0), fps=8).dynamic
    assert M.dynamic_degree(S.pan(S.photo(), 10, 8.0), fps=8).dynamic


# ----- seams -----


@unit
def test_seam_continuation_is_not_a_cut() -> None:
    st = S.static(12, 64, 64)
    s = M.seam(st[:6], st[6:])
    assert s.psnr == 100.0 and s.ssim == pytest.approx(1.0) and s.flow_jump == 0.0 and not s.cut
    sq = S.moving_square(12, 64, 64, 3.0)
    s = M.seam(sq[:6], sq[6:])
    assert not s.cut and s.flow_jump == pytest.approx(1.0, abs=0.3) and s.seam_diff_ratio < 1.5
    pan = S.pan(S.photo(), 12, 8.0)
    s = M.seam(pan[:6], pan[6:])
    assert not s.cut and s.flow_jump < 1.5
    assert set(s.to_dict()) >= {"psnr", "ssim", "hist_distance", "flow_jump", "seam_diff_ratio", "cut"}


@unit
def test_seam_hard_cut_is_a_cut() -> None:
    s = M.seam(S.static(6, 64, 64, 0), S.static(6, 64, 64, 5))
    assert s.cut and s.flow_jump > 5 and s.seam_diff_ratio > 10 and s.psnr < 25
    pa = S.pan(S.photo("astronaut"), 6, 3.0, crop=(300, 256))
    pb = S.pan(S.photo("chelsea"), 6, 3.0, crop=(300, 256))
    s = M.seam(pa, pb)
    assert s.cut and s.hist_distance > 0.3 and s.flow_jump > 3
    assert M.seam_diff_ratio(pa, pb) > 2.5 > M.seam_diff_ratio(pa[:3], pa[3:])


@unit
def test_cross_fade_has_no_cut() -> None:
    a = S.pan(S.photo("astronaut"), 8, 3.0, crop=(300, 256))
    b = S.pan(S.photo("chelsea"), 8, 3.0, crop=(300, 256))
    fade = S.cross_fade(a, b, 6)
    seams = [M.seam(fade[:k], fade[k:]) for k in range(1, len(fade))]
    assert not any(s.cut for s in seams), [round(s.seam_diff_ratio, 2) for s in seams]
    assert M.seam(a, b).cut  # the same two clips joined without the fade


# ----- BRISQUE -----


@unit
def test_brisque_ranks_clean_over_noisy_and_blurred() -> None:
    import cv2

    img = S.photo("astronaut")
    rng = np.random.default_rng(0)
    noisy = (img.astype(np.int16) + rng.normal(0, 40, img.shape)).clip(0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(img, (0, 0), 4)
    clean, n, b = (M.brisque(np.stack([x] * 2), max_frames=2) for x in (img, noisy, blurred))
    assert clean.value < n.value and clean.value < b.value
    assert not clean.higher_is_better and "MUSIQ" in clean.method and len(clean.series) == 2
    assert M.imaging_quality_from_brisque(clean.value) > M.imaging_quality_from_brisque(n.value)
    assert [M.imaging_quality_from_brisque(v) for v in (0, 30, 100, 140, -5)] == pytest.approx([1, 0.7, 0, 0, 1])


@unit
def test_brisque_matches_the_packages_model() -> None:
    """Our features fed to the package's SVR give the score the package's own feature code gives."""
    import cv2
    from brisque import BRISQUE
    from libsvm import svmutil

    img = S.photo("chelsea")
    ref = BRISQUE(url=False)
    gray = img.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]) / 255.0
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = [float(np.asarray(v).ravel()[0]) for g in (gray, half) for v in ref.calculate_brisque_features(g, 7, 7 / 6)]
    lo = np.array([float(np.asarray(v).ravel()[0]) for v in ref.scale_params["min_"]])
    hi = np.array([float(np.asarray(v).ravel()[0]) for v in ref.scale_params["max_"]])
    x, _ = svmutil.gen_svm_nodearray([float(v) for v in -1 + 2.0 / (hi - lo) * (np.array(feats) - lo)])
    expected = svmutil.libsvm.svm_predict_probability(ref.model, x, (svmutil.c_double * 1)())
    assert M.brisque_score(img) == pytest.approx(expected, rel=1e-3)


@unit
def test_brisque_samples_evenly_and_flat_frames_score_worst() -> None:
    clip = S.pan(S.photo(), 9, 2.0)
    r = M.brisque(clip, max_frames=3)
    assert len(r.series) == 3 and all(0 < v < 100 for v in r.series)
    assert M.brisque(np.zeros((2, 32, 32, 3), np.uint8)).value == 100.0


# ----- features, subject consistency, TCON -----


@unit
def test_pixel_features_and_subject_consistency() -> None:
    fx = M.PixelFeatures()
    assert isinstance(fx, M.FeatureExtractor) and fx.name == "pixel-stats" and not fx.is_model
    f = fx(S.moving_square(6, 64, 64, 2.0))
    assert f.shape[0] == 6 and f.dtype == np.float32
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert M.subject_consistency(fx(S.static(5, 64, 64))).value == pytest.approx(1.0, abs=1e-5)
    pan = S.pan(S.photo("astronaut"), 8, 3.0, crop=(300, 256))
    other = S.pan(S.photo("chelsea"), 8, 3.0, crop=(300, 256))
    same = M.subject_consistency(fx(pan)).value
    cut = M.subject_consistency(fx(np.concatenate([pan[:4], other[:4]]))).value
    assert same > 0.9 > cut
    fa, fb = fx(pan), fx(other)
    assert M.tcon(fa, fa) == pytest.approx(1.0, abs=1e-5)
    assert M.tcon(fa, fb) < 0.9
    assert M.tmean(fa, fa, None) == pytest.approx(1.0, abs=1e-5)
    assert M.tmean(None, fa, fb) == pytest.approx(M.tcon(fa, fb))
    assert M.tmean(fa, fa, fb) == pytest.approx((1.0 + M.tcon(fa, fb)) / 2, abs=1e-5)
    with pytest.raises(InputError, match="neither"):
        M.tmean(None, fa, None)


@integration
def test_transformers_features_from_a_tiny_saved_vit(tmp_path: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-vit"
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8
    )
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    fx = M.TransformersImageFeatures(folder, "dino")
    assert isinstance(fx, M.FeatureExtractor) and fx.is_model and fx.name == "dino:tiny-vit"
    f = fx(S.moving_square(5, 64, 64, 3.0))
    assert f.shape == (5, 32) and f.dtype == np.float32
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    st = fx(S.static(3, 64, 64))
    assert M.subject_consistency(st).value == pytest.approx(1.0, abs=1e-5)
    assert M.tcon(st, st) == pytest.approx(1.0, abs=1e-5)


@unit
def test_transformers_features_bad_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match="no-such-model.*does not exist"):
        M.TransformersImageFeatures(missing, "dino")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        M.TransformersImageFeatures(tmp_path / "empty", "clip")
    with pytest.raises(InputError, match="kind"):
        M.TransformersImageFeatures(tmp_path, "resnet")


# ----- real footage -----


@integration
def test_real_footage_is_scored_and_moving() -> None:
    for clip, fps in ((S.ffmpeg_testsrc(24, 320, 240, rate=24), 24.0), (S.pan(S.photo("coffee"), 12, 5.0), 8.0)):
        assert clip.dtype == np.uint8 and clip.ndim == 4
        assert 0.8 < M.temporal_flickering(clip).value < 1.0
        assert 0.9 < M.motion_smoothness(clip).value <= 1.0
        dd = M.dynamic_degree(clip, fps)
        assert dd.speed_px > 0.5
        # Flat synthetic graphics (testsrc2) lie outside BRISQUE's natural-image range: > 100 there, still a number.
        assert np.isfinite(M.brisque(clip, max_frames=2).value)
        assert M.subject_consistency(M.PixelFeatures()(clip)).value > 0.5


# ----- bad input -----


@unit
def test_bad_frames_are_input_errors() -> None:
    with pytest.raises(InputError, match="uint8"):
        M.temporal_flickering(np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(InputError, match="at least 2"):
        M.temporal_flickering(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="at least 3"):
        M.motion_smoothness(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="fps"):
        M.dynamic_degree(S.static(4, 16, 16), fps=0)
    with pytest.raises(InputError, match="frame sizes"):
        M.seam(S.static(3, 16, 16), S.static(3, 32, 32))
