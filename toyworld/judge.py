"""The judge: a small CNN trained only on ground-truth renders.

It predicts colour, shape, size and style of a 64x64 image.  It never sees generated images in
training; to be fair to images that went through the VAE it is trained with mild blur / noise /
JPEG-like degradations of the renders (still ground truth, no model outputs).

    python -m toyworld.judge --train            # trains and writes assets/toyworld/judge.safetensors
    python -m toyworld.judge --eval             # held-out accuracy on renders (and VAE recons if --vae)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import ATTRS, VALUES, dataset, to_tensor
from .models import JUDGE_PATH


class Judge(nn.Module):
    """~0.1 M parameters: a 16-channel stem at full resolution, then three pooled stages."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width

        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, w), nn.MaxPool2d(2),                                   # 32x32
            *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),          # 16x16
            *conv(2 * w, 4 * w), *conv(4 * w, 4 * w), nn.MaxPool2d(2),      # 8x8
            *conv(4 * w, 4 * w), *conv(4 * w, 4 * w))
        self.heads = nn.ModuleDict({a: nn.Linear(4 * w * 2, len(VALUES[a])) for a in ATTRS})

    def forward(self, x):  # x in [-1, 1], (N,3,64,64)
        f = self.features(x)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return {a: h(f) for a, h in self.heads.items()}


def load_judge(path: str | Path = JUDGE_PATH) -> Judge:
    from safetensors.torch import load_file

    j = Judge()
    j.load_state_dict(load_file(str(path)))
    return j.eval()


@torch.no_grad()
def predict(judge: Judge, images: np.ndarray, batch: int = 256) -> dict:
    """images: uint8 (N,64,64,3). Returns {attr: list of value names}."""
    out = {a: [] for a in ATTRS}
    for i in range(0, len(images), batch):
        logits = judge(to_tensor(images[i:i + batch]))
        for a in ATTRS:
            out[a] += [VALUES[a][k] for k in logits[a].argmax(1).tolist()]
    return out


def accuracy(judge: Judge, images: np.ndarray, lab: np.ndarray) -> dict:
    pred = predict(judge, images)
    res = {}
    for k, a in enumerate(ATTRS):
        res[a] = float(np.mean([VALUES[a].index(p) == t for p, t in zip(pred[a], lab[:, k])]))
    allok = np.ones(len(images), bool)
    for k, a in enumerate(ATTRS):
        allok &= np.array([VALUES[a].index(p) for p in pred[a]]) == lab[:, k]
    res["all"] = float(allok.mean())
    return res


def _degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random mild blur + noise + colour jitter, so recon-like softness does not fool the judge."""
    n = x.shape[0]
    out = x.clone()
    k = torch.rand(n, generator=g)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    sel = (k < 0.5).float().view(n, 1, 1, 1)
    out = out * (1 - sel) + blur * sel
    out = out + torch.randn(x.shape, generator=g) * (0.06 * torch.rand(n, 1, 1, 1, generator=g))
    out = out * (1 + 0.1 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)) + 0.08 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    return out.clamp(-1, 1)


def train_judge(out: Path = JUDGE_PATH, n: int = 12000, steps: int = 800, seed: int = 0,
                cache_dir: Path | None = None, log=print) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cache = (cache_dir / f"judge_train_{n}_{seed}.npz") if cache_dir else None
    imgs, lab, _ = dataset(cache, n, 1000 + seed, None)
    x_all = to_tensor(imgs)
    y_all = torch.from_numpy(lab)
    model = Judge()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (64,), generator=g)
        x = _degrade(x_all[idx], g)
        y = y_all[idx]
        logits = model(x)
        loss = sum(F.cross_entropy(logits[a], y[:, k]) for k, a in enumerate(ATTRS))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            log(f"judge step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out))
    return {"steps": steps, "seconds": time.time() - t0}


def heldout(n: int = 3000, seed: int = 777):
    """Held-out renders (a seed range the judge never trained on)."""
    return dataset(None, n, 50_000 + seed, None)


def vae_recon(vae, imgs: np.ndarray, batch: int = 256) -> np.ndarray:
    from .data import to_uint8

    outs = []
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            x = to_tensor(imgs[i:i + batch])
            z = vae.encode(x).latent_dist.mean
            outs.append(to_uint8(vae.decode(z).sample))
    return np.concatenate(outs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true")
    p.add_argument("--eval", action="store_true")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--n", type=int, default=12000)
    p.add_argument("--out", type=Path, default=JUDGE_PATH)
    p.add_argument("--vae", type=Path, default=None, help="VAE folder for the reconstruction ceiling")
    p.add_argument("--cache", type=Path, default=Path("runs/toy/data"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    if a.train:
        train_judge(a.out, a.n, a.steps, cache_dir=a.cache)
    res = {}
    if a.eval or a.train:
        j = load_judge(a.out)
        imgs, lab, _ = heldout()
        res["renders"] = accuracy(j, imgs, lab)
        print("held-out renders:", json.dumps(res["renders"]))
        if a.vae:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(str(a.vae)).eval()
            res["vae_recon"] = accuracy(j, vae_recon(vae, imgs), lab)
            print("VAE reconstructions:", json.dumps(res["vae_recon"]))
        if a.json:
            a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
