"""Fusion options beyond MagicFusion's SNB (issue 13), every one OFF by default.

With the defaults (:class:`BlendOptions` ``()``) nothing here runs: the sampler calls
:func:`fusion.snb.blend` exactly as before and outputs are bit-identical (tested).

Why they exist (diagnosis in ``bench/results/fusion_quality_options.md``): with the expert as
primary, SNB gives the general model the latent pixels where *its* guidance is strongest, which
are its photo features (highlights, drop shadow, the background gradient), not the object's
interior; the object's colour comes mostly from the expert, and after the switch the expert alone
repaints the colours it never saw (purple -> blue, green -> blue) and redraws triangles as the
shapes it knows.

Options (each a field of :class:`BlendOptions`, ``FusionSettings.blend``):

* ``general_window = (hi, lo)``: on the steps with ``lo < t <= hi`` the general model's guided
  noise alone drives the fused latent (a hand-off: the general model fixes the shape after the
  SNB phase, then the expert finishes the look). Overrides the mode on those steps.
* ``lowfreq_window = (hi, lo)`` with ``lowfreq_sigma``: on those steps the noise is the general
  model's low spatial frequencies plus the expert's high frequencies (a Gaussian split in latent
  space, sigma in latent pixels).
* ``late_general_weight = w``: on the steps the mode gives to the primary alone (outside the
  windows), ``w`` x the general model's guided noise + ``(1 - w)`` x the expert's.
* ``recolor``: after decoding, the fused image's subject gets the general image's subject colour
  (region-wise mean/std colour transfer, Reinhard et al. 2001, on the saturated pixels; the same
  rule as :func:`styleid.colour.match_subject_colour`, on tensors here, see
  :mod:`fusion.recolor`). The general image is produced for it when not requested.
* ``shape_lock`` (with ``shape_lock_grow`` and ``shape_lock_redraw``): after decoding, the fused
  image keeps the general image's silhouette: its pixels more than ``shape_lock_grow`` px outside
  the general image's subject become its background, then the expert re-draws the last
  ``shape_lock_redraw`` of the schedule on it (DDIM inversion and sampling with the empty prompt)
  so outline and fill follow that silhouette (:mod:`fusion.shape_lock`). Before ``recolor`` when
  both are on. The general image is produced for it when not requested.

The steps these options take over are reported through the same :class:`fusion.snb.SNBResult`
as SNB steps, with uniform saliency maps that give the mask "1 where the secondary's weight is the
larger" (all 1 or all 0 on a window step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

# torch (and fusion.snb) are imported where used: fusion.settings imports this module and stays torch-free

__all__ = ["BlendOptions", "as_blend_options", "blend_step", "gaussian_blur"]


def _window(name: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        hi, lo = (int(v) for v in value)
        ok = [float(v) for v in value] == [hi, lo] and 0 <= lo < hi <= 1000
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"blend.{name} must be two integer DDPM timesteps (hi, lo) with 0 <= lo < hi <= 1000, "
                         f"or None; got {value!r}")
    return hi, lo


@dataclass(frozen=True)
class BlendOptions:
    """Options beyond the paper; the defaults (all off) are the faithful SNB.

    general_window: (hi, lo) DDPM timesteps, or None (off): the general model alone for lo < t <= hi.
    lowfreq_window: (hi, lo), or None (off): general low frequencies + expert high frequencies.
    lowfreq_sigma: Gaussian sigma (latent pixels) of that split; default 1.0.
    late_general_weight: 0..1, default 0.0 (off): the general's share on the primary-alone steps.
    recolor: False (off): the fused subject gets the general image's subject colour after decoding.
    recolor_saturation: RGB max - min (0..1) above which a pixel counts as the subject; default
        70/255 (toy world: objects are saturated, backgrounds and outlines are not). The shape lock
        uses the same rule.
    shape_lock: False (off): the fused image keeps the general image's silhouette, re-drawn by the expert.
    shape_lock_grow: the margin (px) kept around the general image's subject; default 1.
    shape_lock_redraw: the share of the schedule the expert re-draws after the lock, in [0, 0.99]
        (0 = the lock alone); default 0.3 (dev seed: 0.2-0.4 alike, see fusion_quality_options.md).
    shape_lock_prompt: False: the re-draw is unconditional; True: conditioned on the expert's prompt
        with the request's guidance scale (one more UNet row per re-drawn step).
    """

    general_window: tuple[int, int] | None = None
    lowfreq_window: tuple[int, int] | None = None
    lowfreq_sigma: float = 1.0
    late_general_weight: float = 0.0
    recolor: bool = False
    recolor_saturation: float = 70 / 255
    shape_lock: bool = False
    shape_lock_grow: int = 1
    shape_lock_redraw: float = 0.3
    shape_lock_prompt: bool = False

    def __post_init__(self):
        object.__setattr__(self, "general_window", _window("general_window", self.general_window))
        object.__setattr__(self, "lowfreq_window", _window("lowfreq_window", self.lowfreq_window))
        for name, lo, hi, lo_open in (("lowfreq_sigma", 0.0, 8.0, True), ("late_general_weight", 0.0, 1.0, False),
                                      ("recolor_saturation", 0.0, 1.0, True), ("shape_lock_redraw", 0.0, 0.99, False)):
            v = getattr(self, name)
            try:
                v = float(v)
                ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi and not isinstance(
                    getattr(self, name), bool)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"blend.{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        for name in ("recolor", "shape_lock", "shape_lock_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"blend.{name} must be true or false, got {getattr(self, name)!r}")
        g = self.shape_lock_grow
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= 16:
            raise ValueError(f"blend.shape_lock_grow must be a whole number in [0, 16], got {g!r}")

    @property
    def sampling_active(self) -> bool:
        """Whether any option changes the sampling loop (recolor acts after decoding)."""
        return bool(self.general_window or self.lowfreq_window or self.late_general_weight > 0)

    @property
    def needs_general_image(self) -> bool:
        """Whether an option after decoding reads the general model's image (recolor, shape_lock)."""
        return self.recolor or self.shape_lock

    @property
    def active(self) -> bool:
        return self.sampling_active or self.needs_general_image

    def takes_over(self, t: int, snb_step: bool) -> str | None:
        """What replaces the mode's choice at DDPM timestep ``t``: "general", "lowfreq", "mix" or None."""
        for name, w in (("general", self.general_window), ("lowfreq", self.lowfreq_window)):
            if w is not None and w[1] < t <= w[0]:
                return name
        if not snb_step and self.late_general_weight > 0:
            return "mix"
        return None

    def as_dict(self) -> dict:
        """The non-default fields (what the prompt file stores)."""
        base = BlendOptions()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != getattr(base, f.name):
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def as_blend_options(value) -> BlendOptions:
    """A :class:`BlendOptions` from itself, None (the defaults) or a dict of its fields (the prompt file's
    ``"blend"``); unknown keys are a ValueError naming them."""
    if value is None:
        return BlendOptions()
    if isinstance(value, BlendOptions):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"blend must be a BlendOptions or a dict of its fields, got {type(value).__name__}")
    known = {f.name for f in fields(BlendOptions)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"blend: unknown option(s) {unknown}; accepted: {sorted(known)}")
    return BlendOptions(**value)


