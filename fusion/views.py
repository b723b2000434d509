"""Pictures of what SNB did: saliency heat maps, mask overlays, the secondary-share plot.

Pure presentation (numpy + PIL, no models): the app and notebooks call these on the
:class:`SaliencyTrace` a :class:`fusion.pipeline.FusionResult` carries.

* :func:`jet` - a jet-like colour map (blue -> cyan -> yellow -> red) written with numpy.
* :func:`heatmap` - a (h, w) map upscaled to the image size and coloured.
* :func:`mask_overlay` - the fused image with the pixels taken from the secondary tinted.
* :class:`SaliencyTrace` - a request's captured SNB steps (the one saliency type from the
  sampler to the view; what a UI keeps to scrub through steps without re-running anything),
  with :meth:`SaliencyTrace.panels` giving the three pictures of one step.
* :func:`share_plot` - a small PNG-ready plot of the share of latent pixels taken from the
  secondary over the denoising steps, with the step being viewed marked.
"""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["jet", "normalise", "heatmap", "mask_image", "mask_overlay", "SaliencyTrace", "share_plot",
           "side_by_side"]

#: jet-like colour map anchor points (value, (r, g, b)) linearly interpolated
_JET = np.array([
    [0.00, 0.00, 0.00, 0.50],
    [0.11, 0.00, 0.00, 1.00],
    [0.35, 0.00, 0.85, 1.00],
    [0.50, 0.10, 1.00, 0.60],
    [0.65, 0.95, 1.00, 0.00],
    [0.89, 1.00, 0.10, 0.00],
    [1.00, 0.50, 0.00, 0.00],
], dtype=np.float64)

#: tint of the pixels taken from the secondary in :func:`mask_overlay` (magenta)
SECONDARY_TINT = (255, 0, 200)


def jet(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped; NaN -> 0) -> uint8 RGB, shape ``x.shape + (3,)``."""
    v = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0).clip(0.0, 1.0)
    rgb = np.stack([np.interp(v, _JET[:, 0], _JET[:, c]) for c in (1, 2, 3)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def normalise(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map [lo, hi] (default: the array's min and max) linearly to [0, 1]; a flat map -> zeros."""
    x = np.asarray(x, dtype=np.float64)
    lo = float(np.nanmin(x)) if lo is None else float(lo)
    hi = float(np.nanmax(x)) if hi is None else float(hi)
    if not np.isfinite(hi - lo) or hi - lo <= 1e-30:
        return np.zeros_like(x)
    return ((x - lo) / (hi - lo)).clip(0.0, 1.0)


