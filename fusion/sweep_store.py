"""A sweep's output folder, and resuming into it.

Layout (every path relative to the folder)::

    sweep.json          the manifest: the fixed part of the sweep (prompts, seed, models, steps...)
    cells/NAME.png      one cell's samples side by side (NAME = SweepCell.name)
    cells/NAME.json     that cell's row of results.csv (written after its PNG: the "done" marker)
    general.png         the general model alone (once per sweep), expert.png the expert alone
    results.csv         one row per finished cell, rebuilt from cells/*.json
    grid.png            the labelled grid of the last run's axes

A cell is done when both its PNG and its JSON exist and the JSON names that cell. A folder whose
manifest records another fixed part (another prompt, seed, model...) is refused before anything
is written; files are written to a temporary name and renamed, so an interrupted run never leaves
a half-written file under a final name.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .sweep_spec import SweepCell, SweepSpec

__all__ = ["COLUMNS", "MANIFEST", "RESULTS", "GRID", "SweepStore"]

MANIFEST, RESULTS, GRID, CELLS = "sweep.json", "results.csv", "grid.png", "cells"
COLUMNS = ("v1", "kg", "ke", "mode", "primary", "seed", "image", "secondary_share", "judge", "judge_prompt",
           "judge_cartoon")
_PRIMARY_ORDER = {"general": 0, "expert": 1}

def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)

def _png_bytes(images: np.ndarray) -> bytes:
    """(n, H, W, 3) uint8 -> one PNG with the samples side by side."""
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(list(images), axis=1)).save(buf, format="PNG")
    return buf.getvalue()

class SweepStore:
    """The output folder of one sweep (see the module doc)."""

    def __init__(self, root: str | os.PathLike, spec: SweepSpec):
        self.root = Path(root)
        self.spec = spec

    # ---- checks (nothing written) ---------------------------------------------------------------
    def check(self) -> None:
        """Raise a ValueError if the folder cannot take this sweep; writes nothing."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--out {self.root} exists and is not a folder")
        manifest = self.root / MANIFEST
        if not manifest.exists():
            ours = [n for n in (RESULTS, GRID, CELLS) if (self.root / n).exists()]
            if ours:
                raise ValueError(f"--out {self.root} holds sweep results ({', '.join(ours)}) without a "
                                 f"{MANIFEST}; nothing was changed. Choose another --out")
            return
        try:
            recorded = json.loads(manifest.read_text())["fixed"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--out {self.root}: {manifest} is not a sweep manifest ({e}); nothing was "
                             f"changed. Choose another --out") from None
        mine = json.loads(json.dumps(self.spec.fixed()))
        diff = [f"{k} ({recorded.get(k)!r} there, {mine.get(k)!r} here)"
                for k in sorted(set(recorded) | set(mine)) if recorded.get(k) != mine.get(k)]
        if diff:
            raise ValueError(f"--out {self.root} holds another sweep's results: it differs in "
                             f"{'; '.join(diff)}. Nothing was changed. Choose another --out (cells of one "
                             f"sweep share prompts, seed, models, steps, scale, size and samples)")

    # ---- reading ---------------------------------------------------------------------------------
    def image_path(self, cell: SweepCell) -> Path:
        return self.root / CELLS / f"{cell.name}.png"

    def _row_path(self, cell: SweepCell) -> Path:
        return self.root / CELLS / f"{cell.name}.json"

    def row(self, cell: SweepCell) -> dict | None:
        """The finished cell's row, or None when the cell is not done."""
        path = self._row_path(cell)
        if not (path.is_file() and self.image_path(cell).is_file()):
            return None
        try:
            row = json.loads(path.read_text())
            if SweepCell.from_row(row) != cell:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return row

    def done(self, cells) -> dict[SweepCell, dict]:
        return {c: r for c in cells if (r := self.row(c)) is not None}

    def references_done(self) -> bool:
        return all((self.root / f"{r}.png").is_file() for r in ("general", "expert"))

    def load_images(self, cell: SweepCell) -> np.ndarray:
        """The cell's samples as (n, H, W, 3) uint8 (from its PNG)."""
        strip = np.asarray(Image.open(self.image_path(cell)).convert("RGB"))
        return np.stack(np.split(strip, self.spec.n_samples, axis=1))

    # ---- writing ---------------------------------------------------------------------------------
    def begin(self) -> None:
        """Create the folder and record the manifest (the fixed part and the axes of each run)."""
        self.check()
        (self.root / CELLS).mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
        axes = self.spec.axes.as_text()
        if axes not in runs:
            runs.append(axes)
        _write_atomic(path, json.dumps({"version": 1, "fixed": self.spec.fixed(), "runs": runs},
                                       indent=1).encode())

    def write_cell(self, cell: SweepCell, images: np.ndarray, secondary_share: float,
                   judge: dict | None = None) -> dict:
        _write_atomic(self.image_path(cell), _png_bytes(images))
        row = {**cell.as_row(), "seed": self.spec.seed, "image": f"{CELLS}/{cell.name}.png",
               "secondary_share": round(float(secondary_share), 6)}
        if judge:
            row.update({k: round(float(v), 6) for k, v in judge.items()})
        _write_atomic(self._row_path(cell), json.dumps(row).encode())
        return row

    def update_judge(self, cell: SweepCell, judge: dict) -> dict:
        row = self.row(cell)
        row.update({k: round(float(v), 6) for k, v in judge.items()})
        _write_atomic(self._row_path(cell), json.dumps(row).encode())
        return row

    def write_references(self, images: dict[str, np.ndarray]) -> None:
        for name, arr in images.items():
            _write_atomic(self.root / f"{name}.png", _png_bytes(arr))

    def write_results(self) -> Path:
        """results.csv from every finished cell in the folder (of this and earlier runs)."""
        rows = []
        for path in sorted((self.root / CELLS).glob("*.json")):
            try:
                row = json.loads(path.read_text())
                cell = SweepCell.from_row(row)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if self.image_path(cell).is_file() and path.stem == cell.name:
                rows.append((cell, row))
        rows.sort(key=lambda cr: (cr[0].v1, cr[0].kg, cr[0].ke, cr[0].mode, _PRIMARY_ORDER[cr[0].primary]))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for _, row in rows:
            w.writerow({k: row.get(k, "") for k in COLUMNS})
        path = self.root / RESULTS
        _write_atomic(path, buf.getvalue().encode())
        return path
