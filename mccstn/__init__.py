"""MccSTN Studio's style-transfer package.

Light to import: the heavy modules (torch networks, training) load on first use.

    from mccstn import MccSTN
    model = MccSTN.from_pretrained("models/mccstn")          # four .pth files or mccstn.safetensors
    out = model.stylize(content, style, alpha=1.0)          # (1,3,H,W) floats in [0,1] -> raw output
    img = model.stylize_image("photo.jpg", "painting.jpg", long_side=512)   # PIL in/out

Command lines: ``python -m mccstn`` (stylise) and ``python -m mccstn.train`` (train).
The package is the network, its checkpoints and its training; the app's style-tab adapter is
:class:`studio.style_engines.mccstn.MccSTNEngine`, and the training-free diffusion engines are
the :mod:`styleid` package.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "MccSTN": "mccstn.stylize",
    "CheckpointError": "mccstn.checkpoint",
    "TrainConfig": "mccstn.train_config",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CheckpointError
    from .stylize import MccSTN
    from .train_config import TrainConfig


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mccstn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
