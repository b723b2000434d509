"""Random-weight models at real scale, for timing and memory benchmarks (nothing downloaded).

Timing does not depend on weight values, so an SD 1.x-sized UNet/VAE/CLIP text encoder built
from the shipped configs (``assets/configs/sd1``) with random weights costs what the real one
costs. Modules are built on the meta device (no allocation, no slow default init), then
materialised with ``to_empty`` and filled deterministically: weights ~ N(0, 1/fan_in) (keeps
activations O(1), so no denormals or infs distort CPU timings), biases 0, norm scales 1.

``size="toy"`` gives the tiny test-sized models of ``fusion/testing.py`` instead (the SD 1.x
layout at a few thousand parameters), for smoke tests.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fusion.loading import (LDM_DDIM, SD1_BETAS, SD1_CONFIG_DIR, DiffusionModel)  # noqa: E402

__all__ = ["fill_", "build_sd1_components", "build_tiny_components", "make_pair", "SCHEDULER_CONFIG"]

SCHEDULER_CONFIG = {**SD1_BETAS, **LDM_DDIM, "prediction_type": "epsilon"}


def _config(sub: str) -> dict:
    return {k: v for k, v in json.loads((SD1_CONFIG_DIR / sub / "config.json").read_text()).items()
            if not k.startswith("_")}


@torch.no_grad()
def fill_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Deterministic fast fill of every parameter (see the module doc); rebuilds buffers that
    ``to_empty`` left uninitialised (CLIP's position ids)."""
    gens: dict = {}
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            g = gens.get(p.device)
            if g is None:  # one generator per device (CUDA fills on the GPU: seconds, not minutes)
                g = gens[p.device] = torch.Generator(device=p.device).manual_seed(int(seed))
            p.normal_(0.0, fan_in ** -0.5, generator=g)
        elif name.endswith("bias"):
            p.zero_()
        else:  # norm scales and the like
            p.fill_(1.0)
    for mod in module.modules():
        for bname, buf in list(mod.named_buffers(recurse=False)):
            if bname.endswith("position_ids"):
                buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand(buf.shape))
            elif buf.is_floating_point():
                buf.zero_()
    return module


def _materialise(build, seed: int, device, dtype) -> torch.nn.Module:
    with torch.device("meta"):
        m = build()
    m = m.to_empty(device=device)
    fill_(m, seed)
    return m.to(dtype=dtype).eval().requires_grad_(False)


def build_sd1_components(seed: int = 0, device="cpu", dtype=torch.float32, parts=("unet", "vae", "text_encoder")):
    """SD 1.x-sized UNet, VAE and CLIP ViT-L/14 text encoder with random weights, by name."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(_config("unet")),
        "vae": lambda: AutoencoderKL.from_config(_config("vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**_config("text_encoder"))),
    }
    offset = {"unet": 0, "vae": 1, "text_encoder": 2}
    return {p: _materialise(builders[p], seed * 10 + offset[p], device, dtype) for p in parts}


def build_tiny_components(seed: int = 0, device="cpu", dtype=torch.float32):
    sys.path.insert(0, str(ROOT))
    from fusion.testing import tiny_components
    unet, vae, te = tiny_components(seed)
    return {k: m.to(device=device, dtype=dtype).requires_grad_(False)
            for k, m in (("unet", unet), ("vae", vae), ("text_encoder", te))}


def _tokenizer(size: str):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(SD1_CONFIG_DIR / "tokenizer"), local_files_only=True)
    if size != "sd1":
        from fusion.testing import MAX_LEN
        tok.model_max_length = MAX_LEN
    return tok


def make_pair(size: str = "sd1", device="cpu", dtype=torch.float32, shared: bool = True,
              general_seed: int = 0, expert_seed: int = 1):
    """(general, expert) DiffusionModels: the expert has its own UNet; its VAE and text encoder
    are bit-identical to the general's. ``shared=True``: the expert *holds the general's* VAE
    and text encoder objects (what deduplication ends with); ``shared=False``: it holds its own
    copies (what two separately loaded checkpoints hold)."""
    build = build_sd1_components if size == "sd1" else build_tiny_components
    g = build(general_seed, device=device, dtype=dtype)
    e_unet = (build_sd1_components(expert_seed, device=device, dtype=dtype, parts=("unet",))["unet"]
              if size == "sd1" else build(expert_seed, device=device, dtype=dtype)["unet"])
    tok = _tokenizer(size)
    if shared:
        vae, te = g["vae"], g["text_encoder"]
    else:
        vae, te = copy.deepcopy(g["vae"]), copy.deepcopy(g["text_encoder"])
    general = DiffusionModel(name="general", source=f"random:{size}:{general_seed}", unet=g["unet"], vae=g["vae"],
                             text_encoder=g["text_encoder"], tokenizer=tok, scheduler_config=dict(SCHEDULER_CONFIG))
    expert = DiffusionModel(name="expert", source=f"random:{size}:{expert_seed}", unet=e_unet, vae=vae,
                            text_encoder=te, tokenizer=tok if shared else copy.deepcopy(tok),
                            scheduler_config=dict(SCHEDULER_CONFIG))
    return general, expert
