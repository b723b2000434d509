"""fusion.ddim against diffusers' DDIMScheduler / DDIMInverseScheduler (an independent
implementation of Song et al. 2021 with the LDM timesteps): same timesteps, same trajectories
for every prediction type, forward and inverse."""
import threading

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from fusion.ddim import (Cancelled, check_cancel, ddim_inverse_step, ddim_step, eps_from_prediction,
                         previous_alpha, schedule_for)

# SD 1.x's published scheduler_config.json (CompVis/stable-diffusion-v1-4, scheduler/).
SD1 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
           clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed, smooth stand-in for a UNet output (any prediction type)."""
    return torch.tanh(x * 0.7 + 0.001 * t) * 0.9


def _ours_forward(x, steps, prediction_type):
    ts, alphas = schedule_for({**SD1, "prediction_type": prediction_type}, steps)
    for i, t in enumerate(ts):
        a_t = float(alphas[t])
        eps = eps_from_prediction(_model(x, t), x, a_t, prediction_type)
        x, _ = ddim_step(x, eps, a_t, previous_alpha(alphas, ts, i))
    return ts, x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_sampling_matches_diffusers_ddim(prediction_type):
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = DDIMScheduler(**SD1, prediction_type=prediction_type)
    ref.set_timesteps(20)
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(_model(x, int(t)), t, x, eta=0.0).prev_sample
    ts, ours = _ours_forward(x_T.clone(), 20, prediction_type)
    assert ts == [int(t) for t in ref.timesteps]
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_matches_diffusers_ddim_inverse(prediction_type):
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    ref = DDIMInverseScheduler(**SD1, prediction_type=prediction_type)
    ref.set_timesteps(10)
    x = x0.clone()
    for t in ref.timesteps:
        x = ref.step(_model(x, int(t)), t, x).prev_sample
    ts, alphas = schedule_for({**SD1, "prediction_type": prediction_type}, 10)
    ours, a_from = x0.clone(), float(alphas[0])
    for t in ts[::-1]:
        # diffusers converts the output at the level the latent is at (a_from)
        eps = eps_from_prediction(_model(ours, t), ours, a_from, prediction_type)
        ours = ddim_inverse_step(ours, eps, a_from, float(alphas[t]))
        a_from = float(alphas[t])
    assert ts[::-1] == [int(t) for t in ref.timesteps]
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_inverse_step_undoes_the_step():
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    eps = torch.randn_like(x)
    back, _ = ddim_step(ddim_inverse_step(x, eps, 0.9, 0.3), eps, 0.3, 0.9)
    torch.testing.assert_close(back, x)


def test_unknown_prediction_type_is_named():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="'flow'"):
        eps_from_prediction(x, x, 0.5, "flow")


def test_cancel_accepts_an_event_or_a_callable():
    check_cancel(None)
    check_cancel(threading.Event())
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled, match="stopped"):
        check_cancel(ev, "stopped")
    with pytest.raises(Cancelled):
        check_cancel(lambda: True)
