"""DDIM, once: the schedule of a model, the step, the inverse step, eps from any prediction type,
and the cancellation check every sampling loop makes.

Used by the fusion sampler (:mod:`fusion.sampler`), the training-free style engine
(:mod:`styleid.injection`) and the toy world's evaluation sampler (:mod:`toyworld.data`).

* DDIM (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021, Eq. 12 with eta=0), with
  the timesteps and alphas of the LDM sampler (Rombach et al. 2022, ``ddim.py``): "leading"
  spacing plus ``steps_offset`` (100 steps -> 991, 981, ..., 1), and the first training alpha as
  the final "previous" alpha (``set_alpha_to_one=False``).
* The inverse step is the same formula run towards more noise (DDIM inversion).
* v-prediction (Salimans & Ho 2022): eps = sqrt(a) v + sqrt(1 - a) x; x_0-prediction ("sample"):
  eps = (x - sqrt(a) x_0) / sqrt(1 - a).
"""
from __future__ import annotations

import torch

__all__ = [
    "Cancelled", "check_cancel", "ddim_timesteps", "alphas_cumprod", "schedule_for", "previous_alpha",
    "ddim_step", "ddim_inverse_step", "eps_from_prediction", "PREDICTION_TYPES",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class Cancelled(RuntimeError):
    """Sampling was stopped by the caller's cancel signal."""


def check_cancel(cancel, message: str = "sampling cancelled") -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set. ``cancel``: None, an object with
    ``is_set()`` (e.g. threading.Event) or a callable returning bool."""
    if cancel is None:
        return
    if cancel.is_set() if hasattr(cancel, "is_set") else cancel():
        raise Cancelled(message)


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 1) -> list[int]:
    """LDM/"leading" DDIM timesteps, descending: 100 of 1000 -> [991, 981, ..., 1]."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {num_steps}")
    ratio = num_train_timesteps // num_steps
    return [i * ratio + steps_offset for i in range(num_steps)][::-1]


def alphas_cumprod(config: dict) -> torch.Tensor:
    """Cumulative product of (1 - beta), computed in float64 and stored as float32 like LDM."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    else:
        b0, b1 = float(config["beta_start"]), float(config["beta_end"])
        kind = config.get("beta_schedule", "scaled_linear")
        if kind == "scaled_linear":
            betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        else:
            raise ValueError(f"unsupported beta_schedule {kind!r} (accepted: scaled_linear, linear)")
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def schedule_for(scheduler_config: dict, steps: int) -> tuple[list[int], torch.Tensor]:
    """(descending DDIM timesteps, alphas_cumprod) for a model's scheduler config."""
    cfg = scheduler_config
    ts = ddim_timesteps(steps, int(cfg.get("num_train_timesteps", 1000)), int(cfg.get("steps_offset", 1)))
    return ts, alphas_cumprod(cfg)


def previous_alpha(alphas: torch.Tensor, timesteps, i: int) -> float:
    """The alpha a DDIM step at ``timesteps[i]`` moves to: the next timestep's, and ``alphas[0]``
    after the last step (``set_alpha_to_one=False``)."""
    return float(alphas[timesteps[i + 1]]) if i + 1 < len(timesteps) else float(alphas[0])


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM update (eta 0). Returns (x_prev, predicted x_0)."""
    pred_x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
    x_prev = a_prev ** 0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * eps
    return x_prev, pred_x0


def ddim_inverse_step(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """One DDIM inversion step: predict x_0 at the current level ``a_from`` and re-noise it to the
    (noisier) level ``a_to`` with the same noise estimate."""
    pred_x0 = (x - (1.0 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * pred_x0 + (1.0 - a_to) ** 0.5 * eps


def eps_from_prediction(out: torch.Tensor, x: torch.Tensor, a: float, prediction_type: str) -> torch.Tensor:
    """The noise estimate from a model output of ``prediction_type`` at alpha_cumprod ``a``."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return a ** 0.5 * out + (1 - a) ** 0.5 * x
    if prediction_type == "sample":
        return (x - a ** 0.5 * out) / (1 - a) ** 0.5
    raise ValueError(f"unsupported prediction_type {prediction_type!r} (accepted: {', '.join(PREDICTION_TYPES)})")
