"""DDIM sampling of the three trajectories of one fusion request.

In the spirit of k-diffusion's ``sampling.py``: pure functions over denoiser callables, and a
callback per step (previews, progress bars and saliency capture plug in there).

* DDIM from :mod:`fusion.ddim` (schedule, step, prediction types, cancellation; re-exported
  here under their old names).
* Classifier-free guidance (Ho & Salimans 2022): eps = u + s (c - u).
* Saliency-aware Noise Blending (MagicFusion, Zhao et al. ICCV 2023) for the fused trajectory on
  the steps the schedule selects (see :mod:`fusion.schedule`, :mod:`fusion.snb`).

No work is wasted: the secondary UNet runs only on SNB steps; identical UNet evaluations of
different trajectories (same UNet, same latent, same text embedding: e.g. the fused trajectory
before a mode-1 switch and the primary's own run) are computed once; the unconditional and
conditional halves go through the UNet as one batch; optionally every evaluation of one UNet at
one step (all trajectories) goes through as one batch.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import snb
from .blend_options import BlendOptions, blend_step
from .ddim import (Cancelled, alphas_cumprod, check_cancel, ddim_step, ddim_timesteps, eps_from_prediction,
                   previous_alpha)
from .schedule import uses_snb

__all__ = [
    "Cancelled", "ddim_timesteps", "alphas_cumprod", "ddim_step", "UNetDenoiser", "Trajectory",
    "StepEvent", "SamplerStats", "sample_trajectories",
]


# ---------------------------------------------------------------------------------------------
# denoisers
# ---------------------------------------------------------------------------------------------
class UNetDenoiser:
    """eps(x, t, context) from a diffusers UNet2DConditionModel; converts v-prediction to eps.

    ``calls`` counts forward passes; ``rows`` counts batch rows (a CFG pass is 2n rows);
    ``timesteps`` counts the passes per timestep (a Counter: bounded by the 1000 timesteps for
    the life of a warm model, where a list grew on every call).
    """

    def __init__(self, unet: torch.nn.Module, alphas: torch.Tensor, prediction_type: str = "epsilon",
                 name: str = "unet"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"{name}: unsupported prediction_type {prediction_type!r} "
                             f"(accepted: epsilon, v_prediction)")
        self.unet, self.alphas, self.prediction_type, self.name = unet, alphas, prediction_type, name
        self.calls = 0
        self.rows = 0
        self.timesteps: Counter[int] = Counter()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        self.timesteps[int(t)] += 1
        whole = float(t).is_integer()
        tt = torch.full((x.shape[0],), int(t) if whole else float(t), device=x.device,
                        dtype=torch.long if whole else torch.float32)
        out = self.unet(x, tt, encoder_hidden_states=context, return_dict=False)[0]
        if self.prediction_type == "v_prediction":
            a = float(self.alphas[int(t)]) if whole else _alpha_between(self.alphas, float(t))
            out = eps_from_prediction(out, x, a, self.prediction_type)
        return out


def _alpha_between(alphas: torch.Tensor, t: float) -> float:
    """alpha_cumprod at a fractional timestep: sigma = sqrt((1 - a) / a) interpolated linearly
    in t, as diffusers' Euler scheduler places its sigmas."""
    lo = int(t)
    a0, a1 = float(alphas[lo]), float(alphas[min(lo + 1, len(alphas) - 1)])
    s0, s1 = ((1 - a0) / a0) ** 0.5, ((1 - a1) / a1) ** 0.5
    sigma = s0 + (t - lo) * (s1 - s0)
    return 1.0 / (1.0 + sigma * sigma)


