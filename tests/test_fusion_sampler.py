"""DDIM, the step schedule (which UNet runs at which t), the shared x_T, and that skipping and
sharing work changes no output bit."""
from collections import Counter
import threading

import pytest
import torch

from fusion.pipeline import FusionSettings, initial_noise
from fusion.sampler import Cancelled, alphas_cumprod, ddim_step, ddim_timesteps
from fusion.schedule import uses_snb

# unbatched: the path whose outputs are bit-equal to the naive loop (batching: tests/test_fusion_fastpath.py)
FAST = dict(steps=20, n_samples=2, height=16, width=16, batch_trajectories=False)


def run(pipe, prompt="a red circle", prompt1="a blue square", **kw):
    s = FusionSettings(**{**FAST, **kw})
    return pipe(prompt, prompt1, s, seeds=[3])[0]


def test_ddim_timesteps_are_the_ldm_ones():
    from diffusers import DDIMScheduler
    ts = ddim_timesteps(100)
    assert ts[:3] == [991, 981, 971] and ts[-1] == 1 and len(ts) == 100
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(50)
    assert ddim_timesteps(50) == sched.timesteps.tolist()


def test_ddim_update_matches_diffusers_ddim_with_eta_0():
    from diffusers import DDIMScheduler
    cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    sched = DDIMScheduler(**cfg, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(10)
    alphas = alphas_cumprod(cfg)
    ts = ddim_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    for i, t in enumerate(ts):
        eps = torch.randn(1, 4, 8, 8, generator=g)
        a_prev = alphas[ts[i + 1]] if i + 1 < len(ts) else alphas[0]
        ours, _ = ddim_step(x, eps, float(alphas[t]), float(a_prev))
        theirs = sched.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        x = theirs


def test_initial_noise_is_the_first_cpu_draw_of_the_seed():
    g = torch.Generator().manual_seed(6854)
    assert torch.equal(initial_noise(6854, 8, 4, 64, 64), torch.randn(8, 4, 64, 64, generator=g))


def _timesteps(pipe, fn):
    before = {d.name: Counter(d.timesteps) for d in pipe._denoisers.values()}
    out = fn()
    return out, {d.name: d.timesteps - before.get(d.name, Counter()) for d in pipe._denoisers.values()}


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("primary", ["general", "expert"])
def test_each_unet_runs_exactly_where_the_mode_table_says(tiny_pipe, mode, primary):
    v1 = 600
    ts = ddim_timesteps(FAST["steps"])
    _, seen = _timesteps(tiny_pipe, lambda: run(tiny_pipe, fusion_selection=f"{v1},1,1", mode=mode,
                                                 primary=primary, share=False))
    snb_ts = Counter(t for t in ts if uses_snb(t, v1, mode))
    all_ts = Counter(ts)
    own = {"general": "general_unet", "expert": "expert_unet"}
    p_name = own[primary]
    s_name = own["expert" if primary == "general" else "general"]
    # each model's own run at every step, the primary at every fused step, the secondary on SNB steps only
    assert seen[p_name] == all_ts + all_ts
    assert seen[s_name] == all_ts + snb_ts


def _calls(result):
    return result.stats.total_calls


def test_reference_recipe_600_1_1_mode_2_call_count(tiny_pipe):
    ts = ddim_timesteps(100)
    r = run(tiny_pipe, steps=100, n_samples=1, fusion_selection="600,1,1", mode=2)
    early = sum(t > 600 for t in ts)
    assert early == 40
    # 3 runs x 100 + secondary on the 40 early steps, minus the 2 step-0 evaluations shared with
    # the single-model runs (same UNet, same x_T, same embeddings)
    assert _calls(r) == 300 + early - 2 == 338
    assert r.stats.shared == 2


def test_reference_recipe_850_1_1_mode_1_expert_primary_call_count(tiny_pipe):
    ts = ddim_timesteps(100)
    late = sum(t <= 850 for t in ts)
    assert late == 85
    different = run(tiny_pipe, steps=100, n_samples=1, fusion_selection="850,1,1", mode=1, primary="expert")
    assert _calls(different) == 300 + late == 385  # prompts differ: nothing identical to share
    same = run(tiny_pipe, "a red circle", "a red circle", steps=100, n_samples=1, fusion_selection="850,1,1",
               mode=1, primary="expert")
    # same prompt: the fused run *is* the expert's run until the first SNB step (15 steps above
    # v1 plus the primary's pass at that first SNB step)
    assert _calls(same) == 300 + late - 16 == 369


@pytest.mark.parametrize("mode,sel", [(0, "600,1,1"), (1, "850,1,1"), (2, "600,1,1"), (2, "300,3,0.5")])
@pytest.mark.parametrize("primary", ["general", "expert"])
@pytest.mark.parametrize("prompts", [("a red circle", "a blue square"), ("a red circle", "a red circle")])
def test_skipping_and_sharing_change_no_output_bit(tiny_pipe, mode, sel, primary, prompts):
    kw = dict(fusion_selection=sel, mode=mode, primary=primary)
    fast = run(tiny_pipe, *prompts, **kw)
    naive = run(tiny_pipe, *prompts, share=False, eager_secondary=True, **kw)
    assert _calls(fast) < _calls(naive)
    for name in ("general", "expert", "fused"):
        assert torch.equal(fast.images[name], naive.images[name]), name
    assert len(fast.saliency) == len(naive.saliency)
    for a, b in zip(fast.saliency, naive.saliency):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.saliency_s, b.saliency_s)