def gaussian_blur(x: "torch.Tensor", sigma: float) -> "torch.Tensor":
    """Separable Gaussian blur of (B, C, h, w) per channel, radius ceil(3 sigma) (at most the side - 1),
    reflected borders."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    r = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    k = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-k * k / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _uniform(like, secondary_weight: float):
    """Saliency maps for a step an option took over: uniform, so the derived mask is 1 (secondary)
    exactly where the secondary's weight is above one half."""
    import torch

    b, _, h, w = like.shape
    ones = torch.full((b, 1, h, w), 1.0 / (h * w), device=like.device, dtype=like.dtype)
    return ones * (1 - secondary_weight), ones * secondary_weight


def blend_step(eps_p_cond, eps_p_uncond, eps_s_cond, eps_s_uncond, guidance_scale: float, kg: float, ke: float,
               own_uncond: bool = False, *, t: int, snb_step: bool, options: BlendOptions | None = None,
               general_primary: bool = True) -> "snb.SNBResult":
    """One fused step: :func:`fusion.snb.blend` unless an option takes this step over."""
    from . import snb

    how = options.takes_over(int(t), snb_step) if options is not None else None
    if how is None:
        return snb.blend(eps_p_cond, eps_p_uncond, eps_s_cond, eps_s_uncond, guidance_scale, kg, ke, own_uncond)
    g_p = snb.guided(eps_p_uncond, eps_p_cond, guidance_scale)
    g_s = snb.guided(eps_s_uncond, eps_s_cond, guidance_scale)
    g_gen, g_exp = (g_p, g_s) if general_primary else (g_s, g_p)
    if how == "general":
        eps, w_gen = g_gen, 1.0
    elif how == "lowfreq":
        sigma = options.lowfreq_sigma
        eps, w_gen = gaussian_blur(g_gen, sigma) + g_exp - gaussian_blur(g_exp, sigma), 0.5
    else:
        w_gen = options.late_general_weight
        eps = w_gen * g_gen + (1 - w_gen) * g_exp
    sal_p, sal_s = _uniform(g_p, 1 - w_gen if general_primary else w_gen)
    return snb.SNBResult(eps=eps, saliency_p=sal_p, saliency_s=sal_s)


