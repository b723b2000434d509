"""The toy world's renderer: deterministic per seed, and captions that match the pictures."""
import numpy as np
import pytest

from toyworld.grammar import caption, full_caption, parse, training_caption
from toyworld.render import CARTOON_BG, COLORS, RGB, SHAPES, SIZES, STYLES, Scene, render, sample_scene


def test_render_is_deterministic_per_seed():
    s = Scene("red", "circle", "big", "photo", seed=123)
    a, b = render(s), render(s)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    c = render(Scene("red", "circle", "big", "photo", seed=124))
    assert not np.array_equal(a, c)


def test_sample_scene_is_seeded():
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [sample_scene(r1) for _ in range(20)] == [sample_scene(r2) for _ in range(20)]


def _object_mask(img, style):
    """Pixels far from the background colour (the background is grey / cream)."""
    x = img.astype(np.float32)
    sat = x.max(2) - x.min(2)
    if style == "cartoon":
        far = np.abs(x - np.array(CARTOON_BG, np.float32)).sum(2) > 60
        return far & (sat > 60)
    return sat > 60


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("color", COLORS)
def test_colour_of_the_picture_matches_the_caption(style, color):
    img = render(Scene(color, "square", "big", style, seed=7))
    m = _object_mask(img, style)
    mean = img[m].astype(np.float32).mean(0)
    # nearest named colour (by chromaticity) is the captioned one
    def chroma(c):
        c = np.asarray(c, np.float32)
        return c / (c.sum() + 1e-6)
    d = {k: np.abs(chroma(mean) - chroma(v)).sum() for k, v in RGB.items()}
    assert min(d, key=d.get) == color


@pytest.mark.parametrize("style", STYLES)
def test_size_and_shape_of_the_picture_match_the_caption(style):
    areas = {}
    for shape in SHAPES:
        for size in SIZES:
            img = render(Scene("blue", shape, size, style, seed=3))
            m = _object_mask(img, style)
            areas[shape, size] = m.mean()
            ys, xs = np.nonzero(m)
            # object roughly centred
            assert abs(xs.mean() - 32) < 6 and abs(ys.mean() - 32) < 7
            if shape == "triangle":  # wide at the bottom, narrow at the top
                top = m[ys.min():ys.min() + 4].sum()
                bottom = m[ys.max() - 3:ys.max() + 1].sum()
                assert bottom > 2 * top
            if shape == "square":  # fills its bounding box
                box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
                assert m.sum() / box > 0.7
    for shape in SHAPES:
        assert areas[shape, "big"] > 2 * areas[shape, "small"]


def test_styles_differ_in_signature():
    p = render(Scene("yellow", "circle", "big", "photo", seed=1)).astype(np.float32)
    c = render(Scene("yellow", "circle", "big", "cartoon", seed=1)).astype(np.float32)
    # cartoon: near-black outline and white eyes; photo: neither
    assert (c.max(2) < 50).mean() > 0.03 and (c.min(2) > 240).mean() > 0.005
    assert (p.max(2) < 50).mean() < 0.005


def test_caption_grammar_round_trips():
    for st in STYLES:
        for c in COLORS:
            for sh in SHAPES:
                for sz in SIZES:
                    s = Scene(c, sh, sz, st)
                    assert parse(full_caption(s)) == s.attributes()
    assert caption("orange", "circle", None, None) == "an orange circle"
    assert caption("red", "square", "big", "cartoon") == "a cartoon of a big red square"
    rng = np.random.default_rng(0)
    s = Scene("green", "triangle", "small", "photo")
    caps = [training_caption(s, rng) for _ in range(300)]
    assert "" in caps and any(c.startswith("a photo of") for c in caps)
    for cap in caps:  # a dropped attribute is never replaced by a wrong one
        for k, v in parse(cap).items():
            assert v in (None, s.attributes()[k])
