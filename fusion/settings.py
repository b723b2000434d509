"""One fusion request, and its checks that need no model.

A request is the model pair (:class:`PairChoice`: model paths and their LoRAs), the two prompts,
the seeds and one :class:`FusionSettings`. :meth:`FusionRequest.validated` checks all of it
without loading anything; the only model-dependent rules (the image size against the primary's
VAE factor, the steps against its training timesteps) are checked once, in
:meth:`fusion.pipeline.FusionPipeline.check_inputs`, with :func:`check_image_side`. Every error
is a :class:`SettingsError` naming its field, so a command line can name the flag.

Defaults here are the library's: the reference script's (DDIM 100 steps, guidance 10, 8 samples,
seed 6854). The app's defaults are in :mod:`studio.requests`, the command lines' in their parsers.

Light: importing this module imports neither torch nor diffusers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .blend_options import BlendOptions, as_blend_options
from .schedule import FusionSelection, check_mode, parse_fusion_selection

__all__ = ["SettingsError", "FusionSettings", "LoraSettings", "PairChoice", "FusionRequest", "TRAJECTORIES",
           "PRIMARIES", "DEFAULT_SEED", "check_image_side", "check_prompts", "check_seeds"]

TRAJECTORIES = ("general", "expert", "fused")
PRIMARIES = ("general", "expert")
#: the reference's seed
DEFAULT_SEED = 6854


class SettingsError(ValueError):
    """A request field that cannot run. ``field``: its name in :class:`FusionSettings`,
    :class:`PairChoice` or :class:`FusionRequest` (``"height"``, ``"lora1"``, ``"seeds"``, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _is_int(v) -> bool:
    import numbers
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _checked(name: str, fn, value):
    """``fn(value)``, its ValueError re-raised as a :class:`SettingsError` for ``name``."""
    try:
        return fn(value)
    except SettingsError:
        raise
    except ValueError as e:
        raise SettingsError(name, str(e)) from None


def check_image_side(label: str, value, factor: int, native: int) -> int:
    """The one size rule: ``value`` (None = ``native``) must be a positive multiple of the
    primary's VAE factor ``factor``. Returns the side as an int."""
    v = native if value is None else value
    if not _is_int(v) or v < factor or v % factor:
        raise SettingsError(label, f"{label} must be a positive multiple of the VAE factor {factor} "
                                   f"(e.g. {native}), got {v!r}")
    return int(v)


def check_prompts(**prompts) -> None:
    for label, p in prompts.items():
        if not isinstance(p, str):
            raise SettingsError(label, f"{label} must be a string, got {type(p).__name__}")


def check_seeds(seeds: Sequence[int]) -> list[int]:
    if not seeds:
        raise SettingsError("seeds", "seeds must list at least one integer seed")
    for seed in seeds:
        if not _is_int(seed) or not 0 <= int(seed) < 2 ** 63:
            raise SettingsError("seeds", f"seed must be an integer in 0..2^63-1, got {seed!r}")
    return [int(s) for s in seeds]


@dataclass
class FusionSettings:
    """Every knob of one fusion request. Defaults reproduce the reference script.

    fusion_selection: "v1,kg,ke" (v1 a DDPM timestep 0..1000, kg/ke softmax sharpness > 0).
    mode: 0 primary alone; 1 primary alone for t > v1 then SNB; 2 SNB for t > v1 then primary.
    primary: "general" (model0, the reference's default) or "expert" (model1).
    steps: sampling steps. sampler: "ddim" (eta 0, the reference) or one of
        :data:`fusion.schedulers.SAMPLERS` ("dpmpp_2m", "dpmpp_2m_karras", "unipc", "euler").
    guidance_scale: classifier-free guidance scale.
    height/width: image size in pixels; None = the primary UNet's native size. Must be a multiple
        of the VAE factor (checked with the model, :func:`check_image_side`).
    n_samples: images per seed (one batch). negative_prompt: the "unconditional" prompt ("" as in
        the reference).
    prompt_routing: "role" (reference) or "model" (see :mod:`fusion.pipeline`).
    own_uncond: secondary saliency uses the secondary's own uncond noise (reference: primary's).
    trajectories: which of "general", "expert", "fused" to produce.
    capture_saliency: keep every SNB step's saliency maps for the saliency view (True), also the
        pre-softmax maps ("full"), or nothing (False); see :mod:`fusion.capture`.
    share: compute identical UNet evaluations of different trajectories once.
    batch_trajectories: one UNet call per model per step for all trajectories; None = the
        device's measured choice (:mod:`fusion.fastpath`; batched on CPU and CUDA). False gives
        final latents bit-identical to the naive loop's; batched ones differ by float rounding.
    eager_secondary: run the secondary UNet on every fused step even where SNB is off (the naive
        schedule; same output, more work: for benchmarks and tests only).
    """

    fusion_selection: str | FusionSelection = "600,1,1"
    mode: int = 2
    primary: str = "general"
    steps: int = 100
    sampler: str = "ddim"
    guidance_scale: float = 10.0
    height: int | None = None
    width: int | None = None
    n_samples: int = 8
    negative_prompt: str = ""
    prompt_routing: str = "role"
    own_uncond: bool = False
    trajectories: tuple[str, ...] = TRAJECTORIES
    capture_saliency: bool | str = True
    share: bool = True
    batch_trajectories: bool | None = None
    eager_secondary: bool = False
    # ---- options beyond the paper (issue 13; fusion/blend_options.py): all off by default ----
    #: blend: a :class:`fusion.blend_options.BlendOptions` (or a dict of its fields): a window where the
    #: general model leads alone, a low-frequency split, a late mix, recolouring; default: none (SNB exactly)
    blend: BlendOptions | dict | None = None

    def validated(self) -> "FusionSettings":
        """A copy with parsed/normalised fields (``fusion_selection`` a :class:`FusionSelection`,
        parsed here once), or a :class:`SettingsError` naming the field."""
        from .capture import check_capture
        from .schedulers import check_sampler
        sel = _checked("fusion_selection", parse_fusion_selection, self.fusion_selection)
        mode = _checked("mode", check_mode, self.mode)
        _checked("sampler", check_sampler, self.sampler)
        _checked("capture_saliency", check_capture, self.capture_saliency)
        if self.primary not in PRIMARIES:
            raise SettingsError("primary", f"primary must be 'general' or 'expert', got {self.primary!r}")
        if self.prompt_routing not in ("role", "model"):
            raise SettingsError("prompt_routing",
                                f"prompt_routing must be 'role' or 'model', got {self.prompt_routing!r}")
        if not _is_int(self.steps) or not 1 <= int(self.steps) <= 1000:
            raise SettingsError("steps", f"steps must be an integer in 1..1000, got {self.steps!r}")
        try:
            finite = math.isfinite(float(self.guidance_scale))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise SettingsError("guidance_scale", f"guidance_scale must be a finite number, got {self.guidance_scale!r}")
        if not _is_int(self.n_samples) or int(self.n_samples) < 1:
            raise SettingsError("n_samples", f"n_samples must be an integer >= 1, got {self.n_samples!r}")
        for label in ("height", "width"):  # the VAE factor is the model's: check_image_side
            v = getattr(self, label)
            if v is not None and (not _is_int(v) or v < 1):
                raise SettingsError(label, f"{label} must be a positive multiple of the VAE factor, got {v!r}")
        check_prompts(negative_prompt=self.negative_prompt)
        traj = tuple(self.trajectories)
        bad = [t for t in traj if t not in TRAJECTORIES]
        if bad or not traj:
            raise SettingsError("trajectories",
                                f"trajectories must be a non-empty subset of {TRAJECTORIES}, got {traj}")
        blend = _checked("blend", as_blend_options, self.blend)
        return replace(self, fusion_selection=sel, mode=mode, steps=int(self.steps),
                       n_samples=int(self.n_samples), guidance_scale=float(self.guidance_scale),
                       trajectories=traj, blend=blend)


@dataclass
class LoraSettings:
    """LoRAs applied at load time.

    lora0 / lora1: path of a LoRA file applied to model0 (general) / model1 (expert); None = none.
    lora0_scale / lora1_scale: the LoRA's strength (1.0 = as trained; 0 = off).
    """

    lora0: str | None = None
    lora1: str | None = None
    lora0_scale: float = 1.0
    lora1_scale: float = 1.0

    def side(self, i: int) -> tuple[str | None, float]:
        path, scale = (self.lora0, self.lora0_scale) if i == 0 else (self.lora1, self.lora1_scale)
        label = f"lora{i}_scale"
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise SettingsError(label, f"{label} must be a number, got {scale!r}") from None
        if not math.isfinite(scale):
            raise SettingsError(label, f"{label} must be finite, got {scale!r}")
        return (str(path) if path not in (None, "") else None), scale

    @property
    def any(self) -> bool:
        return bool(self.lora0 or self.lora1)


@dataclass
class PairChoice:
    """The two models of a request: model0 (general) and model1 (expert) as paths (a diffusers
    folder or a single .safetensors/.ckpt file), their LoRAs, the config folder for single
    files (None: the shipped SD 1.x configs) and ``use_ema`` (single files' EMA UNets)."""

    model0: str
    model1: str
    lora: LoraSettings = field(default_factory=LoraSettings)
    config: str | None = None
    use_ema: bool = False

    def check(self, read_loras: bool = False) -> "PairChoice":
        """Both models exist and are model sources; the LoRA scales are numbers and the LoRA
        files exist (``read_loras``: each is also read and converted, which the loader does
        anyway before any model loads). Returns self; a :class:`SettingsError` otherwise."""
        from .loading import is_model_source
        from .paths import ASSETS_DIR
        for name in ("model0", "model1"):
            path = Path(getattr(self, name)).expanduser()
            if not path.exists():
                hint = (" (the embedded toy models are missing from this checkout)"
                        if str(path).startswith(str(ASSETS_DIR)) else "")
                raise SettingsError(name, f"model not found: {path}{hint}")
            if not is_model_source(path):
                raise SettingsError(name, f"{path} is not a model: expected a diffusers folder "
                                          f"(model_index.json) or a .safetensors/.ckpt file")
        for i in (0, 1):
            path, _ = self.lora.side(i)
            if path is None:
                continue
            if read_loras:
                from .lora_files import LoraError, read_lora
                try:
                    read_lora(path)
                except LoraError as e:
                    raise SettingsError(f"lora{i}", str(e)) from None
            elif not Path(path).expanduser().exists():
                raise SettingsError(f"lora{i}", f"LoRA file not found: {path}")
        return self


@dataclass
class FusionRequest:
    """One fusion request: the models, the prompts (``prompt`` to the expert, ``prompt1`` to
    the general model; None = ``prompt``), the seeds (one batch of ``settings.n_samples``
    images each) and the settings. Run it with ``FusionPipeline.from_request(req)`` or
    ``pipe(req.prompt, req.prompt1, req.settings, seeds=req.seeds)``."""

    models: PairChoice
    prompt: str
    prompt1: str | None = None
    seeds: tuple[int, ...] = (DEFAULT_SEED,)
    settings: FusionSettings = field(default_factory=FusionSettings)

    def validated(self) -> "FusionRequest":
        """A copy with validated settings (see :meth:`FusionSettings.validated`) and ``prompt1``
        filled in: everything checked that needs neither a model nor a file. The files of
        ``models`` are :meth:`PairChoice.check`'s (a front end that takes paths calls it; the app
        resolves its pickers itself)."""
        prompt1 = self.prompt if self.prompt1 is None else self.prompt1
        check_prompts(prompt=self.prompt, prompt1=prompt1)
        seeds = tuple(check_seeds(list(self.seeds)))
        settings = self.settings.validated()
        self.models.lora.side(0), self.models.lora.side(1)  # the scales
        return replace(self, prompt1=prompt1, seeds=seeds, settings=settings)
