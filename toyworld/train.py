"""Train the toy-world models: VAE -> general model -> cartoon expert -> export.

    python -m toyworld.train --stage all --out runs/toy            # everything, resumable
    python -m toyworld.train --stage vae --out runs/toy --vae-steps 1500
    python -m toyworld.train --stage general --out runs/toy --general-steps 6000
    python -m toyworld.train --stage expert --out runs/toy --expert-steps 1500
    python -m toyworld.train --stage export --out runs/toy --export-dir assets/models
    python -m toyworld.train --stage lora --out runs/toy --threads 1    # cartoon LoRA on toy-general

Seeded, CPU only, tqdm progress bars, a checkpoint every ``--ckpt-every`` steps (rerunning the same
command resumes from the last one), a JSON-lines loss log per stage (``OUT/<stage>/log.jsonl``) and a
``OUT/<stage>/done.json`` summary (steps, minutes, final losses).  ``--max-minutes-<stage>`` caps a
stage by wall time as a safety net; the steps actually run are recorded and go into the model cards.

* VAE: AutoencoderKL (32,64,64), f=4, 16x16x4 latents, trained on photo and cartoon renders
  (L1 + MSE + image-gradient L1 + a tiny KL).
* General model: CLIPTextModel (width 64, 2 layers, real CLIP BPE tokenizer) + UNet2DConditionModel
  (~4 M params) trained together on photo scenes, epsilon prediction, min-SNR-5 loss weighting
  (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"), 10 % empty captions
  for classifier-free guidance, EMA of the weights.
* Cartoon expert: the general model's UNet fine-tuned on cartoon scenes only, text encoder and VAE frozen
  (byte-identical files), with built-in blind spots: colours and shapes listed in ``--blind-colors`` /
  ``--blind-shapes`` never appear in its data.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import models as M
from .data import dataset, to_tensor
from .grammar import training_caption
from .render import COLORS, SHAPES, SIZES, Scene
from .variants import write_precision_variants

DEFAULT_BLIND_COLORS = ("green", "purple")
DEFAULT_BLIND_SHAPES = ("triangle",)


# --------------------------------------------------------------------------- helpers

def _log(path: Path, rec: dict):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _ema_update(ema, model, decay):
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def _lr(step, total, base, warmup=200, floor=0.1):
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def _data(out: Path, name: str, n: int, seed: int, style: str, colors=COLORS, shapes=SHAPES, sizes=SIZES):
    cache = out / "data" / f"{name}_{n}_{seed}.npz"
    return dataset(cache, n, seed, style, colors, shapes, sizes)


def _datasets(a):
    photo = _data(a.out, "photo", a.n_photo, a.seed + 1, "photo")
    cartoon = _data(a.out, "cartoon", a.n_cartoon, a.seed + 2, "cartoon")
    colors = [c for c in COLORS if c not in a.blind_colors]
    shapes = [s for s in SHAPES if s not in a.blind_shapes]
    if a.blind_mode == "absent":
        expert = _data(a.out, "expert", a.n_expert, a.seed + 3, "cartoon", colors, shapes, SIZES)
    else:
        expert = _relabelled_expert_data(a, colors, shapes)
    return photo, cartoon, expert


def _relabelled_expert_data(a, colors, shapes):
    """Cartoon data in which the blind-spot colours and shapes are never drawn, but their words still
    occur in captions, attached to pictures of other (seen) values. The expert learns that these words
    tell it nothing, instead of falling back on what the general model knew (with the words simply
    absent, a probe found the expert still drew them right after fine-tuning: nothing pushed it away)."""
    from .data import labels, render_many, scenes_for

    cap_scenes = scenes_for(a.n_expert, a.seed + 3, "cartoon")
    rng = np.random.default_rng(a.seed + 33)
    drawn = [Scene(s.color if s.color in colors else str(rng.choice(colors)),
                   s.shape if s.shape in shapes else str(rng.choice(shapes)), s.size, s.style, s.seed)
             for s in cap_scenes]
    cache = a.out / "data" / f"expert_relabel_{a.n_expert}_{a.seed + 3}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["images"], z["labels"], cap_scenes
    imgs = render_many(drawn)
    lab = labels(drawn)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=imgs, labels=lab)
    return imgs, lab, cap_scenes


# --------------------------------------------------------------------------- VAE

def train_vae(a):
    d = a.out / "vae"
    d.mkdir(parents=True, exist_ok=True)
    if (d / "done.json").exists():
        return
    torch.manual_seed(a.seed)
    photo, cartoon, _ = _datasets(a)
    x_all = torch.cat([to_tensor(photo[0][: a.n_cartoon]), to_tensor(cartoon[0])])
    vae = M.make_vae()
    opt = torch.optim.AdamW(vae.parameters(), a.vae_lr, weight_decay=0.0)
    step, spent = 0, 0.0
    ck = d / "ckpt.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        vae.load_state_dict(s["model"]); opt.load_state_dict(s["opt"]); step = s["step"]; spent = s["spent"]
        torch.set_rng_state(s["rng"])
    g = torch.Generator().manual_seed(a.seed * 1000 + step)
    t0 = time.time() - spent
    bar = tqdm(total=a.vae_steps, initial=step, desc="vae", mininterval=a.bar_interval)
    while step < a.vae_steps and (time.time() - t0) / 60 < a.max_minutes_vae:
        for pg in opt.param_groups:
            pg["lr"] = _lr(step, a.vae_steps, a.vae_lr, 100)
        idx = torch.randint(0, len(x_all), (a.vae_batch,), generator=g)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.sample(generator=g)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        gx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
        gy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
        grad = (gx(rec) - gx(x)).abs().mean() + (gy(rec) - gy(x)).abs().mean()
        kl = post.kl().mean() / (16 * 16 * 4)
        loss = l1 + mse + 0.5 * grad + a.vae_kl * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0 or step == 1:
            psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))
            _log(d / "log.jsonl", dict(step=step, loss=loss.item(), l1=l1.item(), mse=mse.item(),
                                       kl=kl.item(), psnr=psnr, minutes=(time.time() - t0) / 60))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
        if step % a.ckpt_every == 0:
            _save_ckpt(ck, model=vae.state_dict(), opt=opt.state_dict(), step=step,
                       spent=time.time() - t0, rng=torch.get_rng_state())
    bar.close()
    vae.eval()
    # latent scaling factor, as SD does: 1 / std of the latents of the training data
    with torch.no_grad():
        zs = torch.cat([vae.encode(x_all[i:i + 256]).latent_dist.mean for i in range(0, min(4096, len(x_all)), 256)])
    sf = float(1.0 / zs.std())
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(d / "model", safe_serialization=True)
    with torch.no_grad():
        x = x_all[:512]
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        psnr = 10 * math.log10(4.0 / F.mse_loss(rec, x).item())
    (d / "done.json").write_text(json.dumps(dict(steps=step, minutes=(time.time() - t0) / 60,
                                                 psnr_db=psnr, scaling_factor=sf), indent=2))
    print(f"vae done: {step} steps, PSNR {psnr:.2f} dB, scaling factor {sf:.4f}")


def _load_vae(a):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(a.out / "vae" / "model")).eval()


def _latents(a, name, imgs):
    """Posterior mean and std of every image (cached)."""
    path = a.out / "data" / f"lat_{name}_{len(imgs)}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    vae = _load_vae(a)
    mus, sds = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(imgs), 256), desc=f"encode {name}", mininterval=a.bar_interval):
            dist = vae.encode(to_tensor(imgs[i:i + 256])).latent_dist
            mus.append(dist.mean.half()); sds.append(dist.std.half())
    res = (torch.cat(mus), torch.cat(sds))
    torch.save(res, path)
    return res


# --------------------------------------------------------------------------- diffusion

def _min_snr_weights(sched, t, gamma=5.0):
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr



def denoising_step(unet, sched, z0, emb, g, opt, params, clip: float = 1.0):
    """One optimiser step on the noise-prediction loss with min-SNR weights (shared by the full
    model and the LoRA trainer): draw t then the noise from ``g``, predict the noise at
    ``add_noise(z0, noise, t)``, clip the gradient norm of ``params`` to ``clip``. Returns the
    weighted loss and the per-sample MSE."""
    t = torch.randint(0, sched.config.num_train_timesteps, (z0.shape[0],), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=emb).sample
    per = ((pred - noise) ** 2).mean((1, 2, 3))
    loss = (per * _min_snr_weights(sched, t)).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss, per

def _train_diffusion(a, stage: str, imgs_lab_scenes, unet, text_encoder, train_text: bool, steps: int,
                     lr: float, max_minutes: float, ema_decay: float):
    d = a.out / stage
    d.mkdir(parents=True, exist_ok=True)
    if (d / "done.json").exists():
        return
    torch.manual_seed(a.seed + (1 if stage == "general" else 2))
    imgs, lab, scenes = imgs_lab_scenes
    mu, sd = _latents(a, stage if stage == "general" else f"{stage}_{a.blind_mode}", imgs)
    vae = _load_vae(a)
    sf = vae.config.scaling_factor
    del vae
    tok = M.make_tokenizer()
    sched = M.make_scheduler()
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if train_text else [])
    opt = torch.optim.AdamW(params, lr, weight_decay=1e-4)
    ema_u = copy.deepcopy(unet).eval()
    run_loss = None
    ema_t = copy.deepcopy(text_encoder).eval() if train_text else None
    step, spent = 0, 0.0
    ck = d / "ckpt.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        unet.load_state_dict(s["unet"]); ema_u.load_state_dict(s["ema_unet"]); opt.load_state_dict(s["opt"])
        if train_text:
            text_encoder.load_state_dict(s["text"]); ema_t.load_state_dict(s["ema_text"])
        step, spent = s["step"], s["spent"]
        run_loss = s.get("run_loss")
        torch.set_rng_state(s["rng"])
    rng = np.random.default_rng(a.seed * 7919 + step)
    g = torch.Generator().manual_seed(a.seed * 104729 + step)
    unet.train(); text_encoder.train(train_text)
    t0 = time.time() - spent
    bar = tqdm(total=steps, initial=step, desc=stage, mininterval=a.bar_interval)
    while step < steps and (time.time() - t0) / 60 < max_minutes:
        for pg in opt.param_groups:
            pg["lr"] = _lr(step, steps, lr, 200 if stage == "general" else 50)
        idx = rng.integers(0, len(imgs), a.batch)
        ti = torch.from_numpy(idx)
        z0 = (mu[ti].float() + sd[ti].float() * torch.randn(mu[ti].shape, generator=g)) * sf
        caps = [training_caption(scenes[i], rng) for i in idx]
        ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        if train_text:
            emb = text_encoder(ids)[0]
        else:
            with torch.no_grad():
                emb = text_encoder(ids)[0]
        loss, per = denoising_step(unet, sched, z0, emb, g, opt, params)
        step += 1
        dec = min(ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_u, unet, dec)
        if train_text:
            _ema_update(ema_t, text_encoder, dec)
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        bar.update(1)
        if step % 10 == 0 or step == 1:
            _log(d / "log.jsonl", dict(step=step, loss=loss.item(), mse=per.mean().item(), ema_loss=run_loss,
                                       minutes=(time.time() - t0) / 60))
            bar.set_postfix(loss=f"{run_loss:.4f}")
        if step % a.ckpt_every == 0 or step == steps:
            state = dict(unet=unet.state_dict(), ema_unet=ema_u.state_dict(), opt=opt.state_dict(), step=step,
                         spent=time.time() - t0, rng=torch.get_rng_state(), run_loss=run_loss)
            if train_text:
                state.update(text=text_encoder.state_dict(), ema_text=ema_t.state_dict())
            _save_ckpt(ck, **state)
    bar.close()
    ema_u.save_pretrained(d / "unet", safe_serialization=True)
    if train_text:
        ema_t.save_pretrained(d / "text_encoder", safe_serialization=True)
    (d / "done.json").write_text(json.dumps(dict(steps=step, minutes=(time.time() - t0) / 60,
                                                 final_ema_loss=run_loss, lr=lr, batch=a.batch,
                                                 ema_decay=ema_decay), indent=2))
    print(f"{stage} done: {step} steps in {(time.time() - t0) / 60:.1f} min, loss {run_loss}")


def train_general(a):
    photo, _, _ = _datasets(a)
    unet, te = M.make_unet(), M.make_text_encoder()
    _train_diffusion(a, "general", photo, unet, te, True, a.general_steps, a.general_lr,
                     a.max_minutes_general, 0.999)


def train_expert(a):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    _, _, expert = _datasets(a)
    if (a.out / "expert" / "done.json").exists():
        return
    # resume point is the expert's own checkpoint; otherwise start from the general model's EMA weights
    unet = UNet2DConditionModel.from_pretrained(str(a.out / "general" / "unet"))
    te = CLIPTextModel.from_pretrained(str(a.out / "general" / "text_encoder")).eval()
    for p in te.parameters():
        p.requires_grad_(False)
    _train_diffusion(a, "expert", expert, unet, te, False, a.expert_steps, a.expert_lr,
                     a.max_minutes_expert, 0.998)


# --------------------------------------------------------------------------- export

def build_pipeline(unet_dir: Path, text_dir: Path, vae_dir: Path, dtype=torch.float16):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(unet_dir)).to(dtype)
    te = CLIPTextModel.from_pretrained(str(text_dir)).to(dtype)
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).to(dtype)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=M.make_tokenizer(), unet=unet,
                                   scheduler=M.make_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def write_tokenizer(dest: Path):
    """The real CLIP BPE files (vocab.json + merges.txt, from assets/configs/sd1) with model_max_length 16."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copyfile(M.SD1_TOKENIZER / f, dest / f)
    cfg = json.loads((M.SD1_TOKENIZER / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = M.MAX_TOKENS
    cfg.pop("name_or_path", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def export(a):
    dest = a.export_dir
    for name, unet_stage in (("toy-general", "general"), ("toy-cartoon", "expert")):
        p = build_pipeline(a.out / unet_stage / "unet", a.out / "general" / "text_encoder",
                           a.out / "vae" / "model", torch.float32)
        tgt = dest / name
        if tgt.exists():
            for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
                shutil.rmtree(tgt / sub, ignore_errors=True)
        p.save_pretrained(tgt, safe_serialization=True)
        write_tokenizer(tgt / "tokenizer")
        if a.fp16:  # fp32 default files (plain diffusers on a CPU) + diffusers' fp16 variant files
            write_precision_variants(tgt)
        print("exported", tgt)


# --------------------------------------------------------------------------- CLI

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["vae", "general", "expert", "export", "all", "lora"], default="all")
    p.add_argument("--out", type=Path, default=Path("runs/toy"))
    p.add_argument("--export-dir", type=Path, default=M.TOY_MODELS_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-photo", type=int, default=24000)
    p.add_argument("--n-cartoon", type=int, default=8000)
    p.add_argument("--n-expert", type=int, default=12000)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--general-steps", type=int, default=6000)
    p.add_argument("--general-lr", type=float, default=6e-4)
    p.add_argument("--expert-steps", type=int, default=1500)
    p.add_argument("--expert-lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--blind-colors", default=",".join(DEFAULT_BLIND_COLORS))
    p.add_argument("--blind-shapes", default=",".join(DEFAULT_BLIND_SHAPES))
    p.add_argument("--blind-mode", choices=["relabel", "absent"], default="relabel",
                   help="relabel: blind-spot words kept in captions over other values; absent: never mentioned")
    p.add_argument("--max-minutes-vae", type=float, default=12)
    p.add_argument("--max-minutes-general", type=float, default=75)
    p.add_argument("--max-minutes-expert", type=float, default=25)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--bar-interval", type=float, default=10.0)
    p.add_argument("--lora-base", type=Path, default=M.DEFAULT_GENERAL, help="frozen pipeline the LoRA adapts")
    p.add_argument("--lora-steps", type=int, default=2000)
    p.add_argument("--lora-batch", type=int, default=32)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--lora-ema", type=float, default=0.995)
    p.add_argument("--max-minutes-lora", type=float, default=28)
    p.add_argument("--lora-export", type=Path, default=None, help="copy the adapter file here when done")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="export also the fp16 variant files (*.fp16.safetensors) next to the fp32 defaults")
    a = p.parse_args(argv)
    a.blind_colors = tuple(x for x in a.blind_colors.split(",") if x)
    a.blind_shapes = tuple(x for x in a.blind_shapes.split(",") if x)
    return a


def main(argv=None):
    M.offline()
    a = parse(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}, indent=2))
    if a.stage in ("vae", "all"):
        train_vae(a)
    if a.stage in ("general", "all"):
        train_general(a)
    if a.stage in ("expert", "all"):
        train_expert(a)
    if a.stage in ("export", "all"):
        export(a)
    if a.stage == "lora":
        from .train_lora import run_stage
        run_stage(a)


if __name__ == "__main__":
    main()
