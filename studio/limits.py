"""What one request may ask of the app, checked on the server (the same for the API as for the page).

* Image sides: at most ``max_size_factor`` x the primary model's native size, and never more
  than ``max_side`` pixels unless the operator raises it (``--max-size-factor``, ``--max-side``).
  A model's config can only lower the limit: a ``sample_size`` of 4096 does not raise it.
* Numbers (steps, sizes, seeds): whole, finite numbers in range; NaN, infinities and fractions
  are refused by name, never truncated.
* Uploads: taken as file paths; the decoded size is read from the file header and checked
  against ``max_upload_megapixels`` (``--max-upload-mp``) before any pixel is decoded; a file
  that is not an image gets a message saying so.
* Model paths: at most ``max_path_chars`` characters, and never inside Gradio's upload/temp
  folder (an uploaded file is not a model the operator installed).

Importing this module imports neither torch nor gradio.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from fusion.textparse import quote

__all__ = ["Limits", "whole_number", "upload_dirs", "check_model_path", "open_upload"]


@dataclass(frozen=True)
class Limits:
    """max_size_factor: the largest side as a multiple of the primary's native size (2: a
    64-px model gives at most 128 px, SD 1.x at most 1024). max_side: the largest side in
    pixels whatever the model (1024). max_upload_megapixels: decoded pixels per uploaded
    image (16.8 MP: 4096 x 4096). max_path_chars: the longest model path accepted (1024)."""

    max_size_factor: float = 2.0
    max_side: int = 1024
    max_upload_megapixels: float = 16.8
    max_path_chars: int = 1024

    def __post_init__(self):
        for name in ("max_size_factor", "max_side", "max_upload_megapixels", "max_path_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")

    @classmethod
    def from_config(cls, config) -> "Limits":
        """From a :class:`studio.config.StudioConfig` (its fields of the same names)."""
        kw = {f: getattr(config, f) for f in ("max_size_factor", "max_side", "max_upload_megapixels")
              if getattr(config, f, None) is not None}
        return cls(**kw)

    def max_image_side(self, native: int, step: int = 8) -> int:
        """The largest side for a model of native size ``native`` (a multiple of ``step``)."""
        cap = min(int(self.max_size_factor * native), int(self.max_side))
        return max(step, cap // step * step)

    def size_range(self, geometry) -> tuple[int, int, int]:
        """(minimum, maximum, default) of the size sliders for a :class:`studio.models.Geometry`."""
        step = geometry.step
        top = min(geometry.maximum, self.max_image_side(geometry.native, step))
        low = min(geometry.minimum, max(step, top // 2 // step * step))
        low = low if low < top else max(0, top - step)  # a slider needs minimum < maximum
        return low, top, min(geometry.native, top)

    def check_side(self, label: str, value, geometry) -> int | None:
        """``value`` (None: the model's native size) as an int within the model's limit."""
        top = self.max_image_side(geometry.native, geometry.step)
        if value is None:
            side = geometry.native
        else:
            side = whole_number(value, label, 1, None)
        if side > top:
            raise ValueError(f"{label} {side} is above this app's limit of {top} px for this model (native "
                             f"{geometry.native} px; at most {self.max_size_factor:g}x native and {self.max_side} "
                             f"px: --max-size-factor, --max-side)")
        return None if value is None else side


def whole_number(value, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int: a whole, finite number (``3`` or ``3.0``) within ``minimum..maximum``;
    a ValueError naming ``field`` otherwise (NaN, infinities, fractions, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a whole number, got {quote(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field} must be a finite whole number, got {value}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{field} must be a whole number, got {value} (fractions are not rounded)")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else minimum
        hi = "" if maximum is None else maximum
        raise ValueError(f"{field} must be in {lo}..{hi}, got {quote(v)}")
    return v


def upload_dirs() -> list[Path]:
    """Where Gradio keeps uploads and its cache: ``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``."""
    dirs = [Path(tempfile.gettempdir()) / "gradio"]
    if os.environ.get("GRADIO_TEMP_DIR"):
        dirs.insert(0, Path(os.environ["GRADIO_TEMP_DIR"]))
    return [d.expanduser().resolve() for d in dirs]


def check_model_path(text: str, role: str, limits: Limits = Limits()) -> str:
    """``text`` when it may name a model; a ValueError when it is too long or points into the
    upload folder."""
    if len(text) > limits.max_path_chars:
        raise ValueError(f"{role} model: the path is {len(text)} characters, more than {limits.max_path_chars} "
                         f"({quote(text)})")
    try:
        p = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        raise ValueError(f"{role} model: cannot read the path {quote(text)}") from None
    for d in upload_dirs():
        if p == d or d in p.parents:
            raise ValueError(f"{role} model: {quote(text)} is in the upload folder; uploaded files are not "
                             f"loaded as models (put models in the models folder)")
    return text


def open_upload(path, field: str, limits: Limits = Limits()):
    """The uploaded image at ``path`` as an RGB PIL image, decoded only after its header says it
    has at most ``limits.max_upload_megapixels``; None stays None."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError
    if isinstance(path, Image.Image):  # Python callers may hand images directly
        img = path
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)  # reads the header only
        except Image.DecompressionBombError:
            raise ValueError(f"{field}: the image is larger than {limits.max_upload_megapixels:g} megapixels "
                             f"(--max-upload-mp)") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise ValueError(f"{field}: not an image file (use PNG, JPEG or WebP)") from None
    w, h = img.size
    if w * h > limits.max_upload_megapixels * 1e6:
        raise ValueError(f"{field}: {w}x{h} is {w * h / 1e6:.1f} megapixels, more than this app's "
                         f"{limits.max_upload_megapixels:g} (--max-upload-mp); scale it down first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            from studio.style_engines.inputs import to_rgb
            return to_rgb(img, field)  # 16-bit, transparency and CMYK handled
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{field}: the image file is damaged ({str(e)[:80]})") from None
