"""Saliency-aware Noise Blending (SNB), the core of MagicFusion.

Implements the per-step blending of MagicFusion (Zhao et al., "MagicFusion: Boosting
Text-to-Image Generation Performance by Fusing Diffusion Models", ICCV 2023, Sec. 3.2,
Eq. 4-6): each model's classifier-free-guidance term is turned into a saliency map, the
maps are sharpened by a spatial softmax (factors ``kg`` for the primary, ``ke`` for the
secondary), and every latent pixel takes the guided noise of the model that is more
salient there. The exact recipe (smoothing, channel mean, tie rule, whose uncond is
subtracted) follows the reference implementation as written down in the project spec.

Pure tensor math: no models, no state, any latent size.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

__all__ = ["SNBResult", "guided", "smooth", "raw_saliency", "spatial_softmax", "take_secondary", "secondary_mask",
           "secondary_share", "blend"]


@dataclass(frozen=True, eq=False)
class SNBResult:
    """What one SNB step produced; also the record the saliency trace keeps of it
    (:mod:`fusion.capture`), so the maps go from the blend to the view as one type.

    eps:         blended guided noise (B, C, h, w); None in a trace (the view does not show it)
    saliency_p:  (B, 1, h, w) primary saliency after the spatial softmax (sums to 1 per sample)
    saliency_s:  (B, 1, h, w) secondary saliency after the spatial softmax
    raw_p:       (B, 1, h, w) primary saliency before the softmax (smoothed, channel mean);
                 None in a trace captured without "full"
    raw_s:       (B, 1, h, w) secondary saliency before the softmax (likewise)

    ``mask`` and ``secondary_share`` are derived from the two saliency maps when first read
    (:func:`secondary_mask`, :func:`secondary_share`) and then kept. Compared by identity.
    """

    eps: torch.Tensor | None
    saliency_p: torch.Tensor
    saliency_s: torch.Tensor
    raw_p: torch.Tensor | None = None
    raw_s: torch.Tensor | None = None

    @cached_property
    def mask(self) -> torch.Tensor:
        """(B, 1, h, w) float, 1 where the secondary's noise was taken (the spec's step 7)."""
        return secondary_mask(self.saliency_p, self.saliency_s)

    @cached_property
    def secondary_share(self) -> torch.Tensor:
        """Fraction of latent pixels taken from the secondary, one value per sample."""
        return secondary_share(self.mask)


def guided(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): u + s (c - u)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 4x4 mean filter (stride 1, zero padding 1, padded zeros counted),
    giving (h-1) x (w-1), then a bilinear resize back to h x w (align_corners=False)."""
    h, w = x.shape[-2:]
    pooled = F.avg_pool2d(x, kernel_size=4, stride=1, padding=1, count_include_pad=True)
    return F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)


def raw_saliency(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """|s (c - u)|, smoothed per channel, then averaged over channels -> (B, 1, h, w)."""
    r = (guidance_scale * (eps_cond - eps_uncond)).abs()
    return smooth(r).mean(dim=1, keepdim=True)


def spatial_softmax(x: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Softmax of ``sharpness * x`` over all h*w positions of each sample."""
    b, c, h, w = x.shape
    return torch.softmax(sharpness * x.reshape(b, c, h * w), dim=-1).reshape(b, c, h, w)


def take_secondary(saliency_p: torch.Tensor, saliency_s: torch.Tensor) -> torch.Tensor:
    """The hard mask (the spec's step 7) as booleans: True where Λ'_s > Λ'_p strictly (ties go to the primary)."""
    return saliency_s > saliency_p


def secondary_mask(saliency_p: torch.Tensor, saliency_s: torch.Tensor) -> torch.Tensor:
    """The hard mask M (the spec's step 7) in the maps' dtype: 1 where the secondary's noise is taken."""
    return take_secondary(saliency_p, saliency_s).to(saliency_p.dtype)


def secondary_share(mask: torch.Tensor) -> torch.Tensor:
    """Share of latent pixels taken from the secondary: the mean of M over h*w, per sample
    (float32 whatever the mask's dtype: a float16 mean would round the share)."""
    return mask.flatten(1).float().mean(dim=1)


def blend(
    eps_p_cond: torch.Tensor,
    eps_p_uncond: torch.Tensor,
    eps_s_cond: torch.Tensor,
    eps_s_uncond: torch.Tensor,
    guidance_scale: float,
    kg: float,
    ke: float,
    own_uncond: bool = False,
) -> SNBResult:
    """One SNB step (MagicFusion Eq. 4-6).

    The primary (p) and secondary (s) noise predictions are for the same latent x_t and t.
    By default both raw saliency maps subtract the *primary's* unconditional noise, as the
    reference does; ``own_uncond=True`` uses each model's own unconditional noise instead.
    Ties (equal post-softmax saliency) go to the primary.
    """
    if kg <= 0 or ke <= 0:
        raise ValueError(f"kg and ke must be > 0 (got kg={kg}, ke={ke})")
    shapes = {tuple(t.shape) for t in (eps_p_cond, eps_p_uncond, eps_s_cond, eps_s_uncond)}
    if len(shapes) != 1:
        raise ValueError(f"SNB needs four noise tensors of one shape, got {sorted(shapes)}")
    if eps_p_cond.dim() != 4:
        raise ValueError(f"SNB expects (B, C, h, w) tensors, got {eps_p_cond.dim()} dims")

    g_p = guided(eps_p_uncond, eps_p_cond, guidance_scale)
    g_s = guided(eps_s_uncond, eps_s_cond, guidance_scale)
    raw_p = raw_saliency(eps_p_cond, eps_p_uncond, guidance_scale)
    raw_s = raw_saliency(eps_s_cond, eps_s_uncond if own_uncond else eps_p_uncond, guidance_scale)
    sal_p = spatial_softmax(raw_p, kg)
    sal_s = spatial_softmax(raw_s, ke)
    eps = torch.where(take_secondary(sal_p, sal_s), g_s, g_p)  # (B,1,h,w) broadcasts over the latent channels
    return SNBResult(eps=eps, saliency_p=sal_p, saliency_s=sal_s, raw_p=raw_p, raw_s=raw_s)
