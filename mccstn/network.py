"""The MccSTN inference network: encoder slices, aesthetic discriminator, attention units,
fusion module and decoder.

Architecture facts (layer sizes, paddings, pooling modes, normalisation epsilons, resize modes)
follow the public reference designs so that the published checkpoints give the same pixels:

* the "normalised VGG-19" encoder and the mirrored decoder of AdaIN
  (Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
  Normalization", ICCV 2017);
* the multi-scale aesthetic discriminator and the aesthetic-aware style attention of AesUST
  (Wang et al., "AesUST: Towards Aesthetic-Enhanced Universal Style Transfer", ACM MM 2022);
* MccSTN (Multi-scale Contrast and Fine-grained Feature Fusion Networks for Subject-driven
  Style Transfer), whose public inference code is the AesUST network; its "Mccformer" fusion
  module is the two-level attention fusion below.

Module and parameter names here are our own; :mod:`mccstn.checkpoint` maps the official
state-dict keys onto them. All images are float RGB in [0, 1]; the encoder's first 1x1 conv
does the colour normalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: channel width of the relu4_1 / relu5_1 features the fusion module works on
FEATURE_CHANNELS = 512
#: epsilon added to the unbiased variance in feature normalisation (reference value)
MVN_EPS = 1e-5


# ----------------------------------------------------------------------------------------------
# feature statistics
# ----------------------------------------------------------------------------------------------
def channel_mean_std(feat: torch.Tensor, eps: float = MVN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over the spatial positions of a (N,C,H,W) map.

    The std is ``sqrt(unbiased variance + eps)`` as in AdaIN's ``calc_mean_std``; both results
    have shape (N,C,1,1).
    """
    if feat.dim() != 4:
        raise ValueError(f"expected a (N,C,H,W) feature map, got shape {tuple(feat.shape)}")
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    var = flat.var(dim=2) + eps
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def mean_variance_norm(feat: torch.Tensor, eps: float = MVN_EPS) -> torch.Tensor:
    """Channel-wise normalisation to zero mean and unit (unbiased) std (the paper's ``mvn``)."""
    mean, std = channel_mean_std(feat, eps)
    return (feat - mean) / std


