"""Region-wise colour transfer for the subject-keeping style engine (:mod:`styleid.expert`).

In the toy world the subject is the only saturated region of an image (outlines are dark, eyes
black and white, backgrounds grey or cream), so "the subject's colour" is the colour statistics
of the saturated pixels; :func:`match_subject_colour` moves one image's subject to another's.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["SATURATION_MASK", "match_subject_colour"]

SATURATION_MASK = 70  # max - min of RGB (0-255): toy objects are saturated, backgrounds are not


def _saturation(a: np.ndarray) -> np.ndarray:
    return a.max(-1) - a.min(-1)


def match_subject_colour(out: Image.Image, content: Image.Image, threshold: float = SATURATION_MASK) -> Image.Image:
    """Give the output's colourful region the content's colourful-region colour statistics.

    Region-wise mean/std colour transfer (Reinhard et al., "Color Transfer between Images",
    2001, per RGB channel here): the subject is taken to be the saturated pixels (RGB max - min
    above ``threshold``) of each image, which in the toy world is the object and nothing else
    (outlines are dark, eyes black and white, backgrounds grey or cream). Pixels are blended by
    a soft weight rising from 0.8 x threshold to threshold, so the outline and background (the
    cartoon cream has a saturation of 45) stay as the expert drew them. Without a colourful region in either image the output is returned.
    """
    o = np.asarray(out.convert("RGB"), dtype=np.float32)
    c = np.asarray(content.convert("RGB").resize(out.size, Image.BICUBIC), dtype=np.float32)
    mo, mc = _saturation(o) > threshold, _saturation(c) > threshold
    if mo.sum() < 4 or mc.sum() < 4:
        return out
    mean_o, std_o = o[mo].mean(0), o[mo].std(0) + 1e-3
    mean_c, std_c = c[mc].mean(0), c[mc].std(0)
    recoloured = (o - mean_o) / std_o * np.minimum(std_c, std_o) + mean_c
    w = np.clip((_saturation(o) - 0.8 * threshold) / (0.2 * threshold), 0.0, 1.0)[..., None]
    res = w * recoloured + (1 - w) * o
    return Image.fromarray(np.clip(np.round(res), 0, 255).astype(np.uint8))
