"""Original LDM/CompVis single-file SD 1.x checkpoints: family checks, EMA choice, key conversion.

A real SD 1.x file (sd-v1-4, v1-5 and nearly every fine-tune) holds

* ``model.diffusion_model.*``: the UNet (``openaimodel.UNetModel``);
* ``model_ema.<name without dots>``: optional EMA copies of the UNet (``LitEma``), e.g.
  ``model_ema.diffusion_modelinput_blocks00weight``; ignored unless ``use_ema`` is asked;
* ``first_stage_model.*``: the KL autoencoder (VAE);
* ``cond_stage_model.transformer.text_model.*``: the CLIP ViT-L/14 text encoder as the
  transformers-4 ``CLIPTextModel`` saved it (some files lack the ``text_model.`` level);
* DDPM schedule buffers (``betas``, ``alphas_cumprod``, ...), not needed here.

The UNet and VAE keys are converted with diffusers' converters; the text-encoder keys are fitted to
whatever layout the installed ``CLIPTextModel`` uses (with or without ``text_model.``), read from the
model's own state dict. Files of other families (SD 2.x, SDXL, inpainting UNets) are refused before
any weights are converted, with an error naming the file and what does not fit.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fusion.loading import ModelLoadError, _read_json

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
TEXT_MODEL_LEVEL = "text_model."
#: the first cross-attention key projection: its input width is the text-conditioning width
CROSS_ATTN_KEY = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
UNET_IN_CONV = UNET_PREFIX + "input_blocks.0.0.weight"
UNET_OUT_CONV = UNET_PREFIX + "out.2.weight"


def ema_key(unet_key: str) -> str:
    """LitEma's name for the EMA copy of ``model.diffusion_model.<name>``: ``model_ema.`` +
    ``diffusion_model.<name>`` with every dot removed."""
    return EMA_PREFIX + unet_key[len("model."):].replace(".", "")


def check_sd1_family(sd: dict[str, torch.Tensor], where: str, unet_cfg: dict, text_width: int) -> None:
    """Raise ModelLoadError, naming the file and the mismatch, unless ``sd`` is an SD 1.x-family
    single file that fits the UNet config and a text encoder of width ``text_width``."""
    if any(k.startswith("conditioner.embedders.") for k in sd):
        raise ModelLoadError(
            f"{where}: this is an SDXL checkpoint (text encoders under 'conditioner.embedders.*'); "
            f"only the SD 1.x family (one CLIP ViT-L/14 text encoder, 768-wide) is supported")
    if any(k.startswith("cond_stage_model.model.") for k in sd):
        raise ModelLoadError(
            f"{where}: this is an SD 2.x checkpoint (OpenCLIP text encoder under 'cond_stage_model.model.*'); "
            f"only the SD 1.x family (CLIP ViT-L/14 text encoder under 'cond_stage_model.transformer.*') "
            f"is supported")
    if not any(k.startswith(UNET_PREFIX) for k in sd):
        hint = (" (it has only EMA copies 'model_ema.*': load it with use_ema=True)"
                if any(k.startswith(EMA_PREFIX + "diffusion_model") for k in sd) else "")
        raise ModelLoadError(
            f"{where}: not an SD 1.x-family single-file checkpoint (no 'model.diffusion_model.*' UNet "
            f"keys){hint}; found e.g. {list(sd)[:3]}")
    ctx = sd.get(CROSS_ATTN_KEY)
    if ctx is not None and ctx.dim() == 2 and ctx.shape[1] != unet_cfg["cross_attention_dim"]:
        family = " (SD 2.x uses 1024)" if ctx.shape[1] == 1024 else ""
        raise ModelLoadError(
            f"{where}: UNet cross-attention context width is {ctx.shape[1]}{family} ({CROSS_ATTN_KEY} "
            f"{list(ctx.shape)}); SD 1.x expects {unet_cfg['cross_attention_dim']}")
    conv_in = sd.get(UNET_IN_CONV)
    if conv_in is not None and conv_in.dim() == 4 and conv_in.shape[1] != unet_cfg["in_channels"]:
        kind = (" (an inpainting UNet: latents + mask + masked-image latents)" if conv_in.shape[1] == 9 else "")
        raise ModelLoadError(
            f"{where}: UNet input conv takes {conv_in.shape[1]} channels{kind} ({UNET_IN_CONV} "
            f"{list(conv_in.shape)}); text-to-image SD 1.x takes {unet_cfg['in_channels']}")
    conv_out = sd.get(UNET_OUT_CONV)
    if conv_out is not None and conv_out.dim() == 4 and conv_out.shape[0] != unet_cfg["out_channels"]:
        raise ModelLoadError(
            f"{where}: UNet output conv gives {conv_out.shape[0]} channels ({UNET_OUT_CONV} "
            f"{list(conv_out.shape)}); SD 1.x gives {unet_cfg['out_channels']}")
    missing = [label for label, prefix in (("VAE (first_stage_model.*)", VAE_PREFIX),
                                           ("text encoder (cond_stage_model.transformer.*)", TEXT_PREFIX))
               if not any(k.startswith(prefix) for k in sd)]
    if missing:
        raise ModelLoadError(
            f"{where}: incomplete single-file checkpoint: no {' and no '.join(missing)} in the file "
            f"(it holds a UNet only); use a full SD 1.x checkpoint or a diffusers folder")
    tok = next((v for k, v in sd.items() if k.startswith(TEXT_PREFIX) and k.endswith("token_embedding.weight")), None)
    if tok is not None and tok.dim() == 2 and tok.shape[1] != text_width:
        raise ModelLoadError(
            f"{where}: text encoder width is {tok.shape[1]} (token_embedding {list(tok.shape)}); "
            f"SD 1.x's CLIP ViT-L/14 is {text_width}")


def select_unet_weights(sd: dict[str, torch.Tensor], use_ema: bool, where: str) -> dict[str, torch.Tensor]:
    """The state dict with the UNet weights to use under ``model.diffusion_model.*`` and no
    ``model_ema.*`` keys: the raw training weights by default, the EMA copies with ``use_ema``."""
    out = {k: v for k, v in sd.items() if not k.startswith(EMA_PREFIX)}
    if not use_ema:
        return out
    unet_keys = [k for k in sd if k.startswith(UNET_PREFIX)]
    if not any(k.startswith(EMA_PREFIX + "diffusion_model") for k in sd):
        raise ModelLoadError(
            f"{where}: EMA weights were asked for, but the file has no EMA copies ('model_ema.diffusion_model*' "
            f"keys; it has {len(unet_keys)} 'model.diffusion_model.*' tensors): load it without use_ema")
    absent = [k for k in unet_keys if ema_key(k) not in sd]
    bad = [k for k in unet_keys if k not in absent and sd[ema_key(k)].shape != sd[k].shape]
    if absent or bad:
        raise ModelLoadError(
            f"{where}: the EMA copies do not cover the UNet: {len(absent)} missing (e.g. "
            f"{[ema_key(k) for k in absent[:2]]}), {len(bad)} of another shape (e.g. {bad[:2]})")
    for k in unet_keys:
        out[k] = sd[ema_key(k)]
    return out


def text_encoder_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CLIP text-encoder tensors with ``cond_stage_model.transformer.`` and any ``text_model.``
    level removed, position ids dropped (they are rebuilt)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(TEXT_PREFIX):
            name = k[len(TEXT_PREFIX):]
            name = name[len(TEXT_MODEL_LEVEL):] if name.startswith(TEXT_MODEL_LEVEL) else name
            if not name.endswith("position_ids"):
                out[name] = v
    return out


def fit_text_encoder_keys(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename CLIP text-encoder keys to the layout of the model at hand: with the
    ``text_model.`` level when the model's own state dict has it (transformers 4), without it
    otherwise (transformers 5). Input keys may use either layout."""
    with_level = any(k.startswith(TEXT_MODEL_LEVEL) for k in expected)
    out = {}
    for k, v in sd.items():
        bare = k[len(TEXT_MODEL_LEVEL):] if k.startswith(TEXT_MODEL_LEVEL) else k
        out[TEXT_MODEL_LEVEL + bare if with_level else bare] = v
    return out


