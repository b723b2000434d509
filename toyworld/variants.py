"""Precision variants of an exported diffusers pipeline folder.

The default weight files (``diffusion_pytorch_model.safetensors``, ``model.safetensors``) hold
float32 tensors, so a plain ``StableDiffusionPipeline.from_pretrained(folder)`` runs on a CPU with
no dtype argument; the half-precision copies use diffusers' variant naming
(``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16.safetensors``) and load with
``from_pretrained(folder, variant="fp16", torch_dtype=torch.float16)``.

    python -m toyworld.variants assets/models/toy-general assets/models/toy-cartoon

Whichever precision the default files are in, both files are written from them: float16 files
are upcast (exactly: every float16 value is a float32 value), float32 files are rounded down. A
float16 default file becomes the variant unchanged (same bytes).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

#: component folder -> weight file stem (diffusers models, transformers text encoder)
COMPONENT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
VARIANT = "fp16"


def _dtypes(sd: dict[str, torch.Tensor]) -> set[torch.dtype]:
    return {v.dtype for v in sd.values() if v.is_floating_point()}


def _set_config_dtype(config_path: Path, name: str) -> None:
    """transformers records the dtype in the config and loads in it by default."""
    if not config_path.is_file():
        return
    cfg = json.loads(config_path.read_text())
    changed = False
    for key in ("dtype", "torch_dtype"):
        if key in cfg and cfg[key] != name:
            cfg[key] = name
            changed = True
    if changed:
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def write_component_variants(sub: Path, stem: str) -> dict[str, str]:
    """Make ``sub/<stem>.safetensors`` float32 and ``sub/<stem>.fp16.safetensors`` float16."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    default = sub / f"{stem}.safetensors"
    half = sub / f"{stem}.{VARIANT}.safetensors"
    if not default.is_file():
        raise FileNotFoundError(f"{default}: no default weights file to make variants from")
    with safe_open(str(default), "pt") as f:
        metadata = f.metadata() or {"format": "pt"}
    sd = load_file(str(default))
    kinds = _dtypes(sd)
    if kinds == {torch.float16}:
        shutil.copyfile(default, half)  # the same bytes: git stores the blob once
        save_file({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, str(default), metadata)
        made = "fp32 upcast from fp16"
    elif kinds == {torch.float32}:
        save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(half), metadata)
        made = "fp16 rounded from fp32"
    else:
        raise ValueError(f"{default}: expected all-float16 or all-float32 tensors, found {sorted(map(str, kinds))}")
    _set_config_dtype(sub / "config.json", "float32")
    return {"default": default.name, VARIANT: half.name, "made": made}


def write_precision_variants(folder: Path) -> dict[str, dict[str, str]]:
    """fp32 default files plus fp16 variant files for every component of a pipeline folder."""
    folder = Path(folder)
    return {sub: write_component_variants(folder / sub, stem) for sub, stem in COMPONENT_STEMS.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+")
    a = p.parse_args(argv)
    for folder in a.folders:
        for sub, info in write_precision_variants(folder).items():
            print(f"{folder}/{sub}: {info['default']} (fp32) + {info[VARIANT]} (fp16); {info['made']}")


if __name__ == "__main__":
    main()
