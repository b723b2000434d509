"""Real-photo input for the style engines: any PIL mode to 8-bit RGB, huge images downscaled.

``Image.convert("RGB")`` alone gets two common cases wrong: 16-bit greyscale PNGs (mode
``I;16``/``I``) are clipped at 255, so almost every pixel turns white, and transparent pixels
keep whatever colour they hide (often black). :func:`to_rgb` rescales high-bit-depth data to
0-255 and composites transparency on white; CMYK (JPEG) and palette images go through PIL's own
conversion.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

#: long side above which :func:`downscale` shrinks an input (engines resize further themselves)
MAX_INPUT_SIDE = 2048
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Image.Image, what: str = "image") -> Image.Image:
    """``img`` as 8-bit RGB; ValueError naming ``what`` for empty images or unknown modes."""
    if not isinstance(img, Image.Image):
        raise ValueError(f"{what}: expected a PIL image, got {type(img).__name__}")
    if img.width <= 0 or img.height <= 0:
        raise ValueError(f"{what}: the image is empty ({img.width}x{img.height} pixels)")
    if img.mode in _HIGH_BIT_MODES:
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        if img.mode == "F" and a.size and a.max() <= 1.0:
            top = 1.0
        grey = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what}: cannot convert an image of mode {img.mode!r} to RGB ({exc})") from None


def downscale(img: Image.Image, max_side: int = MAX_INPUT_SIDE, what: str = "image") -> tuple[Image.Image, Optional[str]]:
    """(image, note): images with a side above ``max_side`` are shrunk (aspect kept, Lanczos),
    and the note says so; smaller images come back unchanged with ``None``."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img, None
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (img.resize(size, Image.LANCZOS, reducing_gap=3.0),
            f"{what} {w}x{h} was downscaled to {size[0]}x{size[1]}")