def _reflect_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution on a 1-pixel reflection-padded input (AdaIN-family convention)."""
    return conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))


# ----------------------------------------------------------------------------------------------
# encoder
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Widths:
    """Channel widths of the whole network (defaults: the published full-width layout).

    ``stages``: output channels of the encoder's five VGG stages (conv1_x .. conv5_x); the
    fusion module works at ``stages[3]`` channels (relu4_1), which must equal ``stages[4]``
    (the relu5_1 branch is added to it); the decoder mirrors stages 1-4. ``discriminator``: the
    four 4x4 convs of each branch; the last equals the fusion width (the aesthetic map enters
    the C->C channel-attention query). ``conv5_tail``: whether conv5_2..conv5_4 (part of the
    official file, never used) exist. A VGG-19-*shaped* narrow network (e.g. every width / 4)
    has the same layers, keys and pooling; :func:`widths_from_official` reads the widths from a
    checkpoint so a real full-width ``vgg_normalised.pth`` still loads unchanged.
    """

    stages: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
    discriminator: tuple[int, int, int, int] = (64, 128, 256, 512)
    conv5_tail: bool = True

    @classmethod
    def divided(cls, divisor: int, conv5_tail: bool = True) -> "Widths":
        """Every width of the full network divided by ``divisor`` (at least 1 channel)."""
        if divisor < 1:
            raise ValueError(f"width divisor must be >= 1, got {divisor}")
        full = cls()
        return cls(tuple(max(1, w // divisor) for w in full.stages),
                   tuple(max(1, w // divisor) for w in full.discriminator), conv5_tail)

    @property
    def channels(self) -> int:
        """Width of the relu4_1 / relu5_1 features the fusion module works on."""
        return self.stages[3]

    def check(self) -> None:
        if any(w < 1 for w in self.stages + self.discriminator):
            raise ValueError(f"widths must be >= 1: {self}")
        if self.stages[3] != self.stages[4]:
            raise ValueError(f"relu4_1 and relu5_1 widths must match, got {self.stages}")
        if self.discriminator[3] != self.stages[3]:
            raise ValueError(f"the discriminator's last width {self.discriminator[3]} must equal "
                             f"the fusion width {self.stages[3]}")


FULL_WIDTHS = Widths()

#: (our name, index in the official ``vgg_normalised.pth`` nn.Sequential, stage of its input
#: (0 = RGB), stage of its output, kernel)
_ENCODER_LAYOUT: tuple[tuple[str, int, int, int, int], ...] = (
    ("color", 0, 0, 0, 1),
    ("conv1_1", 2, 0, 1, 3),
    ("conv1_2", 5, 1, 1, 3),
    ("conv2_1", 9, 1, 2, 3),
    ("conv2_2", 12, 2, 2, 3),
    ("conv3_1", 16, 2, 3, 3),
    ("conv3_2", 19, 3, 3, 3),
    ("conv3_3", 22, 3, 3, 3),
    ("conv3_4", 25, 3, 3, 3),
    ("conv4_1", 29, 3, 4, 3),
    ("conv4_2", 32, 4, 4, 3),
    ("conv4_3", 35, 4, 4, 3),
    ("conv4_4", 38, 4, 4, 3),
    ("conv5_1", 42, 4, 5, 3),
    ("conv5_2", 45, 5, 5, 3),
    ("conv5_3", 48, 5, 5, 3),
    ("conv5_4", 51, 5, 5, 3),
)
#: conv5_2 .. conv5_4: in the official file, never used by MccSTN (features end at relu5_1)
UNUSED_ENCODER_CONVS = ("conv5_2", "conv5_3", "conv5_4")


def encoder_convs(widths: Widths = FULL_WIDTHS) -> tuple[tuple[str, int, int, int, int], ...]:
    """(our name, official index, in, out, kernel) of every encoder conv for ``widths``."""
    w = (3,) + tuple(widths.stages)
    return tuple((name, idx, w[a], w[b], k) for name, idx, a, b, k in _ENCODER_LAYOUT
                 if widths.conv5_tail or name not in UNUSED_ENCODER_CONVS)


#: the full-width layout of the official file: (our name, index, in, out, kernel)
ENCODER_CONVS = encoder_convs()

#: the five slices; "pool" is a 2x2 max-pool with ceil_mode. Each slice ends at reluN_1.
ENCODER_SLICES: tuple[tuple[str, ...], ...] = (
    ("color", "conv1_1"),                                        # -> relu1_1
    ("conv1_2", "pool", "conv2_1"),                              # -> relu2_1
    ("conv2_2", "pool", "conv3_1"),                              # -> relu3_1
    ("conv3_2", "conv3_3", "conv3_4", "pool", "conv4_1"),        # -> relu4_1
    ("conv4_2", "conv4_3", "conv4_4", "pool", "conv5_1"),        # -> relu5_1
)
FEATURE_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: feature widths of the full-width network (``Widths.stages`` in general)
FEATURE_WIDTHS = FULL_WIDTHS.stages

class Encoder(nn.Module):
    """Frozen normalised VGG-19, evaluated in five slices ending at relu1_1 ... relu5_1.

    ``color`` is the 1x1 colour conv (3->3, no activation) that maps [0,1] RGB to what the
    following convs expect; every 3x3 conv is reflection-padded and followed by ReLU; the
    max-pools use ``ceil_mode`` so an H x W image gives relu4_1 at ceil(H/8) x ceil(W/8).
    conv5_2 .. conv5_4 are part of the official file but never used (built only when
    ``widths.conv5_tail``, so that file loads strictly; shipped toy weights drop them).
    """

    def __init__(self, widths: Widths = FULL_WIDTHS) -> None:
        super().__init__()
        self.widths = widths
        self.convs = nn.ModuleDict(
            {name: nn.Conv2d(cin, cout, k) for name, _, cin, cout, k in encoder_convs(widths)})

    def forward(self, x: torch.Tensor, depth: int = 5) -> list[torch.Tensor]:
        """Features relu1_1 .. relu{depth}_1 of ``x`` (a list of ``depth`` tensors)."""
        feats = []
        for ops in ENCODER_SLICES[:depth]:
            for op in ops:
                if op == "pool":
                    x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
                elif op == "color":
                    x = self.convs[op](x)
                else:
                    x = F.relu(_reflect_conv(self.convs[op], x))
            feats.append(x)
        return feats


def encoder_size_problem(h: int, w: int) -> Optional[str]:
    """Why an h x w image cannot go through the encoder, or None if it can.

    Reflection padding needs every padded map to be at least 2 px on each side; the deepest
    padded map is conv5_1's input at ceil(side/16), so both sides must be at least 17 px.
    """
    if h < 1 or w < 1:
        return f"image is {w}x{h}"
    if math.ceil(h / 16) < 2 or math.ceil(w / 16) < 2:
        return f"image is {w}x{h}; the encoder needs both sides to be at least 17 px"
    return None


# ----------------------------------------------------------------------------------------------
# aesthetic discriminator
# ----------------------------------------------------------------------------------------------
class _DiscriminatorBranch(nn.Module):
    """Four 4x4 stride-2 convs (3->64->128->256->512); instance norm on all but the first."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        widths = (in_channels,) + tuple(widths)
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i > 0:
                x = F.instance_norm(x, eps=1e-5)
            x = F.leaky_relu(x, 0.2)
        return x


