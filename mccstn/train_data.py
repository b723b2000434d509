"""Training data of MccSTN: the image folders a run reads and the endless shuffled loader."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .stylize import IMAGE_EXTENSIONS

__all__ = ["list_images", "ImageFolderDataset"]


def list_images(folder: str) -> list[str]:
    files = sorted(str(p) for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    return files


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images resized to load x load and randomly cropped to crop x crop, as (3,crop,crop) [0,1]."""

    def __init__(self, folder: str, load_size: int, crop_size: int) -> None:
        self.paths = list_images(folder)
        self.load_size, self.crop_size = load_size, crop_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                with Image.open(path) as im:
                    img = im.convert("RGB").resize((self.load_size, self.load_size), Image.BILINEAR)
                break
            except Exception as exc:  # unreadable file: warn and take the next one
                warnings.warn(f"skipping unreadable training image {path}: {exc}")
        else:
            raise RuntimeError("no readable training images")
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        top = int(torch.randint(0, self.load_size - self.crop_size + 1, ()))
        left = int(torch.randint(0, self.load_size - self.crop_size + 1, ()))
        return arr[:, top:top + self.crop_size, left:left + self.crop_size].contiguous()


def _infinite_loader(ds, batch_size, num_workers, seed):
    g = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=1 << 40, generator=g)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler,
                                         num_workers=num_workers, drop_last=True,
                                         generator=g, persistent_workers=num_workers > 0)
    return iter(loader)


def write_toy_renders(folder: str, n: int, style: str, seed: int, size: int = 0) -> list[str]:
    """Write ``n`` toy-world renders of one style ("photo" or "cartoon") as PNGs under ``folder``.

    Scenes are drawn by :func:`toyworld.data.scenes_for` (every colour, shape and size) with
    ``seed``; ``size`` > 0 resizes the 64 px renders (bicubic, as the style benchmark enlarges
    them). These are MccSTN's toy training sets: photo renders as content, cartoon as style.
    """
    from toyworld.data import render_many, scenes_for

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    imgs = render_many(scenes_for(n, seed, style), workers=1)
    paths = []
    for i, arr in enumerate(imgs):
        im = Image.fromarray(arr)
        if size and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        p = out / f"{style}_{seed}_{i:05d}.png"
        im.save(p)
        paths.append(str(p))
    return paths