def with_general_image(settings):
    """``settings`` with the general trajectory added when an option after decoding needs its image
    (``blend.recolor``, ``blend.shape_lock``); else as is."""
    from dataclasses import replace

    b = settings.blend
    if b is None or not b.needs_general_image or "fused" not in settings.trajectories \
            or "general" in settings.trajectories:
        return settings
    return replace(settings, trajectories=tuple(settings.trajectories) + ("general",))


def finish_images(settings, images: dict, expert=None, prompt: str = "", cancel=None,
                  expert_denoiser=None) -> tuple[dict, int]:
    """After decoding: the shape lock and the expert's re-draw (``blend.shape_lock``; ``expert``: the
    expert's loaded model, ``prompt`` its prompt, ``expert_denoiser`` its side's denoiser as the
    sampler ran it), then the recolouring (``blend.recolor``); the general image dropped when it was
    produced only for them. Returns (images, the re-draw's UNet batch rows)."""
    b = settings.blend
    if b is None or not b.needs_general_image or "fused" not in images:
        return images, 0
    out, rows = dict(images), 0
    if b.shape_lock:
        from .shape_lock import lock_to_silhouette, redraw

        if expert is None:
            raise ValueError("blend.shape_lock needs the expert model for its re-draw")
        locked = lock_to_silhouette(out["fused"], images["general"], b.shape_lock_grow, b.recolor_saturation)
        out["fused"], rows = redraw(expert, locked, b.shape_lock_redraw, settings.steps,
                                    prompt if b.shape_lock_prompt else None, settings.guidance_scale, cancel,
                                    expert_denoiser)
    if b.recolor:
        from .recolor import recolor_subject

        out["fused"] = recolor_subject(out["fused"], images["general"], b.recolor_saturation)
    if "general" not in settings.trajectories:
        del out["general"]
    return out, rows


def parse_blend_text(text: str | None) -> dict | None:
    """The app's and the API's text form: "" (none: the faithful SNB) or a JSON object of
    :class:`BlendOptions` fields, e.g. ``{"general_window": [500, 400], "recolor": true}`` (at most
    200 characters, checked before parsing). Returns the dict (checked by :func:`as_blend_options`)."""
    import json

    from .textparse import check_length, quote

    text = check_length("" if text is None else str(text), "blend").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f'blend must be empty or a JSON object of options, e.g. {{"recolor": true}}; got {quote(text)}')
    as_blend_options(value)
    return value
