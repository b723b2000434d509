"""Training-free, subject-preserving style transfer on a loaded diffusion model (StyleID).

Implements the recipe of StyleID (Chung et al., "Style Injection in Diffusion: A Training-free
Approach for Adapting Large-scale Diffusion Models for Style Transfer", CVPR 2024) from its
description, on any SD 1.x-family model :func:`fusion.loading.load_model` reads (the toy models
included):

1. Encode the content and the style image with the VAE (the posterior mode: deterministic).
2. Invert both with DDIM (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021) from
   the clean latent up to the noise level where sampling starts, with the empty prompt and no
   guidance, recording on the way, per step, the inputs of the chosen decoder self-attention
   layers (:class:`styleid.attention.FeatureStore`).
3. Start latent: AdaIN (Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive
   Instance Normalization", ICCV 2017) of the inverted content latent with the per-channel mean
   and standard deviation of the inverted style latent.
4. Sample with DDIM; in the chosen layers the keys and values are the style's recorded ones at
   the same step, the query is ``gamma q_content + (1 - gamma) q_current`` and the attention
   logits are multiplied by the temperature ``T`` (only there). Done with attention processors
   (:mod:`styleid.attention`) installed for the call and removed afterwards.

Memory: the store keeps one (2, tokens, channels) tensor per chosen layer and step (the
self-attention *input* of content and style; q, k, v are recomputed with the layer's
projections), in the model's dtype, on its device, and frees each step once sampling used it.
For SD 1.x at 512x512, 50 steps and the default layers that is 1.18 GB in fp16 for the pair
(the reference cached q, k, v of every layer on disk, >3 GB per image). ``store="recompute"``
keeps only the inverted latents (a few MB) and re-runs the content and style rows next to the
stylised one at every sampling step (3 UNet rows per step instead of 1).

Python API::

    from fusion.loading import load_model
    from styleid.injection import InjectionSettings, style_transfer
    model = load_model("assets/models/toy-general")                # or an SD 1.x folder / .safetensors
    out, stats = style_transfer(model, content_pil, style_pil, InjectionSettings(gamma=0.75, steps=50))

Images and latents (loading, sizing, VAE) are :mod:`styleid.images`. The style tab's adapter
(controls, lazy model loading) is :class:`studio.style_engines.injection.InjectionEngine`.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from fusion.ddim import ddim_inverse_step, ddim_step, previous_alpha
from fusion.paths import TOY_GENERAL

from .attention import (FeatureStore, InjectionCall, decoder_self_attention_layers,  # noqa: F401
                        estimate_store_bytes, installed, parse_layers, processor_names)
from .denoise import check_cancelled, predict_eps, rss_peak_bytes, schedule
from .images import (FITS, ImageLike, decode_latent, encode_image, grid_multiple, load_image,  # noqa: F401
                     prepare_images, target_size)

DEFAULT_MODEL = TOY_GENERAL
STORES = ("cache", "recompute")
MAX_RESOLUTION = 2048

__all__ = [
    "InjectionSettings", "InjectionStats", "style_transfer", "invert",
    "sample", "adain", "ddim_inverse_step", "encode_image", "decode_latent", "prepare_images",
    "load_image", "grid_multiple", "DEFAULT_MODEL",
]


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass
class InjectionSettings:
    """Controls of one style transfer, with the StyleID defaults.

    gamma: query preservation in [0, 1]; 1 keeps the content's queries, 0 the current ones.
        Higher keeps more of the content's layout. Default 0.75.
    temperature: attention temperature T > 0 multiplying the logits of the injected layers
        (sharper attention for T > 1). Default 1.5.
    steps: DDIM steps for inversion and sampling (one timestep grid for both). Default 50.
    layers: decoder positions to inject, LDM output-block numbering: "default" (every
        self-attention of the two finest resolutions that have one; SD 1.x: "6-11", the
        reference's), "all", "6-11", "6,8,10" or a sequence of ints.
    adain: start from AdaIN(content latent, style latent) after inversion. Default on.
    inject: swap keys/values and mix queries. Off gives plain DDIM sampling from the start
        latent (with adain off too: the inversion's reconstruction of the content). Default on.
    resolution: output size in pixels: the side of the square (fit "crop"/"stretch") or the
        shorter side (fit "aspect"); rounded down to the model's grid (VAE factor x UNet
        downsampling: 64 for SD 1.x, 16 for the toy models). 0 = the model's native size.
    fit: how the content image meets that size: "crop" (scale to cover, centre-crop; default),
        "stretch" (resize, aspect ratio not kept) or "aspect" (keep the content's aspect ratio;
        the long side is rounded to the grid and trimmed by centre-cropping at most a grid
        step). The style image is always scaled to cover the content's size and centre-cropped.
    prompt: text condition while sampling (inversion always uses the empty prompt). Default "".
    guidance: classifier-free guidance scale while sampling; 1 = none (default). With a prompt,
        e.g. "a cartoon", values of 2-5 push the output towards it.
    store: "cache" (record during inversion, default) or "recompute" (re-run content and style
        rows during sampling instead of storing features: little memory, ~1.7x the UNet work).
    """

    gamma: float = 0.75
    temperature: float = 1.5
    steps: int = 50
    layers: Any = "default"
    adain: bool = True
    inject: bool = True
    resolution: int = 0
    fit: str = "crop"
    prompt: str = ""
    guidance: float = 1.0
    store: str = "cache"

    def validate(self) -> "InjectionSettings":
        """Raise ValueError naming the field and the accepted values; return self."""
        def num(name, lo, hi, integer=False, lo_open=False):
            v = getattr(self, name)
            ok_type = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            if integer and ok_type and not float(v).is_integer():
                ok_type = False
            if not ok_type or v != v or (v <= lo if lo_open else v < lo) or v > hi:
                lo_s = f"> {lo}" if lo_open else f">= {lo}"
                kind = "an integer" if integer else "a number"
                raise ValueError(f"{name}: got {v!r}; accepted: {kind} {lo_s} and <= {hi}")
            setattr(self, name, int(v) if integer else float(v))

        num("gamma", 0.0, 1.0)
        num("temperature", 0.0, 100.0, lo_open=True)
        num("steps", 1, 1000, integer=True)
        num("resolution", 0, MAX_RESOLUTION, integer=True)
        num("guidance", 0.0, 100.0)
        for name in ("adain", "inject"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: got {getattr(self, name)!r}; accepted: True or False")
            setattr(self, name, bool(getattr(self, name)))
        if self.fit not in FITS:
            raise ValueError(f"fit: got {self.fit!r}; accepted: {', '.join(FITS)}")
        if self.store not in STORES:
            raise ValueError(f"store: got {self.store!r}; accepted: {', '.join(STORES)}")
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt: got {type(self.prompt).__name__}; accepted: a string")
        if not (self.layers is None or isinstance(self.layers, (str, int)) or
                (isinstance(self.layers, (list, tuple)) and all(isinstance(i, (int, np.integer)) for i in self.layers))):
            raise ValueError(f"layers: got {self.layers!r}; accepted: 'default', 'all', '6-11', '6,8' or a list of ints")
        return self


@dataclass
class InjectionStats:
    """What one transfer cost. ``store_peak_bytes``: the most the feature store held;
    ``cuda_peak_bytes``: torch's peak allocation on CUDA during the call (0 on CPU);
    ``rss_peak_bytes``: the process's peak resident memory so far (CPU; includes the model)."""

    seconds: float = 0.0
    seconds_inversion: float = 0.0
    seconds_sampling: float = 0.0
    unet_rows: int = 0
    store_peak_bytes: int = 0
    cuda_peak_bytes: int = 0
    rss_peak_bytes: int = 0
    size: tuple = (0, 0)
    layers: tuple = ()
    timesteps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the math
# ---------------------------------------------------------------------------------------------
def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN (Huang & Belongie 2017) of latents: content normalised per sample and channel over
    space, then given the style's per-channel mean and standard deviation."""
    dims = tuple(range(2, content.ndim))
    mc, sc = content.mean(dims, keepdim=True), content.std(dims, keepdim=True)
    ms, ss = style.mean(dims, keepdim=True), style.std(dims, keepdim=True)
    return (content - mc) / (sc + eps) * ss + ms


@torch.no_grad()
def invert(model, z0: torch.Tensor, timesteps: list[int], alphas: torch.Tensor,
           store: FeatureStore | None = None, keep_inputs: bool = False, cancel=None,
           callback: Callable | None = None):
    """DDIM-invert latents ``z0`` (N, C, h, w) with the empty prompt and no guidance, from the
    clean level (the sampler's final alpha, ``alphas[0]``) to ``timesteps[0]`` (the first
    sampling step). The step for timestep t evaluates the UNet at t on the latent one level
    below; that evaluation is what sampling's step t is matched with. With ``store`` (content
    and style as the two rows) the chosen layers' inputs are recorded there. Returns
    (z_T, {t: UNet input latent at t}) — the dict only with ``keep_inputs``."""
    empty = model.encode_prompts([""]).expand(z0.shape[0], -1, -1)
    x = z0.float()
    inputs = {}
    asc = list(timesteps)[::-1]
    for k, t in enumerate(asc):
        check_cancelled(cancel)
        a_from = float(alphas[0]) if k == 0 else float(alphas[asc[k - 1]])
        a_to = float(alphas[t])
        call = InjectionCall("record", int(t), store) if store is not None else None
        if keep_inputs:
            inputs[int(t)] = x
        eps = predict_eps(model, alphas, x, t, empty, call)
        x = ddim_inverse_step(x, eps, a_from, a_to)
        if callback is not None:
            callback("invert", k, len(asc))
    return x, inputs


@torch.no_grad()
def sample(model, x_T: torch.Tensor, timesteps: list[int], alphas: torch.Tensor, settings: InjectionSettings,
           store: FeatureStore | None = None, ref_inputs: dict | None = None, cancel=None,
           callback: Callable | None = None) -> tuple[torch.Tensor, int]:
    """DDIM sampling from ``x_T`` (1, C, h, w). With ``store`` the processors inject from it;
    with ``ref_inputs`` ({t: (2, C, h, w) content/style latents}) they inject live from those
    rows; with neither it is plain DDIM (the processors are not needed). Returns (z_0, rows)."""
    s = settings
    cond = model.encode_prompts([s.prompt])
    guided = s.guidance != 1.0
    ctx = torch.cat([model.encode_prompts([""]), cond]) if guided else cond
    empty = model.encode_prompts([""])
    x = x_T.float()
    rows = 0
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        check_cancelled(cancel)
        a_t, a_prev = float(alphas[t]), previous_alpha(alphas, timesteps, i)
        xb = torch.cat([x, x]) if guided else x
        if ref_inputs is not None:
            call = InjectionCall("inject", int(t), None, True, s.gamma, s.temperature)
            ref = ref_inputs[int(t)]
            e = predict_eps(model, alphas, torch.cat([ref, xb]), t, torch.cat([empty, empty, ctx]), call)[2:]
            rows += 2 + xb.shape[0]
        else:
            call = InjectionCall("inject", int(t), store, False, s.gamma, s.temperature) if store is not None else None
            e = predict_eps(model, alphas, xb, t, ctx, call)
            rows += xb.shape[0]
        eps = e[:1] + s.guidance * (e[1:] - e[:1]) if guided else e
        x, _ = ddim_step(x, eps, a_t, a_prev)
        if callback is not None:
            callback("sample", i, n)
    return x, rows


def style_transfer(model, content: ImageLike, style: ImageLike, settings: InjectionSettings | None = None,
                   cancel=None, callback: Callable | None = None) -> tuple[Image.Image, InjectionStats]:
    """Stylise ``content`` with ``style`` on a loaded :class:`fusion.loading.DiffusionModel`.
    Returns the output image (the prepared size, see :class:`InjectionSettings`) and its stats.
    ``callback(stage, i, n)`` is called after every UNet step; ``cancel`` is an Event-like
    object or a callable (raises :class:`fusion.ddim.Cancelled`)."""
    s = (settings or InjectionSettings()).validate()
    c_img, s_img = load_image(content, "content"), load_image(style, "style")
    layers = parse_layers(s.layers, model.unet)
    grid = grid_multiple(model)
    c_img, s_img = prepare_images(c_img, s_img, s.resolution or model.native_size, s.fit, grid)
    stats = InjectionStats(size=c_img.size, layers=layers, timesteps=s.steps)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(model.device)
    t0 = time.perf_counter()
    timesteps, alphas = schedule(model, s.steps)
    z0 = encode_image(model, [c_img, s_img])
    names = processor_names(model.unet, layers)
    use_cache = s.inject and s.store == "cache"
    store = FeatureStore(frozenset(names), frozenset(int(t) for t in timesteps)) if use_cache else None

    with installed(model.unet, names) if s.inject else nullcontext():
        zT, inputs = invert(model, z0, timesteps, alphas, store=store,
                            keep_inputs=s.inject and s.store == "recompute", cancel=cancel, callback=callback)
        stats.unet_rows += 2 * len(timesteps)
        t1 = time.perf_counter()
        x_T = adain(zT[:1], zT[1:]) if s.adain else zT[:1]
        try:
            z, rows = sample(model, x_T, timesteps, alphas, s, store=store,
                             ref_inputs=inputs if inputs else None, cancel=cancel, callback=callback)
        finally:
            if store is not None:
                stats.store_peak_bytes = store.peak_bytes
                store.clear()
    stats.unet_rows += rows
    [out] = decode_latent(model, z)
    t2 = time.perf_counter()
    if s.store == "recompute" and s.inject:
        stats.store_peak_bytes = sum(v.numel() * v.element_size() for v in inputs.values())
    stats.seconds, stats.seconds_inversion, stats.seconds_sampling = t2 - t0, t1 - t0, t2 - t1
    if cuda:
        stats.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(model.device))
    stats.rss_peak_bytes = rss_peak_bytes()
    return out, stats

