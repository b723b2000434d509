"""SNB math (fusion.snb.blend) against a straightforward loop implementation of the spec."""
import numpy as np
import pytest
import torch

from fusion.snb import blend, smooth


# ---- an independent implementation of the spec, with loops and numpy --------------------------
def ref_mean_filter(a):
    """4x4 mean, stride 1, zero padding 1, zeros counted: (h, w) -> (h-1, w-1)."""
    h, w = a.shape
    p = np.zeros((h + 2, w + 2))
    p[1:-1, 1:-1] = a
    out = np.zeros((h - 1, w - 1))
    for i in range(h - 1):
        for j in range(w - 1):
            out[i, j] = p[i:i + 4, j:j + 4].sum() / 16.0
    return out


def ref_bilinear(a, h, w):
    """Resize with align_corners=False: source coordinate (i + 0.5) * in/out - 0.5, clamped at 0."""
    ih, iw = a.shape
    out = np.zeros((h, w))
    for i in range(h):
        sy = max((i + 0.5) * ih / h - 0.5, 0.0)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, ih - 1); ly = sy - y0
        for j in range(w):
            sx = max((j + 0.5) * iw / w - 0.5, 0.0)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, iw - 1); lx = sx - x0
            out[i, j] = ((1 - ly) * ((1 - lx) * a[y0, x0] + lx * a[y0, x1])
                         + ly * ((1 - lx) * a[y1, x0] + lx * a[y1, x1]))
    return out


def ref_saliency(delta):
    """delta (C, h, w) -> smoothed per channel, mean over channels -> (h, w)."""
    c, h, w = delta.shape
    return np.mean([ref_bilinear(ref_mean_filter(np.abs(delta[k])), h, w) for k in range(c)], axis=0)


def ref_softmax(a, k):
    z = k * a.ravel()
    e = np.exp(z - z.max())
    return (e / e.sum()).reshape(a.shape)


def ref_blend(pc, pu, sc, su, s, kg, ke, own_uncond=False):
    out = {k: [] for k in ("eps", "mask", "sal_p", "sal_s", "raw_p", "raw_s")}
    for b in range(pc.shape[0]):
        g_p = pu[b] + s * (pc[b] - pu[b])
        g_s = su[b] + s * (sc[b] - su[b])
        raw_p = ref_saliency(s * (pc[b] - pu[b]))
        raw_s = ref_saliency(s * (sc[b] - (su[b] if own_uncond else pu[b])))
        sal_p, sal_s = ref_softmax(raw_p, kg), ref_softmax(raw_s, ke)
        m = (sal_s > sal_p).astype(np.float64)
        out["eps"].append(np.where(m[None] > 0, g_s, g_p))
        for k, v in (("mask", m), ("sal_p", sal_p), ("sal_s", sal_s), ("raw_p", raw_p), ("raw_s", raw_s)):
            out[k].append(v[None])
    return {k: np.stack(v) for k, v in out.items()}


def _noise(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("shape", [(2, 4, 64, 64), (1, 4, 9, 13), (3, 4, 16, 16), (1, 8, 5, 7)])
@pytest.mark.parametrize("kg,ke", [(1.0, 1.0), (2.0, 0.5), (10.0, 10.0)])
def test_blend_matches_reference_for_any_latent_size_and_sharpness(shape, kg, ke):
    pc, pu, sc, su = _noise(hash((shape, kg, ke)) % 1000, shape)
    r = blend(pc, pu, sc, su, guidance_scale=10.0, kg=kg, ke=ke)
    ref = ref_blend(*(t.numpy() for t in (pc, pu, sc, su)), 10.0, kg, ke)
    np.testing.assert_allclose(r.raw_p.numpy(), ref["raw_p"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.raw_s.numpy(), ref["raw_s"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.saliency_p.numpy(), ref["sal_p"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(r.saliency_s.numpy(), ref["sal_s"], rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(r.mask.numpy(), ref["mask"])
    np.testing.assert_allclose(r.eps.numpy(), ref["eps"], rtol=1e-12, atol=1e-12)
    assert r.mask.shape == (shape[0], 1, shape[2], shape[3])


def test_own_uncond_option_subtracts_the_secondarys_uncond():
    pc, pu, sc, su = _noise(7, (2, 4, 12, 12))
    r = blend(pc, pu, sc, su, 7.5, 1.0, 1.0, own_uncond=True)
    ref = ref_blend(*(t.numpy() for t in (pc, pu, sc, su)), 7.5, 1.0, 1.0, own_uncond=True)
    np.testing.assert_allclose(r.raw_s.numpy(), ref["raw_s"], rtol=1e-10)
    np.testing.assert_array_equal(r.mask.numpy(), ref["mask"])
    default = blend(pc, pu, sc, su, 7.5, 1.0, 1.0)
    assert not torch.allclose(default.raw_s, r.raw_s)


def test_ties_go_to_the_primary():
    pc, pu, _, _ = _noise(3, (2, 4, 10, 10))
    # the secondary predicts exactly what the primary does: equal saliency everywhere
    r = blend(pc, pu, pc.clone(), pu.clone(), 10.0, 1.0, 1.0)
    assert torch.equal(r.saliency_p, r.saliency_s)
    assert r.mask.sum() == 0
    assert torch.equal(r.eps, pu + 10.0 * (pc - pu))


def test_mask_is_one_where_only_the_secondary_is_salient():
    zeros = torch.zeros(1, 4, 16, 16)
    sc = zeros.clone()
    sc[:, :, 2:6, 2:6] = 1.0  # secondary guidance only in the top-left patch
    r = blend(zeros, zeros, sc, zeros, 10.0, 1.0, 1.0)
    assert r.mask[0, 0, 3, 3] == 1 and r.mask[0, 0, 12, 12] == 0
    # where the mask is 1 the secondary's guided noise is used, on every channel
    assert torch.equal(r.eps[0, :, 3, 3], (10.0 * sc)[0, :, 3, 3])


def test_softmax_maps_sum_to_one_and_sharpness_concentrates_them():
    pc, pu, sc, su = _noise(11, (2, 4, 8, 8))
    soft = blend(pc, pu, sc, su, 10.0, 0.1, 0.1)
    sharp = blend(pc, pu, sc, su, 10.0, 10.0, 10.0)
    for r in (soft, sharp):
        torch.testing.assert_close(r.saliency_p.flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
        torch.testing.assert_close(r.saliency_s.flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
    assert sharp.saliency_p.flatten(1).max(1).values.min() > soft.saliency_p.flatten(1).max(1).values.max()


def test_smoothing_keeps_the_size_and_counts_padding():
    x = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    y = smooth(x)
    assert y.shape == x.shape
    # interior windows see 16 ones; the corner window sees 9 ones and 7 padded zeros
    assert y[0, 0, 3, 3].item() == pytest.approx(1.0)
    assert y[0, 0, 0, 0].item() == pytest.approx(9 / 16)


def test_blend_rejects_non_positive_sharpness_and_mismatched_shapes():
    pc, pu, sc, su = _noise(1, (1, 4, 8, 8))
    with pytest.raises(ValueError, match="kg and ke must be > 0"):
        blend(pc, pu, sc, su, 10.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="one shape"):
        blend(pc, pu, sc[:, :, :4], su, 10.0, 1.0, 1.0)
