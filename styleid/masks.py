"""The content's subject as a mask on the latent grid, for mask-aware noise blending in
:mod:`styleid.expert`.

In the toy world the subject is the only saturated region of an image (:mod:`styleid.colour`), so
its mask is the share of saturated pixels in each latent cell (an 8x8 pixel block for the VAE).
``"edge"`` keeps only a band around the silhouette's border (the mask dilated minus the mask eroded,
by ``band`` latent cells), where a style expert redraws the shape (a circle's corners squared off).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .colour import SATURATION_MASK

__all__ = ["MASK_REGIONS", "subject_mask"]

#: which part of the subject a mask covers
MASK_REGIONS = ("fill", "edge")


def subject_mask(img: Image.Image, size: tuple[int, int], region: str = "fill", band: int = 1,
                 threshold: float = SATURATION_MASK) -> torch.Tensor:
    """(1, 1, h, w) float mask in [0, 1] of ``img``'s saturated subject on an ``(h, w)`` grid.

    ``region`` "fill": the subject's share of each cell (area average); "edge": the cells within
    ``band`` cells of the silhouette's border (1 there, 0 elsewhere)."""
    if region not in MASK_REGIONS:
        raise ValueError(f"region: got {region!r}; accepted: {', '.join(MASK_REGIONS)}")
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    sat = torch.from_numpy(((a.max(-1) - a.min(-1)) > threshold).astype(np.float32))[None, None]
    m = F.interpolate(sat, size=size, mode="area")
    if region == "fill":
        return m
    k = 2 * band + 1
    solid = (m > 0.5).float()
    dilated = F.max_pool2d(solid, k, stride=1, padding=band)
    eroded = -F.max_pool2d(-solid, k, stride=1, padding=band)
    return dilated - eroded


def lock_silhouette(out: Image.Image, content: Image.Image, grow: int = 1,
                    threshold: float = SATURATION_MASK) -> Image.Image:
    """``out`` with everything farther than ``grow`` px outside the content's subject set to the
    output's own background colour, so the subject keeps the content's silhouette (a style expert
    that squares off a circle's corners loses them here).

    The background colour is the median of the output's pixels outside that region that are
    neither saturated (the subject) nor dark (an outline); without such pixels, or without a
    subject in the content, ``out`` is returned unchanged."""
    o = np.asarray(out.convert("RGB"))
    c = np.asarray(content.convert("RGB").resize(out.size, Image.BICUBIC), dtype=np.int16)
    subject = (c.max(-1) - c.min(-1)) > threshold
    if subject.sum() < 4:
        return out
    k = 2 * grow + 1
    near = F.max_pool2d(torch.from_numpy(subject.astype(np.float32))[None, None], k, stride=1, padding=grow)
    outside = ~(near[0, 0].numpy() > 0.5)
    oi = o.astype(np.int16)
    plain = outside & ((oi.max(-1) - oi.min(-1)) <= threshold) & (oi.mean(-1) > 100)
    if plain.sum() < 4:
        return out
    res = o.copy()
    res[outside] = np.median(o[plain], axis=0).astype(np.uint8)
    return Image.fromarray(res)
