"""The style tab's training-free engine: the adapter that puts :mod:`styleid.injection` (StyleID
attention injection on a diffusion model) behind :class:`studio.style_engines.base.StyleEngine`, with
its UI controls. The library itself exposes plain functions (``style_transfer``); this is the app's side.
"""
from __future__ import annotations

import os
import threading
from dataclasses import fields
from pathlib import Path

from PIL import Image

from fusion.loading import is_model_source, load_model
from styleid.images import FITS, ImageLike, load_image
from styleid.injection import DEFAULT_MODEL, MAX_RESOLUTION, STORES, InjectionSettings, InjectionStats, style_transfer

from .base import Control, StyleEngine

__all__ = ["InjectionEngine"]


class InjectionEngine(StyleEngine):
    """The style tab's out-of-the-box engine: StyleID attention injection on a diffusion model.

    ``model``: a diffusers folder or single SD 1.x checkpoint path (default: the embedded toy
    general model, ``assets/models/toy-general``), or an already loaded
    :class:`fusion.loading.DiffusionModel` (e.g. the fusion tab's: shared, not copied). The model
    is loaded on the first :meth:`stylize` and kept, unless ``loader`` is given: a callable
    ``path -> loaded model`` asked on every run, whose model is never held here (the app passes
    its warm model cache's ``get``, so the fusion tab and this engine share one copy and the
    cache may still evict it). ``last_stats`` holds the last call's :class:`InjectionStats`.
    """

    name = "injection"
    description = ("Training-free style transfer on a diffusion model: DDIM inversion and StyleID "
                   "attention injection (no trained style weights needed)")

    def __init__(self, model=None, device=None, dtype=None, loader=None):
        self._model = None
        self._loader = loader
        self._path: Path | None = None
        if model is None:
            self._path = DEFAULT_MODEL
        elif isinstance(model, (str, os.PathLike)):
            self._path = Path(model).expanduser()
        elif hasattr(model, "unet") and hasattr(model, "vae"):
            self._model = model
        else:
            raise ValueError(f"model: expected a model path or a loaded DiffusionModel, got {type(model).__name__}")
        self._device, self._dtype = device, dtype
        self._lock = threading.Lock()
        self.last_stats: InjectionStats | None = None

    @property
    def source(self) -> str:
        return str(self._path) if self._model is None else self._model.source

    def availability(self) -> tuple[bool, str]:
        if self._model is not None:
            return True, ""
        p = self._path
        if not p.exists():
            hint = (" (the embedded toy model: train it with `python -m toyworld.train`)"
                    if p.resolve() == DEFAULT_MODEL.resolve() else "")
            return False, f"diffusion model not found at {p}{hint}; or choose an SD 1.x model"
        if not is_model_source(p):
            return False, f"{p} is not a diffusion model (a diffusers folder or a .safetensors/.ckpt file)"
        return True, ""

    @property
    def model(self):
        """The loaded model (loads it on first use; with ``loader``: the loader's, every time)."""
        if self._model is None and self._loader is not None:
            ok, why = self.availability()
            if not ok:
                raise ValueError(why)
            return self._loader(self._path)
        with self._lock:
            if self._model is None:
                ok, why = self.availability()
                if not ok:
                    raise ValueError(why)
                self._model = load_model(self._path, device=self._device, dtype=self._dtype)
            return self._model

    def controls(self) -> list[Control]:
        d = InjectionSettings()
        return [
            Control("gamma", "slider", "Content query weight (gamma)", d.gamma, 0.0, 1.0, 0.05,
                    info="query preservation: 1 keeps the content's layout most, 0 least"),
            Control("temperature", "slider", "Attention temperature (T)", d.temperature, 0.5, 3.0, 0.1,
                    info="multiplies the injected attention logits; >1 sharpens"),
            Control("steps", "slider", "DDIM steps", d.steps, 5, 100, 1,
                    info="inversion and sampling steps (50 for SD; 20-50 for the toy models)"),
            Control("layers", "text", "Injected decoder layers", d.layers,
                    info="'default' (last two resolutions; SD 1.x: 6-11), 'all', or e.g. '6-11'"),
            Control("adain", "checkbox", "AdaIN start latent", d.adain,
                    info="start from the content latent with the style's channel statistics"),
            Control("inject", "checkbox", "Attention injection", d.inject,
                    info="off: plain DDIM reconstruction (with AdaIN: colour transfer only)"),
            Control("resolution", "number", "Resolution (0 = model native)", d.resolution, 0, MAX_RESOLUTION, 16,
                    info="output side in pixels, rounded down to the model grid"),
            Control("fit", "dropdown", "Fit content", d.fit, choices=FITS,
                    info="crop: cover and centre-crop to a square; stretch: squash; aspect: keep aspect ratio"),
            Control("prompt", "text", "Style prompt (optional)", d.prompt,
                    info="text condition while sampling, e.g. 'a cartoon'"),
            Control("guidance", "slider", "Prompt guidance", d.guidance, 1.0, 10.0, 0.5,
                    info="classifier-free guidance of the prompt; 1 = none"),
            Control("store", "dropdown", "Feature memory", d.store, choices=STORES,
                    info="cache: record during inversion; recompute: far less memory, ~1.7x slower"),
        ]

    def settings(self, **controls) -> InjectionSettings:
        values = self.check_controls(controls)
        return InjectionSettings(**{f.name: values[f.name] for f in fields(InjectionSettings)}).validate()

    def stylize(self, content: ImageLike, style: ImageLike, cancel=None, callback=None, **controls) -> Image.Image:
        s = self.settings(**controls)  # bad values fail here, before any loading
        c_img, s_img = load_image(content, "content"), load_image(style, "style")
        out, self.last_stats = style_transfer(self.model, c_img, s_img, s, cancel=cancel, callback=callback)
        return out
