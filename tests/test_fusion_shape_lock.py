"""The shape lock (fusion/shape_lock.py, ``BlendOptions.shape_lock``): the fused image keeps the general
image's silhouette (the style engine's PIL rule, here on tensors), the expert re-draws the end of the
schedule (the same DDIM inversion and sampling as styleid's, checked against it), and the pipeline
runs it only when asked."""
import numpy as np
import pytest
import torch
from PIL import Image

from fusion.blend_options import BlendOptions
from fusion.pipeline import FusionSettings
from fusion.recolor import recolor_subject
from fusion.settings import SettingsError
from fusion.shape_lock import lock_to_silhouette, redraw

FAST = dict(steps=10, n_samples=2, height=16, width=16, batch_trajectories=False)
CREAM = (245, 235, 200)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255


def _u8(x: torch.Tensor) -> np.ndarray:
    return np.rint(x[0].permute(1, 2, 0).numpy() * 255).astype(int)


def square_cartoon_and_triangle_photo():
    """A cartoon blue square (cream background, dark outline) and a photo purple triangle (grey)."""
    yy, xx = np.mgrid[:32, :32]
    square = (abs(yy - 16) < 10) & (abs(xx - 16) < 10)
    outline = (abs(yy - 16) < 11) & (abs(xx - 16) < 11) & ~square
    fused = np.full((32, 32, 3), CREAM, np.uint8)
    fused[square], fused[outline] = (40, 70, 230), (20, 20, 20)
    triangle = (yy > 6) & (yy < 26) & (abs(xx - 16) < (yy - 6) * 0.5)
    general = np.full((32, 32, 3), (150, 150, 150), np.uint8)
    general[triangle] = (140, 60, 200)
    return fused, general, square, triangle


def test_lock_keeps_the_general_silhouette_like_the_style_engines_rule():
    from styleid.masks import lock_silhouette

    fused, general, square, triangle = square_cartoon_and_triangle_photo()
    got = _u8(lock_to_silhouette(_t(fused), _t(general), grow=1))
    want = np.asarray(lock_silhouette(Image.fromarray(fused), Image.fromarray(general), grow=1)).astype(int)
    assert np.abs(got - want).max() <= 1
    near = torch.nn.functional.max_pool2d(torch.from_numpy(triangle).float()[None, None], 3, 1, 1)[0, 0].numpy() > 0
    assert (got[~near] == CREAM).all()                          # the square's corners became background
    assert (got[near] == fused[near]).all()                     # inside the triangle (+1 px) untouched
    assert (got[square & ~near] == CREAM).all() and (square & ~near).sum() > 50


def test_lock_leaves_an_image_whose_source_has_no_subject():
    fused, _, _, _ = square_cartoon_and_triangle_photo()
    grey = np.full_like(fused, 150)
    assert torch.equal(lock_to_silhouette(_t(fused), _t(grey)), _t(fused))
    with pytest.raises(ValueError, match="two \\(n, 3, H, W\\) images of one shape"):
        lock_to_silhouette(_t(fused), _t(fused)[:, :, :16])


def test_redraw_is_styleids_inversion_and_sampling(tiny_pipe):
    from styleid.images import decode_latent, encode_image
    from styleid.injection import InjectionSettings, invert, sample
    from styleid.denoise import schedule

    expert = tiny_pipe.model1
    fused, _, _, _ = square_cartoon_and_triangle_photo()
    img = Image.fromarray(fused).resize((16, 16), Image.NEAREST)
    got, rows = redraw(expert, _t(np.asarray(img)), 0.3, 10)
    ts, alphas = schedule(expert, 10)
    part = list(ts)[-3:]
    zt, _ = invert(expert, encode_image(expert, [img]), part, alphas)
    z, _ = sample(expert, zt, part, alphas, InjectionSettings(steps=10, prompt="", guidance=1.0))
    [want] = decode_latent(expert, z)
    assert rows == 2 * 3
    assert np.abs(_u8(got) - np.asarray(want).astype(int)).max() <= 1
    same, none = redraw(expert, _t(np.asarray(img)), 0.0, 10)
    assert none == 0 and torch.equal(same, _t(np.asarray(img)))
    # conditioned on the expert's prompt with guidance: styleid's guided sampling
    got, rows = redraw(expert, _t(np.asarray(img)), 0.3, 10, prompt="a cartoon of a red circle", guidance=7.5)
    z, _ = sample(expert, zt, part, alphas, InjectionSettings(steps=10, prompt="a cartoon of a red circle",
                                                              guidance=7.5))
    [want] = decode_latent(expert, z)
    assert rows == 3 * 3 and np.abs(_u8(got) - np.asarray(want).astype(int)).max() <= 1


def test_shape_lock_in_the_pipeline_is_lock_then_redraw_then_recolor(tiny_pipe):
    base = dict(fusion_selection="500,1,3", mode=2, primary="expert")
    plain = tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST, **base), seeds=[5])[0]
    only = tiny_pipe("a red circle", "a blue square", FusionSettings(
        **FAST, **base, trajectories=("fused",), blend={"shape_lock": True, "recolor": True}), seeds=[5])[0]
    assert set(only.images) == {"fused"}                        # the general image was made for it, then dropped
    locked = lock_to_silhouette(plain.images["fused"], plain.images["general"])
    redrawn, rows = redraw(tiny_pipe.model1, locked, 0.3, FAST["steps"])
    want = recolor_subject(redrawn, plain.images["general"])
    assert torch.allclose(only.images["fused"], want, atol=1e-5)
    assert only.stats.rows["shape_lock_redraw"] == rows == 2 * 3 * FAST["n_samples"]


def test_shape_lock_settings_are_checked():
    assert BlendOptions(shape_lock=True).as_dict() == {"shape_lock": True}
    for bad in ({"shape_lock": 1}, {"shape_lock_prompt": "yes"}, {"shape_lock_grow": -1}, {"shape_lock_grow": 2.5}, {"shape_lock_redraw": 1.0},
                {"shape_lock_redraw": -0.1}):
        with pytest.raises(SettingsError, match="blend"):
            FusionSettings(blend=bad).validated()
