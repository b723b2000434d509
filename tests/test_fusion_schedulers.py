"""Faster samplers in the fused loop: DPM-Solver++ 2M (plain and Karras), UniPC, Euler.

The reference for "a trajectory is right" is diffusers' own text-to-image loop (as in its
StableDiffusionPipeline: x_T times init_noise_sigma, scale_model_input, UNet on uncond+cond,
classifier-free guidance, scheduler.step) written out here on the same tiny UNet, with the
schedulers configured as diffusers' documentation names them.
"""
from collections import Counter

import pytest
import torch

from fusion.pipeline import FusionSettings, initial_noise
from fusion.schedule import uses_snb

FAST = dict(steps=8, n_samples=2, height=16, width=16)
SAMPLERS = ["dpmpp_2m", "dpmpp_2m_karras", "unipc", "euler"]


def diffusers_scheduler(name, config):
    import diffusers
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "dpmpp_2m":
        return diffusers.DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
    if name == "dpmpp_2m_karras":
        return diffusers.DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    if name == "unipc":
        return diffusers.UniPCMultistepScheduler.from_config(cfg)
    if name == "euler":
        return diffusers.EulerDiscreteScheduler.from_config(cfg)
    raise KeyError(name)


@torch.no_grad()
def diffusers_loop(model, name, prompt, seed, steps, guidance, n, hw):
    """diffusers' pipeline loop on ``model``'s UNet; returns the decoded images in [0, 1]."""
    sched = diffusers_scheduler(name, model.scheduler_config)
    sched.set_timesteps(steps)
    f = model.vae_scale_factor
    x = initial_noise(seed, n, model.latent_channels, hw // f, hw // f) * sched.init_noise_sigma
    ctx = torch.cat([model.encode_prompts([""]).expand(n, -1, -1), model.encode_prompts([prompt]).expand(n, -1, -1)])
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        e = model.unet(torch.cat([xin, xin]), t, encoder_hidden_states=ctx).sample
        u, c = e.chunk(2)
        x = sched.step(u + guidance * (c - u), t, x).prev_sample
    img = model.vae.decode(x / model.scaling_factor).sample
    return ((img + 1) / 2).clamp(0, 1)


def run(pipe, prompt="a red circle", prompt1="a blue square", seed=3, callback=None, **kw):
    s = FusionSettings(**{**FAST, **kw})
    return pipe(prompt, prompt1, s, seeds=[seed], callback=callback)[0]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_without_fusion_each_trajectory_is_diffusers_own_loop(tiny_pipe, sampler):
    r = run(tiny_pipe, sampler=sampler, mode=0, guidance_scale=7.5)
    general = diffusers_loop(tiny_pipe.model0, sampler, "a blue square", 3, FAST["steps"], 7.5, 2, 16)
    expert = diffusers_loop(tiny_pipe.model1, sampler, "a red circle", 3, FAST["steps"], 7.5, 2, 16)
    torch.testing.assert_close(r.images["general"], general, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.images["expert"], expert, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.images["fused"], general, atol=1e-5, rtol=0)  # mode 0: the primary alone
    assert not torch.allclose(r.images["general"], expert, atol=1e-3)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("mode", [1, 2])
def test_mode_switch_compares_the_schedulers_training_timesteps(tiny_pipe, sampler, mode):
    v1 = 500
    sched = diffusers_scheduler(sampler, tiny_pipe.model0.scheduler_config)
    sched.set_timesteps(FAST["steps"])
    ts = sched.timesteps.tolist()
    expected = [i for i, t in enumerate(ts) if uses_snb(t, v1, mode)]
    assert 0 < len(expected) < len(ts)  # the switch falls inside the run
    seen = []
    secondary = tiny_pipe._denoiser(tiny_pipe.model1)
    before = Counter(secondary.timesteps)
    r = run(tiny_pipe, sampler=sampler, mode=mode, fusion_selection=f"{v1},1,1", trajectories=("fused",),
            callback=lambda si, ev: seen.append(ev.index) if "fused" in ev.snb else None)
    assert seen == expected
    assert [s.index for s in r.saliency] == expected
    # the secondary UNet ran on exactly the SNB steps, at the scheduler's timesteps
    assert secondary.timesteps - before == Counter(int(ts[i]) for i in expected)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_fusion_changes_the_result_and_stays_finite(tiny_pipe, sampler):
    r = run(tiny_pipe, sampler=sampler, mode=2, fusion_selection="0,1,1")
    assert torch.isfinite(r.images["fused"]).all()
    assert not torch.equal(r.images["fused"], r.images["general"])
    assert not torch.equal(r.images["fused"], r.images["expert"])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_trajectory_keeps_its_own_scheduler_state(tiny_pipe, sampler):
    # mode 1, same prompt: the fused run shares the primary's latents and UNet passes until the
    # switch, then diverges; the multistep history of each must stay its own
    kw = dict(sampler=sampler, mode=1, fusion_selection="600,1,1")
    together = run(tiny_pipe, "a red circle", "a red circle", **kw)
    fused_alone = run(tiny_pipe, "a red circle", "a red circle", trajectories=("fused",), **kw)
    general_alone = run(tiny_pipe, "a red circle", "a red circle", trajectories=("general",), **kw)
    unshared = run(tiny_pipe, "a red circle", "a red circle", share=False, **kw)
    assert together.stats.shared > 0
    assert torch.equal(together.images["fused"], fused_alone.images["fused"])
    assert torch.equal(together.images["general"], general_alone.images["general"])
    for name in ("general", "expert", "fused"):
        assert torch.equal(together.images[name], unshared.images[name]), name
    assert not torch.equal(together.images["fused"], together.images["general"])


def test_ddim_stays_the_default():
    assert FusionSettings().sampler == "ddim"


def test_unknown_sampler_is_a_clear_error(tiny_pipe):
    with pytest.raises(ValueError, match="sampler must be one of .*dpmpp_2m.*'heun'"):
        run(tiny_pipe, sampler="heun")


def test_cli_sampler_flag(tiny_dirs, tmp_path):
    from fusion.cli import build_parser, main
    assert build_parser().parse_args([]).sampler == "ddim"
    out = tmp_path / "o"
    assert main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["expert"]), "--outdir", str(out),
                 "--sampler", "dpmpp_2m", "--ddim_steps", "3", "--n_samples", "1", "--H", "16", "--W", "16",
                 "--quiet", "--skip_save"]) == 0
    assert (out / "fusion_ge_2" / "seed_6854_600_1_1.jpg").is_file()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--sampler", "heun"])


def test_cli_fast_preset_sets_sampler_and_steps(tiny_dirs, tmp_path, capsys):
    from fusion.cli import main
    from fusion.schedulers import PRESETS
    assert main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["expert"]),
                 "--outdir", str(tmp_path / "o"), "--preset", "fast", "--n_samples", "1", "--H", "16", "--W", "16",
                 "--quiet", "--skip_save", "--only", "general"]) == 0
    # one UNet, CFG as one batch: one call per step of the preset
    err = capsys.readouterr().err
    assert f"{PRESETS['fast']['steps']} UNet calls" in err
    assert f"({PRESETS['fast']['sampler']}, {PRESETS['fast']['steps']} steps)" in err
