"""Training MccSTN: ``python -m mccstn.train --content_dir C --style_dir S --vgg VGG --out DIR``.

The public MccSTN code releases no usable training script; this one follows the paper and the
public AesUST/MccSTN/CAST code (facts and default numbers cited in :mod:`mccstn.losses` and
:mod:`mccstn.contrast`):

* data: content photos (COCO-like) and style images (WikiArt-like), any nesting of folders;
  each image is resized to ``load_size`` x ``load_size`` and randomly cropped to ``crop_size``
  (AesUST: 512 -> 256), batch 4;
* frozen encoder initialised from ``vgg_normalised.pth`` or a torchvision VGG-19 state dict
  (``--vgg``; nothing is downloaded), or all weights from a pretrained folder (``--init_from``);
* generator = fusion module + decoder, Adam lr 1e-4 decayed as lr / (1 + 5e-5 * iter);
  aesthetic discriminator: Adam(0.5, 0.999), LSGAN, updated on its own loss only;
  style projector: Adam(0.5, 0.999) on the two-crops InfoNCE;
* stage I losses: content (1) + style (1) + identity (50; pixel term x50 inside) +
  adversarial (5) + generator-side contrastive (``nce_g_weight``, 0.05);
  stage II (from ``stage2_start``; AesUST's aesthetic stage): the fusion uses the style's
  aesthetic map, identity is replaced by AR1 (0.5) and AR2 (500);
* every ``save_every`` iterations: ``checkpoints/iter_NNNNNN/`` with the four official
  ``.pth`` files + ``mccstn.safetensors`` (loadable by ``MccSTN.from_pretrained``) and
  ``train_state.pt`` for ``--resume``; every ``sample_every``: a content/style/output grid in
  ``samples/``; every iteration: a row in ``losses.csv`` (raw, unweighted losses and the
  weighted generator total), and at the end ``loss_curve.png``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import checkpoint as ckpt
from .contrast import QueueInfoNCE, StyleProjector, random_resized_crop
from .losses import content_loss, lsgan_loss, mean_std_loss, reconstruction_loss, style_loss
from .network import discriminator_size_problem
from .stylize import MccSTN, _upsample_for_discriminator
from .train_config import TrainConfig  # noqa: F401  (re-exported)
from .train_data import ImageFolderDataset, _infinite_loader, list_images  # noqa: F401  (re-exported)
from .train_plots import (LOSS_COLUMNS, plot_loss_curves, read_loss_csv, save_grid,  # noqa: F401  (re-exported)
                          write_toy_images)

#: stage 0 = identity warm-up; out_std = mean per-image pixel std of the iteration's output
#: (the stylised batch; the content reconstruction in warm-up): ~0 means a flat image
CSV_COLUMNS = ("iter", "stage", "lr") + LOSS_COLUMNS + ("out_std", "seconds")


def _pixel_std(x: torch.Tensor) -> float:
    return float(x.detach().clamp(0, 1).flatten(1).std(dim=1).mean())


# ----------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------
def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Holds the networks, optimisers and queues; :meth:`step` runs one iteration."""

    def __init__(self, cfg: TrainConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.init_from:  # every tensor comes from the folder; widths read from it
            where, parts = ckpt.read_folder(cfg.init_from)
            self.model = MccSTN._uninitialised(ckpt.widths_from_official(parts))
            ckpt.load_parts(self.model.components(), parts, where)
            self.model.source = where
        else:  # PyTorch's default init for the trained parts; the encoder is loaded below
            self.model = MccSTN(ckpt.encoder_init_widths(cfg.vgg))
        if cfg.vgg:
            self.encoder_kind = ckpt.load_encoder_init(self.model.encoder, cfg.vgg)
        else:
            self.encoder_kind = "init_from"
        self.model.to(self.device)
        self.model.encoder.eval()
        _set_requires_grad(self.model.encoder, False)
        layers = cfg.layers()
        self.projector = StyleProjector(layers, cfg.proj_hidden, cfg.proj_hidden2, cfg.proj_dim,
                                        widths=self.model.widths.stages).to(self.device)
        self.nce = QueueInfoNCE(len(layers), cfg.proj_dim, cfg.nce_queue, cfg.nce_temperature,
                                generator=torch.Generator().manual_seed(cfg.seed + 1)).to(self.device)
        gen_params = list(self.model.fusion.parameters()) + list(self.model.decoder.parameters())
        self.opt_g = torch.optim.Adam(gen_params, lr=cfg.lr)
        self.opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_p = torch.optim.Adam(self.projector.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.crop_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.iteration = 0  # number of completed iterations

    # -- pieces ----------------------------------------------------------------------------
    def lr_at(self, i: int) -> float:
        return self.cfg.lr / (1.0 + self.cfg.lr_decay * i)

    def in_stage2(self, i: int) -> bool:
        return 0 <= self.cfg.stage2_start <= i

    def generator_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.fusion.parameters()) + list(self.model.decoder.parameters())

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        return random_resized_crop(x, self.cfg.nce_crop, generator=self.crop_gen)

    def style_codes(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Projector codes of one random-resized crop per image (gradients flow to ``images``)."""
        return self.projector(self.model.encoder(self._crop(images), depth=max(self.projector.layers) + 1))

    def generator_nce(self, output: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Generator-side contrastive loss: a crop of each output (query, with gradient) against
        a crop of its own style image (positive key, no gradient) and the queued negatives."""
        with torch.no_grad():
            keys = self.style_codes(style)
        return self.nce.multi_loss(self.style_codes(output), keys)

    def disc(self, x: torch.Tensor):
        """The aesthetic discriminator on ``x``, enlarged first when too small (as stylize does)."""
        if discriminator_size_problem(*x.shape[-2:]) is not None:
            x = _upsample_for_discriminator(x)
        return self.model.discriminator(x)

    # -- one iteration ---------------------------------------------------------------------
    def step(self, content: torch.Tensor, style: torch.Tensor) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        i = self.iteration
        lr = self.lr_at(i)
        for opt in (self.opt_g, self.opt_d, self.opt_p):
            for group in opt.param_groups:
                group["lr"] = lr
        stage2 = self.in_stage2(i)
        content, style = content.to(self.device), style.to(self.device)
        m.fusion.train(), m.decoder.train(), m.discriminator.train(), self.projector.train()
        if i < cfg.warmup_iters:
            return self._warmup_step(content, style, lr)

        with torch.no_grad():
            c_feats = m.encoder(content)
            s_feats = m.encoder(style)
            a_s = self.disc(style)[0] if stage2 else None
        out = m.decoder(m.fusion(c_feats[3], s_feats[3], c_feats[4], s_feats[4], a_s))

        # discriminator: LSGAN, real art -> 1, generated -> 0
        _set_requires_grad(m.discriminator, True)
        loss_d = lsgan_loss(self.disc(style)[1], 1.0) + lsgan_loss(self.disc(out.detach())[1], 0.0)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # style projector: two crops of one style image are positives
        _set_requires_grad(self.projector, True)
        qa = self.style_codes(style)
        qb = self.style_codes(style)
        loss_nce_d = self.nce.multi_loss(qa, qb)
        if cfg.nce_d_weight > 0:
            self.opt_p.zero_grad(set_to_none=True)
            (cfg.nce_d_weight * loss_nce_d).backward()
            self.opt_p.step()

        # generator: fusion + decoder (discriminator and projector frozen, gradients pass through)
        _set_requires_grad(m.discriminator, False)
        _set_requires_grad(self.projector, False)
        o_feats = m.encoder(out)
        l_c = content_loss(o_feats, c_feats)
        l_s = style_loss(o_feats, s_feats)
        a_o, o_scores = self.disc(out)
        l_gan_g = lsgan_loss(o_scores, 1.0)
        zero = out.new_zeros(())
        l_id = l_ar1 = l_ar2 = zero
        if not stage2:
            i_cc = m.decoder(m.fusion(c_feats[3], c_feats[3], c_feats[4], c_feats[4]))
            i_ss = m.decoder(m.fusion(s_feats[3], s_feats[3], s_feats[4], s_feats[4]))
            l_id = (reconstruction_loss(i_cc, content, m.encoder(i_cc), c_feats, cfg.identity_pixel_factor)
                    + reconstruction_loss(i_ss, style, m.encoder(i_ss), s_feats, cfg.identity_pixel_factor))
            total = cfg.identity_weight * l_id
        else:
            i_oo = m.decoder(m.fusion(o_feats[3], o_feats[3], o_feats[4], o_feats[4], a_o))
            l_ar1 = reconstruction_loss(i_oo, out, m.encoder(i_oo), o_feats, cfg.identity_pixel_factor)
            l_ar2 = mean_std_loss(a_o, a_s)
            total = cfg.ar1_weight * l_ar1 + cfg.ar2_weight * l_ar2
        l_nce_g = self.generator_nce(out, style) if cfg.nce_g_weight > 0 else zero
        total = (total + cfg.content_weight * l_c + cfg.style_weight * l_s + cfg.gan_weight * l_gan_g
                 + cfg.nce_g_weight * l_nce_g)
        self._generator_update(total)
        _set_requires_grad(m.discriminator, True)
        _set_requires_grad(self.projector, True)

        self.nce.enqueue([q.detach() for q in qa])
        self.iteration += 1
        self.last_batch = (content.detach(), style.detach(), out.detach())
        vals = {"loss_content": l_c, "loss_style": l_s, "loss_gan_g": l_gan_g, "loss_gan_d": loss_d,
                "loss_nce_d": loss_nce_d, "loss_total": total}
        if stage2:
            vals.update(loss_ar1=l_ar1, loss_ar2=l_ar2)
        else:
            vals["loss_identity"] = l_id
        if cfg.nce_g_weight > 0:
            vals["loss_nce_g"] = l_nce_g
        # losses that this stage does not compute are None (an empty cell in losses.csv)
        row = {k: (float(vals[k].detach()) if k in vals else None) for k in LOSS_COLUMNS}
        row.update(iter=self.iteration, stage=2 if stage2 else 1, lr=lr, out_std=_pixel_std(out))
        return row

    def _generator_update(self, total: torch.Tensor) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.generator_parameters(), self.cfg.clip_grad_norm)
        self.opt_g.step()

    def _warmup_step(self, content: torch.Tensor, style: torch.Tensor, lr: float) -> dict:
        """Identity loss alone (both identity paths, stage-I form): the decoder learns to
        reconstruct first, so the later style/adversarial terms start from a non-flat output."""
        cfg, m = self.cfg, self.model
        with torch.no_grad():
            c_feats, s_feats = m.encoder(content), m.encoder(style)
        i_cc = m.decoder(m.fusion(c_feats[3], c_feats[3], c_feats[4], c_feats[4]))
        i_ss = m.decoder(m.fusion(s_feats[3], s_feats[3], s_feats[4], s_feats[4]))
        l_id = (reconstruction_loss(i_cc, content, m.encoder(i_cc), c_feats, cfg.identity_pixel_factor)
                + reconstruction_loss(i_ss, style, m.encoder(i_ss), s_feats, cfg.identity_pixel_factor))
        total = cfg.identity_weight * l_id
        self._generator_update(total)
        self.iteration += 1
        self.last_batch = (content.detach(), style.detach(), i_cc.detach())
        row = {k: None for k in LOSS_COLUMNS}
        row.update(loss_identity=float(l_id.detach()), loss_total=float(total.detach()),
                   iter=self.iteration, stage=0, lr=lr, out_std=_pixel_std(i_cc))
        return row

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"iteration": self.iteration,
                "config": dataclasses.asdict(self.cfg),
                "fusion": self.model.fusion.state_dict(), "decoder": self.model.decoder.state_dict(),
                "discriminator": self.model.discriminator.state_dict(),
                "projector": self.projector.state_dict(), "nce": self.nce.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "opt_p": self.opt_p.state_dict(),
                "rng_cpu": torch.get_rng_state(), "rng_crop": self.crop_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        # the frozen encoder is not in the state: it is re-read from --vgg / --init_from
        for name in ("fusion", "decoder", "discriminator"):
            getattr(self.model, name).load_state_dict(state[name])
        self.projector.load_state_dict(state["projector"])
        self.nce.load_state_dict(state["nce"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_p.load_state_dict(state["opt_p"])
        torch.set_rng_state(state["rng_cpu"])
        self.crop_gen.set_state(state["rng_crop"])
        self.iteration = int(state["iteration"])

    def save_checkpoint(self, out: Path) -> Path:
        """Write ``checkpoints/iter_N/`` (four .pth + safetensors) and ``train_state.pt``."""
        folder = out / "checkpoints" / f"iter_{self.iteration:06d}"
        overwrite = self.cfg.overwrite
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(f"checkpoint folder {folder} already exists (pass --overwrite)")
        ckpt.save_official(self.model.components(), folder, overwrite=True)
        ckpt.save_safetensors(self.model.components(), folder / ckpt.SAFETENSORS_NAME, overwrite=True,
                              metadata={"iteration": str(self.iteration), "encoder_init": self.encoder_kind})
        tmp = out / "train_state.pt.tmp"
        torch.save(self.state_dict(), str(tmp))
        os.replace(tmp, out / "train_state.pt")
        (out / "latest.txt").write_text(str(folder) + "\n")
        return folder

    def save_samples(self, path: Path, max_items: int = 4) -> None:
        c, s, o = (t[:max_items].cpu() for t in self.last_batch)
        save_grid([c, s, o.clamp(0, 1)], path)




# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _prepare_out(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    state = out / "train_state.pt"
    if cfg.resume:
        if not state.is_file():
            raise FileNotFoundError(f"--resume: {state} not found")
    elif out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"output folder {out} is not empty; pass --resume to continue the "
                              f"run there, --overwrite to start over in it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict (last losses, paths, timing)."""
    out = _prepare_out(cfg)
    trainer = Trainer(cfg)
    csv_path = out / "losses.csv"
    if cfg.resume:
        trainer.load_state_dict(torch.load(str(out / "train_state.pt"), map_location=trainer.device,
                                           weights_only=True))
        kept = []
        if csv_path.is_file():
            with open(csv_path, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(float(r["iter"])) <= trainer.iteration]
        with open(csv_path, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            wr.writeheader()
            wr.writerows(kept)
    else:
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writeheader()
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    start = trainer.iteration
    if start >= cfg.max_iter:
        raise ValueError(f"nothing to do: already at iteration {start} >= max_iter {cfg.max_iter}")
    torch.manual_seed(cfg.seed + start)
    content_iter = _infinite_loader(ImageFolderDataset(cfg.content_dir, cfg.load_size, cfg.crop_size),
                                    cfg.batch_size, cfg.num_workers, cfg.seed * 2 + start)
    style_iter = _infinite_loader(ImageFolderDataset(cfg.style_dir, cfg.load_size, cfg.crop_size),
                                  cfg.batch_size, cfg.num_workers, cfg.seed * 2 + 1 + start)
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_iter, initial=start, disable=not cfg.progress, dynamic_ncols=True,
                   desc="mccstn train")
    except ImportError:  # pragma: no cover
        bar = None
    last, saved, t0 = {}, [], time.time()
    with open(csv_path, "a", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        while trainer.iteration < cfg.max_iter:
            ts = time.time()
            row = trainer.step(next(content_iter), next(style_iter))
            row["seconds"] = round(time.time() - ts, 4)
            bad = [k for k in LOSS_COLUMNS if row[k] is not None and not math.isfinite(row[k])]
            wr.writerow(row)
            fh.flush()
            last = row
            if bad:
                raise FloatingPointError(f"iteration {row['iter']}: non-finite {bad}; see {csv_path}")
            n = trainer.iteration
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k[5:]: f"{row[k]:.3g}" for k in ("loss_content", "loss_style",
                                 "loss_identity", "loss_total") if row[k] is not None}, std=f"{row['out_std']:.3f}")
            if cfg.sample_every and n % cfg.sample_every == 0:
                trainer.save_samples(out / "samples" / f"iter_{n:06d}.png")
            out_of_time = bool(cfg.max_seconds) and time.time() - t0 >= cfg.max_seconds
            if n % cfg.save_every == 0 or n == cfg.max_iter or out_of_time:
                saved.append(str(trainer.save_checkpoint(out)))
            if out_of_time:
                break
    if bar is not None:
        bar.close()
    curve = plot_loss_curves(csv_path, out / "loss_curve.png")
    return {"last": last, "checkpoints": saved, "loss_csv": str(csv_path), "loss_curve": curve,
            "seconds": time.time() - t0, "iterations_run": trainer.iteration - start,
            "encoder_init": trainer.encoder_kind}


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m mccstn.train",
        description="Train MccSTN (content/style/identity/adversarial/contrastive losses).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            ap.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default,
                            help=help_text)
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            ap.add_argument(f"--{f.name}", type=typ, default=f.default, help=help_text)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        summary = train(cfg)
    except (ValueError, FileExistsError, FileNotFoundError, ckpt.CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = summary["last"]
    print(f"done: {summary['iterations_run']} iterations in {summary['seconds']:.1f}s; "
          f"last losses: " + ", ".join(f"{k[5:]}={last[k]:.4g}" for k in LOSS_COLUMNS
                                      if last.get(k) is not None))
    print(f"checkpoints: {summary['checkpoints'][-1] if summary['checkpoints'] else '-'}; "
          f"loss curve: {summary['loss_curve']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
