"""The ``lora`` stage of ``python -m toyworld.train``: the cartoon expert as a LoRA on toy-general.

    python -m toyworld.train --stage lora --out runs/toy --threads 1        # resumable
    python -m toyworld.train --stage lora --out runs/toy --lora-export assets/models/toy-cartoon-lora

The shipped toy-general pipeline (``--lora-base``) stays frozen; low-rank adapters (peft ``LoraConfig``,
``lora_alpha == rank`` so the scale is 1) are trained on its UNet, on the same relabelled cartoon data the
full expert was fine-tuned on (blind-spot colours/shapes never drawn). Targets: the transformer blocks'
attention and feed-forward projections (the layers a kohya SD 1.x LoRA covers) plus the ResNet
convolutions (LoCon-style), since the toy UNet's highest-resolution level has no attention and a cartoon
outline lives there. The adapter is written with diffusers' ``save_lora_weights`` as
``pytorch_lora_weights.safetensors`` (peft key naming, config in the header);
``StableDiffusionPipeline.load_lora_weights`` reads it back.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import to_tensor
from .grammar import training_caption
from .render import COLORS, SHAPES

#: module-name suffixes the adapter wraps (attention, feed-forward, transformer in/out, ResNet convs)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2")


def _base_parts(base: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"), torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(str(base / "text_encoder"), dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(str(base / "vae"), torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    for m in (unet, te, vae):
        m.requires_grad_(False)
    return unet, te, vae, tok


def _latents(cache: Path, vae, imgs, bar_interval: float):
    if cache.exists():
        return torch.load(cache, weights_only=True)
    mus, sds = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(imgs), 256), desc="encode lora data", mininterval=bar_interval):
            dist = vae.encode(to_tensor(imgs[i:i + 256])).latent_dist
            mus.append(dist.mean.half()); sds.append(dist.std.half())
    res = (torch.cat(mus), torch.cat(sds))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res, cache)
    return res


def add_adapter(unet, rank: int, targets=LORA_TARGETS) -> list[torch.nn.Parameter]:
    """Wrap ``targets`` of ``unet`` with a fresh LoRA (B = 0, so the model starts unchanged)."""
    from peft import LoraConfig

    names = sorted({n for n, m in unet.named_modules()
                    if any(n == t or n.endswith("." + t) for t in targets)
                    and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))})
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=names))
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def save_adapter(unet, dest: Path):
    """``pytorch_lora_weights.safetensors`` in peft key naming (``unet.<module>.lora_A.weight``, one
    spelling for attention and conv layers alike) with the adapter config in the header."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    dest.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(dest), unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())


def train_lora(a, expert_data) -> Path:
    """Train (or resume) the adapter; returns the folder with ``pytorch_lora_weights.safetensors``."""
    from .models import make_scheduler
    from .train import _ema_update, _log, _lr, _save_ckpt, denoising_step

    d = a.out / "lora"
    d.mkdir(parents=True, exist_ok=True)
    if (d / "done.json").exists():
        return d / "adapter"
    torch.manual_seed(a.seed + 4)
    unet, te, vae, tok = _base_parts(Path(a.lora_base))
    imgs, _, scenes = expert_data
    mu, sd = _latents(a.out / "data" / f"lat_lora_{a.blind_mode}_{len(imgs)}.pt", vae, imgs, a.bar_interval)
    sf = vae.config.scaling_factor
    del vae
    sched = make_scheduler()
    params = add_adapter(unet, a.lora_rank)
    opt = torch.optim.AdamW(params, a.lora_lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    step, spent, run_loss = 0, 0.0, None
    ck = d / "ckpt.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        with torch.no_grad():
            for p, v in zip(params, s["lora"]):
                p.copy_(v)
        ema = s["ema"]; opt.load_state_dict(s["opt"]); step, spent = s["step"], s["spent"]
        run_loss = s.get("run_loss"); torch.set_rng_state(s["rng"])
    rng = np.random.default_rng(a.seed * 7919 + 4 + step)
    g = torch.Generator().manual_seed(a.seed * 104729 + 4 + step)
    unet.train()
    t0 = time.time() - spent
    bar = tqdm(total=a.lora_steps, initial=step, desc="lora", mininterval=a.bar_interval)
    while step < a.lora_steps and (time.time() - t0) / 60 < a.max_minutes_lora:
        for pg in opt.param_groups:
            pg["lr"] = _lr(step, a.lora_steps, a.lora_lr, 50)
        idx = rng.integers(0, len(imgs), a.lora_batch)
        ti = torch.from_numpy(idx)
        z0 = (mu[ti].float() + sd[ti].float() * torch.randn(mu[ti].shape, generator=g)) * sf
        caps = [training_caption(scenes[i], rng) for i in idx]
        ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            emb = te(ids)[0]
        loss, _ = denoising_step(unet, sched, z0, emb, g, opt, params)
        step += 1
        dec = min(a.lora_ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(dec).add_(p.detach(), alpha=1 - dec)
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        bar.update(1)
        if step % 10 == 0 or step == 1:
            _log(d / "log.jsonl", dict(step=step, loss=loss.item(), ema_loss=run_loss, minutes=(time.time() - t0) / 60))
            bar.set_postfix(loss=f"{run_loss:.4f}")
        if step % a.ckpt_every == 0 or step == a.lora_steps:
            _save_ckpt(ck, lora=[p.detach() for p in params], ema=ema, opt=opt.state_dict(), step=step,
                       spent=time.time() - t0, rng=torch.get_rng_state(), run_loss=run_loss)
    bar.close()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    save_adapter(unet.eval(), d / "adapter")
    n_params = sum(p.numel() for p in params)
    (d / "done.json").write_text(json.dumps(dict(
        steps=step, minutes=(time.time() - t0) / 60, final_ema_loss=run_loss, lr=a.lora_lr, batch=a.lora_batch,
        rank=a.lora_rank, ema_decay=a.lora_ema, lora_params=n_params, base=str(a.lora_base),
        targets=list(LORA_TARGETS)), indent=2))
    print(f"lora done: {step} steps in {(time.time() - t0) / 60:.1f} min, loss {run_loss}, {n_params} params")
    return d / "adapter"


def run_stage(a) -> None:
    """Train on the relabelled cartoon data of the expert stage, then copy the adapter to ``--lora-export``."""
    import shutil

    from .train import _relabelled_expert_data

    colors = [c for c in COLORS if c not in a.blind_colors]
    shapes = [s for s in SHAPES if s not in a.blind_shapes]
    adapter = train_lora(a, _relabelled_expert_data(a, colors, shapes))
    if a.lora_export:
        dest = Path(a.lora_export)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(adapter / "pytorch_lora_weights.safetensors", dest / "pytorch_lora_weights.safetensors")
        shutil.copyfile(a.out / "lora" / "done.json", dest / "training.json")
        print("exported", dest)
