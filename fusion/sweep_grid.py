"""The labelled grid of a sweep (``grid.png``) and the judge heat map.

Columns: the varied axis with the most values (the first such in v1, kg, ke, mode, primary order);
rows: every combination of the other varied axes. Each cell shows its samples, and under them its
secondary pixel share and, when known, its judge score on a red (0) to green (1) bar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .sweep_spec import AXES, SweepAxes, SweepCell, format_number

__all__ = ["GridLayout", "grid_layout", "render_grid", "score_colour"]


@dataclass
class GridLayout:
    """cells[r][c] is the cell at row r, column c; labels name the axis values."""

    column_axis: str | None
    row_axes: list[str]
    column_labels: list[str]
    row_labels: list[str]
    cells: list[list[SweepCell]]


def _value_text(axis: str, v) -> str:
    return f"{axis}={format_number(v) if axis in ('kg', 'ke') else v}"


def grid_layout(axes: SweepAxes) -> GridLayout:
    varied = axes.varied
    col = max(varied, key=lambda a: len(getattr(axes, a))) if varied else None
    rows_axes = [a for a in varied if a != col]
    by_key = {tuple(getattr(c, a) for a in AXES): c for c in axes.cells()}
    col_values = getattr(axes, col) if col else (None,)
    row_combos = [()]
    for a in rows_axes:
        row_combos = [rc + ((a, v),) for rc in row_combos for v in getattr(axes, a)]
    fixed = {a: getattr(axes, a)[0] for a in AXES}
    grid = []
    for rc in row_combos:
        line = []
        for cv in col_values:
            vals = dict(fixed, **dict(rc))
            if col:
                vals[col] = cv
            line.append(by_key[tuple(vals[a] for a in AXES)])
        grid.append(line)
    return GridLayout(col, rows_axes, [_value_text(col, v) for v in col_values] if col else [""],
                      [", ".join(_value_text(a, v) for a, v in rc) for rc in row_combos], grid)


def score_colour(score: float) -> tuple[int, int, int]:
    """0 -> red, 0.5 -> yellow, 1 -> green."""
    s = min(max(float(score), 0.0), 1.0)
    return (int(255 * min(1.0, 2 * (1 - s))), int(200 * min(1.0, 2 * s)), 40)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_grid(axes: SweepAxes, images: dict[SweepCell, np.ndarray], rows: dict[SweepCell, dict],
                title: str = "", cell_px: int = 128) -> Image.Image:
    """images: per cell, (n, H, W, 3) uint8 (missing cells are drawn empty); rows: per cell, its
    results row (secondary_share, judge)."""
    layout = grid_layout(axes)
    font, small = _font(14), _font(12)
    sample = next(iter(images.values()), None)
    n = 1 if sample is None else sample.shape[0]
    cw, ch = cell_px * n, cell_px
    caption_h = 34
    label_w = 12 + max([int(font.getlength(t)) for t in layout.row_labels] + [40])
    top = 30 + 22
    W = max(label_w + len(layout.column_labels) * (cw + 8) + 8, 16 + int(font.getlength(title)))
    H = top + len(layout.row_labels) * (ch + caption_h + 8) + 8
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((8, 6), title, fill="black", font=font)
    for j, lab in enumerate(layout.column_labels):
        d.text((label_w + j * (cw + 8) + 4, 30), lab, fill="black", font=font)
    for i, lab in enumerate(layout.row_labels):
        y = top + i * (ch + caption_h + 8)
        d.text((6, y + ch // 2 - 7), lab, fill="black", font=font)
        for j, cell in enumerate(layout.cells[i]):
            x = label_w + j * (cw + 8)
            d.rectangle([x - 1, y - 1, x + cw, y + ch], outline=(200, 200, 200))
            if cell in images:
                strip = np.concatenate(list(images[cell]), axis=1)
                img.paste(Image.fromarray(strip).resize((cw, ch), Image.NEAREST), (x, y))
            row = rows.get(cell, {})
            if "secondary_share" in row:
                d.text((x + 2, y + ch + 2), f"secondary {float(row['secondary_share']):.2f}", fill="black",
                       font=small)
            judge = row.get("judge")
            if judge not in (None, ""):
                d.rectangle([x, y + ch + 18, x + cw - 1, y + ch + caption_h - 2], fill=score_colour(judge))
                d.text((x + 2, y + ch + 18), f"judge {float(judge):.2f}", fill="black", font=small)
    return img
