"""Training losses of MccSTN (stage I / stage II of AesUST plus the contrastive terms).

Definitions and default weights follow the public AesUST/MccSTN training code
(Wang et al., AesUST, ACM MM 2022) and SANet-style identity losses (Park & Lee, CVPR 2019):

* content: MSE between mvn(relu4_1) and mvn(relu5_1) of the output and of the content;
* style: MSE of channel means plus MSE of channel stds at relu1_1..relu5_1 (AdaIN);
* identity: ``I_cc = dec(fuse(c, c))``, ``I_ss = dec(fuse(s, s))``;
  ``pixel_factor * (MSE(I_cc, c) + MSE(I_ss, s)) + sum_l MSE(F_l(I_cc), F_l(c)) + MSE(F_l(I_ss), F_l(s))``
  with pixel_factor 50 (the outer identity weight, 50 by default, is applied by the trainer);
* adversarial: least-squares GAN on the multi-scale aesthetic discriminator;
* stage II (aesthetic): AR1 = the identity form applied to the stylised output and its
  self-reconstruction; AR2 = style loss between the aesthetic maps of output and style.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .network import channel_mean_std, mean_variance_norm


def content_loss(out_feats: Sequence[torch.Tensor], content_feats: Sequence[torch.Tensor],
                 layers: Sequence[int] = (3, 4)) -> torch.Tensor:
    """MSE of the normalised features (default relu4_1 and relu5_1)."""
    return sum(F.mse_loss(mean_variance_norm(out_feats[i]), mean_variance_norm(content_feats[i]))
               for i in layers)


def mean_std_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of channel means + MSE of channel stds of two feature maps."""
    am, astd = channel_mean_std(a)
    bm, bstd = channel_mean_std(b)
    return F.mse_loss(am, bm) + F.mse_loss(astd, bstd)


def style_loss(out_feats: Sequence[torch.Tensor], style_feats: Sequence[torch.Tensor],
               layers: Sequence[int] = (0, 1, 2, 3, 4)) -> torch.Tensor:
    """Mean/std matching summed over relu1_1..relu5_1."""
    return sum(mean_std_loss(out_feats[i], style_feats[i]) for i in layers)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor,
                        recon_feats: Sequence[torch.Tensor], target_feats: Sequence[torch.Tensor],
                        pixel_factor: float = 50.0) -> torch.Tensor:
    """``pixel_factor * MSE(recon, target) + sum_l MSE(feat_l(recon), feat_l(target))``."""
    feat = sum(F.mse_loss(r, t) for r, t in zip(recon_feats, target_feats))
    return pixel_factor * F.mse_loss(recon, target) + feat


def lsgan_loss(scores: Sequence[torch.Tensor], target: float) -> torch.Tensor:
    """Least-squares GAN loss summed over the discriminator's scales."""
    return sum(((s - target) ** 2).mean() for s in scores)
