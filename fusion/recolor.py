"""Subject recolouring of a fused image from the general model's image (an option beyond MagicFusion,
``BlendOptions.recolor``).

Region-wise mean/std colour transfer (Reinhard et al., "Color Transfer between Images", IEEE CG&A
2001), per RGB channel: the subject is the saturated pixels (RGB max - min above a threshold) of
each image, which in the toy world is the object and nothing else (outlines dark, eyes black and
white, backgrounds grey or cream). Pixels are blended by a soft weight rising from 0.8 x threshold to
the threshold, so outlines and background stay as drawn. The same rule as
:func:`styleid.colour.match_subject_colour` (PIL images, 0..255), here on (n, 3, H, W)
tensors in [0, 1], one sample at a time.
"""
from __future__ import annotations

import torch

__all__ = ["recolor_subject", "saturation", "check_image_pair"]


def saturation(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel RGB max - min of one (3, H, W) image (the toy world's subject rule)."""
    return x.amax(0) - x.amin(0)


def check_image_pair(what: str, out: torch.Tensor, source: torch.Tensor) -> None:
    """A ValueError naming ``what`` unless ``out`` and ``source`` are (n, 3, H, W) images of one shape."""
    if out.shape != source.shape or out.dim() != 4 or out.shape[1] != 3:
        raise ValueError(f"{what} needs two (n, 3, H, W) images of one shape, got {tuple(out.shape)} "
                         f"and {tuple(source.shape)}")


def recolor_subject(out: torch.Tensor, source: torch.Tensor, threshold: float = 70 / 255) -> torch.Tensor:
    """``out``'s saturated region gets ``source``'s saturated-region colour statistics, sample by sample;
    a sample where either image has fewer than 4 saturated pixels is returned unchanged."""
    check_image_pair("recolor_subject", out, source)
    res = out.clone()
    for i in range(out.shape[0]):
        o, c = out[i].float(), source[i].float()
        so, sc = saturation(o), saturation(c)
        mo, mc = so > threshold, sc > threshold
        if int(mo.sum()) < 4 or int(mc.sum()) < 4:
            continue
        po, pc = o[:, mo], c[:, mc]
        mean_o, std_o = po.mean(1), po.std(1, unbiased=False) + 1e-3 / 255
        mean_c, std_c = pc.mean(1), pc.std(1, unbiased=False)
        recoloured = (o - mean_o[:, None, None]) / std_o[:, None, None] * torch.minimum(std_c, std_o)[:, None, None] \
            + mean_c[:, None, None]
        w = ((so - 0.8 * threshold) / (0.2 * threshold)).clamp(0, 1)
        res[i] = (w * recoloured + (1 - w) * o).clamp(0, 1).to(out.dtype)
    return res
