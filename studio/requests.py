"""The app's side of one fusion request: its defaults, the model pickers' values, and the
conversion to the library's one request object (:class:`fusion.settings.FusionRequest`), whose
rules check it.

The app keeps its own defaults, in :data:`APP` only: the **demo's** (issue 13 item 2: the
benchmark's recommended settings on a blind-spot prompt, :func:`studio.examples.demo_example`,
read from ``assets/toyworld/fusion_prompts.json``), so the Fusion tab starts as the demo, a ``/fuse``
call that leaves a field out runs the demo's value (Gradio fills it with the widget's start-up
value) and a :class:`studio.fusion_service.FuseRequest` built without one does too. The library's
and the command lines' defaults stay the reference script's (:class:`fusion.settings.FusionSettings`:
100 steps, guidance 10, 8 samples, ``600,1,1`` mode 2 with the general model primary, the faithful
SNB); so do the reference recipes among the examples, and the Sweep tab's axes (its own initial
values) and its cells (the faithful SNB: the sweep has no blend options).

What stays here is the app's own input conversion: picker values and path boxes to paths
(through the policy: public mode offers only its models and LoRAs), JSON numbers to whole
numbers (NaN and fractions refused by name, :func:`studio.limits.whole_number`) and the app's
size limit (:class:`studio.limits.Limits`). Importing this module imports neither torch nor gradio.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from fusion.settings import LoraSettings, PairChoice

from .examples import FUSION_EXAMPLES
from .models import resolve_lora, resolve_model

__all__ = ["AppDefaults", "APP", "ModelPick"]


@dataclass(frozen=True)
class AppDefaults:
    """The app's request defaults: the demo's recipe (:meth:`from_example`) and the app's own
    sampling choices.

    From the demo (:func:`studio.examples.demo_example`, the benchmark's recommendation for its
    family; the Fusion tab's widgets start from the same example): seed, steps (Fusion tab; the
    public app clamps its slider and the example to its step cap), guidance, fusion_selection,
    mode, primary and blend (options beyond the paper as JSON; "" = the faithful SNB).
    The app's own: sweep_steps (Sweep tab requests without a steps value, 20), sampler (DDIM, the
    reference's) and n_samples (images per trajectory, 1).
    """

    seed: int
    steps: int
    guidance: float
    fusion_selection: str
    mode: int
    primary: str
    blend: str = ""
    sweep_steps: int = 20
    sampler: str = "ddim"
    n_samples: int = 1

    @classmethod
    def from_example(cls, e) -> "AppDefaults":
        """The defaults of a :class:`studio.examples.FusionExample`'s recipe."""
        return cls(seed=e.seed, steps=e.steps, guidance=e.guidance, fusion_selection=e.fusion_selection,
                   mode=e.mode, primary=e.primary, blend=e.blend)


#: the app's defaults: the demo's (the first example, :func:`studio.examples.demo_example`)
APP = AppDefaults.from_example(FUSION_EXAMPLES[0])


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
