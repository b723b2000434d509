"""Faster samplers for the fused loop: diffusers' multistep schedulers, one state per trajectory.

DDIM (the default) is :func:`fusion.sampler.ddim_step`, unchanged. The others step through
diffusers' schedulers, built from the primary model's scheduler config:

=================  ===================================================================
name               scheduler
=================  ===================================================================
ddim               DDIM, eta 0 (the reference; the library's own update, bit-identical)
dpmpp_2m           DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++", multistep order 2)
dpmpp_2m_karras    the same on the Karras et al. 2022 sigma spacing (rho 7)
unipc              UniPC (Zhao et al. 2023), bh2 corrector, order 2
euler              Euler (Karras et al. 2022, Algorithm 2 without churn)
=================  ===================================================================

diffusers schedulers are stateful (multistep solvers keep past model outputs, all keep a
step index), so every trajectory steps its own instance. Trajectories whose latents are still
one object (the fused run before a mode-1 switch and the primary's own run) share one
instance; it is forked (copied) the first time their updates differ. The UNet sees the
scheduler's timesteps, which are on the training-timestep scale (0..999), and the fusion
mode switch ``t > v1`` compares those. The noise predictions handed to the schedulers are
guided epsilon (v-prediction is converted by :class:`fusion.sampler.UNetDenoiser`), so the
schedulers are configured with ``prediction_type="epsilon"``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

__all__ = ["SAMPLERS", "SAMPLER_HELP", "PRESETS", "check_sampler", "make_scheduler", "SchedulerSolver", "make_solver"]

SAMPLER_HELP = {
    "ddim": "DDIM, eta 0 (the reference sampler; default)",
    "dpmpp_2m": "DPM-Solver++ 2M",
    "dpmpp_2m_karras": "DPM-Solver++ 2M with Karras sigmas",
    "unipc": "UniPC (bh2, order 2)",
    "euler": "Euler",
}
SAMPLERS = tuple(SAMPLER_HELP)

#: (diffusers class name, config overrides) per sampler other than DDIM
_RECIPES = {
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)),
    "unipc": ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2", predict_x0=True)),
    "euler": ("EulerDiscreteScheduler", {}),
}
#: named (sampler, steps) choices; "fast" kept the toy world's fused joint rate of DDIM 100 at
#: about a tenth of its time (bench/results/scheduler_quality.md: 14 prompts x 2 draws, so a
#: small sample; re-measure before relying on it for other models)
PRESETS = {"fast": {"sampler": "dpmpp_2m_karras", "steps": 10}}

#: samplers whose latents live on the variance-exploding scale (x = x0 + sigma eps)
_VE = {"euler"}


def check_sampler(name) -> str:
    """``name`` if it is a known sampler, else a ValueError listing them."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)} "
                         f"({'; '.join(f'{k}: {v}' for k, v in SAMPLER_HELP.items())}); got {name!r}")
    return name


def make_scheduler(name: str, scheduler_config: dict):
    """A fresh diffusers scheduler for sampler ``name`` (not ``ddim``) from a model's config."""
    import diffusers

    check_sampler(name)
    if name == "ddim":
        raise ValueError("ddim runs on the library's own DDIM update, not a diffusers scheduler")
    cls_name, overrides = _RECIPES[name]
    config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    config.update(overrides, prediction_type="epsilon", thresholding=False)
    return getattr(diffusers, cls_name).from_config(config)


def _as_timestep(t: float) -> int | float:
    t = float(t)
    return int(t) if t.is_integer() else t


@dataclass
class SchedulerSolver:
    """The trajectories' scheduler states of one sampling run.

    Use: :meth:`start` with the trajectory names, :meth:`initial_latents` for x_T, then per
    step ``i``: :meth:`model_inputs` (the UNet inputs), and per trajectory either
    :meth:`step` (compute its update) or :meth:`follow` (take the update another trajectory
    computed under the same key: same latent, same noise).
    """

    name: str
    template: object
    ve: bool
    timesteps: list = field(init=False)
    sigmas: list[float] = field(init=False)
    forks: int = 0

    def __post_init__(self):
        self._scheduler_ts = self.template.timesteps  # what step() takes (its own tensor elements)
        self.timesteps = [_as_timestep(t) for t in self._scheduler_ts.tolist()]
        self.sigmas = [float(s) for s in self.template.sigmas.tolist()]
        self._states: dict[str, object] = {}
        self._pending: set[str] = set()
        self._by_key: dict[object, object] = {}

    @property
    def init_noise_sigma(self) -> float:
        return float(self.template.init_noise_sigma)

    def start(self, names) -> None:
        """Every trajectory starts on one fresh copy of the template (they start equal)."""
        state = copy.deepcopy(self.template)
        self._states = {nm: state for nm in names}
        self.forks = 0

    def initial_latents(self, x_T: torch.Tensor) -> torch.Tensor:
        s = self.init_noise_sigma
        return x_T if s == 1.0 else x_T * s

    def model_inputs(self, latents: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """The UNet input of every trajectory at step ``i``; one tensor per distinct latent (so
        shared latents stay shareable). Also begins the step's bookkeeping."""
        self._pending = set(self._states)
        self._by_key = {}
        memo: dict[int, torch.Tensor] = {}
        out = {}
        for nm, x in latents.items():
            if id(x) not in memo:
                memo[id(x)] = self._states[nm].scale_model_input(x, self._scheduler_ts[i])
            out[nm] = memo[id(x)]
        return out

    def step(self, name: str, key, x: torch.Tensor, eps: torch.Tensor, i: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trajectory ``name``'s update at step ``i``: (x_prev, predicted x_0). A state still
        shared with trajectories that have not stepped yet is forked first."""
        state = self._states[name]
        self._pending.discard(name)
        if any(self._states[nm] is state for nm in self._pending):
            state = copy.deepcopy(state)
            self.forks += 1
        x_prev = state.step(eps, self._scheduler_ts[i], x, return_dict=False)[0]
        self._states[name] = state
        if key is not None:
            self._by_key[key] = state
        return x_prev, self.pred_x0(x, eps, i)

    def follow(self, name: str, key) -> None:
        """Trajectory ``name`` took the update computed under ``key``: it takes that state too."""
        self._states[name] = self._by_key[key]
        self._pending.discard(name)

    def pred_x0(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """x_0 predicted from the latent and the noise at step ``i`` (for previews)."""
        sigma = self.sigmas[i]
        if self.ve:
            return x - sigma * eps
        alpha_t = (1.0 + sigma ** 2) ** -0.5
        return (x - sigma * alpha_t * eps) / alpha_t


def make_solver(name: str, scheduler_config: dict, steps: int, device=None) -> SchedulerSolver | None:
    """The solver of sampler ``name`` for ``steps`` steps; None for ``ddim`` (the library's
    own DDIM update runs then)."""
    if check_sampler(name) == "ddim":
        return None
    template = make_scheduler(name, scheduler_config)
    template.set_timesteps(int(steps), device=device)
    return SchedulerSolver(name=name, template=template, ve=name in _VE)
