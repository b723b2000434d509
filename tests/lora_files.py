"""LoRA files for the tests, written from the published formats (not from fusion/lora.py).

kohya-ss / A1111 (kohya-ss/sd-scripts ``networks/lora.py``; copy read in bmaltais/kohya_ss):
  * a LoRA module per Linear/Conv2d child of every ``Transformer2DModel`` of the SD 1.x UNet
    (``UNET_TARGET_REPLACE_MODULE``) and of every ``CLIPAttention``/``CLIPMLP`` of the text encoder;
  * its name is ``prefix + "." + module_path + "." + child_path`` with every "." replaced by "_",
    prefix ``lora_unet`` / ``lora_te`` (SDXL: ``lora_te1`` / ``lora_te2``, and the UNet in SGM
    naming ``input_blocks`` / ``middle_block`` / ``output_blocks``);
  * tensors ``<name>.lora_down.weight`` (rank, in[, 1, 1]), ``<name>.lora_up.weight``
    (out, rank[, 1, 1]) and ``<name>.alpha`` (a 0-d tensor); the applied update is
    ``W + multiplier * (alpha / rank) * up @ down`` (``LoRAModule.merge_to``).
LyCORIS LoHa / LoKr (KohakuBlueleaf/LyCORIS ``lycoris/modules/loha.py``, ``lokr.py``): the same
module names with ``hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b`` or ``lokr_w1, lokr_w2`` tensors.

The tiny test UNet (fusion/testing.py) has SD 1.x's block structure at small widths: the attention
blocks and channel counts below follow from its config (block_out_channels (8, 16), one
cross-attention down block, a cross-attention mid block, one cross-attention up block with
layers_per_block + 1 = 2 transformers; 1x1-conv proj_in/proj_out as in SD 1.x; GEGLU
feed-forward of inner width 4 x channels; cross-attention width 32; text encoder width 32, MLP 37,
2 layers).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

TINY_ATTENTIONS = {"down_blocks.0.attentions.0": 8, "mid_block.attentions.0": 16,
                   "up_blocks.1.attentions.0": 8, "up_blocks.1.attentions.1": 8}
TINY_CONTEXT = 32
TINY_TEXT = dict(width=32, mlp=37, layers=2)


def tiny_unet_modules(context: int = TINY_CONTEXT, attentions: dict = TINY_ATTENTIONS):
    """(diffusers module path, in, out, is_conv_1x1) of every kohya SD 1.x UNet LoRA target."""
    out = []
    for block, c in attentions.items():
        out += [(f"{block}.proj_in", c, c, True), (f"{block}.proj_out", c, c, True)]
        tb = f"{block}.transformer_blocks.0"
        for attn, kv_in in (("attn1", c), ("attn2", context)):
            out += [(f"{tb}.{attn}.to_q", c, c, False), (f"{tb}.{attn}.to_k", kv_in, c, False),
                    (f"{tb}.{attn}.to_v", kv_in, c, False), (f"{tb}.{attn}.to_out.0", c, c, False)]
        out += [(f"{tb}.ff.net.0.proj", c, 8 * c, False), (f"{tb}.ff.net.2", 4 * c, c, False)]
    return out


def tiny_text_modules(width=TINY_TEXT["width"], mlp=TINY_TEXT["mlp"], layers=TINY_TEXT["layers"]):
    """(transformers-4 CLIPTextModel module path, in, out, False): kohya's names keep ``text_model.``."""
    out = []
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}"
        out += [(f"{p}.self_attn.{x}_proj", width, width, False) for x in ("q", "k", "v", "out")]
        out += [(f"{p}.mlp.fc1", width, mlp, False), (f"{p}.mlp.fc2", mlp, width, False)]
    return out


def kohya_name(prefix: str, module_path: str) -> str:
    return (prefix + "." + module_path).replace(".", "_")


def kohya_lora(rank=4, alpha=2.0, seed=0, text=True, std=0.3, unet_modules=None, prefix="lora_unet"):
    """{key: tensor} of a kohya LoRA for the tiny model, plus {module: (up @ down * alpha/rank)} deltas."""
    g = torch.Generator().manual_seed(seed)
    sd, deltas = {}, {}
    mods = [(prefix, m) for m in (unet_modules if unet_modules is not None else tiny_unet_modules())]
    if text:
        mods += [("lora_te", m) for m in tiny_text_modules()]
    for pre, (path, fan_in, fan_out, conv) in mods:
        name = kohya_name(pre, path)
        down = torch.randn(rank, fan_in, generator=g) * std
        up = torch.randn(fan_out, rank, generator=g) * std
        delta = (up @ down) * (alpha / rank)
        if conv:
            down, up, delta = down[:, :, None, None], up[:, :, None, None], delta[:, :, None, None]
        sd[f"{name}.lora_down.weight"] = down.contiguous()
        sd[f"{name}.lora_up.weight"] = up.contiguous()
        sd[f"{name}.alpha"] = torch.tensor(float(alpha))
        deltas[(pre, path)] = delta
    return sd, deltas


def save(sd: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def merge_into(model, deltas: dict, scale: float = 1.0) -> None:
    """Apply ``W += scale * delta`` to a loaded DiffusionModel's UNet / text encoder in place (the
    kohya merge rule), mapping kohya's ``text_model.`` paths onto whichever CLIPTextModel layout is
    installed."""
    unet_p = dict(model.unet.named_parameters())
    te_p = dict(model.text_encoder.named_parameters())
    with torch.no_grad():
        for (pre, path), d in deltas.items():
            if pre == "lora_unet":
                unet_p[f"{path}.weight"].add_(scale * d.to(unet_p[f"{path}.weight"].dtype))
            else:
                key = f"{path}.weight" if f"{path}.weight" in te_p else f"{path.removeprefix('text_model.')}.weight"
                te_p[key].add_(scale * d.to(te_p[key].dtype))