def _as_2d(x) -> np.ndarray:
    """(h, w), (1, h, w) or (1, 1, h, w) tensor/array -> float (h, w) numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected one (h, w) map, got shape {np.asarray(x).shape}")
    return a


def _upscale(a: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """(h, w) float map -> (H, W) float map; ``size`` is (W, H) as PIL takes it."""
    if (a.shape[1], a.shape[0]) == tuple(size):
        return a
    im = Image.fromarray(a.astype(np.float32), mode="F")
    im = im.resize(size, Image.BILINEAR if smooth else Image.NEAREST)
    return np.asarray(im, dtype=np.float64)


def heatmap(x, size: tuple[int, int] | None = None, lo: float | None = None, hi: float | None = None,
            smooth: bool = True) -> Image.Image:
    """A saliency map (latent resolution) as a coloured RGB image of ``size`` = (W, H).

    ``lo``/``hi`` fix the colour scale (e.g. shared by the primary's and the secondary's maps
    of one step, so their colours compare); default: this map's own min and max.
    """
    a = _as_2d(x)
    size = size or (a.shape[1], a.shape[0])
    a = _upscale(normalise(a, lo, hi), size, smooth)
    return Image.fromarray(jet(a))


def mask_image(mask, size: tuple[int, int] | None = None) -> Image.Image:
    """The binary SNB mask (1 = secondary) as a black/white image upscaled without blur."""
    a = _as_2d(mask)
    size = size or (a.shape[1], a.shape[0])
    a = _upscale(a, size, smooth=False)
    return Image.fromarray(np.rint(a.clip(0, 1) * 255).astype(np.uint8), mode="L").convert("RGB")


def mask_overlay(image: Image.Image | None, mask, alpha: float = 0.55,
                 tint: tuple[int, int, int] = SECONDARY_TINT) -> Image.Image:
    """``image`` with the pixels the mask gives to the secondary tinted (``alpha`` opacity).

    Without an image, the mask on a mid-grey background."""
    a = _as_2d(mask)
    if image is None:
        image = Image.new("RGB", (a.shape[1], a.shape[0]), (96, 96, 96))
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    m = _upscale(a, (base.shape[1], base.shape[0]), smooth=False).clip(0, 1)[..., None]
    out = base * (1 - alpha * m) + np.asarray(tint, dtype=np.float64) * alpha * m
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))


def side_by_side(images: Sequence[Image.Image], gap: int = 4, background=(255, 255, 255)) -> Image.Image:
    """Images in one row (top-aligned), ``gap`` pixels apart."""
    images = [im.convert("RGB") for im in images]
    if not images:
        raise ValueError("side_by_side needs at least one image")
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    h = max(im.height for im in images)
    out = Image.new("RGB", (w, h), background)
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


class SaliencyTrace(list):
    """One request's captured SNB steps and how to show them: the one saliency type from the
    sampler to the view.

    A list of :class:`fusion.capture.SaliencyStep` (each holds what :func:`fusion.snb.blend`
    produced at that step, maps (n, 1, h, w), CPU), with what the view needs: ``total_steps``
    (steps of the whole run, for the plot's x axis), ``size`` ((W, H) of the images the maps are
    shown at), ``primary`` and ``sample`` (the sample the view shows). The view's arrays
    (``saliency_p``/``saliency_s``/``mask``: that sample's maps as (k, h, w) float32 numpy) are
    derived when first asked for; nothing is copied before.
    """

    def __init__(self, steps: Sequence = (), total_steps: int = 0, size: tuple[int, int] = (0, 0), sample: int = 0,
                 primary: str = "general"):
        super().__init__(steps)
        self.total_steps, self.size = int(total_steps), (int(size[0]), int(size[1]))
        self.sample, self.primary = int(sample), primary

    @classmethod
    def from_steps(cls, saliency: Sequence, total_steps: int, size: tuple[int, int], sample: int = 0,
                   primary: str = "general") -> "SaliencyTrace":
        """The same steps (no copy) viewed at ``size``, showing ``sample``."""
        return cls(saliency, total_steps, size, sample, primary)

    @property
    def steps(self) -> list[int]:
        """The denoising step index (0-based) of each captured step."""
        return [int(s.index) for s in self]

    @property
    def timesteps(self) -> list[int]:
        """The timestep of each captured step."""
        return [int(s.t) for s in self]

    def _maps(self, attr: str) -> np.ndarray:
        if not len(self):
            return np.zeros((0, 1, 1), dtype=np.float32)
        return np.stack([_as_2d(getattr(s, attr)[self.sample]) for s in self]).astype(np.float32)

    @cached_property
    def saliency_p(self) -> np.ndarray:
        return self._maps("saliency_p")

    @cached_property
    def saliency_s(self) -> np.ndarray:
        return self._maps("saliency_s")

    @cached_property
    def mask(self) -> np.ndarray:
        return self._maps("mask")

    @cached_property
    def secondary_share(self) -> np.ndarray:
        """Fraction of latent pixels taken from the secondary at each captured step (the steps'
        own :attr:`fusion.snb.SNBResult.secondary_share`, for the view's sample)."""
        return np.array([float(s.secondary_share[self.sample]) for s in self], dtype=np.float64)

    def _check(self, k: int) -> int:
        if not len(self):
            raise IndexError("no SNB step was captured (mode 0, or a schedule where SNB never runs)")
        if not -len(self) <= k < len(self):
            raise IndexError(f"captured step {k} out of range 0..{len(self) - 1}")
        return k % len(self)

    def panels(self, k: int, image: Image.Image | None = None, shared_scale: bool = True
               ) -> tuple[Image.Image, Image.Image, Image.Image]:
        """(primary heat map, secondary heat map, mask) of captured step ``k``.

        With ``shared_scale`` both heat maps use one colour scale (the step's min..max over
        both maps), so a pixel is redder in the map that wins it. With ``image`` (e.g. the
        fused result) the mask is drawn as an overlay on it; otherwise black/white.
        """
        k = self._check(k)
        p, s = self.saliency_p[k], self.saliency_s[k]
        lo = hi = None
        if shared_scale:
            lo, hi = float(min(p.min(), s.min())), float(max(p.max(), s.max()))
        hp = heatmap(p, self.size, lo, hi)
        hs = heatmap(s, self.size, lo, hi)
        if image is not None:
            m = mask_overlay(image.convert("RGB").resize(self.size), self.mask[k])
        else:
            m = mask_image(self.mask[k], self.size)
        return hp, hs, m

    def describe(self, k: int) -> str:
        k = self._check(k)
        return (f"step {self.steps[k] + 1}/{self.total_steps} (t={self.timesteps[k]}): "
                f"{100 * float(self.secondary_share[k]):.1f}% of latent pixels from the secondary")

    def plot(self, k: int | None = None, size: tuple[int, int] = (360, 150)) -> Image.Image:
        marker = self.steps[self._check(k)] if (k is not None and len(self)) else None
        return share_plot(self.steps, self.secondary_share, self.total_steps, marker=marker, size=size)


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def share_plot(steps: Sequence[int], share: Sequence[float], total_steps: int, marker: int | None = None,
               size: tuple[int, int] = (360, 150)) -> Image.Image:
    """Share of latent pixels from the secondary (y, 0..1) over the denoising steps (x).

    Only captured (SNB) steps have a point; steps without SNB take nothing from the
    secondary and are drawn as a grey baseline. ``marker``: the step index to mark.
    """
    W, H = size
    left, right, top, bottom = 34, 10, 10, 24
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    font = _font()
    pw, ph = W - left - right, H - top - bottom
    n = max(int(total_steps), 1)

    def x_of(i):
        return left + (pw * (i / (n - 1)) if n > 1 else pw / 2)

    def y_of(v):
        return top + ph * (1 - float(v))

    # axes and grid
    for v in (0.0, 0.5, 1.0):
        y = y_of(v)
        d.line([(left, y), (left + pw, y)], fill=(225, 225, 225) if v else (120, 120, 120))
        d.text((4, y - 6), f"{v:.1f}", fill=(80, 80, 80), font=font)
    d.line([(left, top), (left, top + ph)], fill=(120, 120, 120))
    d.text((left, H - 14), "step 1", fill=(80, 80, 80), font=font)
    d.text((left + pw - 40, H - 14), f"step {n}", fill=(80, 80, 80), font=font)
    d.text((left + pw / 2 - 60, H - 14), "share from secondary", fill=(40, 40, 40), font=font)
    steps = [int(s) for s in steps]
    share = [float(v) for v in share]
    # steps without SNB: a grey baseline
    captured = set(steps)
    for i in range(n):
        if i not in captured:
            x = x_of(i)
            d.line([(x, y_of(0) - 1), (x, y_of(0) + 1)], fill=(170, 170, 170))
    if marker is not None:
        x = x_of(int(marker))
        d.line([(x, top), (x, top + ph)], fill=(230, 60, 60), width=1)
    # captured steps: a line through consecutive steps, and dots
    pts = [(x_of(i), y_of(v)) for i, v in zip(steps, share)]
    for (a, b), (i0, i1) in zip(zip(pts, pts[1:]), zip(steps, steps[1:])):
        if i1 == i0 + 1:
            d.line([a, b], fill=(30, 90, 200), width=2)
    r = 2 if len(pts) > 60 else 3
    for (x, y) in pts:
        d.ellipse([x - r, y - r, x + r, y + r], fill=(30, 90, 200))
    if marker is not None and int(marker) in captured:
        j = steps.index(int(marker))
        x, y = pts[j]
        d.ellipse([x - 5, y - 5, x + 5, y + 5], outline=(230, 60, 60), width=2)
    if not steps:
        d.text((left + 8, top + ph / 2 - 6), "no SNB step in this run", fill=(150, 40, 40), font=font)
    return im
