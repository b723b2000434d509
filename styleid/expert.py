"""Subject-keeping diffusion style transfer: invert with the general model, sample with a style expert.

StyleID (:mod:`styleid.injection`) inverts the content all the way to noise and rebuilds it under
injected style attention; on the toy models that loses the subject (bench/results/style_quality.md).
This engine keeps the subject by *not* going all the way:

1. encode content and style with the (shared) VAE;
2. DDIM-invert the content with the **general** model (which knows photos) over only the last
   ``strength`` fraction of the schedule (SDEdit, Meng et al., ICLR 2022: a partially noised
   image keeps its coarse layout: position, silhouette, size, and its colour);
3. optionally (``adain``) re-colour the partially inverted latent by AdaIN with the style
   latent's per-channel statistics (Huang & Belongie 2017), the way StyleID starts its sampling;
4. DDIM-sample the remaining steps with the **style expert** (on the toy world: the cartoon
   expert, a fine-tune of the general model on the style's domain), optionally with a prompt
   and classifier-free guidance, so the look (flat fill, outline, eyes, background) comes from
   the expert's learned style;
5. optionally (``lock``, default) keep the content's silhouette: everything outside the content's
   subject (grown by a pixel) becomes the output's own background colour, and the expert re-draws
   the last part of the schedule on that image so outline and fill follow the kept shape
   (mask-aware editing in the spirit of Blended Latent Diffusion, Avrahami et al. 2023, with the
   content's saturated subject as the mask);
6. give the output's subject the colour of the content's subject (``preserve_color``, default)
   or of the style's subject: region-wise colour transfer on the saturated pixels
   (:func:`styleid.colour.match_subject_colour`).

Both models must share the VAE latent space (a fine-tune of one base, as toy-general and
toy-cartoon, or SD 1.5 and its derivatives). Without an expert, the general model samples too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from PIL import Image

from fusion.ddim import ddim_step

from .attention import FeatureStore, installed, parse_layers, processor_names
from .colour import match_subject_colour
from .masks import MASK_REGIONS, lock_silhouette, subject_mask
from .denoise import check_cancelled, predict_eps, rss_peak_bytes, schedule
from .images import decode_latent, encode_image, grid_multiple, load_image, prepare_images
from .injection import InjectionSettings, InjectionStats, adain, invert, sample


@dataclass
class ExpertTransferSettings:
    """Settings of :func:`expert_transfer`, with the defaults measured best on the dev pairs.

    steps: DDIM steps of the full schedule (inversion and sampling use its last part). 20.
    strength: fraction of the schedule inverted and re-sampled, in (0, 1]; higher = more style,
        less of the content's detail. 0.6 (0.5 before the silhouette lock: without it 0.6 costs shape).
    general_share: fraction of the sampled steps (the noisiest ones) still denoised by the general
        model before the expert takes over (MagicFusion's observation: layout and colour are
        settled in the early steps, the look in the late ones). 0 = expert throughout.
    general_weight: in the expert's steps, blend the noise predictions as
        (1 - w) * expert + w * general (static noise blending; one more UNet call per step): the
        general model keeps what the expert never learnt (on the toy world: triangles). 0 = off.
    inject: StyleID attention injection in the expert's sampling (content queries mixed by
        ``gamma``, style keys/values, logits x ``temperature``), both recorded by inverting
        content and style with the expert over the same partial schedule (2 more UNet rows per
        inverted step). False.
    subject_weight: mask-aware noise blending: in the expert's steps, the general model's noise
        prediction gets this weight inside the content's subject (its saturated pixels on the
        latent grid, :func:`styleid.masks.subject_mask`), on top of ``general_weight``, so the
        silhouette follows the model that knows the content while the background and the look
        follow the expert (one more UNet call per step). 0 = off.
    subject_region: which part of the subject ``subject_weight`` covers: "fill" (the whole
        subject, soft at the border) or "edge" (a band of ``subject_band`` latent cells around
        the silhouette's border). "fill".
    subject_band: the edge band's half-width in latent cells (8 px each). 1.
    lock: silhouette lock: after sampling, everything more than ``lock_grow`` px outside the
        content's subject is set to the output's own background colour
        (:func:`styleid.masks.lock_silhouette`), then, with ``lock_strength`` > 0, the expert
        re-draws the last ``lock_strength`` of the schedule on that image (inverted with the
        expert) so outline and fill follow the kept silhouette. True (48 dev pairs: cartoon
        1.000, shape+size 0.979 with strength 0.6 and lock_strength 0.3; off, strength 0.5:
        0.875 / 0.750 on 16 of them).
    lock_grow: the margin (px) around the content's subject the lock keeps. 1.
    lock_strength: the re-drawing pass's share of the schedule, in [0, 1) (0 = none). 0.3.
    gamma, temperature: StyleID's query preservation and attention temperature (0.75, 1.5).
    preserve_color: the output's subject (its saturated pixels) gets the colour statistics of
        the content's subject (True, default; the expert may not know the content's colour) or
        of the style's subject (False) (:func:`match_subject_colour`).
    adain: also re-colour the partially inverted latent by AdaIN with the style latent's
        channel statistics, as StyleID starts its sampling. False (measured: it costs shape).
    prompt: text condition while sampling with the expert. "" (none).
    guidance: classifier-free guidance of the prompt (1 = none). 1.
    resolution: output side in pixels (0 = the model's native size), rounded to the model grid.
    """

    steps: int = 20
    strength: float = 0.6
    general_share: float = 0.0
    general_weight: float = 0.0
    subject_weight: float = 0.0
    subject_region: str = "fill"
    subject_band: int = 1
    lock: bool = True
    lock_grow: int = 1
    lock_strength: float = 0.3
    inject: bool = False
    gamma: float = 0.75
    temperature: float = 1.5
    preserve_color: bool = True
    adain: bool = False
    prompt: str = ""
    guidance: float = 1.0
    resolution: int = 0

    def validate(self) -> "ExpertTransferSettings":
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= 1000:
            raise ValueError(f"steps: got {self.steps!r}; accepted: an integer in [1, 1000]")
        if not isinstance(self.strength, (int, float)) or not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength: got {self.strength!r}; accepted: a number in (0, 1]")
        if not isinstance(self.general_share, (int, float)) or not 0.0 <= float(self.general_share) <= 1.0:
            raise ValueError(f"general_share: got {self.general_share!r}; accepted: a number in [0, 1]")
        if not isinstance(self.general_weight, (int, float)) or not 0.0 <= float(self.general_weight) <= 1.0:
            raise ValueError(f"general_weight: got {self.general_weight!r}; accepted: a number in [0, 1]")
        if not isinstance(self.subject_weight, (int, float)) or not 0.0 <= float(self.subject_weight) <= 1.0:
            raise ValueError(f"subject_weight: got {self.subject_weight!r}; accepted: a number in [0, 1]")
        if self.subject_region not in MASK_REGIONS:
            raise ValueError(f"subject_region: got {self.subject_region!r}; accepted: {', '.join(MASK_REGIONS)}")
        if not isinstance(self.subject_band, int) or not 1 <= self.subject_band <= 8:
            raise ValueError(f"subject_band: got {self.subject_band!r}; accepted: an integer in [1, 8]")
        if not isinstance(self.lock_grow, int) or not 0 <= self.lock_grow <= 16:
            raise ValueError(f"lock_grow: got {self.lock_grow!r}; accepted: an integer in [0, 16]")
        if not isinstance(self.lock_strength, (int, float)) or not 0.0 <= float(self.lock_strength) < 1.0:
            raise ValueError(f"lock_strength: got {self.lock_strength!r}; accepted: a number in [0, 1)")
        for name in ("preserve_color", "adain", "inject", "lock"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: got {getattr(self, name)!r}; accepted: True or False")
        if not isinstance(self.guidance, (int, float)) or not 0.0 <= float(self.guidance) <= 100.0:
            raise ValueError(f"guidance: got {self.guidance!r}; accepted: a number in [0, 100]")
        if not isinstance(self.resolution, int) or not 0 <= self.resolution <= 2048:
            raise ValueError(f"resolution: got {self.resolution!r}; accepted: an integer in [0, 2048]")
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt: got {type(self.prompt).__name__}; accepted: a string")
        return self

    def sampled_steps(self) -> int:
        return max(1, round(self.steps * float(self.strength)))


@torch.no_grad()
def expert_transfer(general, expert, content: Any, style: Any,
                    settings: Optional[ExpertTransferSettings] = None, cancel=None,
                    callback: Optional[Callable] = None) -> tuple[Image.Image, InjectionStats]:
    """Stylise ``content`` like ``style``: invert with ``general``, sample with ``expert``
    (``None``: the general model). Returns the image and its :class:`InjectionStats`."""
    s = (settings or ExpertTransferSettings()).validate()
    expert = expert if expert is not None else general
    c_img, s_img = load_image(content, "content"), load_image(style, "style")
    c_img, s_img = prepare_images(c_img, s_img, s.resolution or general.native_size, "crop",
                                  grid_multiple(general))
    t0 = time.perf_counter()
    timesteps, alphas = schedule(general, s.steps)
    part = list(timesteps)[-s.sampled_steps():]
    z0 = encode_image(general, [c_img, s_img])
    zt, _ = invert(general, z0[:1], part, alphas, cancel=cancel, callback=callback)
    if s.adain:
        zt = adain(zt, z0[1:])
    t1 = time.perf_counter()
    if s.inject:
        z, rows = _sample_injected(expert, zt, z0, part, alphas, s, cancel, callback)
    else:
        k = round(len(part) * float(s.general_share))
        weight = _general_weight_map(s, c_img, zt.shape[-2:], zt.device)
        z, rows = _sample_switching(general, expert, zt, part, k, alphas, s, cancel, callback, weight)
    [out] = decode_latent(expert, z)
    if s.lock:
        out, extra = _lock(general, expert, out, c_img, timesteps, alphas, s, cancel, callback)
        rows += extra
    out = match_subject_colour(out, c_img if s.preserve_color else s_img)
    t2 = time.perf_counter()
    stats = InjectionStats(size=c_img.size, layers=(), timesteps=len(part))
    stats.unet_rows = len(part) + rows
    stats.seconds, stats.seconds_inversion, stats.seconds_sampling = t2 - t0, t1 - t0, t2 - t1
    stats.rss_peak_bytes = rss_peak_bytes()
    return out, stats


def _lock(general, expert, out, c_img, timesteps, alphas, s: ExpertTransferSettings, cancel, callback):
    """The silhouette lock and its optional re-drawing pass (see ``ExpertTransferSettings.lock``).
    Returns (image, UNet rows used)."""
    out = lock_silhouette(out, c_img, s.lock_grow)
    n = round(len(timesteps) * float(s.lock_strength))
    if n < 1:
        return out, 0
    part = list(timesteps)[-n:]
    zt, _ = invert(expert, encode_image(expert, [out]), part, alphas, cancel=cancel, callback=callback)
    z, rows = _sample_switching(expert, expert, zt, part, 0, alphas, s, cancel, callback, 0.0)
    [redrawn] = decode_latent(expert, z)
    return redrawn, rows + n


def _general_weight_map(s: ExpertTransferSettings, content: Image.Image, size, device):
    """The general model's weight in the expert's steps: ``general_weight`` everywhere plus
    ``subject_weight`` on the content's subject mask (a float when there is no mask)."""
    w = float(s.general_weight)
    if float(s.subject_weight) > 0:
        m = subject_mask(content, tuple(size), s.subject_region, s.subject_band).to(device)
        return (w + float(s.subject_weight) * m).clamp(0.0, 1.0)
    return w


def _sample_switching(general, expert, x, timesteps, k, alphas, s: ExpertTransferSettings, cancel, callback,
                      weight=None):
    """DDIM over ``timesteps``: the first ``k`` steps with ``general``, the rest with ``expert``,
    with classifier-free guidance of ``s.prompt`` when ``s.guidance != 1``; in the expert's steps
    the general model's eps is blended in by ``weight`` (a scalar or a latent-grid map, see
    :func:`_general_weight_map`). Returns (z_0, rows)."""
    weight = float(s.general_weight) if weight is None else weight
    blend = weight > 0 if isinstance(weight, float) else bool(weight.max() > 0)
    guided = float(s.guidance) != 1.0
    rows, n = 0, len(timesteps)
    contexts = {}
    for i, t in enumerate(timesteps):
        check_cancelled(cancel)
        model = general if i < k else expert
        if id(model) not in contexts:
            cond = model.encode_prompts([s.prompt])
            contexts[id(model)] = torch.cat([model.encode_prompts([""]), cond]) if guided else cond
        ctx = contexts[id(model)]
        a_t = float(alphas[t])
        a_prev = float(alphas[timesteps[i + 1]]) if i + 1 < n else float(alphas[0])
        xin = torch.cat([x, x]) if guided else x
        e = predict_eps(model, alphas, xin, t, ctx)
        rows += xin.shape[0]
        if model is expert and expert is not general and blend:
            if id(general) not in contexts:
                cond = general.encode_prompts([s.prompt])
                contexts[id(general)] = torch.cat([general.encode_prompts([""]), cond]) if guided else cond
            e = (1 - weight) * e + weight * predict_eps(general, alphas, xin, t, contexts[id(general)])
            rows += xin.shape[0]
        eps = e[:1] + float(s.guidance) * (e[1:] - e[:1]) if guided else e
        x, _ = ddim_step(x, eps, a_t, a_prev)
        if callback is not None:
            callback("sample", i, n)
    return x, rows


def _sample_injected(expert, zt, z0, part, alphas, s: ExpertTransferSettings, cancel, callback):
    """Record content/style self-attention inputs by inverting both with ``expert`` over ``part``,
    then sample ``zt`` with StyleID injection from them (styleid.injection's machinery)."""
    names = processor_names(expert.unet, parse_layers("default", expert.unet))
    store = FeatureStore(frozenset(names), frozenset(int(t) for t in part))
    settings = InjectionSettings(steps=s.steps, gamma=float(s.gamma), temperature=float(s.temperature),
                                 prompt=s.prompt, guidance=float(s.guidance))
    with installed(expert.unet, names):
        invert(expert, z0, part, alphas, store=store, cancel=cancel, callback=callback)
        try:
            z, rows = sample(expert, zt, part, alphas, settings, store=store, cancel=cancel, callback=callback)
        finally:
            store.clear()
    return z, rows + 2 * len(part)
