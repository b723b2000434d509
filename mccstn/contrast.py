"""The multi-scale contrastive module (training only).

After CAST (Zhang et al., "Domain Enhanced Arbitrary Image Style Transfer via Contrastive
Learning", SIGGRAPH 2022), whose multi-layer style projector and InfoNCE-with-queue recipe the
MccSTN code reuses: for several encoder layers, a style code is built from global average and
global max pooling (concatenated, 2C), a 1x1 conv back to C with ReLU, and an MLP
(C -> hidden -> hidden2 -> dim) whose output is L2-normalised. Two random-resized crops
(scale 0.8-1.0, aspect 3/4-4/3) of one style image are a positive pair; a per-layer queue of
codes from earlier style images supplies the negatives; InfoNCE uses temperature 0.07.

Differences from the public code, on purpose (see docs/mccstn.md):

* the projector reads the frozen encoder's relu1_1..relu4_1 features (CAST trains a separate
  batch-norm VGG whose weights are not distributed);
* the generator-side term (a crop of the stylised output as query, a crop of its own style
  image as positive key) is computed with gradients flowing into the generator — the public
  MccSTN code only feeds a detached output to the projector's own loss, so it never shapes
  the generator;
* codes are enqueued after both losses of an iteration are computed, so a positive is never
  also among its own negatives; a batch that does not divide the queue wraps around.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .network import FEATURE_WIDTHS


class StyleProjector(nn.Module):
    """Per-layer style codes -> unit vectors (one head per selected encoder layer)."""

    def __init__(self, layers: Sequence[int] = (0, 1, 2, 3), hidden: int = 1024,
                 hidden2: int = 2048, dim: int = 2048,
                 widths: Sequence[int] = FEATURE_WIDTHS) -> None:
        """``widths``: channels of relu1_1..relu5_1 (the encoder's ``Widths.stages``)."""
        super().__init__()
        self.layers = tuple(int(i) for i in layers)
        if not self.layers or any(i < 0 or i >= len(widths) for i in self.layers):
            raise ValueError(f"layers must be indices into relu1_1..relu5_1 (0-4), got {layers}")
        self.dim = dim
        self.squeeze = nn.ModuleList(
            nn.Conv2d(2 * widths[i], widths[i], 1) for i in self.layers)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(widths[i], hidden), nn.ReLU(True),
                          nn.Linear(hidden, hidden2), nn.ReLU(True), nn.Linear(hidden2, dim))
            for i in self.layers)
        for m in self.modules():  # CAST's init_net('normal', 0.02)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``feats``: the encoder's relu1_1.. list; returns one (N, dim) unit vector per layer."""
        codes = []
        for j, i in enumerate(self.layers):
            f = feats[i]
            pooled = torch.cat([F.adaptive_avg_pool2d(f, 1), F.adaptive_max_pool2d(f, 1)], dim=1)
            code = F.relu(self.squeeze[j](pooled)).flatten(1)
            codes.append(F.normalize(self.mlps[j](code), dim=1))
        return codes


class QueueInfoNCE(nn.Module):
    """InfoNCE with one FIFO queue of negative codes per layer (MoCo-style).

    ``loss(q, k, j) = CE([q.k, q.Q_j] / tau, 0)`` averaged over the batch. Queues start as random
    unit vectors and are part of the state dict (so training resumes with them).
    """

    def __init__(self, num_layers: int, dim: int, queue_size: int = 4096,
                 temperature: float = 0.07, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.tau = float(temperature)
        self.queue_size = int(queue_size)
        self.num_layers = int(num_layers)
        for j in range(num_layers):
            q = F.normalize(torch.randn(dim, queue_size, generator=generator), dim=0)
            self.register_buffer(f"queue{j}", q)
            self.register_buffer(f"ptr{j}", torch.zeros((), dtype=torch.long))

    def queue(self, j: int) -> torch.Tensor:
        return getattr(self, f"queue{j}")

    def loss(self, query: torch.Tensor, key: torch.Tensor, j: int) -> torch.Tensor:
        pos = (query * key).sum(dim=1, keepdim=True)
        neg = query @ self.queue(j).detach().clone()
        logits = torch.cat([pos, neg], dim=1) / self.tau
        return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))

    def multi_loss(self, queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of the per-layer losses."""
        return sum(self.loss(q, k, j) for j, (q, k) in enumerate(zip(queries, keys)))

    @torch.no_grad()
    def enqueue(self, codes: Sequence[torch.Tensor]) -> None:
        """Push one batch of (N, dim) codes per layer, overwriting the oldest entries."""
        for j, c in enumerate(codes):
            c = c.detach()
            queue, ptr = self.queue(j), getattr(self, f"ptr{j}")
            n = min(c.shape[0], self.queue_size)
            idx = (int(ptr) + torch.arange(n, device=queue.device)) % self.queue_size
            queue[:, idx] = c[-n:].t().to(queue.dtype)
            ptr.fill_((int(ptr) + n) % self.queue_size)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float] = (0.8, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample random-resized crop of an image batch to ``size`` x ``size`` (differentiable).

    Area fraction uniform in ``scale``, log-uniform aspect ratio in ``ratio`` (the
    RandomResizedCrop recipe, falling back to a centre crop after 10 tries); bilinear resize.
    """
    n, _, h, w = x.shape
    out = []
    area = h * w
    for i in range(n):
        ch, cw = h, w
        for _ in range(10):
            a = area * float(torch.empty(()).uniform_(*scale, generator=generator))
            logr = torch.empty(()).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
            r = math.exp(float(logr))
            tw, th = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < tw <= w and 0 < th <= h:
                ch, cw = th, tw
                break
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(out, dim=0)