class AestheticDiscriminator(nn.Module):
    """Multi-scale aesthetic discriminator (AesUST).

    Three branches see the image at full, 1/2 and 1/4 resolution (3x3 average pooling, stride 2,
    padding 1 not counted in the mean). ``forward`` returns the aesthetic feature map (scale-1
    features plus the other two nearest-upsampled to its size; 512 ch at about H/16) and the
    three score maps (LSGAN targets 1 for real art, 0 for generated images).
    """

    num_scales = 3

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_DiscriminatorBranch(in_channels, widths)
                                      for _ in range(self.num_scales))
        self.heads = nn.ModuleList(nn.Conv2d(widths[-1], 1, 3, padding=1) for _ in range(self.num_scales))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats, scores = [], []
        for i, (branch, head) in enumerate(zip(self.branches, self.heads)):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            f = branch(x)
            feats.append(f)
            scores.append(head(f))
        size = feats[0].shape[-2:]
        feat = feats[0]
        for f in feats[1:]:
            feat = feat + F.interpolate(f, size=size, mode="nearest")
        return feat, scores

    def lsgan_loss(self, x: torch.Tensor, target: float) -> torch.Tensor:
        """Sum over the scales of mean((score - target)^2) (least-squares GAN)."""
        _, scores = self.forward(x)
        return sum(((s - target) ** 2).mean() for s in scores)


def discriminator_size_problem(h: int, w: int) -> Optional[str]:
    """Why an h x w image cannot go through the aesthetic discriminator, or None if it can.

    Simulates the three branches exactly: every 4x4/2 conv needs an input of at least 2 px, and
    instance norm needs more than one position after convs 2-4 at every scale. In practice
    this means a short side of at least 61 px and a long side of at least 125 px.
    """
    if h < 1 or w < 1:
        return f"image is {w}x{h}"
    sh, sw = h, w
    for scale in range(AestheticDiscriminator.num_scales):
        if scale > 0:  # avg-pool 3x3 / stride 2 / pad 1
            sh, sw = (sh - 1) // 2 + 1, (sw - 1) // 2 + 1
        bh, bw = sh, sw
        for i in range(4):
            if bh < 2 or bw < 2:
                return (f"image is {w}x{h}; the aesthetic discriminator needs a short side of at "
                        f"least 61 px and a long side of at least 125 px")
            bh, bw = bh // 2, bw // 2
            if i > 0 and bh * bw < 2:
                return (f"image is {w}x{h}; the aesthetic discriminator needs a short side of at "
                        f"least 61 px and a long side of at least 125 px")
    return None


# ----------------------------------------------------------------------------------------------
# aesthetic-aware attention and the fusion module
# ----------------------------------------------------------------------------------------------
#: rows of the spatial attention computed at once when the full map would exceed this many
#: elements (exact: the softmax runs over style positions, independent per content position)
ATTENTION_CHUNK_ELEMENTS = 1 << 26


