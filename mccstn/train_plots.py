"""Pictures of a training run, and generated toy images: the sample grid, the loss curves (PIL
only, no matplotlib) and the synthetic content/style PNGs that smoke runs and tests train on."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .stylize import tensor_to_pil

#: the loss columns of a run's loss.csv (what the curves plot by default)
LOSS_COLUMNS = ("loss_content", "loss_style", "loss_identity", "loss_ar1", "loss_ar2",
                "loss_gan_g", "loss_gan_d", "loss_nce_d", "loss_nce_g", "loss_total")

__all__ = ["LOSS_COLUMNS", "write_toy_images", "save_grid", "read_loss_csv", "plot_loss_curves"]


def write_toy_images(folder: str | os.PathLike, n: int, size: int, kind: str, seed: int = 0) -> list[str]:
    """Write ``n`` generated ``size`` x ``size`` PNGs (for smoke runs and tests).

    ``kind="content"``: smooth blobs and gradients (photo-like); ``kind="style"``: coloured
    stripes and dots (painting-like).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        if kind == "content":
            img = np.zeros((size, size, 3))
            for _ in range(4):
                cx, cy, r = rng.random(), rng.random(), 0.1 + 0.3 * rng.random()
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
                img += blob[..., None] * rng.random(3)
            img += 0.3 * (xx[..., None] * rng.random(3))
        elif kind == "style":
            freq, ang = 4 + 12 * rng.random(), math.pi * rng.random()
            wave = np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)))
            c1, c2 = rng.random(3), rng.random(3)
            img = np.where(wave[..., None] > 0, c1, c2) + 0.15 * rng.standard_normal((size, size, 3))
        else:
            raise ValueError(f"kind must be 'content' or 'style', got {kind!r}")
        img = np.clip(img / max(img.max(), 1e-6) if kind == "content" else img, 0, 1)
        p = folder / f"{kind}_{i:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def save_grid(rows: Sequence[torch.Tensor], path: Path, pad: int = 2) -> None:
    """Save rows of (N,3,H,W) [0,1] image batches as one PNG grid (rows: content/style/output)."""
    n = max(r.shape[0] for r in rows)
    h = max(r.shape[2] for r in rows)
    w = max(r.shape[3] for r in rows)
    grid = Image.new("RGB", (n * (w + pad) + pad, len(rows) * (h + pad) + pad), (255, 255, 255))
    for ri, r in enumerate(rows):
        for ci in range(r.shape[0]):
            grid.paste(tensor_to_pil(r[ci:ci + 1]), (pad + ci * (w + pad), pad + ri * (h + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


# ----------------------------------------------------------------------------------------------
# loss curve (PIL only; no matplotlib)
# ----------------------------------------------------------------------------------------------
_PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
            (23, 190, 207), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34)]


def read_loss_csv(path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Column -> list of (iteration, value), skipping empty cells (losses a stage skips)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        try:
            it = float(r["iter"])
        except (KeyError, TypeError, ValueError):
            continue
        for k, v in r.items():
            try:
                cols.setdefault(k, []).append((it, float(v)))
            except (TypeError, ValueError):
                pass
    return cols


def plot_loss_curves(csv_path: str | os.PathLike, png_path: str | os.PathLike,
                     columns: Sequence[str] = LOSS_COLUMNS, title: str = "MccSTN training losses") -> str:
    """Draw one small panel per loss column into a PNG (PIL only).

    Each panel has its own y range (min/max labelled), the raw values as a thin line and an
    exponential moving average as a thick one; a dashed vertical line marks the start of
    stage II when the log has one. Columns with no values are left out.
    """
    data = read_loss_csv(csv_path)
    its = [it for it, _ in data.get("iter", [])]
    cols = [c for c in columns if data.get(c)]
    if not its or not cols:
        raise ValueError(f"{csv_path}: nothing to plot")
    first, last = min(its), max(its)
    span = max(last - first, 1.0)
    stage2_at = next((it for it, v in data.get("stage", []) if v >= 2), None)
    pw, ph, ncol = 330, 190, 3
    nrow = math.ceil(len(cols) / ncol)
    img = Image.new("RGB", (ncol * pw + 20, nrow * ph + 44), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    note = f"  (dashed: stage II from iteration {int(stage2_at)})" if stage2_at is not None else ""
    d.text((10, 10), f"{title}: {len(its)} iterations{note}", fill=(0, 0, 0), font=font)
    for k, name in enumerate(cols):
        pairs = data[name]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        x0, y0 = 10 + (k % ncol) * pw + 52, 44 + (k // ncol) * ph + 18
        w, h = pw - 72, ph - 48
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5

        def pt(xv, yv):
            return (x0 + (xv - first) / span * w, y0 + h - (yv - lo) / (hi - lo) * h)

        d.rectangle([x0, y0, x0 + w, y0 + h], outline=(160, 160, 160))
        d.text((x0, y0 - 14), name, fill=(0, 0, 0), font=font)
        d.text((x0 - 50, y0 - 4), f"{hi:.3g}", fill=(80, 80, 80), font=font)
        d.text((x0 - 50, y0 + h - 8), f"{lo:.3g}", fill=(80, 80, 80), font=font)
        d.text((x0, y0 + h + 3), f"{int(first)}", fill=(80, 80, 80), font=font)
        d.text((x0 + w - 30, y0 + h + 3), f"{int(last)}", fill=(80, 80, 80), font=font)
        if stage2_at is not None and first < stage2_at <= last:
            sx = pt(stage2_at, lo)[0]
            for yy in range(int(y0), int(y0 + h), 6):
                d.line([(sx, yy), (sx, min(yy + 3, y0 + h))], fill=(120, 120, 120))
        color = _PALETTE[k % len(_PALETTE)]
        light = tuple(int(c + (255 - c) * 0.6) for c in color)
        pts = [pt(a, b) for a, b in zip(xs, ys)]
        if len(pts) == 1:
            d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
            continue
        d.line(pts, fill=light, width=1)
        beta = 0.8 if len(ys) < 200 else 0.95
        ema, smooth = ys[0], []
        for v in ys:
            ema = beta * ema + (1 - beta) * v
            smooth.append(ema)
        d.line([pt(a, b) for a, b in zip(xs, smooth)], fill=color, width=2)
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    img.save(png_path)
    return str(png_path)
