"""Judge a trained toy model: generate every caption of the grammar and read the images back.

    python -m toyworld.evaluate assets/models/toy-general --seeds 4 --style photo
    python -m toyworld.evaluate runs/toy --stage general        # from a training run (EMA UNet)

Reports per-attribute accuracy, prompt accuracy (colour, shape and size all right) and the style
rate, overall and split into the expert's seen / blind-spot captions.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fusion.loading import load_model

from .data import ddim_sample
from .grammar import caption
from .judge import load_judge, predict
from .models import JUDGE_PATH, make_tokenizer
from .render import COLORS, SHAPES, SIZES


def load_parts(path: Path, stage: str | None = None):
    """(unet, vae, tokenizer, text_encoder) in fp32 on the CPU: a shipped model folder through
    fusion's loader, or one stage of a training run folder (its EMA UNet)."""
    if not stage:
        m = load_model(path, device="cpu", dtype=torch.float32)
        return m.unet.eval(), m.vae.eval(), m.tokenizer, m.text_encoder.eval()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(path / stage / "unet"))
    te = CLIPTextModel.from_pretrained(str(path / "general" / "text_encoder"))
    vae = AutoencoderKL.from_pretrained(str(path / "vae" / "model"))
    return unet.eval(), vae.eval(), make_tokenizer(), te.eval()


def evaluate(unet, vae, tok, te, seeds=(0, 1), style_word: str | None = None, scale=7.5, steps=50,
             blind_colors=("green", "purple"), blind_shapes=("triangle",), judge=None):
    judge = judge or load_judge(JUDGE_PATH)
    combos = [(c, s, z) for c in COLORS for s in SHAPES for z in SIZES]
    prompts = [caption(c, s, z, style_word) for c, s, z in combos]
    rows = []
    t0 = time.time()
    for seed in seeds:
        imgs = ddim_sample(unet, vae, tok, te, prompts, seed=seed, steps=steps, scale=scale)
        pred = predict(judge, imgs)
        for i, (c, s, z) in enumerate(combos):
            rows.append(dict(color=pred["color"][i] == c, shape=pred["shape"][i] == s, size=pred["size"][i] == z,
                             style=pred["style"][i], blind=(c in blind_colors or s in blind_shapes)))
    secs = (time.time() - t0) / (len(rows))

    def agg(rs):
        if not rs:
            return {}
        return dict(n=len(rs), color=float(np.mean([r["color"] for r in rs])),
                    shape=float(np.mean([r["shape"] for r in rs])), size=float(np.mean([r["size"] for r in rs])),
                    prompt=float(np.mean([r["color"] and r["shape"] and r["size"] for r in rs])),
                    cartoon=float(np.mean([r["style"] == "cartoon" for r in rs])))

    return dict(all=agg(rows), seen=agg([r for r in rows if not r["blind"]]),
                blind=agg([r for r in rows if r["blind"]]), seconds_per_image=secs, scale=scale, steps=steps,
                seeds=list(seeds), style_word=style_word)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path)
    p.add_argument("--stage", default=None)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--style", default=None, help="style word in the prompts (photo/cartoon) or none")
    p.add_argument("--scale", type=float, default=7.5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = evaluate(*load_parts(a.path, a.stage), seeds=tuple(range(a.seeds)), style_word=a.style, scale=a.scale,
                   steps=a.steps)
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
