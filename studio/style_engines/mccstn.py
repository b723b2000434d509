"""The MccSTN style engine for the app's style tab: the adapter of :class:`mccstn.MccSTN`
(implements :class:`studio.style_engines.base.StyleEngine`).

    engine = MccSTNEngine("models/mccstn")
    ok, why = engine.availability()          # (False, "put ... in models/mccstn") without weights
    img = engine.stylize(content_pil, style_pil, alpha=0.8, preserve_color=False, long_side=512)
    MccSTNEngine("models/mccstn", colour_mode="official")   # the reference preserve-colour recipe

Preserve colour has two labelled modes (:data:`COLOUR_MODES`), chosen when the engine is built:
``"subject"`` (the app's default) stylises without recolouring and then gives the output's
saturated subject the content subject's colour statistics (:func:`styleid.colour.match_subject_colour`),
so the style's cream background and outline stay; ``"official"`` is the reference MccSTN recipe
(:meth:`mccstn.MccSTN.stylize` with ``preserve_color=True``: the whole style image, background
included, is recoloured to the content's statistics first), bit-identical to calling the library.
bench/results/style_quality_mccstn.md measures both.

The network loads lazily on the first ``stylize`` call and is cached. Checking availability
only looks at file names; a file that turns out to be corrupt or mismatched is reported by
``stylize`` (a :class:`mccstn.checkpoint.CheckpointError` naming the file and key), after which
``availability()`` returns that error too, until the weight files change.

Importing this module imports neither torch nor gradio (the network loads on first use).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Optional, Union

from PIL import Image

from fusion.paths import MCCSTN_WEIGHTS_DIR

from .base import Control, StyleEngine

#: where the app looks when no folder is given; override with the MCCSTN_WEIGHTS variable
DEFAULT_WEIGHTS_DIR = "models/mccstn"
#: the shipped toy-world weights (assets/mccstn, exported by mccstn.train_export), used when
#: DEFAULT_WEIGHTS_DIR holds none
SHIPPED_WEIGHTS_DIR = MCCSTN_WEIGHTS_DIR
OFFICIAL_FILES = ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth")
SAFETENSORS_NAME = "mccstn.safetensors"
#: preserve-colour modes: name -> what it does (the first is the default)
COLOUR_MODES = {
    "subject": "recolour only the stylised subject (its saturated pixels) to the content subject's colours",
    "official": "the reference MccSTN recipe: recolour the whole style image to the content's colours first",
}
DEFAULT_COLOUR_MODE = "subject"


class MccSTNEngine(StyleEngine):
    """Feed-forward MccSTN style transfer (one network pass; see bench/results/mccstn_speed.md)."""

    name = "MccSTN"
    description = ("Feed-forward arbitrary style transfer (MccSTN: aesthetic attention at two "
                   "scales, fused and decoded); needs the four MccSTN/AesUST weight files.")

    def __init__(self, weights_dir: Union[str, os.PathLike, None] = None, device: Optional[str] = None,
                 colour_mode: str = DEFAULT_COLOUR_MODE) -> None:
        if colour_mode not in COLOUR_MODES:
            raise ValueError(f"{self.name}: colour_mode must be one of {sorted(COLOUR_MODES)}, got {colour_mode!r}")
        self.colour_mode = colour_mode
        self.weights_dir = Path(weights_dir or os.environ.get("MCCSTN_WEIGHTS") or _default_dir())
        self.device = device
        self._model = None
        self._load_error: Optional[str] = None
        self._error_stamp: tuple = ()
        self._lock = threading.Lock()

    @property
    def card(self) -> str:
        """What the engine is and where its weights came from (shown by the style tab)."""
        shipped = self.weights_dir.resolve() == SHIPPED_WEIGHTS_DIR.resolve()
        where = ("weights: trained from scratch in the toy world by this project (assets/mccstn/README.md: "
                 "toy renders only, not real photos)" if shipped else f"weights: {self.weights_dir}")
        mode = f"preserve colour: {self.colour_mode} mode ({COLOUR_MODES[self.colour_mode]})"
        return f"{self.description} {where}; {mode}."

    # -- StyleEngine -----------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        if self._load_error:
            if self._error_stamp == _stamp(self.weights_dir):
                return False, self._load_error
            self._load_error = None  # the files changed since: look at them again
        d = self.weights_dir
        if d.is_file() and d.suffix == ".safetensors":
            return True, ""
        if (d / SAFETENSORS_NAME).is_file():
            return True, ""
        present = [f for f in OFFICIAL_FILES if (d / f).is_file()]
        if len(present) == len(OFFICIAL_FILES):
            return True, ""
        missing = [f for f in OFFICIAL_FILES if f not in present]
        where = f"{d}/" if d.is_dir() else f"{d}/ (folder does not exist)"
        return False, (f"MccSTN weights not found: put {', '.join(OFFICIAL_FILES)} "
                       f"(or one {SAFETENSORS_NAME}) into {where}; missing: {', '.join(missing)}")

    def controls(self) -> list[Control]:
        return [
            Control("alpha", "slider", "Style strength", 1.0, minimum=0.0, maximum=1.0, step=0.05,
                    info="0 = content reconstruction, 1 = full style (blended in feature space)"),
            Control("preserve_color", "checkbox", "Preserve content colours", False,
                    info=COLOUR_MODES[self.colour_mode]),
            Control("long_side", "slider", "Resolution (long side, px)", 512, minimum=256,
                    maximum=1024, step=64, info="content and style are resized to this long side"),
        ]

    def stylize(self, content: Image.Image, style: Image.Image, cancel: Any = None, **controls: Any) -> Image.Image:
        """One network pass (not interruptible): ``cancel`` is checked once, before it."""
        opts = self.check_controls(controls)
        alpha = float(opts["alpha"])
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{self.name}: alpha must lie in [0,1], got {alpha}")
        long_side = int(opts["long_side"])
        if not 16 <= long_side <= 4096:
            raise ValueError(f"{self.name}: long_side must be between 16 and 4096, got {long_side}")
        for what, img in (("content", content), ("style", style)):
            if not isinstance(img, Image.Image):
                raise TypeError(f"{self.name}: {what} must be a PIL image, got {type(img).__name__}")
        model = self.model()
        from fusion.ddim import check_cancel
        check_cancel(cancel, "style transfer cancelled")
        preserve = bool(opts["preserve_color"])
        official = preserve and self.colour_mode == "official"
        out = model.stylize_image(content, style, alpha=alpha, preserve_color=official, long_side=long_side,
                                  small_images="upsample")
        if preserve and self.colour_mode == "subject":
            from styleid.colour import match_subject_colour
            out = match_subject_colour(out, content)
        return out

    # -- loading ---------------------------------------------------------------------------
    def model(self):
        """The loaded :class:`mccstn.MccSTN` (loads once; raises if weights are unavailable)."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                ok, why = self.availability()
                if not ok:
                    raise RuntimeError(why)
                from mccstn.checkpoint import CheckpointError
                from mccstn.stylize import MccSTN

                try:
                    self._model = MccSTN.from_pretrained(self.weights_dir, device=self.device)
                except CheckpointError as exc:
                    self._load_error = f"MccSTN weights in {self.weights_dir} are unusable: {exc}"
                    self._error_stamp = _stamp(self.weights_dir)
                    raise
        return self._model

    def unload(self) -> None:
        """Drop the cached network (frees memory; the next stylize reloads it)."""
        self._model = None
        self._load_error = None


def _stamp(folder: Path) -> tuple:
    """(name, size, mtime) of the weight files in ``folder`` (or of the file itself)."""
    paths = [folder] if folder.is_file() else [folder / n for n in (*OFFICIAL_FILES, SAFETENSORS_NAME)]
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _default_dir() -> Path:
    from mccstn.checkpoint import find_weights

    user = Path(DEFAULT_WEIGHTS_DIR)
    if find_weights(user)[0] is None and find_weights(SHIPPED_WEIGHTS_DIR)[0] is not None:
        return SHIPPED_WEIGHTS_DIR
    return user
