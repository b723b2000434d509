"""The command lines' side of a request: their flags to :mod:`fusion.settings` objects, and a
:class:`fusion.settings.SettingsError` back to the flag it came from. The rules themselves are
the settings' (``python -m fusion`` and ``python -m fusion.sweep`` check nothing of their own
beyond their own flags: counts, output folders, prompt files)."""
from __future__ import annotations

from .settings import FusionSettings, LoraSettings, PairChoice, SettingsError

__all__ = ["FLAGS", "LIBRARY_DEFAULTS", "flag_error", "pair_from_args"]

#: the flag of each request field not spelled ``--{field}`` (the reference script's names)
FLAGS = {"steps": "ddim_steps", "guidance_scale": "scale", "height": "H", "width": "W", "seeds": "seed",
         "primary": "expert_primary", "trajectories": "only"}
#: the command lines' defaults are the library's (the reference script's)
LIBRARY_DEFAULTS = FusionSettings()


def flag_error(e: SettingsError, flags: dict | None = None) -> ValueError:
    """``e`` with its flag in front: ``--H: height must be a positive multiple of ...``."""
    name = {**FLAGS, **(flags or {})}.get(e.field, e.field)
    return ValueError(f"--{name}: {e}")


def pair_from_args(args) -> PairChoice:
    """--model0/--model1, --lora0/--lora1 with their scales, --config and --use_ema."""
    return PairChoice(args.model0, args.model1, LoraSettings(args.lora0, args.lora1, args.lora0_scale, args.lora1_scale),
                      config=args.config, use_ema=getattr(args, "use_ema", False))


def check_pair(args, read_loras: bool = True) -> PairChoice:
    """The pair of the flags, its files checked (and the LoRAs read) before any model loads."""
    return pair_from_args(args).check(read_loras=read_loras)
