"""The fusion pipeline: check inputs, encode prompts, prepare x_T, denoise, decode.

In the spirit of diffusers' ``pipeline_stable_diffusion.py``: a fixed order of stages, every
input validated before any model runs. One request makes up to three images per sample from
one shared x_T: the general model alone (``prompt1``), the expert alone (``prompt``), and the
fused result (MagicFusion SNB).

Prompt routing in the fused run (the reference's, the default ``prompt_routing="role"``): the
primary's UNet gets ``prompt1`` and the secondary's UNet gets ``prompt``; the primary's text
encoder encodes every prompt of the fused run, its VAE decodes the result. ``"model"`` routes
by model instead: the general UNet always gets ``prompt1``, the expert UNet ``prompt``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .loading import DiffusionModel, check_fusable, share_identical_components
from .lora import LoraSettings, adapter_key, denoiser_for, load_models
from .sampler import (SamplerStats, StepEvent, Trajectory, UNetDenoiser, _check_cancel, alphas_cumprod,
                      ddim_timesteps, sample_trajectories)
from .schedule import FusionSelection
from .schedulers import make_solver
from .blend_options import finish_images, with_general_image
from .capture import SaliencyRecorder, SaliencyStep
from .views import SaliencyTrace
from .settings import (TRAJECTORIES, FusionRequest, FusionSettings, PairChoice, SettingsError, check_image_side,
                       check_prompts, check_seeds)
from .fastpath import resolve_batching
from .previews import PreviewSchedule, preview_due  # noqa: F401  (preview_due: re-exported)

__all__ = ["FusionSettings", "FusionRequest", "PairChoice", "SaliencyStep", "SaliencyTrace", "FusionResult",
           "FusionPipeline", "TRAJECTORIES", "to_uint8", "to_pil", "initial_noise", "preview_due"]


@dataclass
class FusionResult:
    """Images per trajectory ((n, 3, H, W) float in [0, 1], CPU) for one seed, and what was seen:
    ``saliency``, the fused run's captured SNB steps (:class:`fusion.views.SaliencyTrace`; empty
    with ``capture_saliency=False``)."""

    seed: int
    settings: FusionSettings
    images: dict[str, torch.Tensor]
    saliency: SaliencyTrace = field(default_factory=SaliencyTrace)
    stats: SamplerStats = field(default_factory=SamplerStats)
    seconds: float = 0.0

    def pil(self, trajectory: str, rounding: str = "round") -> list[Image.Image]:
        return to_pil(self.images[trajectory], rounding)


def to_uint8(images: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """(n, 3, H, W) in [0, 1] -> (n, H, W, 3) uint8. ``rounding="truncate"`` matches the
    reference script's ``astype(np.uint8)`` of 255 x."""
    x = images.detach().float().clamp(0, 1).mul(255).permute(0, 2, 3, 1).cpu().numpy()
    if rounding == "round":
        x = np.rint(x)
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    return x.astype(np.uint8)


def to_pil(images: torch.Tensor, rounding: str = "round") -> list[Image.Image]:
    return [Image.fromarray(a) for a in to_uint8(images, rounding)]


