"""Write a diffusers model's weights in the original LDM/CompVis single-file key layout.

Written for the tests from the LDM module structure (``openaimodel.UNetModel``,
``autoencoder.AutoencoderKL`` with ``model.Encoder/Decoder``, ``FrozenCLIPEmbedder``), as an
independent path to check the loader, which goes the other way with diffusers' converters.
Covers the block types the tiny test models and SD 1.x use.
"""
from __future__ import annotations

import torch

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sub(key: str, mapping: dict[str, str]) -> str:
    head, _, tail = key.partition(".")
    if key.startswith("to_out.0."):
        head, tail = "to_out.0", key[len("to_out.0."):]
    return f"{mapping.get(head, head)}.{tail}"


def unet_to_ldm(sd: dict[str, torch.Tensor], layers_per_block: int, n_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    # input block index of (level, layer) and of each level's downsampler
    in_idx, k = {}, 1
    for lvl in range(n_levels):
        for j in range(layers_per_block):
            in_idx[(lvl, j)] = k
            k += 1
        if lvl < n_levels - 1:
            in_idx[(lvl, "down")] = k
            k += 1
    for key, v in sd.items():
        p = key.split(".")
        if key.startswith("time_embedding.linear_1."):
            new = "time_embed.0." + p[-1]
        elif key.startswith("time_embedding.linear_2."):
            new = "time_embed.2." + p[-1]
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + p[-1]
        elif key.startswith("conv_norm_out."):
            new = "out.0." + p[-1]
        elif key.startswith("conv_out."):
            new = "out.2." + p[-1]
        elif p[0] == "down_blocks":
            lvl, kind = int(p[1]), p[2]
            rest = ".".join(p[4:])
            if kind == "resnets":
                new = f"input_blocks.{in_idx[(lvl, int(p[3]))]}.0.{_sub(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{in_idx[(lvl, int(p[3]))]}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{in_idx[(lvl, 'down')]}.0.op.{p[-1]}"
        elif p[0] == "mid_block":
            kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
            if kind == "resnets":
                new = f"middle_block.{0 if j == 0 else 2}.{_sub(rest, _RESNET)}"
            else:
                new = f"middle_block.1.{rest}"
        elif p[0] == "up_blocks":
            lvl, kind = int(p[1]), p[2]
            rest = ".".join(p[4:])
            has_attn = any(k2.startswith(f"up_blocks.{lvl}.attentions.") for k2 in sd)
            if kind == "resnets":
                new = f"output_blocks.{lvl * (layers_per_block + 1) + int(p[3])}.0.{_sub(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{lvl * (layers_per_block + 1) + int(p[3])}.1.{rest}"
            else:  # upsamplers.0.conv.*: in the last block of the level, after resnet (and attention)
                blk = lvl * (layers_per_block + 1) + layers_per_block
                new = f"output_blocks.{blk}.{2 if has_attn else 1}.conv.{p[-1]}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out[UNET + new] = v
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], n_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, v in sd.items():
        p = key.split(".")
        part = p[0]
        if part in ("quant_conv", "post_quant_conv"):
            new = key
        elif p[1] in ("conv_in", "conv_out"):
            new = key
        elif p[1] == "conv_norm_out":
            new = f"{part}.norm_out.{p[-1]}"
        elif p[1] == "mid_block":
            kind, j = p[2], int(p[3])
            rest = ".".join(p[4:])
            if kind == "resnets":
                new = f"{part}.mid.block_{j + 1}.{_sub(rest, {'conv_shortcut': 'nin_shortcut'})}"
            else:
                new = f"{part}.mid.attn_1.{_sub(rest, _VAE_ATTN)}"
                if v.dim() == 2:  # LDM stores the attention projections as 1x1 convs
                    v = v[:, :, None, None]
        elif p[1] in ("down_blocks", "up_blocks"):
            lvl = int(p[2])
            ldm_lvl = lvl if p[1] == "down_blocks" else n_levels - 1 - lvl
            word = "down" if p[1] == "down_blocks" else "up"
            if p[3] == "resnets":
                rest = ".".join(p[5:])
                new = f"{part}.{word}.{ldm_lvl}.block.{p[4]}.{_sub(rest, {'conv_shortcut': 'nin_shortcut'})}"
            else:  # downsamplers / upsamplers .0.conv.*
                new = f"{part}.{word}.{ldm_lvl}.{'downsample' if word == 'down' else 'upsample'}.conv.{p[-1]}"
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        out[VAE + new] = v
    return out


def clip_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {CLIP + k: v for k, v in sd.items()}


def model_to_ldm(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    sd = {}
    sd.update(unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, len(unet.config.block_out_channels)))
    sd.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    sd.update(clip_to_ldm(text_encoder.state_dict()))
    return {k: v.contiguous().clone() for k, v in sd.items()}