# ---------------------------------------------------------------------------------------------
# trajectories
# ---------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """One denoising run.

    A plain run has one (denoiser, uncond, cond) pair. A fused run has a primary pair and a
    secondary pair, and blends them with SNB on the steps ``uses_snb(t, v1, mode)`` selects.
    Embeddings are (1, L, D) or (n, L, D); they are expanded over the n samples.
    """

    name: str
    denoiser: Callable
    uncond: torch.Tensor
    cond: torch.Tensor
    secondary: Callable | None = None
    secondary_uncond: torch.Tensor | None = None
    secondary_cond: torch.Tensor | None = None
    v1: int = 0
    mode: int = 0
    kg: float = 1.0
    ke: float = 1.0
    own_uncond: bool = False
    #: evaluate the secondary on every step even where its noise is not used (the naive
    #: schedule, for benchmarks and tests; outputs are identical either way)
    eager_secondary: bool = False
    #: options beyond SNB (:mod:`fusion.blend_options`; None or all off: SNB exactly) and whether
    #: the primary is the general model (the options name models, not roles)
    blend_options: BlendOptions | None = None
    general_primary: bool = True

    def fuses_at(self, t: int) -> bool:
        if self.secondary is None:
            return False
        snb_step = uses_snb(t, self.v1, self.mode)
        opts = self.blend_options
        return snb_step or (opts is not None and opts.takes_over(t, snb_step) is not None)

    def needs_secondary(self, t: int) -> bool:
        return self.secondary is not None and (self.eager_secondary or self.fuses_at(t))


@dataclass
class StepEvent:
    """Passed to the per-step callback after every step.

    ``latents``/``pred_x0``: per trajectory name, x_{t-1} and the predicted x_0 at this step.
    ``snb``: per fused trajectory name, the :class:`fusion.snb.SNBResult` of this step (only on
    SNB steps). ``preview``: per trajectory name, ``pred_x0`` decoded to images ((n, 3, H, W) in
    [0, 1], CPU) on the steps a caller asked for (``FusionPipeline(..., preview_every=N)``), else
    None; the sampler itself never decodes.
    """

    index: int
    total: int
    t: int
    latents: dict[str, torch.Tensor]
    pred_x0: dict[str, torch.Tensor]
    snb: dict[str, snb.SNBResult] = field(default_factory=dict)
    preview: dict[str, torch.Tensor] | None = None


@dataclass
class SamplerStats:
    """UNet work done: forward passes and batch rows per denoiser name, and deduplicated calls;
    ``choices``: the execution path the caller chose (e.g. batching, and why)."""

    calls: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    shared: int = 0
    choices: dict[str, object] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def _expand(e: torch.Tensor, n: int) -> torch.Tensor:
    return e.expand(n, *e.shape[1:]) if e.shape[0] == 1 else e


_check_cancel = check_cancel  # the name fusion.pipeline imports


@torch.no_grad()
def sample_trajectories(
    trajectories: Sequence[Trajectory],
    x_T: torch.Tensor,
    timesteps: Sequence[int],
    alphas: torch.Tensor,
    guidance_scale: float,
    callback: Callable[[StepEvent], None] | None = None,
    cancel=None,
    share: bool = True,
    batch_trajectories: bool = False,
    solver=None,
) -> tuple[dict[str, torch.Tensor], SamplerStats]:
    """Run every trajectory from the same x_T with DDIM; return the final latents by name.

    share: compute an evaluation (same denoiser, same latent object, same embedding objects)
        once for all trajectories that need it; latents that stay equal stay one object. Fused
        trajectories with the same evaluations and blend settings blend once too (e.g. mode-2
        sweep cells that differ only in v1 stay one run until the first of them switches).
    batch_trajectories: send every evaluation one denoiser needs at a step through it as one
        batch (fewer, larger calls: faster on GPUs; results equal up to float rounding).
    solver: a :class:`fusion.schedulers.SchedulerSolver` to step with instead of DDIM (its
        ``timesteps`` must be the ones given); None: DDIM.
    cancel: an object with ``is_set()`` (e.g. threading.Event) or a callable returning bool,
        checked before every UNet call (so a Stop takes effect within one call, not one step);
        raises :class:`Cancelled`.
    """
    names = [tr.name for tr in trajectories]
    if len(set(names)) != len(names):
        raise ValueError(f"trajectory names must be unique, got {names}")
    n = x_T.shape[0]
    if solver is not None:
        if list(timesteps) != list(solver.timesteps):
            raise ValueError("timesteps must be the solver's timesteps")
        solver.start(names)
        x_T = solver.initial_latents(x_T)
    latents = {tr.name: x_T for tr in trajectories}  # one object: shared until they diverge
    denoisers = {id(d): d for tr in trajectories for d in (tr.denoiser, tr.secondary) if d is not None}
    base = {id(d): (d.calls, d.rows) for d in denoisers.values() if hasattr(d, "calls")}
    stats = SamplerStats()
    total = len(timesteps)

    def key(ev):
        return _eval_key(ev, share)

    for i, t in enumerate(timesteps):
        _check_cancel(cancel)
        if solver is None:
            a_t = float(alphas[t])
            a_prev = previous_alpha(alphas, timesteps, i)
        inputs = latents if solver is None else solver.model_inputs(latents, i)

        # 1-2. the evaluations each trajectory needs; evaluate, sharing identical ones
        needs, unique = _needs(trajectories, inputs, t, share, stats)
        results = _evaluate(list(unique.items()), t, n, batch_trajectories, cancel)

        # 3. blend where fused, DDIM-update each trajectory (identical blends and updates computed once)
        new_latents, pred_x0, snb_out, updates, blends = {}, {}, {}, {}, {}
        for tr in trajectories:
            evals = needs[tr.name]
            u_p, c_p = results[key(evals[0])]
            if tr.fuses_at(t):
                u_s, c_s = results[key(evals[1])]
                settings = _blend_settings(tr)
                bkey = (key(evals[0]), key(evals[1]), tuple(sorted(settings.items())), tr.blend_options,
                        tr.general_primary)
                res = blends.get(bkey) if share else None
                if res is None:
                    res = (snb.blend(c_p, u_p, c_s, u_s, guidance_scale, **settings) if tr.blend_options is None else
                           blend_step(c_p, u_p, c_s, u_s, guidance_scale, **settings, t=int(t),
                                      snb_step=uses_snb(t, tr.v1, tr.mode), options=tr.blend_options,
                                      general_primary=tr.general_primary))
                    if share:
                        blends[bkey] = res
                snb_out[tr.name] = res
                eps = res.eps
                ukey = (id(latents[tr.name]), id(res))
            else:
                eps = snb.guided(u_p, c_p, guidance_scale)
                ukey = (id(latents[tr.name]), key(evals[0]))
            if share and ukey in updates:
                new_latents[tr.name], pred_x0[tr.name] = updates[ukey]
                if solver is not None:
                    solver.follow(tr.name, ukey)
                continue
            if solver is None:
                out = ddim_step(latents[tr.name], eps, a_t, a_prev)
            else:
                out = solver.step(tr.name, ukey if share else None, latents[tr.name], eps, i)
            updates[ukey] = out
            new_latents[tr.name], pred_x0[tr.name] = out
        latents = new_latents
        if callback is not None:
            callback(StepEvent(index=i, total=total, t=int(t), latents=latents, pred_x0=pred_x0, snb=snb_out))

    _count_calls(stats, denoisers, base)
    return latents, stats


def _eval_key(ev: tuple, share: bool) -> tuple:
    """Evaluations with equal keys are computed once: same denoiser, latent and embeddings."""
    d, x, u, c = ev
    return (id(d), id(x), id(u), id(c)) if share else (id(ev),)


def _needs(trajectories, inputs: dict, t: int, share: bool, stats: "SamplerStats") -> tuple[dict, dict]:
    """({name: [(denoiser, latent, uncond, cond), ...]}, {key: evaluation} of the unique ones);
    counts the shared evaluations in ``stats.shared``."""
    needs: dict[str, list[tuple]] = {}
    for tr in trajectories:
        x = inputs[tr.name]
        evals = [(tr.denoiser, x, tr.uncond, tr.cond)]
        if tr.needs_secondary(t):
            evals.append((tr.secondary, x, tr.secondary_uncond, tr.secondary_cond))
        needs[tr.name] = evals
    unique: dict[tuple, tuple] = {}
    for evals in needs.values():
        for ev in evals:
            k = _eval_key(ev, share)
            if k in unique:
                stats.shared += 1
            else:
                unique[k] = ev
    return needs, unique


def _count_calls(stats: "SamplerStats", denoisers: dict, base: dict) -> None:
    """Add each counting denoiser's passes and rows since ``base`` to ``stats``."""
    for d in denoisers.values():
        if hasattr(d, "calls"):
            c0, r0 = base[id(d)]
            stats.calls[d.name] = stats.calls.get(d.name, 0) + d.calls - c0
            stats.rows[d.name] = stats.rows.get(d.name, 0) + d.rows - r0


