"""MccSTN's training settings (:class:`TrainConfig`): every option of ``python -m mccstn.train``,
with the public recipe's defaults (numbers cited in :mod:`mccstn.train`'s docstring), and their
checks, made before any data or weights are read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .network import encoder_size_problem


def _f(default, help_text, **kw):
    return field(default=default, metadata={"help": help_text, **kw})


@dataclass
class TrainConfig:
    """All training settings, with the public recipe's defaults (see the module docstring)."""

    content_dir: str = _f("", "folder of content photos (searched recursively)")
    style_dir: str = _f("", "folder of style images (searched recursively)")
    out: str = _f("runs/mccstn", "output folder: checkpoints/, samples/, losses.csv, train_state.pt")
    vgg: str = _f("", "encoder init: a vgg_normalised.pth or a torchvision vgg19 state-dict file")
    init_from: str = _f("", "optional folder (or .safetensors) with MccSTN weights to fine-tune")
    max_iter: int = _f(160000, "total iterations (AesUST: 80k stage I + 80k stage II)")
    stage2_start: int = _f(80000, "iteration where the aesthetic stage II begins (-1: never)")
    batch_size: int = _f(4, "images per batch")
    load_size: int = _f(512, "images are resized to load_size x load_size ...")
    crop_size: int = _f(256, "... then randomly cropped to crop_size (below 125 px the discriminator "
                         "sees a bilinear enlargement, as at inference)")
    lr: float = _f(1e-4, "Adam learning rate (all optimisers)")
    lr_decay: float = _f(5e-5, "lr at iteration i is lr / (1 + lr_decay * i)")
    content_weight: float = _f(1.0, "content loss weight")
    style_weight: float = _f(1.0, "style loss weight")
    identity_weight: float = _f(50.0, "identity loss weight (stage I)")
    identity_pixel_factor: float = _f(50.0, "factor of the pixel MSE inside the identity/AR1 loss")
    gan_weight: float = _f(5.0, "generator-side adversarial weight")
    ar1_weight: float = _f(0.5, "stage II: aesthetic self-reconstruction (AR1) weight")
    ar2_weight: float = _f(500.0, "stage II: aesthetic-feature style loss (AR2) weight")
    nce_g_weight: float = _f(0.05, "generator-side contrastive weight (CAST's lambda_NCE_G); 0 disables")
    nce_d_weight: float = _f(1.0, "projector-side contrastive weight (CAST's lambda_NCE_D)")
    nce_layers: str = _f("0,1,2,3", "encoder layers for the style projector (0=relu1_1 .. 4=relu5_1)")
    nce_temperature: float = _f(0.07, "InfoNCE temperature")
    nce_queue: int = _f(4096, "negatives kept per layer")
    nce_crop: int = _f(256, "size of the random-resized crops fed to the projector")
    proj_hidden: int = _f(1024, "projector MLP first hidden width")
    proj_hidden2: int = _f(2048, "projector MLP second hidden width")
    proj_dim: int = _f(2048, "projector output (code) dimension")
    max_seconds: float = _f(0.0, "wall-clock budget of this run in seconds; when spent, a checkpoint is "
                                 "saved and training stops early (0: no limit)")
    save_every: int = _f(10000, "checkpoint interval (iterations); the last iteration is always saved")
    sample_every: int = _f(500, "sample-grid interval (0: never)")
    seed: int = _f(0, "random seed")
    warmup_iters: int = _f(0, "first iterations train the decoder on the identity loss alone (reconstruction "
                              "before the style losses dominate; 0: none, the public recipe)")
    clip_grad_norm: float = _f(0.0, "clip the generator's gradient norm to this (0: no clipping)")
    threads: int = _f(0, "torch CPU threads (0: leave as is)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    num_workers: int = _f(2, "data-loading worker processes (0: load in the main process)")
    resume: bool = _f(False, "continue from OUT/train_state.pt")
    overwrite: bool = _f(False, "allow starting in a non-empty OUT (old files may be replaced)")
    progress: bool = _f(True, "show a progress bar")

    def layers(self) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in str(self.nce_layers).split(",") if x.strip())
        except ValueError:
            raise ValueError(f"nce_layers must be comma-separated integers, got {self.nce_layers!r}") from None

    def validate(self) -> None:
        errs = []
        if not self.content_dir or not Path(self.content_dir).is_dir():
            errs.append(f"content_dir {self.content_dir!r} is not a folder")
        if not self.style_dir or not Path(self.style_dir).is_dir():
            errs.append(f"style_dir {self.style_dir!r} is not a folder")
        if not self.vgg and not self.init_from:
            errs.append("need --vgg (vgg_normalised.pth or torchvision vgg19 weights) or --init_from")
        if self.vgg and not Path(self.vgg).is_file():
            errs.append(f"vgg {self.vgg!r} is not a file")
        if self.max_iter < 1 or self.batch_size < 1:
            errs.append("max_iter and batch_size must be >= 1")
        if self.crop_size > self.load_size:
            errs.append(f"crop_size {self.crop_size} exceeds load_size {self.load_size}")
        if encoder_size_problem(self.crop_size, self.crop_size):
            errs.append(f"crop_size {self.crop_size} is too small for the encoder")
        if encoder_size_problem(self.nce_crop, self.nce_crop):
            errs.append(f"nce_crop {self.nce_crop} is too small for the encoder")
        if self.lr <= 0 or self.lr_decay < 0:
            errs.append("lr must be > 0 and lr_decay >= 0")
        for name in ("content_weight", "style_weight", "identity_weight", "gan_weight", "ar1_weight",
                     "ar2_weight", "nce_g_weight", "nce_d_weight"):
            if getattr(self, name) < 0:
                errs.append(f"{name} must be >= 0")
        try:
            layers = self.layers()
            if not layers or any(i < 0 or i > 4 for i in layers):
                errs.append(f"nce_layers must be in 0..4, got {self.nce_layers!r}")
        except ValueError as exc:
            errs.append(str(exc))
        if errs:
            raise ValueError("bad training config: " + "; ".join(errs))