def test_batched_trajectories_agree_and_use_fewer_calls(tiny_pipe):
    plain = run(tiny_pipe, mode=2)
    batched = run(tiny_pipe, mode=2, batch_trajectories=True)
    assert _calls(batched) == 2 * FAST["steps"]  # one call per UNet per step
    for name in ("general", "expert", "fused"):
        torch.testing.assert_close(batched.images[name], plain.images[name], atol=2e-4, rtol=0)


def test_every_run_starts_from_the_same_x_T(tiny_pipe):
    # mode 0 with one prompt: the fused run is the primary's own run, from the same noise
    r = run(tiny_pipe, "a red circle", "a red circle", mode=0)
    assert torch.equal(r.images["fused"], r.images["general"])
    r = run(tiny_pipe, "a red circle", "a red circle", mode=0, primary="expert")
    assert torch.equal(r.images["fused"], r.images["expert"])
    assert not torch.equal(r.images["general"], r.images["expert"])


def test_fused_differs_from_both_when_snb_is_on(tiny_pipe):
    r = run(tiny_pipe, mode=2, fusion_selection="0,1,1")
    assert not torch.equal(r.images["fused"], r.images["general"])
    assert not torch.equal(r.images["fused"], r.images["expert"])
    assert 0 < float(torch.stack([s.secondary_share for s in r.saliency]).mean()) < 1


def test_saliency_is_captured_on_every_snb_step(tiny_pipe):
    r = run(tiny_pipe, mode=2, fusion_selection="600,1,1", capture_saliency="full")
    ts = ddim_timesteps(FAST["steps"])
    assert [s.t for s in r.saliency] == [t for t in ts if t > 600]
    step = r.saliency[0]
    assert step.mask.shape == step.saliency_p.shape == step.raw_s.shape == (2, 1, 8, 8)


def test_callback_sees_every_step_and_cancel_stops_cleanly(tiny_pipe):
    seen = []
    stop = threading.Event()

    def cb(seed_index, ev):
        seen.append(ev.t)
        assert set(ev.pred_x0) == {"general", "expert", "fused"}
        if ev.index == 2:
            stop.set()

    with pytest.raises(Cancelled):
        tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST), seeds=[1], callback=cb, cancel=stop)
    assert seen == ddim_timesteps(FAST["steps"])[:3]


@pytest.mark.parametrize("field,value,match", [
    ("height", 15, "height must be a positive multiple of the VAE factor 2"),
    ("width", 0, "width must be a positive multiple"),
    ("steps", 0, "steps must be an integer in 1..1000"),
    ("n_samples", 0, "n_samples must be an integer >= 1"),
    ("mode", 5, "mode must be one of"),
    ("fusion_selection", "600,1", "fusion_selection must be three"),
    ("primary", "cartoon", "primary must be 'general' or 'expert'"),
    ("trajectories", ("fused", "bogus"), "trajectories must be"),
])
def test_bad_settings_fail_before_any_unet_runs(tiny_pipe, field, value, match):
    calls = sum(d.calls for d in tiny_pipe._denoisers.values())
    with pytest.raises(ValueError, match=match):
        tiny_pipe("a", "b", FusionSettings(**{**FAST, field: value}))
    assert sum(d.calls for d in tiny_pipe._denoisers.values()) == calls


def test_no_seeds_is_a_clear_error(tiny_pipe):
    with pytest.raises(ValueError, match="seeds must list at least one"):
        tiny_pipe("a", "b", FusionSettings(**FAST), seeds=[])
