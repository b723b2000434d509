"""Write a diffusers model's weights in the original LDM/CompVis single-file key layout.

Written for the tests from the LDM module structure (``openaimodel.UNetModel``,
``autoencoder.AutoencoderKL`` with ``model.Encoder/Decoder``, ``FrozenCLIPEmbedder``), as an
independent path to check the loader, which goes the other way with diffusers' converters.
Covers the block types the tiny test models and SD 1.x use. The text-encoder names are those of
the independent architecture description in ``tests/ldm_architecture.py`` (transformers-4
``CLIPTextModel`` under ``cond_stage_model.transformer.text_model.``), never the installed
transformers' own names; the tests check the UNet and VAE names against that description too.
"""
from __future__ import annotations

import torch

from tests.ldm_architecture import (CLIP, SCHEDULE_BUFFERS, UNET, VAE, TextEncoderSettings, ema_name,
                                    text_encoder_shapes)

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


def clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """The text encoder's tensors under the names a real SD 1.x file uses (from the
    independent description), whatever layout the installed CLIPTextModel has."""
    c = text_encoder.config
    settings = TextEncoderSettings(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                   intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                                   max_position_embeddings=c.max_position_embeddings)
    described = text_encoder_shapes(settings)
    sd = {k: v for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    out, used = {}, set()
    for name, shape in described.items():
        bare = name[len(CLIP):]
        if bare.endswith("position_ids"):
            out[name] = torch.arange(shape[-1], dtype=torch.int64)[None]
            continue
        src = next((k for k in (bare, "text_model." + bare) if k in sd), None)
        if src is None or tuple(sd[src].shape) != shape:
            raise KeyError(f"described CLIP tensor {name} {shape} has no counterpart in the model")
        out[name] = sd[src]
        used.add(src)
    if used != set(sd):
        raise KeyError(f"model tensors outside the description: {sorted(set(sd) - used)[:3]}")
    return out


def model_to_ldm(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    sd = {}
    sd.update(unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, len(unet.config.block_out_channels)))
    sd.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    sd.update(clip_to_ldm(text_encoder))
    return {k: v.contiguous().clone() for k, v in sd.items()}


def with_training_extras(sd: dict[str, torch.Tensor], ema_from: dict[str, torch.Tensor] | None = None,
                         timesteps: int = 1000) -> dict[str, torch.Tensor]:
    """Add what a real training checkpoint also holds: the DDPM schedule buffers and, when
    ``ema_from`` (an LDM-layout state dict) is given, LitEma copies of its UNet tensors."""
    out = dict(sd)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, timesteps, dtype=torch.float64) ** 2
    for name in SCHEDULE_BUFFERS:
        out[name] = betas.float().clone()
    if ema_from is not None:
        out["model_ema.decay"] = torch.tensor(0.9999)
        out["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
        out.update({ema_name(k): v.clone() for k, v in ema_from.items() if k.startswith(UNET)})
    return out
