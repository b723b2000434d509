"""Train a VGG-19-shaped MccSTN encoder on toy-world renders, when no ImageNet VGG can be had.

    python -m mccstn.train_encoder --out runs/toy_encoder --steps 600

The MccSTN encoder is the "normalised VGG-19" of AdaIN-family code (:class:`mccstn.network.Encoder`:
a 1x1 colour conv, 16 reflection-padded 3x3 convs, ceil-mode max-pools). Here it is trained from
scratch as a multi-task classifier of the toy world's four attributes (colour, shape, size,
style = photo/cartoon) on renders from :mod:`toyworld.render`, with two sets of linear heads:

* *deep* heads on relu5_1 (global mean + max pooling), so the deepest features carry the
  subject (shape and size need the whole object);
* *statistics* heads on the per-channel mean and std of relu1_1 .. relu5_1 (deep supervision,
  which lets a 17-layer plain network train in a few hundred steps; He et al. 2015 init), so
  the statistics that MccSTN's style loss matches also tell photo from cartoon.

At the end the weights are *normalised* as Gatys et al. (CVPR 2016, section 2) did for the
original file: each filter is scaled so that its mean ReLU activation over training images and
positions is 1, compensated in the next layer (ReLU and max-pooling are positively homogeneous,
so the network's function is unchanged up to per-channel scales). The result is written as a
plain ``vgg_normalised.pth`` (the official key layout), usable as ``python -m mccstn.train --vgg``.
Training is resumable (``--resume``) and logs ``encoder_losses.csv`` and held-out accuracies.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .network import ENCODER_SLICES, Encoder, Widths, channel_mean_std

ENCODER_FILE = "vgg_normalised.pth"


def _f(default, help_text):
    return field(default=default, metadata={"help": help_text})


@dataclass
class EncoderTrainConfig:
    """Settings of the toy encoder pre-training (defaults: what shipped in assets/mccstn)."""

    out: str = _f("runs/toy_encoder", "output folder (state, log, vgg_normalised.pth)")
    steps: int = _f(600, "optimiser steps")
    batch_size: int = _f(16, "renders per step")
    image_size: int = _f(128, "renders (64 px) are resized to this side (MccSTN trains at 128)")
    pool: int = _f(4000, "number of distinct training renders (half photo, half cartoon)")
    lr: float = _f(2e-4, "Adam learning rate")
    seed: int = _f(0, "random seed (scenes, init, batches)")
    max_seconds: float = _f(0.0, "wall-clock budget of the loop (0: none); when spent, training stops "
                                 "and the encoder is evaluated and written as usual")
    save_every: int = _f(100, "resumable state interval (steps)")
    heldout: int = _f(600, "held-out renders for the accuracy report (other seeds)")
    resume: bool = _f(False, "continue from OUT/encoder_state.pt")
    width_divisor: int = _f(4, "every VGG-19 width divided by this (1: full width, 64..512 channels)")
    conv5_tail: bool = _f(False, "also build conv5_2..conv5_4 (in the official file, unused by MccSTN)")
    threads: int = _f(0, "torch threads (0: leave as is)")
    extra_sizes: str = _f("", "comma-separated other input sides; each step picks one of image_size and "
                              "these at random (multi-scale training; the report uses image_size)")

    def sizes(self) -> list[int]:
        return [self.image_size] + [int(x) for x in str(self.extra_sizes).split(",") if x.strip()]

    def widths(self) -> Widths:
        return Widths.divided(self.width_divisor, self.conv5_tail)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def toy_renders(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` renders (both styles, all attributes) as uint8 (N,3,64,64) and labels (N,4)."""
    from toyworld.data import labels, render_many, scenes_for

    half = n // 2
    scenes = scenes_for(half, seed, "photo") + scenes_for(n - half, seed + 1, "cartoon")
    imgs = torch.from_numpy(render_many(scenes, workers=1)).permute(0, 3, 1, 2).contiguous()
    return imgs, torch.from_numpy(labels(scenes))


def to_input(imgs_u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N,3,h,w) -> float [0,1] at size x size (bilinear), as MccSTN's data loader does."""
    x = imgs_u8.float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------
class ToyEncoderClassifier(nn.Module):
    """The MccSTN encoder plus the two sets of attribute heads described in the module docstring."""

    def __init__(self, n_classes: Sequence[int], widths: Widths = Widths()) -> None:
        super().__init__()
        self.encoder = Encoder(widths)
        for name, conv in self.encoder.convs.items():
            if name == "color":  # start as (x - 0.5) * 2: centred input
                with torch.no_grad():
                    conv.weight.copy_(2.0 * torch.eye(3).view(3, 3, 1, 1))
                    conv.bias.fill_(-1.0)
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        stat_width = 2 * sum(widths.stages)
        self.deep_heads = nn.ModuleList(nn.Linear(2 * widths.stages[-1], k) for k in n_classes)
        self.stat_heads = nn.ModuleList(nn.Linear(stat_width, k) for k in n_classes)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.encoder(x)
        deep = torch.cat([feats[-1].mean((2, 3)), feats[-1].amax((2, 3))], 1)
        stats = torch.cat([torch.cat([m.flatten(1), s.flatten(1)], 1)
                           for m, s in (channel_mean_std(f) for f in feats)], 1)
        return [h(deep) for h in self.deep_heads], [h(stats) for h in self.stat_heads]


def classification_loss(logits: tuple[list[torch.Tensor], list[torch.Tensor]], lab: torch.Tensor) -> torch.Tensor:
    deep, stats = logits
    return sum(F.cross_entropy(d, lab[:, i]) + F.cross_entropy(s, lab[:, i])
               for i, (d, s) in enumerate(zip(deep, stats)))


