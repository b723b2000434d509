"""The UNet side every style engine here shares: a model's DDIM schedule, one noise prediction
(eps from any prediction type, with an optional injection call), the cancel check and the
process's peak memory. The DDIM math itself is :mod:`fusion.ddim`'s."""
from __future__ import annotations

import resource

import torch

from fusion.ddim import check_cancel, eps_from_prediction, schedule_for

__all__ = ["schedule", "predict_eps", "check_cancelled", "rss_peak_bytes"]


def schedule(model, steps: int):
    """(descending timesteps, alphas_cumprod) of ``steps`` DDIM steps for a loaded model."""
    return schedule_for(model.scheduler_config, steps)


def predict_eps(model, alphas, x: torch.Tensor, t: int, context: torch.Tensor, call=None) -> torch.Tensor:
    """The UNet's noise prediction at timestep ``t`` (float32), converted from the model's
    prediction type; ``call`` (a :class:`styleid.attention.InjectionCall`) reaches the installed
    attention processors through ``cross_attention_kwargs``."""
    unet = model.unet
    tt = torch.full((x.shape[0],), int(t), device=model.device, dtype=torch.long)
    kw = {"cross_attention_kwargs": {"injection": call}} if call is not None else {}
    out = unet(x.to(model.dtype), tt, encoder_hidden_states=context, return_dict=False, **kw)[0].float()
    return eps_from_prediction(out, x, float(alphas[int(t)]), model.prediction_type)


def check_cancelled(cancel) -> None:
    """Raise :class:`fusion.ddim.Cancelled` ("style transfer cancelled") when ``cancel`` is set."""
    check_cancel(cancel, "style transfer cancelled")


def rss_peak_bytes() -> int:
    """The process's peak resident memory so far (bytes; Linux reports kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
