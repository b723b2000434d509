"""Where the project's own files live: the repository root, its assets and the shipped toy models.

One place for these paths; every package (fusion, mccstn, toyworld, studio, bench) imports them
from here. Nothing here touches the file system.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PROJECT_ROOT", "ASSETS_DIR", "TOY_MODELS_DIR", "TOY_GENERAL", "TOY_EXPERT", "TOY_LORA",
           "TOY_DEFAULT_PROMPT", "SD1_CONFIG_DIR", "SD1_TOKENIZER", "TOY_JUDGE", "MCCSTN_WEIGHTS_DIR"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
TOY_MODELS_DIR = ASSETS_DIR / "models"
TOY_GENERAL = TOY_MODELS_DIR / "toy-general"         # the toy general model (diffusers folder)
TOY_EXPERT = TOY_MODELS_DIR / "toy-cartoon"          # the toy cartoon expert (diffusers folder)
TOY_LORA = TOY_MODELS_DIR / "toy-cartoon-lora" / "pytorch_lora_weights.safetensors"
TOY_DEFAULT_PROMPT = TOY_MODELS_DIR / "default_prompt.txt"
SD1_CONFIG_DIR = ASSETS_DIR / "configs" / "sd1"      # SD 1.x component configs + tokenizer
SD1_TOKENIZER = SD1_CONFIG_DIR / "tokenizer"
TOY_JUDGE = ASSETS_DIR / "toyworld" / "judge.safetensors"
MCCSTN_WEIGHTS_DIR = ASSETS_DIR / "mccstn"           # the shipped MccSTN toy-world weights
