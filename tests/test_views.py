"""fusion.views: colour map, heat maps, mask overlays, the trace the app scrubs, the share plot."""
import numpy as np
import pytest
import torch
from PIL import Image

from fusion.pipeline import SaliencyStep
from fusion.views import (SaliencyTrace, heatmap, jet, mask_image, mask_overlay, normalise, share_plot,
                          side_by_side)


def test_jet_ends_and_monotone_hue():
    c = jet(np.array([0.0, 0.5, 1.0, -3.0, 7.0, np.nan]))
    assert c.dtype == np.uint8 and c.shape == (6, 3)
    assert tuple(c[0]) == (0, 0, 128)          # dark blue at 0
    assert tuple(c[2]) == (128, 0, 0)          # dark red at 1
    assert tuple(c[3]) == tuple(c[0]) and tuple(c[4]) == tuple(c[2]) and tuple(c[5]) == tuple(c[0])
    assert c[1, 1] > 200                       # green-ish in the middle
    ramp = jet(np.linspace(0, 1, 50)).astype(int)
    assert ramp[:25, 2].mean() > ramp[25:, 2].mean() and ramp[25:, 0].mean() > ramp[:25, 0].mean()


def test_normalise_flat_and_fixed_scale():
    assert normalise(np.ones((3, 3))).max() == 0
    x = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert normalise(x)[1, 1] == 1 and normalise(x)[0, 0] == 0
    assert normalise(x, 0, 8)[1, 1] == 0.5


def test_heatmap_upscales_to_image_size_and_uses_scale():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0, 0] = 1.0
    im = heatmap(m[0], (64, 48))
    assert im.size == (64, 48) and im.mode == "RGB"
    a = np.asarray(im)
    assert a[0, 0, 0] > a[-1, -1, 0] and a[-1, -1, 2] > 0  # hot corner, cold rest
    # a shared scale with a larger maximum makes the same map cooler
    cooler = np.asarray(heatmap(m[0], (64, 48), lo=0.0, hi=4.0))
    assert cooler[0, 0, 0] < a[0, 0, 0]


def test_mask_image_and_overlay():
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mi = mask_image(mask, (8, 8))
    a = np.asarray(mi)
    assert a[:4, :4].min() == 255 and a[4:, :].max() == 0  # nearest upscaling, no blur
    img = Image.new("RGB", (8, 8), (0, 100, 0))
    ov = np.asarray(mask_overlay(img, mask)).astype(int)
    assert (ov[4:, :] == (0, 100, 0)).all()               # primary pixels untouched
    assert ov[0, 0, 0] > 100 and ov[0, 0, 1] < 100        # secondary pixels tinted
    assert mask_overlay(None, mask).size == (2, 2)
    with pytest.raises(ValueError):
        mask_image(torch.zeros(2, 1, 2, 2))


def _steps(k=5, n=2, h=4, w=4):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(k):
        sp = torch.rand(n, 1, h, w, generator=g)
        ss = torch.rand(n, 1, h, w, generator=g)
        out.append(SaliencyStep(None, saliency_p=sp, saliency_s=ss, raw_p=sp, raw_s=ss, index=i + 2, t=900 - 100 * i))
    return out


def test_trace_from_steps_panels_and_share():
    steps = _steps()
    tr = SaliencyTrace.from_steps(steps, total_steps=10, size=(32, 32), sample=1)
    assert len(tr) == 5 and tr.steps == [2, 3, 4, 5, 6] and tr.timesteps[0] == 900
    assert tr.saliency_p.shape == (5, 4, 4) and tr.saliency_p.dtype == np.float32
    np.testing.assert_allclose(tr.secondary_share, [float(s.mask[1].mean()) for s in steps], rtol=1e-6)
    hp, hs, m = tr.panels(3)
    assert hp.size == hs.size == m.size == (32, 32)
    _, _, ov = tr.panels(-1, image=Image.new("RGB", (64, 64)))
    assert ov.size == (32, 32)
    assert "t=600" in tr.describe(3) and "step 6/10" in tr.describe(3)
    with pytest.raises(IndexError):
        tr.panels(5)


def test_trace_shared_scale_colours_compare():
    """With the shared scale, a pixel the mask gives to the secondary is hotter in its map."""
    sp = torch.full((1, 1, 2, 2), 0.1)
    ss = torch.full((1, 1, 2, 2), 0.05)
    ss[0, 0, 0, 0] = 0.5
    step = SaliencyStep(None, sp, ss, sp, ss, index=0, t=981)
    tr = SaliencyTrace.from_steps([step], 1, (2, 2))
    hp, hs, _ = tr.panels(0)
    assert np.asarray(hs)[0, 0, 0] > np.asarray(hp)[0, 0, 0]


def test_empty_trace():
    tr = SaliencyTrace.from_steps([], total_steps=8, size=(16, 16))
    assert len(tr) == 0 and tr.secondary_share.size == 0
    with pytest.raises(IndexError, match="no SNB step"):
        tr.panels(0)
    assert tr.plot().size == (360, 150)


def test_share_plot_draws_points_and_marker():
    im = share_plot([0, 1, 2, 5], [0.0, 0.5, 1.0, 0.25], total_steps=10, marker=2, size=(200, 100))
    assert im.size == (200, 100)
    a = np.asarray(im).astype(int)
    blue = (a[..., 2] > 150) & (a[..., 0] < 80)
    red = (a[..., 0] > 200) & (a[..., 1] < 100)
    assert blue.sum() > 20 and red.sum() > 5
    assert share_plot([], [], 1).size == (360, 150)


def test_side_by_side():
    out = side_by_side([Image.new("RGB", (10, 5)), Image.new("RGB", (6, 8))], gap=2)
    assert out.size == (18, 8)
    with pytest.raises(ValueError):
        side_by_side([])