def convert_ldm_state_dict(sd: dict[str, torch.Tensor], config_dir: Path, where: str = "checkpoint",
                           use_ema: bool = False):
    """Split an LDM-layout SD 1.x state dict into diffusers UNet and VAE state dicts (diffusers'
    converters) and the CLIP text-encoder tensors (layout-neutral names, see
    :func:`fit_text_encoder_keys`), with component configs read from ``config_dir``.
    Returns ``(unet_cfg, unet_sd, vae_cfg, vae_sd, te_cfg, te_sd)``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig

    if not config_dir.is_dir():
        raise ModelLoadError(f"config folder not found: {config_dir}")
    unet_cfg = UNet2DConditionModel.load_config(str(config_dir / "unet"))
    vae_cfg = AutoencoderKL.load_config(str(config_dir / "vae"))
    te_cfg = CLIPTextConfig(**{k: v for k, v in _read_json(config_dir / "text_encoder" / "config.json").items()
                               if not k.startswith("_")})
    check_sd1_family(sd, where, unet_cfg, te_cfg.hidden_size)
    sd = select_unet_weights(sd, use_ema, where)
    try:
        unet_sd = convert_ldm_unet_checkpoint(sd, unet_cfg)
        vae_sd = convert_ldm_vae_checkpoint(sd, vae_cfg)
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{where}: could not convert the LDM key layout with configs from "
                             f"{config_dir} ({type(e).__name__}: {e})") from None
    return unet_cfg, unet_sd, vae_cfg, vae_sd, te_cfg, text_encoder_state_dict(sd)
