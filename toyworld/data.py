"""Datasets of rendered scenes (cached as .npz) and a tiny DDIM sampler used for evaluation."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Sequence

import numpy as np

from .render import COLORS, SHAPES, SIZES, STYLES, Scene, render, sample_scene

ATTRS = ("color", "shape", "size", "style")
VALUES = {"color": COLORS, "shape": SHAPES, "size": SIZES, "style": STYLES}


def scenes_for(n: int, seed: int, style: str | None, colors: Sequence[str] = COLORS,
               shapes: Sequence[str] = SHAPES, sizes: Sequence[str] = SIZES) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, style, colors, shapes, sizes) for _ in range(n)]


def _render_chunk(scenes):
    return np.stack([render(s) for s in scenes])


def render_many(scenes: list[Scene], workers: int = 2) -> np.ndarray:
    if workers <= 1 or len(scenes) < 2000:
        return _render_chunk(scenes)
    chunks = [scenes[i::workers] for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_render_chunk, chunks)
    out = np.empty((len(scenes), 64, 64, 3), np.uint8)
    for i, p in enumerate(parts):
        out[i::workers] = p
    return out


def labels(scenes: list[Scene]) -> np.ndarray:
    """(N, 4) int array: indices of colour, shape, size, style."""
    return np.array([[VALUES[a].index(getattr(s, a)) for a in ATTRS] for s in scenes], np.int64)


def dataset(cache: Path | None, n: int, seed: int, style: str | None, colors=COLORS, shapes=SHAPES,
            sizes=SIZES, workers: int = 2):
    """Render (or load from the cache) n scenes: (images uint8 NHWC, labels, scenes)."""
    scenes = scenes_for(n, seed, style, colors, shapes, sizes)
    if cache is not None and Path(cache).exists():
        z = np.load(cache)
        return z["images"], z["labels"], scenes
    imgs = render_many(scenes, workers)
    lab = labels(scenes)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=imgs, labels=lab)
    return imgs, lab, scenes


def to_tensor(imgs: np.ndarray):
    import torch

    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def ddim_sample(unet, vae, tokenizer, text_encoder, prompts, seed=0, steps=50, scale=7.5,
                neg="", scheduler_config=None):
    """Plain classifier-free-guided DDIM (eta 0, :mod:`fusion.ddim`) for evaluation during training.
    Latents are shaped from the UNet's config; ``scheduler_config`` defaults to the toy models'."""
    import torch

    from fusion.ddim import ddim_step, eps_from_prediction, previous_alpha, schedule_for
    from fusion.loading import encode_text

    from .models import SCHEDULER_CONFIG

    cfg = scheduler_config or SCHEDULER_CONFIG
    timesteps, alphas = schedule_for(cfg, steps)
    n = len(prompts)
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn(n, unet.config.in_channels, size, size, generator=g)
    with torch.no_grad():
        cond = encode_text(tokenizer, text_encoder, prompts)
        unc = encode_text(tokenizer, text_encoder, [neg] * n)
        emb = torch.cat([unc, cond])
        for i, t in enumerate(timesteps):
            a_t = float(alphas[t])
            e = eps_from_prediction(unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample,
                                    torch.cat([x, x]), a_t, cfg.get("prediction_type", "epsilon"))
            eu, ec = e.chunk(2)
            x, _ = ddim_step(x, eu + scale * (ec - eu), a_t, previous_alpha(alphas, timesteps, i))
        img = vae.decode(x / vae.config.scaling_factor).sample
    return to_uint8(img)