def _blend_settings(tr: Trajectory) -> dict:
    """The trajectory's keyword arguments of :func:`fusion.snb.blend` (besides the noises and the
    guidance scale): the blend gets exactly these, and two fused trajectories with equal
    evaluations and equal settings share one blend (and so stay one run)."""
    return {"kg": tr.kg, "ke": tr.ke, "own_uncond": tr.own_uncond}


def _evaluate(items: list[tuple[tuple, tuple]], t: int, n: int, batch: bool, cancel=None) -> dict[tuple, tuple]:
    """Run the unique evaluations; each returns (eps_uncond, eps_cond) for n samples. ``cancel``
    is checked before every UNet call."""
    out = {}
    if not batch:
        for k, (d, x, u, c) in items:
            _check_cancel(cancel)
            e = d(torch.cat([x, x]), t, torch.cat([_expand(u, n), _expand(c, n)]))
            out[k] = (e[:n], e[n:])
        return out
    # one call per denoiser; rows (latent, embedding) that repeat are computed once
    by_denoiser: dict[int, list] = {}
    for k, ev in items:
        by_denoiser.setdefault(id(ev[0]), []).append((k, ev))
    for group in by_denoiser.values():
        d = group[0][1][0]
        rows: dict[tuple, int] = {}
        xs, cs = [], []
        for _, (_, x, u, c) in group:
            for e in (u, c):
                rk = (id(x), id(e))
                if rk not in rows:
                    rows[rk] = len(xs)
                    xs.append(x)
                    cs.append(_expand(e, n))
        _check_cancel(cancel)
        eps = d(torch.cat(xs), t, torch.cat(cs))
        for k, (_, x, u, c) in group:
            iu, ic = rows[(id(x), id(u))], rows[(id(x), id(c))]
            out[k] = (eps[iu * n:(iu + 1) * n], eps[ic * n:(ic + 1) * n])
    return out
