"""The style tab's subject-keeping diffusion engine: the adapter that puts
:func:`styleid.expert.expert_transfer` (invert with a general model, sample with a style expert)
behind :class:`studio.style_engines.base.StyleEngine`, with its UI controls.

    engine = ExpertEngine()   # the embedded toy general model + toy cartoon expert
    out = engine.stylize(content_pil, style_pil, strength=0.5, preserve_color=True)
"""
from __future__ import annotations

import os
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from fusion.paths import TOY_EXPERT, TOY_GENERAL
from styleid.expert import ExpertTransferSettings, expert_transfer

from .base import Control, StyleEngine

DEFAULT_GENERAL = TOY_GENERAL
DEFAULT_EXPERT = TOY_EXPERT


class ExpertEngine(StyleEngine):
    """``general``/``expert``: model paths (default: the embedded toy pair) or loaded
    :class:`fusion.loading.DiffusionModel` objects (shared, not copied). Loads lazily and keeps
    the models, unless ``load_pair`` is given: a callable returning the loaded (general, expert)
    pair, asked on every run and never held here (the app passes its warm model cache, so the
    fusion tab and this engine share one copy and the cache may still evict it).
    ``last_stats``: the last call's :class:`styleid.injection.InjectionStats`."""

    name = "expert"
    description = ("Subject-keeping diffusion style transfer: the content is partly inverted with the "
                   "general model and re-sampled by the style expert (toy cartoon expert), then held to "
                   "the content's silhouette and re-drawn; the subject keeps its shape, size and position, "
                   "and its colour with 'preserve colour'. "
                   "Weights: the embedded toy models, trained from scratch in the toy world.")

    def __init__(self, general: Any = None, expert: Any = None,
                 load_pair: Optional[Callable[[], tuple]] = None) -> None:
        self._src = {"general": general or DEFAULT_GENERAL, "expert": expert or DEFAULT_EXPERT}
        self._models: dict = {k: v for k, v in self._src.items() if hasattr(v, "unet")}
        self._load_pair = load_pair
        self._lock = threading.Lock()
        self.last_stats = None

    def availability(self) -> tuple[bool, str]:
        from fusion.loading import is_model_source

        for role, src in self._src.items():
            if role in self._models:
                continue
            p = Path(os.fspath(src))
            if not p.exists():
                return False, f"{role} model not found at {p} (the embedded toy models: `python -m toyworld.train`)"
            if not is_model_source(p):
                return False, f"{p} is not a diffusion model (a diffusers folder or a .safetensors/.ckpt file)"
        return True, ""

    def model(self, role: str):
        with self._lock:
            if role not in self._models:
                from fusion.loading import load_model
                self._models[role] = load_model(Path(os.fspath(self._src[role])))
            return self._models[role]

    def models(self) -> tuple:
        """The loaded (general, expert) pair."""
        if self._load_pair is not None:
            return tuple(self._load_pair())
        return self.model("general"), self.model("expert")

    def controls(self) -> list[Control]:
        d = ExpertTransferSettings()
        return [
            Control("strength", "slider", "Style strength", d.strength, 0.1, 1.0, 0.05,
                    info="share of the schedule re-drawn by the expert: higher = more style, less content detail"),
            Control("preserve_color", "checkbox", "Preserve content colours", d.preserve_color,
                    info="the subject keeps the content's colour (off: it takes the style subject's colour)"),
            Control("lock", "checkbox", "Keep the content's silhouette", d.lock,
                    info="clear what the expert drew outside the content's subject, then let it re-draw the outline"),
            Control("lock_strength", "slider", "Silhouette re-draw strength", d.lock_strength, 0.0, 0.9, 0.05,
                    info="share of the schedule the expert re-draws after the silhouette lock (0 = none)"),
            Control("steps", "slider", "DDIM steps", d.steps, 5, 100, 1, info="full schedule length"),
            Control("general_weight", "slider", "General-model share", d.general_weight, 0.0, 1.0, 0.05,
                    info="blend of the general model's noise prediction into the expert's steps"),
            Control("prompt", "text", "Style prompt (optional)", d.prompt, info="e.g. 'a cartoon'"),
            Control("guidance", "slider", "Prompt guidance", d.guidance, 1.0, 10.0, 0.5, info="1 = none"),
            Control("resolution", "number", "Resolution (0 = model native)", d.resolution, 0, 2048, 16),
        ]

    def settings(self, **controls) -> ExpertTransferSettings:
        values = self.check_controls(controls)
        return ExpertTransferSettings(**{f.name: values[f.name] for f in fields(ExpertTransferSettings)
                                         if f.name in values}).validate()

    def stylize(self, content: Image.Image, style: Image.Image, cancel=None, callback=None, **controls) -> Image.Image:
        s = self.settings(**controls)  # bad values fail before any loading
        general, expert = self.models()
        out, self.last_stats = expert_transfer(general, expert, content, style, s, cancel=cancel, callback=callback)
        return out
