"""Tiny random-weight SD 1.x-layout models for tests and benchmarks (built here, saved in the
diffusers layout). A library module so that tests/ and bench/ share it (bench/ imports no tests/).

The tokenizer is the real CLIP BPE tokenizer shipped in assets/configs/sd1/tokenizer, with a
short maximum length so the text encoder stays tiny.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .paths import SD1_TOKENIZER as TOKENIZER_DIR

MAX_LEN = 16


def tiny_components(seed: int = 0, cross_dim: int = 32, latent_channels: int = 4, vae_levels: int = 2):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=2)
    chans = (8, 16, 16)[:vae_levels]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=chans,
        down_block_types=("DownEncoderBlock2D",) * vae_levels, up_block_types=("UpDecoderBlock2D",) * vae_levels,
        layers_per_block=1, norm_num_groups=4, sample_size=8 * 2 ** (vae_levels - 1))
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=cross_dim, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=MAX_LEN, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=cross_dim))
    # random UNet output layers are initialised to zero in diffusers: make them non-trivial
    with torch.no_grad():
        for p in unet.conv_out.parameters():
            p.normal_(0, 0.2)
    return unet.eval(), vae.eval(), te.eval()


def write_tokenizer(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, dst / f.name)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = MAX_LEN
    cfg_path.write_text(json.dumps(cfg, indent=1))


SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": False,
    "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
}


def save_tiny_model(folder: Path, seed: int = 0, share_from: Path | None = None, **kw) -> Path:
    """A diffusers-layout folder. ``share_from``: copy that model's VAE and text encoder files
    (like a fine-tuned expert), so only the UNet differs."""
    folder = Path(folder)
    unet, vae, te = tiny_components(seed, **kw)
    unet.save_pretrained(folder / "unet")
    if share_from is not None:
        for sub in ("vae", "text_encoder"):
            shutil.copytree(Path(share_from) / sub, folder / sub)
    else:
        vae.save_pretrained(folder / "vae")
        te.save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    return folder
