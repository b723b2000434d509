"""The app's side of one fusion request: its defaults, the model pickers' values, and the
conversion to the library's one request object (:class:`fusion.settings.FusionRequest`), whose
rules check it.

The app keeps its own defaults (50 steps, guidance 7.5, one image per trajectory), in
:data:`APP` only; the library's and the command lines' are the reference script's
(:class:`fusion.settings.FusionSettings`: 100 steps, guidance 10, 8 samples).

What stays here is the app's own input conversion: picker values and path boxes to paths
(through the policy: public mode offers only its models and LoRAs), JSON numbers to whole
numbers (NaN and fractions refused by name, :func:`studio.limits.whole_number`) and the app's
size limit (:class:`studio.limits.Limits`). Importing this module imports neither torch nor gradio.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from fusion.settings import LoraSettings, PairChoice

from .models import resolve_lora, resolve_model

__all__ = ["AppDefaults", "APP", "ModelPick"]


@dataclass(frozen=True)
class AppDefaults:
    """The app's request defaults (the Fusion tab's widgets start from the first example recipe,
    :mod:`studio.examples`, which uses the same steps and guidance).

    steps: Fusion tab sampling steps (50). sweep_steps: Sweep tab requests without a steps value
    (20). guidance: classifier-free guidance (7.5). seed: the reference's (6854).
    fusion_selection / mode / primary / sampler: the reference's first recipe ("600,1,1",
    mode 2, the general model primary, DDIM). n_samples: images per trajectory (1).
    """

    steps: int = 50
    sweep_steps: int = 20
    guidance: float = 7.5
    seed: int = 6854
    fusion_selection: str = "600,1,1"
    mode: int = 2
    primary: str = "general"
    sampler: str = "ddim"
    n_samples: int = 1


APP = AppDefaults()


@dataclass(kw_only=True)
class ModelPick:
    """The model pickers' values of a Fusion or Sweep tab request: per side a picker value or a
    typed path (the path box wins), and a LoRA picker value / path box ("" = no LoRA) with its
    scale (None = 1.0)."""

    general: str
    expert: str
    general_path_box: str = ""
    expert_path_box: str = ""
    general_lora: str = ""
    general_lora_path_box: str = ""
    general_lora_scale: float | None = 1.0
    expert_lora: str = ""
    expert_lora_path_box: str = ""
    expert_lora_scale: float | None = 1.0

    def picks(self) -> dict:
        """These fields by name (to carry them into another request)."""
        return {f.name: getattr(self, f.name) for f in fields(ModelPick)}

    def pair(self, policy=None) -> PairChoice:
        """The resolved pair, or a ValueError (public mode: only what the policy offers)."""
        resolve = policy.resolve_model if policy is not None else resolve_model
        resolve_l = getattr(policy, "resolve_lora", resolve_lora)
        general = resolve(self.general, self.general_path_box, "General")
        expert = resolve(self.expert, self.expert_path_box, "Expert")
        lora0 = resolve_l(self.general_lora, self.general_lora_path_box, "General")
        lora1 = resolve_l(self.expert_lora, self.expert_lora_path_box, "Expert")
        lora = LoraSettings(None if lora0 is None else str(lora0), None if lora1 is None else str(lora1),
                            1.0 if self.general_lora_scale is None else self.general_lora_scale,
                            1.0 if self.expert_lora_scale is None else self.expert_lora_scale)
        return PairChoice(str(general), str(expert), lora)
