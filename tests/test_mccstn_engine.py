"""The MccSTN style engine used by the app's style tab."""
import subprocess
import sys

import pytest
import torch
from PIL import Image

from studio.style_engines.base import StyleEngine
from studio.style_engines.mccstn import MccSTNEngine
from tests.test_mccstn_common import PARITY_DIR, link_weights, parity_weights, single_thread


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_unavailable_without_weights(tmp_path):
    eng = MccSTNEngine(tmp_path / "missing")
    assert isinstance(eng, StyleEngine) and eng.name == "MccSTN"
    ok, why = eng.availability()
    assert not ok and "vgg_normalised.pth" in why and "mccstn.safetensors" in why and "missing" in why
    assert "\n" not in why
    with pytest.raises(RuntimeError, match="weights not found"):
        eng.stylize(Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64)))


def test_controls_and_defaults():
    eng = MccSTNEngine("/nonexistent")
    ctl = {c.name: c for c in eng.controls()}
    assert set(ctl) == {"alpha", "preserve_color", "long_side"}
    assert ctl["alpha"].kind == "slider" and ctl["alpha"].default == 1.0
    assert (ctl["alpha"].minimum, ctl["alpha"].maximum) == (0.0, 1.0)
    assert ctl["preserve_color"].kind == "checkbox" and ctl["preserve_color"].default is False
    assert ctl["long_side"].default == 512 and ctl["long_side"].minimum == 256 and ctl["long_side"].maximum == 1024
    with pytest.raises(ValueError, match="unknown control"):
        eng.check_controls({"strength": 1})


def test_stylize_through_engine(tmp_path):
    folder, why = parity_weights()
    if folder is None:
        pytest.skip(why)
    eng = MccSTNEngine(link_weights(tmp_path / "w"), device="cpu")
    assert eng.availability() == (True, "")
    content = Image.open(PARITY_DIR / "content_a.png").convert("RGB").resize((300, 200))
    style = Image.open(PARITY_DIR / "style_a.png").convert("RGB")
    out = eng.stylize(content, style, long_side=256, alpha=0.8)
    assert isinstance(out, Image.Image) and out.size == (256, 171)
    with pytest.raises(ValueError, match="alpha"):
        eng.stylize(content, style, alpha=2.0)
    with pytest.raises(ValueError, match="unknown control"):
        eng.stylize(content, style, strength=1.0)


def test_mismatched_weights_reported(tmp_path):
    folder, why = parity_weights()
    if folder is None:
        pytest.skip(why)
    w = link_weights(tmp_path / "w", skip=("decoder.pth",))
    (w / "decoder.pth").symlink_to(folder / "transformer.pth")
    eng = MccSTNEngine(w, device="cpu")
    assert eng.availability()[0]  # file names look right ...
    with pytest.raises(ValueError, match="decoder.pth"):
        eng.stylize(Image.new("RGB", (128, 128)), Image.new("RGB", (128, 128)))
    ok, why = eng.availability()  # ... and afterwards the reason is remembered
    assert not ok and "decoder.pth" in why


def test_import_is_light():
    code = ("import sys, mccstn, studio.style_engines.base, studio.style_engines.mccstn; "
            "bad = [m for m in ('gradio', 'torch', 'diffusers') if m in sys.modules]; "
            "print(bad); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- preserve-colour modes (on the shipped toy-world weights) ---------------------------------
def _toy_pair():
    from toyworld.render import Scene, render

    content = Image.fromarray(render(Scene("red", "circle", "big", "photo", 3))).resize((128, 128), Image.BICUBIC)
    style = Image.fromarray(render(Scene("yellow", "triangle", "small", "cartoon", 4))).resize((128, 128), Image.BICUBIC)
    return content, style


def test_colour_modes_are_labelled_and_checked():
    from studio.style_engines.mccstn import COLOUR_MODES, DEFAULT_COLOUR_MODE

    assert DEFAULT_COLOUR_MODE == "subject" and set(COLOUR_MODES) == {"subject", "official"}
    assert MccSTNEngine("/nonexistent").colour_mode == "subject"
    assert "subject mode" in MccSTNEngine("/nonexistent").card
    assert "official mode" in MccSTNEngine("/nonexistent", colour_mode="official").card
    with pytest.raises(ValueError, match="colour_mode"):
        MccSTNEngine("/nonexistent", colour_mode="whole")


def test_official_colour_mode_is_the_library_recipe_bit_for_bit():
    import numpy as np

    from studio.config import SHIPPED_MCCSTN_DIR

    eng = MccSTNEngine(SHIPPED_MCCSTN_DIR, device="cpu", colour_mode="official")
    content, style = _toy_pair()
    got = eng.stylize(content, style, preserve_color=True, long_side=256)
    want = eng.model().stylize_image(content, style, preserve_color=True, long_side=256, small_images="upsample")
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_subject_colour_mode_recolours_the_plain_stylisation_and_only_with_preserve_colour():
    import numpy as np

    from studio.config import SHIPPED_MCCSTN_DIR
    from styleid.colour import match_subject_colour

    eng = MccSTNEngine(SHIPPED_MCCSTN_DIR, device="cpu")
    content, style = _toy_pair()
    plain = eng.model().stylize_image(content, style, preserve_color=False, long_side=256, small_images="upsample")
    got = eng.stylize(content, style, preserve_color=True, long_side=256)
    assert np.array_equal(np.asarray(got), np.asarray(match_subject_colour(plain, content)))
    assert not np.array_equal(np.asarray(got), np.asarray(plain))
    off = eng.stylize(content, style, preserve_color=False, long_side=256)
    assert np.array_equal(np.asarray(off), np.asarray(plain))