class AestheticAttention(nn.Module):
    """Aesthetic-aware style attention (the fine-grained fusion unit; AesUST's AesSA).

    For content features Fc, style features Fs and an aesthetic map A of Fs's size:

    1. channel attention ``AS = softmax_lastdim(q(A) k(Fs)^T)`` (C x C);
    2. aesthetic style feature ``S' = out1(AS v(Fs)) + Fs``;
    3. spatial attention ``P = softmax over style positions of q2(mvn Fc)^T k2(mvn S')``;
    4. ``out2(v2(S') P^T) + Fc``.

    Without an aesthetic map (training stage 1) step 1 uses Fs in place of A.
    """

    def __init__(self, channels: int = FEATURE_CHANNELS) -> None:
        super().__init__()

        def proj() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, 1)

        self.chan_query, self.chan_key, self.chan_value, self.chan_out = proj(), proj(), proj(), proj()
        self.spat_query, self.spat_key, self.spat_value, self.spat_out = proj(), proj(), proj(), proj()

    def forward(self, content: torch.Tensor, style: torch.Tensor,
                aesthetic: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, c, hs, ws = style.shape
        guide = style if aesthetic is None else aesthetic
        if guide.shape[-2:] != style.shape[-2:]:
            raise ValueError(f"aesthetic map {tuple(guide.shape)} must match the style features "
                             f"{tuple(style.shape)} spatially")
        # 1-2: aesthetic channel attention over the style features
        q = self.chan_query(guide).flatten(2)                        # N, C, Ns
        k = self.chan_key(style).flatten(2)                          # N, C, Ns
        chan_att = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)   # N, C, C
        v = self.chan_value(style).flatten(2)                        # N, C, Ns
        aes_style = self.chan_out(torch.bmm(chan_att, v).view(n, c, hs, ws)) + style
        # 3-4: spatial attention from content positions to style positions
        hc, wc = content.shape[-2:]
        q2 = self.spat_query(mean_variance_norm(content)).flatten(2).transpose(1, 2)  # N, Nc, C
        k2 = self.spat_key(mean_variance_norm(aes_style)).flatten(2)                  # N, C, Ns
        v2 = self.spat_value(aes_style).flatten(2)                                    # N, C, Ns
        nc, ns = q2.shape[1], k2.shape[2]
        if nc * ns <= ATTENTION_CHUNK_ELEMENTS:
            att = torch.softmax(torch.bmm(q2, k2), dim=-1)           # N, Nc, Ns
            out = torch.bmm(v2, att.transpose(1, 2))                 # N, C, Nc
        else:
            rows = max(1, ATTENTION_CHUNK_ELEMENTS // ns)
            parts = []
            for start in range(0, nc, rows):
                att = torch.softmax(torch.bmm(q2[:, start:start + rows], k2), dim=-1)
                parts.append(torch.bmm(v2, att.transpose(1, 2)))
            out = torch.cat(parts, dim=2)
        return self.spat_out(out.view(n, c, hc, wc)) + content


class StyleFusion(nn.Module):
    """The fusion module (MccSTN's "Mccformer", AesUST's transform).

    One attention unit at relu4_1 and one at relu5_1; the relu5_1 result is nearest-upsampled
    to relu4_1 size and added; a reflection-padded 3x3 conv merges them. The aesthetic map
    (if any) is nearest-resized to each level's style feature size first.
    """

    def __init__(self, channels: int = FEATURE_CHANNELS) -> None:
        super().__init__()
        self.unit4 = AestheticAttention(channels)
        self.unit5 = AestheticAttention(channels)
        self.merge = nn.Conv2d(channels, channels, 3)

    def forward(self, content4: torch.Tensor, style4: torch.Tensor, content5: torch.Tensor,
                style5: torch.Tensor, aesthetic: Optional[torch.Tensor] = None) -> torch.Tensor:
        a4 = a5 = None
        if aesthetic is not None:
            a4 = F.interpolate(aesthetic, size=style4.shape[-2:], mode="nearest")
            a5 = F.interpolate(aesthetic, size=style5.shape[-2:], mode="nearest")
        o4 = self.unit4(content4, style4, a4)
        o5 = self.unit5(content5, style5, a5)
        merged = o4 + F.interpolate(o5, size=content4.shape[-2:], mode="nearest")
        return _reflect_conv(self.merge, merged)


# ----------------------------------------------------------------------------------------------
# decoder
# ----------------------------------------------------------------------------------------------
#: (index in the official ``decoder.pth`` nn.Sequential, encoder stage of its input, of its
#: output (0 = RGB), upsample x2 after this conv)
_DECODER_LAYOUT: tuple[tuple[int, int, int, bool], ...] = (
    (1, 4, 3, True),
    (5, 3, 3, False),
    (8, 3, 3, False),
    (11, 3, 3, False),
    (14, 3, 2, True),
    (18, 2, 2, False),
    (21, 2, 1, True),
    (25, 1, 1, False),
    (28, 1, 0, False),
)


def decoder_convs(widths: Widths = FULL_WIDTHS) -> tuple[tuple[int, int, int, bool], ...]:
    """(official index, in, out, upsample) of every decoder conv; widths mirror the encoder."""
    w = (3,) + tuple(widths.stages)
    return tuple((idx, w[a], w[b], up) for idx, a, b, up in _DECODER_LAYOUT)


#: the full-width layout of the official file
DECODER_CONVS = decoder_convs()


class Decoder(nn.Module):
    """AdaIN's mirrored VGG decoder from relu4_1 (512 ch, H/8) to RGB.

    Reflection-padded 3x3 convs with ReLU, three nearest x2 upsamplings, no output activation
    (the result is clamped to [0, 1] only when converted to an image).
    """

    def __init__(self, widths: Widths = FULL_WIDTHS) -> None:
        super().__init__()
        self.layout = decoder_convs(widths)
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3) for _, cin, cout, _ in self.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, (conv, (_, _, _, up)) in enumerate(zip(self.convs, self.layout)):
            x = _reflect_conv(conv, x)
            if i < last:
                x = F.relu(x)
            if up:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x


def build_components(widths: Widths = FULL_WIDTHS) -> dict[str, nn.Module]:
    """Fresh, randomly initialised encoder / discriminator / fusion / decoder modules."""
    widths.check()
    return {"encoder": Encoder(widths), "discriminator": AestheticDiscriminator(widths=widths.discriminator),
            "fusion": StyleFusion(widths.channels), "decoder": Decoder(widths)}


def count_parameters(modules: Sequence[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