@torch.no_grad()
def accuracies(model: ToyEncoderClassifier, imgs: torch.Tensor, lab: torch.Tensor, size: int,
               batch: int = 50) -> dict[str, float]:
    """Held-out accuracy per attribute of the deep (relu5_1) heads and the statistics heads."""
    from toyworld.data import ATTRS

    model.eval()
    hits = {f"{kind}_{a}": 0 for kind in ("deep", "stats") for a in ATTRS}
    for i in range(0, len(imgs), batch):
        deep, stats = model(to_input(imgs[i:i + batch], size))
        for kind, outs in (("deep", deep), ("stats", stats)):
            for j, a in enumerate(ATTRS):
                hits[f"{kind}_{a}"] += int((outs[j].argmax(1) == lab[i:i + batch, j]).sum())
    model.train()
    return {k: v / len(imgs) for k, v in hits.items()}


# ----------------------------------------------------------------------------------------------
# Gatys-style normalisation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def normalise_activations(encoder: Encoder, images: torch.Tensor) -> dict[str, float]:
    """Rescale every 3x3 conv so each filter's mean ReLU output over ``images`` is 1.

    Layer by layer: measure the mean activation m_k of filter k, divide its weight and bias by
    m_k and multiply the next conv's input-channel-k weights by m_k. Filters that never fire
    (m_k = 0) are left alone, and nearly dead ones are scaled as if m_k were 5% of the layer's
    median (so their gain stays bounded). Returns the mean activation per layer after the rescaling.
    """
    order = [op for ops in ENCODER_SLICES for op in ops if op not in ("pool", "color")]
    used = set(order)
    convs = encoder.convs
    report = {}
    for li, name in enumerate(order):
        acts = _activation_of(encoder, images, name)
        m = acts.mean(dim=(0, 2, 3))
        # nearly dead filters are not blown up (a 1/m gain of 1e6 makes the features of any
        # out-of-range image, e.g. an untrained decoder's output, explode): floor at 5% of the
        # layer's median mean activation
        live = m[m > 0]
        floor = 0.05 * float(live.median()) if live.numel() else 1.0
        scale = torch.where(m > 0, m.clamp(min=floor), torch.ones_like(m))
        convs[name].weight.div_(scale.view(-1, 1, 1, 1))
        convs[name].bias.div_(scale)
        if li + 1 < len(order):
            convs[order[li + 1]].weight.mul_(scale.view(1, -1, 1, 1))
        report[name] = float(_activation_of(encoder, images, name).mean())
    # conv5_2.. are unused by MccSTN; they still receive relu5_1's rescaling for consistency
    tail = [n for n in convs if n not in used and n != "color"]
    if tail:
        convs[tail[0]].weight.mul_(scale.view(1, -1, 1, 1))
    return report


def _activation_of(encoder: Encoder, x: torch.Tensor, target: str) -> torch.Tensor:
    for ops in ENCODER_SLICES:
        for op in ops:
            if op == "pool":
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            elif op == "color":
                x = encoder.convs[op](x)
            else:
                x = F.relu(encoder.convs[op](F.pad(x, (1, 1, 1, 1), mode="reflect")))
                if op == target:
                    return x
    raise KeyError(target)


# ----------------------------------------------------------------------------------------------
# loop
# ----------------------------------------------------------------------------------------------
def train_encoder(cfg: EncoderTrainConfig) -> dict:
    """Run (or resume) the pre-training; writes OUT/vgg_normalised.pth and OUT/encoder_report.json."""
    from toyworld.data import ATTRS, VALUES

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "encoder_state.pt", out / "encoder_losses.csv"
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = ToyEncoderClassifier([len(VALUES[a]) for a in ATTRS], cfg.widths())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if cfg.resume and state_path.is_file():
        st = torch.load(str(state_path), weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
    elif not cfg.resume:
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(["step", "loss", "seconds"])
    imgs, lab = toy_renders(cfg.pool, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.time()
    while step < cfg.steps and not (cfg.max_seconds and time.time() - t0 >= cfg.max_seconds):
        ts = time.time()
        idx = torch.randint(0, len(imgs), (cfg.batch_size,), generator=gen)
        sizes = cfg.sizes()
        x = to_input(imgs[idx], sizes[int(torch.randint(0, len(sizes), (1,), generator=gen))])
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        loss = classification_loss(model(x), lab[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        with open(log_path, "a", newline="") as fh:
            csv.writer(fh).writerow([step, f"{float(loss.detach()):.5f}", f"{time.time() - ts:.3f}"])
        if step % cfg.save_every == 0 or step == cfg.steps or (cfg.max_seconds and time.time() - t0 >= cfg.max_seconds):
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, str(state_path) + ".tmp")
            Path(str(state_path) + ".tmp").replace(state_path)
    held_imgs, held_lab = toy_renders(cfg.heldout, cfg.seed + 1000)
    acc = accuracies(model, held_imgs, held_lab, cfg.image_size)
    norm = normalise_activations(model.encoder, to_input(imgs[:64], cfg.image_size))
    torch.save(ckpt.to_official("encoder", model.encoder), str(out / ENCODER_FILE))
    report = {"config": dataclasses.asdict(cfg), "steps": step, "seconds_this_run": time.time() - t0,
              "heldout_accuracy": acc,
              "mean_activation_after_normalisation": norm}
    (out / "encoder_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mccstn.train_encoder", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(EncoderTrainConfig):
        if f.type in ("bool", bool):
            ap.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default,
                            help=f.metadata["help"])
        else:
            typ = {"int": int, "float": float, "str": str}[str(f.type)]
            ap.add_argument(f"--{f.name}", type=typ, default=f.default, help=f.metadata["help"])
    report = train_encoder(EncoderTrainConfig(**vars(ap.parse_args(argv))))
    print(json.dumps(report["heldout_accuracy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
