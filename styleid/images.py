"""Images and latents for the training-free style engines: loading, sizing, VAE encode/decode.

* :func:`load_image` - an RGB PIL image from a PIL image or a path, with errors naming the input.
* :func:`grid_multiple`, :func:`target_size`, :func:`prepare_images` - the output size on the
  model's grid and the content/style images fitted to it (see :class:`styleid.injection.InjectionSettings`).
* :func:`encode_image`, :func:`decode_latent` - the VAE's posterior mode (times the scaling
  factor) and back to 8-bit images.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, Image.Image]
FITS = ("crop", "stretch", "aspect")

__all__ = ["ImageLike", "FITS", "load_image", "grid_multiple", "target_size", "prepare_images",
           "encode_image", "decode_latent"]


def load_image(img: ImageLike, what: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image or a file path, with errors that say what is wrong:
    FileNotFoundError for missing files, ValueError for non-image files and empty images.
    Transparent pixels are put on white; EXIF orientation is applied to files."""
    if isinstance(img, (str, os.PathLike)):
        p = Path(img)
        if not p.is_file():
            raise FileNotFoundError(f"{what}: file not found: {p}")
        try:
            with Image.open(p) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"{what}: {p} is not a readable image file ({type(e).__name__}: {e})") from None
        img = im
    elif not isinstance(img, Image.Image):
        raise ValueError(f"{what}: expected a PIL image or an image file path, got {type(img).__name__}")
    if img.width <= 0 or img.height <= 0:
        raise ValueError(f"{what}: the image is empty ({img.width}x{img.height} pixels)")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def grid_multiple(model) -> int:
    """Pixel multiple a model's input must be: VAE factor x 2^(UNet downsamplings)."""
    return int(model.vae_scale_factor) * 2 ** (len(model.unet.config.block_out_channels) - 1)


def _cover_crop(img: Image.Image, w: int, h: int) -> Image.Image:
    scale = max(w / img.width, h / img.height)
    nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def target_size(content: Image.Image, resolution: int, fit: str, grid: int) -> tuple[int, int]:
    """(width, height) of the output for a content image (see :class:`InjectionSettings`)."""
    r = max(grid, resolution // grid * grid)
    if fit in ("crop", "stretch"):
        return r, r
    ratio = content.width / content.height
    if ratio >= 1:
        return max(grid, int(r * ratio) // grid * grid), r
    return r, max(grid, int(r / ratio) // grid * grid)


def prepare_images(content: Image.Image, style: Image.Image, resolution: int, fit: str,
                   grid: int) -> tuple[Image.Image, Image.Image]:
    """Both images at the output size: content by ``fit``, style by cover + centre crop."""
    w, h = target_size(content, resolution, fit, grid)
    if fit == "stretch":
        c = content.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    else:
        c = _cover_crop(content, w, h)
    return c, _cover_crop(style, w, h)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1)


@torch.no_grad()
def encode_image(model, images: list[Image.Image]) -> torch.Tensor:
    """VAE posterior modes times the scaling factor, float32 (N, C, h, w)."""
    x = torch.stack([_to_tensor(i) for i in images]).to(model.device, model.dtype)
    dist = model.vae.encode(x).latent_dist
    return dist.mode().float() * model.scaling_factor


@torch.no_grad()
def decode_latent(model, z: torch.Tensor) -> list[Image.Image]:
    x = model.vae.decode((z / model.scaling_factor).to(model.dtype)).sample.float()
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in x]
