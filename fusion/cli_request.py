"""The command lines' side of a request: their flags to :mod:`fusion.settings` objects, and a
:class:`fusion.settings.SettingsError` back to the flag it came from. The rules themselves are
the settings' (``python -m fusion`` and ``python -m fusion.sweep`` check nothing of their own
beyond their own flags: counts, output folders, prompt files)."""
from __future__ import annotations

from .paths import TOY_EXPERT, TOY_GENERAL
from .settings import FusionSettings, LoraSettings, PairChoice, SettingsError

__all__ = ["FLAGS", "LIBRARY_DEFAULTS", "add_pair_flags", "check_pair", "flag_error", "pair_from_args"]

#: the flag of each request field not spelled ``--{field}`` (the reference script's names)
FLAGS = {"steps": "ddim_steps", "guidance_scale": "scale", "height": "H", "width": "W", "seeds": "seed",
         "primary": "expert_primary", "trajectories": "only"}
#: the command lines' defaults are the library's (the reference script's)
LIBRARY_DEFAULTS = FusionSettings()


def flag_error(e: SettingsError, flags: dict | None = None) -> ValueError:
    """``e`` with its flag in front: ``--H: height must be a positive multiple of ...``."""
    name = {**FLAGS, **(flags or {})}.get(e.field, e.field)
    return ValueError(f"--{name}: {e}")


def add_pair_flags(p) -> None:
    """The model-pair flags both command lines take (read back by :func:`pair_from_args`)."""
    p.add_argument("--model0", default=str(TOY_GENERAL),
                   help="general model: a diffusers folder or a single .safetensors/.ckpt (SD 1.x layout)")
    p.add_argument("--model1", default=str(TOY_EXPERT), help="expert model (same family as model0)")
    p.add_argument("--lora0", default=None,
                   help="LoRA file applied to model0 (diffusers/peft or kohya .safetensors); e.g. --model0 BASE "
                        "--model1 BASE --lora1 style.safetensors fuses a base model with its own LoRA (one UNet held)")
    p.add_argument("--lora1", default=None, help="LoRA file applied to model1")
    p.add_argument("--lora0_scale", type=float, default=1.0, help="strength of --lora0 (1.0 = as trained)")
    p.add_argument("--lora1_scale", type=float, default=1.0, help="strength of --lora1 (1.0 = as trained)")
    p.add_argument("--config", default=None,
                   help="config folder (diffusers layout) for single-file checkpoints; default: the shipped SD 1.x configs")
    p.add_argument("--use_ema", action="store_true",
                   help="single-file checkpoints: take the UNet from the EMA copies (model_ema.*) instead of "
                        "model.diffusion_model.* (error if the file has none)")


def pair_from_args(args) -> PairChoice:
    """--model0/--model1, --lora0/--lora1 with their scales, --config and --use_ema."""
    return PairChoice(args.model0, args.model1, LoraSettings(args.lora0, args.lora1, args.lora0_scale, args.lora1_scale),
                      config=args.config, use_ema=args.use_ema)


def check_pair(args, read_loras: bool = True) -> PairChoice:
    """The pair of the flags, its files checked (and the LoRAs read) before any model loads."""
    return pair_from_args(args).check(read_loras=read_loras)