def initial_noise(seed: int, n: int, channels: int, h: int, w: int) -> torch.Tensor:
    """x_T: the first draw of a CPU generator seeded with ``seed`` (same on every machine)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((n, channels, h, w), generator=g, dtype=torch.float32)


class FusionPipeline:
    """Two models of one family, ready to fuse. ``model0`` is the general model, ``model1`` the expert."""

    def __init__(self, model0: DiffusionModel, model1: DiffusionModel, dedupe: bool = True,
                 channels_last: bool | None = None, compile: bool = False):
        """``dedupe``: hold bit-identical components once (typically the VAE and text encoder).
        ``channels_last``/``compile``: see :meth:`optimize` (defaults: channels_last on CUDA
        only, no torch.compile; CPU outputs are then bit-identical to plain eager runs)."""
        check_fusable(model0, model1)
        self.model0, self.model1 = model0, model1
        self.shared_components = share_identical_components(model0, model1) if dedupe else []
        self._denoisers: dict[tuple, UNetDenoiser] = {}
        self.optimizations: list[str] = []
        self.optimize(channels_last=channels_last, compile=compile)

    @classmethod
    def from_paths(cls, model0: str, model1: str, device=None, dtype=None, config_dir=None,
                   lora: LoraSettings | None = None, use_ema: bool = False, **kwargs) -> "FusionPipeline":
        """Load both models (a path named twice is loaded once) and apply ``lora`` (see
        :class:`fusion.lora.LoraSettings`). ``use_ema``: single files' UNets from their EMA copies."""
        m0, m1 = load_models(model0, model1, lora, device=device, dtype=dtype, config_dir=config_dir,
                             use_ema=use_ema)
        return cls(m0, m1, **kwargs)

    @classmethod
    def from_choice(cls, models: PairChoice, device=None, dtype=None, **kwargs) -> "FusionPipeline":
        """The pipeline of a request's :class:`fusion.settings.PairChoice` (see :meth:`from_paths`)."""
        return cls.from_paths(models.model0, models.model1, device=device, dtype=dtype, config_dir=models.config,
                              lora=models.lora if models.lora.any else None, use_ema=models.use_ema, **kwargs)

    def run(self, request: FusionRequest, callback: Callable[[int, StepEvent], None] | None = None,
            cancel=None) -> list["FusionResult"]:
        """Run a :class:`fusion.settings.FusionRequest` on this pipeline (its ``models`` say
        which pair to load; this pipeline is taken to be that pair)."""
        return self(request.prompt, request.prompt1, request.settings, seeds=request.seeds, callback=callback,
                    cancel=cancel)

    def optimize(self, channels_last: bool | None = None, compile: bool = False) -> list[str]:
        """Speed settings of the UNets and VAEs (attention already runs through PyTorch's
        scaled_dot_product_attention: diffusers' default processor).

        channels_last: NHWC memory format for the convolutions; None = on CUDA only (on the CPU
            it changes float rounding, and the defaults keep CPU outputs bit-identical).
        compile: ``torch.compile`` each distinct UNet in place (opt-in; CUDA only, ignored with
            a warning elsewhere). The first request per shape pays the compile time.
        Returns the list of what is now applied.
        """
        cuda = self.model0.device.type == "cuda"
        modules = {id(m): m for md in (self.model0, self.model1) for m in (md.unet, md.vae)}
        if channels_last is None:
            channels_last = cuda
        if channels_last and "channels_last" not in self.optimizations:
            for m in modules.values():
                m.to(memory_format=torch.channels_last)
            self.optimizations.append("channels_last")
        if compile and "compile" not in self.optimizations:
            if not cuda:
                import warnings
                warnings.warn("FusionPipeline(compile=True) is for CUDA; ignored on "
                              f"{self.model0.device.type}", stacklevel=2)
            else:
                for u in {id(md.unet): md.unet for md in (self.model0, self.model1)}.values():
                    u.compile(fullgraph=True)
                self.optimizations.append("compile")
        return list(self.optimizations)

    # ---- roles --------------------------------------------------------------------------------
    def roles(self, primary: str) -> tuple[DiffusionModel, DiffusionModel]:
        """(primary, secondary) models."""
        return (self.model0, self.model1) if primary == "general" else (self.model1, self.model0)

    def _denoiser(self, model: DiffusionModel) -> UNetDenoiser:
        # one denoiser per (UNet, adapter): the two sides of a shared LoRA'd UNet stay apart
        key = adapter_key(model)
        d = self._denoisers.get(key)
        if d is None or d.unet is not model.unet:
            name = "general_unet" if key == adapter_key(self.model0) else "expert_unet"
            d = denoiser_for(model, alphas_cumprod(model.scheduler_config), name)
            self._denoisers[key] = d
        return d

    # ---- stage 1 ------------------------------------------------------------------------------
    def check_inputs(self, prompt: str, prompt1: str, settings: FusionSettings, seeds: Sequence[int]) -> FusionSettings:
        """The validated settings with the size filled in: the model-free rules of
        :mod:`fusion.settings`, then the two that need the models (the size against the
        primary's VAE factor, the steps against its training timesteps)."""
        s = settings.validated()
        check_prompts(prompt=prompt, prompt1=prompt1)
        check_seeds(seeds)
        primary, _ = self.roles(s.primary)
        f, native = primary.vae_scale_factor, primary.native_size
        h = check_image_side("height", s.height, f, native)
        w = check_image_side("width", s.width, f, native)
        s0 = self.model0.scheduler_config.get("num_train_timesteps", 1000)
        if s.steps > s0:
            raise SettingsError("steps", f"steps must be at most the training timesteps ({s0}), got {s.steps}")
        return replace(s, height=h, width=w)

    # ---- stage 2 ------------------------------------------------------------------------------
    def encode(self, prompt: str, prompt1: str, s: FusionSettings,
               memo: dict | None = None) -> list[Trajectory]:
        """Text embeddings, each prompt encoded once per text encoder, as trajectories.

        ``memo``: a dict kept across calls (e.g. the cells of a sweep): equal prompts then give
        the same embedding objects, so the sampler shares their evaluations across trajectories."""
        memo = {} if memo is None else memo

        def emb(model: DiffusionModel, text: str) -> torch.Tensor:
            k = (id(model.text_encoder), text)
            if k not in memo:
                memo[k] = model.encode_prompts([text])
            return memo[k]

        general, expert = self.model0, self.model1
        primary, secondary = self.roles(s.primary)
        sel: FusionSelection = s.fusion_selection
        out = []
        if "general" in s.trajectories:
            out.append(Trajectory("general", self._denoiser(general), emb(general, s.negative_prompt),
                                  emb(general, prompt1)))
        if "expert" in s.trajectories:
            out.append(Trajectory("expert", self._denoiser(expert), emb(expert, s.negative_prompt),
                                  emb(expert, prompt)))
        if "fused" in s.trajectories:
            if s.prompt_routing == "role":
                p_text, s_text = prompt1, prompt
            else:
                p_text, s_text = (prompt1, prompt) if primary is general else (prompt, prompt1)
            u = emb(primary, s.negative_prompt)
            out.append(Trajectory(
                "fused", self._denoiser(primary), u, emb(primary, p_text),
                secondary=self._denoiser(secondary), secondary_uncond=u, secondary_cond=emb(primary, s_text),
                v1=sel.v1, mode=s.mode, kg=sel.kg, ke=sel.ke, own_uncond=s.own_uncond,
                eager_secondary=s.eager_secondary, general_primary=primary is general,
                blend_options=s.blend if s.blend is not None and s.blend.sampling_active else None))
        return out

    # ---- stage 3 ------------------------------------------------------------------------------
    def prepare_latents(self, seed: int, s: FusionSettings) -> torch.Tensor:
        primary, _ = self.roles(s.primary)
        f = primary.vae_scale_factor
        x = initial_noise(seed, s.n_samples, primary.latent_channels, s.height // f, s.width // f)
        return x.to(device=primary.device, dtype=primary.dtype)

    # ---- stage 5 ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: dict[str, torch.Tensor], s: FusionSettings) -> dict[str, torch.Tensor]:
        """Each trajectory through its model's VAE; trajectories sharing a VAE decode as one batch."""
        primary, _ = self.roles(s.primary)
        owner = {"general": self.model0, "expert": self.model1, "fused": primary}
        groups: dict[int, list[str]] = {}
        for name in latents:
            groups.setdefault(id(owner[name].vae), []).append(name)
        images = {}
        for names in groups.values():
            model = owner[names[0]]
            # identical latents (shared trajectories) decode once
            uniq: dict[int, torch.Tensor] = {}
            for nm in names:
                uniq.setdefault(id(latents[nm]), latents[nm])
            z = torch.cat(list(uniq.values())) / model.scaling_factor
            x = model.vae.decode(z.to(model.vae.dtype), return_dict=False)[0]
            x = ((x.float() + 1) / 2).clamp(0, 1).cpu()
            n = latents[names[0]].shape[0]
            pos = {k: j for j, k in enumerate(uniq)}
            for nm in names:
                j = pos[id(latents[nm])]
                images[nm] = x[j * n:(j + 1) * n]
        return images

    # ---- the whole request --------------------------------------------------------------------
    def __call__(
        self,
        prompt: str,
        prompt1: str | None = None,
        settings: FusionSettings | None = None,
        seeds: Sequence[int] = (6854,),
        callback: Callable[[int, StepEvent], None] | None = None,
        cancel=None,
        preview_every: int = 0,
        preview_budget: float | None = None,
    ) -> list[FusionResult]:
        """Run one request for each seed. ``prompt`` goes to the expert, ``prompt1`` (default: the
        same text) to the general model. ``callback(seed_index, event)`` after every step.

        ``preview_every``: with a callback, every this many steps (not on the last one, which the
        final decode follows) the event carries ``preview``: every trajectory's predicted x_0
        decoded as :meth:`decode` does (0: no previews). A Stop is honoured before a preview's decode.
        ``preview_budget``: None, or the most share of the run's time the previews may take (a due
        preview is skipped past it; see :mod:`fusion.previews`).
        """
        prompt1 = prompt if prompt1 is None else prompt1
        s = self.check_inputs(prompt, prompt1, settings or FusionSettings(), list(seeds))
        previews = PreviewSchedule(preview_every, preview_budget)
        primary, _ = self.roles(s.primary)
        run_s = with_general_image(s)  # BlendOptions.recolor and .shape_lock need the general image
        trajectories = self.encode(prompt, prompt1, run_s)
        solver = make_solver(s.sampler, primary.scheduler_config, s.steps)
        timesteps = solver.timesteps if solver is not None else ddim_timesteps(
            s.steps, int(primary.scheduler_config.get("num_train_timesteps", 1000)),
            int(primary.scheduler_config.get("steps_offset", 1)))
        alphas = alphas_cumprod(primary.scheduler_config)
        batch, why = resolve_batching(s.batch_trajectories, primary.device.type)
        results = []
        for si, seed in enumerate(seeds):
            t0 = time.perf_counter()
            x_T = self.prepare_latents(seed, s)
            recorder = SaliencyRecorder(s.capture_saliency)
            previews.start()

            def on_step(ev: StepEvent, si=si, recorder=recorder):
                recorder.record(ev)
                if callback is not None:
                    if previews.due(ev.index, ev.total):
                        _check_cancel(cancel)
                        ev = replace(ev, preview=previews.decode(self.decode, dict(ev.pred_x0), s))
                    callback(si, ev)

            latents, stats = sample_trajectories(
                trajectories, x_T, timesteps, alphas, s.guidance_scale, callback=on_step, cancel=cancel,
                share=s.share, batch_trajectories=batch, solver=solver)
            _check_cancel(cancel)  # a Stop during the last step skips the decode
            stats.choices.update(batch_trajectories=batch, batch_reason=why, sampler=s.sampler, share=s.share)
            images, redraw_rows = finish_images(s, self.decode(latents, run_s), self.model1, prompt, cancel,
                                                self._denoiser(self.model1))
            if redraw_rows:
                stats.rows["shape_lock_redraw"] = redraw_rows
            trace = recorder.steps(s.steps, (s.width, s.height), s.primary)
            results.append(FusionResult(seed=int(seed), settings=s, images=images, saliency=trace,
                                        stats=stats, seconds=time.perf_counter() - t0))
        return results
