"""The toy world (openmora/toy): scenes render and read back (render -> describe gives the scene's attributes, clean
and degraded like a small model's output), prompts and edits round-trip, the held-out split is disjoint, and each
task's score passes a correct clip and fails a wrong one."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from itertools import combinations

import numpy as np
import pytest

from openmora.errors import InputError
from openmora.toy import detect as D
from openmora.toy import scenes as S

unit = pytest.mark.unit
# A few seconds each (hundreds of clips rendered and read back): above the unit tier's ~1 s.
integration = pytest.mark.integration


def _scenes() -> list[S.Scene]:
    """Every held-out triple 4 times (random size, motion, path) and 100 train scenes, plain; 40 in pixel-art."""
    rng = np.random.default_rng(20)
    out = []
    for shape, colour, background in S.triples("heldout"):
        for _ in range(4):
            base = S.sample_scene(rng, "heldout")
            out.append(dataclasses.replace(base, shape=shape, colour=colour, background=background))
    out += [S.sample_scene(rng, "train") for _ in range(100)]
    out += [S.sample_scene(rng, split, style="pixel-art") for split in ("train", "heldout") for _ in range(20)]
    return out


@pytest.fixture(scope="module")
def rendered() -> list[tuple[S.Scene, np.ndarray]]:
    return [(s, S.render(s)) for s in _scenes()]


def _accuracy(pairs: list[tuple[S.Scene, np.ndarray]], degrade: bool) -> tuple[float, Counter[str]]:
    """The share of clips whose every attribute reads back right (pixel-art: all but the shape), and the misses."""
    misses: Counter[str] = Counter()
    right = 0
    for i, (scene, clip) in enumerate(pairs):
        got = D.describe(S.degrade(clip, sigma=10.0, blur=0.7, seed=i) if degrade else clip).attributes()
        wrong = [
            f"{a}: {v} read as {got[a]}"
            for a, v in scene.attributes().items()
            if got[a] != v and not (a == "shape" and scene.style == "pixel-art")
        ]
        misses.update(wrong)
        right += not wrong
    return right / len(pairs), misses


# ----- vocabulary, split, prompts -----


@unit
def test_vocabulary_pairs_keep_a_strong_contrast() -> None:
    for c, rgb in S.COLOURS.items():
        for b, bg in S.BACKGROUNDS.items():
            if c != b:
                assert np.linalg.norm(np.subtract(rgb, bg)) >= 100, (c, b)
    for (a, x), (b, y) in combinations(S.COLOURS.items(), 2):
        assert D.nearest_colour(x, S.COLOURS)[0] == a and np.linalg.norm(np.subtract(x, y)) >= 60, (a, b)


@unit
def test_split_is_disjoint_and_every_pair_is_trained() -> None:
    train, held = set(S.triples("train")), set(S.triples("heldout"))
    allowed = {(s, c, b) for s in S.SHAPES for c in S.COLOURS for b in S.BACKGROUNDS if c != b}
    assert not train & held and train | held == allowed and len(held) == 11
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert {(t[i], t[j]) for t in allowed} == {(t[i], t[j]) for t in train}
    rng = np.random.default_rng(0)
    assert all(S.is_heldout(S.sample_scene(rng, "heldout")) for _ in range(50))
    assert not any(S.is_heldout(S.sample_scene(rng, "train")) for _ in range(200))
    assert S.sample_scene(np.random.default_rng(7)) == S.sample_scene(np.random.default_rng(7))
    with pytest.raises(InputError, match="accepted are train, heldout"):
        S.sample_scene(rng, "test")


@unit
def test_every_prompt_parses_back_to_its_scene() -> None:
    for shape, colour, background in S.triples("train") + S.triples("heldout"):
        for size in S.SIZES:
            for motion in S.MOTIONS:
                for style in S.STYLES:
                    s = S.Scene(shape, colour, background, size, motion, (0.5, 0.5), 1.25, style)
                    p = S.parse_prompt(s.prompt())
                    assert p.to_scene(start=s.start, speed=s.speed) == s, s.prompt()
                    assert set(p.named) >= {"shape", "colour", "background", "size", "motion"}


@unit
def test_parse_prompt_reads_other_word_orders_and_names_what_it_found() -> None:
    want = {"shape": "circle", "colour": "red", "background": "blue", "motion": "left"}
    for text in (
        "a red circle on a blue background, moving left",
        "Moving left: a red circle over blue.",
        "blue background with a red circle that drifts leftwards",
        "a red ball against a plain dark blue backdrop, moving to the left",
        "the background is blue and a red circle goes left",
    ):
        assert S.parse_prompt(text).values() == want, text
    p = S.parse_prompt("a huge purple triangle in pixel art style, a kitten")
    assert p.values() == {"shape": "triangle", "colour": "purple", "size": "large", "style": "pixel-art"}
    assert S.parse_prompt("a sunset over the sea").named == ()
    with pytest.raises(InputError, match="names no background"):
        S.parse_prompt("a red circle").to_scene()


# ----- rendering -----


@unit
def test_render_is_deterministic_and_keeps_the_object_inside() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        s = S.sample_scene(rng, "train", frames=16, size=64)
        clip = S.render(s)
        assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
        assert np.array_equal(clip, S.render(s))
        # The border ring is pure background in every frame: the object never reaches the edge, nor does the
        # large object of a size edit on the same path.
        for c in (clip, S.render(dataclasses.replace(s, size="large"))):
            ring = [c[:, :2], c[:, -2:], c[:, :, :2], c[:, :, -2:]]
            assert all((r == S.BACKGROUNDS[s.background]).all() for r in ring)
    edges = S.render(S.Scene("circle", "red", "blue"))[0].reshape(-1, 3)
    assert len({tuple(p) for p in edges}) > 2  # anti-aliased: blended colours on the outline
    art = S.render(S.Scene("circle", "red", "blue", style="pixel-art"))[0]
    assert len({tuple(p) for p in art.reshape(-1, 3)}) == 2  # pixel-art: the two palette colours only
    assert (art.reshape(16, 4, 16, 4, 3) == art[::4, ::4][:, None, :, None]).all()  # flat 4x4 cells


@unit
def test_render_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(InputError, match="leaves the 64x64 frame"):
        S.render(S.Scene("square", "red", "black", "large", "right", start=(0.8, 0.5)))
    with pytest.raises(InputError, match="multiple of 16"):
        S.render(S.Scene("square", "red", "black", style="pixel-art"), size=40)
    with pytest.raises(InputError, match="both blue"):
        S.Scene("circle", "blue", "blue")
    with pytest.raises(InputError, match="accepted are circle, square, triangle"):
        S.Scene("hexagon", "red", "black")
    with pytest.raises(InputError, match="accepted are uint8 RGB"):
        D.describe(np.zeros((4, 32, 32, 3), np.float32))


# ----- render -> describe -----


@integration
def test_clean_renders_read_back_exactly(
    rendered: list[tuple[S.Scene, np.ndarray]], record_property: Callable[[str, object], None]
) -> None:
    accuracy, misses = _accuracy(rendered, degrade=False)
    record_property("accuracy", accuracy)
    assert accuracy == 1.0, f"clean read-back accuracy {accuracy:.1%} over {len(rendered)} clips; misses {misses}"


@integration
def test_degraded_renders_read_back(
    rendered: list[tuple[S.Scene, np.ndarray]], record_property: Callable[[str, object], None]
) -> None:
    # Gaussian noise sigma 10 and a 0.7 px blur stand in for a small diffusion model's output.
    accuracy, misses = _accuracy(rendered, degrade=True)
    record_property("accuracy", accuracy)
    assert accuracy >= 0.95, f"degraded read-back accuracy {accuracy:.1%} over {len(rendered)} clips; misses {misses}"


@unit
def test_detection_reads_speed_and_a_single_picture() -> None:
    d = D.describe(S.degrade(S.render(S.Scene("square", "green", "white", "small", "down", speed=1.75))))
    assert d.motion == "down" and abs(d.speed - 1.75) < 0.1 and d.found
    d = D.describe(S.render(S.Scene("circle", "orange", "black"))[0])
    assert (d.shape, d.colour, d.motion, len(d.centroids)) == ("circle", "orange", "still", 1)
    empty = D.describe(np.full((8, 32, 32, 3), 120, np.uint8))
    assert (empty.background, empty.colour, empty.found) == ("gray", None, False)


# ----- edits -----


@unit
def test_edits_change_exactly_the_asked_attribute() -> None:
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        scene = S.sample_scene(rng, "train")
        edit = S.sample_edit(rng, scene)
        edited = S.apply_edit(scene, edit)
        changed = {a for a, v in edited.attributes().items() if scene.attributes()[a] != v}
        assert changed == {edit.attribute} and getattr(edited, edit.attribute) == edit.value
        assert (edited.start, edited.speed) == (scene.start, scene.speed)
        assert S.parse_edit(edit.instruction) == edit
        seen.add(edit.attribute)
    assert seen == set(S.EDIT_ATTRIBUTES)
    scene = S.Scene("circle", "red", "blue")
    with pytest.raises(InputError, match="already red"):
        S.apply_edit(scene, S.Edit("colour", "red"))
    with pytest.raises(InputError, match="both blue"):
        S.apply_edit(scene, S.Edit("colour", "blue"))
    assert S.parse_edit("turn it into a triangle") == S.Edit("shape", "triangle")


# ----- task scores: each passes the right clip, fails a wrong one -----


def _noisy(scene: S.Scene, frames: int = 16, seed: int = 0) -> np.ndarray:
    return S.degrade(S.render(scene, frames=frames), seed=seed)


SCENE = S.Scene("circle", "red", "blue", "large", "left", speed=1.5)


def _check(score: D.Score, passed: bool, failed: Callable[[list[str]], bool] = lambda f: True) -> None:
    assert score.passed is passed and failed(score.failed), (score.checks, score.numbers)


@unit
def test_score_text_to_video() -> None:
    clip = _noisy(SCENE)
    _check(D.score_text_to_video(clip, SCENE.prompt()), True)
    _check(D.score_text_to_video(clip, SCENE), True)
    _check(D.score_text_to_video(clip, "a green circle moving left"), False, lambda f: f == ["colour"])
    _check(D.score_text_to_video(clip, "a red circle moving right on blue"), False, lambda f: f == ["motion"])


@unit
def test_score_image_to_video() -> None:
    clip = _noisy(SCENE)
    image = S.render(SCENE)[0]
    _check(D.score_image_to_video(image, clip, motion="left"), True)
    _check(D.score_image_to_video(image, clip, motion="up"), False, lambda f: f == ["motion"])
    still = _noisy(dataclasses.replace(SCENE, motion="still", start=(0.6, 0.5)))
    _check(D.score_image_to_video(still[0], still), False, lambda f: f == ["moves"])
    other = _noisy(dataclasses.replace(SCENE, colour="yellow", start=(0.7, 0.3), motion="down"))
    _check(D.score_image_to_video(image, other), False, lambda f: f == ["first_frame_kept", "colour_kept"])


@unit
def test_score_extend() -> None:
    long = _noisy(dataclasses.replace(SCENE, speed=1.2), frames=24)
    source = long[:12]
    _check(D.score_extend(source, long), True)
    # Turning back at the join: the continuation moves right from where the source stopped.
    last = D.describe(source).centroids[-1]
    assert last is not None
    end = (last[0] / 64, 0.5)
    back = _noisy(dataclasses.replace(SCENE, motion="right", speed=1.2, start=end), frames=12, seed=1)
    _check(D.score_extend(source, np.concatenate([source, back])), False, lambda f: f == ["direction_kept"])
    # Restarting from the middle: the right direction and speed, but a jump at the join.
    restart = _noisy(dataclasses.replace(SCENE, speed=1.2, start=(0.75, 0.5)), frames=12, seed=2)
    _check(D.score_extend(source, np.concatenate([source, restart])), False, lambda f: f == ["no_jump"])
    with pytest.raises(InputError, match="longer result"):
        D.score_extend(source, source)


@unit
def test_score_edit() -> None:
    source = _noisy(SCENE)
    for edit in (S.Edit("colour", "green"), S.Edit("background", "black"), S.Edit("shape", "square")):
        _check(D.score_edit(source, _noisy(S.apply_edit(SCENE, edit), seed=1), edit), True)
    _check(D.score_edit(source, _noisy(dataclasses.replace(SCENE, size="small")), "make it smaller"), True)
    # Asked for green, the background changed instead.
    wrong = _noisy(S.apply_edit(SCENE, S.Edit("background", "black")), seed=1)
    _check(D.score_edit(source, wrong, "make it green"), False, lambda f: f == ["colour_changed", "background_kept"])
    # Asked for a square, got a green square: the shape changed, but so did the colour.
    both = _noisy(dataclasses.replace(SCENE, shape="square", colour="green"), seed=1)
    _check(D.score_edit(source, both, "make it a square"), False, lambda f: f == ["colour_kept"])


@unit
def test_score_connect() -> None:
    scene = S.Scene("triangle", "purple", "white", "large", "right", speed=1.2)
    clip = _noisy(scene, frames=24)
    a, transition, b = clip[:8], clip[7:17], clip[16:]
    _check(D.score_connect(a, b, transition), True)
    # A hard cut: A's last frame held, then B's first frame held.
    cut = np.concatenate([np.repeat(a[-1:], 5, axis=0), np.repeat(b[:1], 5, axis=0)])
    _check(D.score_connect(a, b, cut), False, lambda f: f == ["no_jump"])
    # The transition starts somewhere else (clip A's first frame).
    _check(D.score_connect(a, b, clip[0:17:2]), False, lambda f: "starts_like_a" in f)


@unit
def test_score_digital_world() -> None:
    scene = S.Scene("square", "yellow", "blue", "large", "down", speed=1.5)
    art = _noisy(dataclasses.replace(scene, style="pixel-art"))
    assert D.pixel_art_score(art) > D.PIXEL_ART_MIN > D.pixel_art_score(_noisy(scene))
    _check(D.score_digital_world(art, _noisy(scene, seed=3)), True)
    _check(D.score_digital_world(art, scene.prompt() + " in pixel-art style"), True)
    _check(D.score_digital_world(_noisy(scene), scene), False, lambda f: f == ["pixel_art_style"])
    recoloured = _noisy(dataclasses.replace(scene, style="pixel-art", colour="red"))
    _check(D.score_digital_world(recoloured, _noisy(scene)), False, lambda f: f == ["colour_kept"])
