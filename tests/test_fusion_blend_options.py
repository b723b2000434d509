"""Fusion options beyond SNB (fusion/blend_options.py, fusion/recolor.py): off by default and then the
faithful SNB bit for bit (checked against a naive loop written here), each option doing what it says."""
import numpy as np
import pytest
import torch

from fusion import snb
from fusion.blend_options import BlendOptions, as_blend_options, blend_step, gaussian_blur
from fusion.ddim import ddim_step, previous_alpha
from fusion.pipeline import FusionSettings
from fusion.recolor import recolor_subject
from fusion.sampler import alphas_cumprod, ddim_timesteps
from fusion.schedule import uses_snb
from fusion.settings import SettingsError

FAST = dict(steps=10, n_samples=2, height=16, width=16, batch_trajectories=False)


def run(pipe, prompt="a red circle", prompt1="a blue square", **kw):
    return pipe(prompt, prompt1, FusionSettings(**{**FAST, **kw}), seeds=[5])[0]


def naive_fused(pipe, prompt, prompt1, v1, kg, ke, mode, primary, scale=10.0, seed=5):
    """The reference loop written out: both UNets on every step, SNB where the mode says, DDIM."""
    from fusion.pipeline import initial_noise

    p, s = (pipe.model0, pipe.model1) if primary == "general" else (pipe.model1, pipe.model0)
    u, cp, cs = p.encode_prompts([""]), p.encode_prompts([prompt1]), p.encode_prompts([prompt])
    ts = ddim_timesteps(FAST["steps"], 1000, 1)
    al = alphas_cumprod(p.scheduler_config)
    f = p.vae_scale_factor
    x = initial_noise(seed, 2, p.latent_channels, FAST["height"] // f, FAST["width"] // f)
    with torch.no_grad():
        for i, t in enumerate(ts):
            tt = torch.full((4,), int(t), dtype=torch.long)
            ep = p.unet(torch.cat([x, x]), tt, encoder_hidden_states=torch.cat([u.expand(2, -1, -1), cp.expand(2, -1, -1)])).sample
            es = s.unet(torch.cat([x, x]), tt, encoder_hidden_states=torch.cat([u.expand(2, -1, -1), cs.expand(2, -1, -1)])).sample
            if uses_snb(t, v1, mode):
                eps = snb.blend(ep[2:], ep[:2], es[2:], es[:2], scale, kg, ke).eps
            else:
                eps = snb.guided(ep[:2], ep[2:], scale)
            x, _ = ddim_step(x, eps, float(al[t]), previous_alpha(al, ts, i))
    return pipe.decode({"fused": x}, FusionSettings(primary=primary))["fused"]


@pytest.mark.parametrize("blend", [None, {}, BlendOptions(), {"recolor_saturation": 0.5, "lowfreq_sigma": 2.0}])
@pytest.mark.parametrize("primary,mode,sel", [("expert", 2, "500,1,3"), ("general", 1, "600,1,1")])
def test_options_off_are_the_faithful_snb_bit_for_bit(tiny_pipe, blend, primary, mode, sel):
    got = run(tiny_pipe, fusion_selection=sel, mode=mode, primary=primary, blend=blend, trajectories=("fused",))
    v1, kg, ke = (float(x) for x in sel.split(","))
    want = naive_fused(tiny_pipe, "a red circle", "a blue square", int(v1), kg, ke, mode, primary)
    assert torch.equal(got.images["fused"], want)


def test_blend_options_are_checked_and_named():
    with pytest.raises(SettingsError, match="blend.*unknown option.*'colour'"):
        FusionSettings(blend={"colour": True}).validated()
    for bad in ({"general_window": [400, 500]}, {"general_window": [500]}, {"lowfreq_window": [1200, 0]},
                {"late_general_weight": 1.5}, {"lowfreq_sigma": 0}, {"recolor": "yes"}):
        with pytest.raises(SettingsError) as e:
            FusionSettings(blend=bad).validated()
        assert e.value.field == "blend" if hasattr(e.value, "field") else "blend" in str(e.value)
    assert as_blend_options({"general_window": [500, 400]}).general_window == (500, 400)
    assert as_blend_options({"general_window": [500, 400], "recolor": True}).as_dict() == {
        "general_window": [500, 400], "recolor": True}


def _noises(seed=0, shape=(2, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(4)]


@pytest.mark.parametrize("general_primary", [True, False])
def test_general_window_takes_the_general_models_noise_alone(general_primary):
    cp, up, cs, us = _noises()
    o = BlendOptions(general_window=(500, 400))
    inside = blend_step(cp, up, cs, us, 7.5, 1, 3, t=450, snb_step=True, options=o, general_primary=general_primary)
    gen = up + 7.5 * (cp - up) if general_primary else us + 7.5 * (cs - us)
    assert torch.allclose(inside.eps, gen, atol=1e-6)
    assert float(inside.mask.mean()) == (0.0 if general_primary else 1.0)  # the mask says who was taken
    at_edge = blend_step(cp, up, cs, us, 7.5, 1, 3, t=400, snb_step=True, options=o, general_primary=general_primary)
    assert torch.equal(at_edge.eps, snb.blend(cp, up, cs, us, 7.5, 1, 3).eps)  # lo < t <= hi: 400 is outside


def test_late_mix_weights_the_general_model_on_primary_alone_steps_only():
    cp, up, cs, us = _noises(1)
    o = BlendOptions(late_general_weight=0.25)
    g_exp, g_gen = up + 5 * (cp - up), us + 5 * (cs - us)  # expert primary
    late = blend_step(cp, up, cs, us, 5.0, 1, 1, t=200, snb_step=False, options=o, general_primary=False)
    assert torch.allclose(late.eps, 0.25 * g_gen + 0.75 * g_exp, atol=1e-6)
    early = blend_step(cp, up, cs, us, 5.0, 1, 1, t=800, snb_step=True, options=o, general_primary=False)
    assert torch.equal(early.eps, snb.blend(cp, up, cs, us, 5.0, 1, 1).eps)


def test_lowfreq_split_keeps_general_low_and_expert_high_frequencies():
    o = BlendOptions(lowfreq_window=(900, 0), lowfreq_sigma=1.5)
    # spatially constant noises are pure low frequency: the general's constant wins
    gen_c, exp_c = torch.full((1, 4, 8, 8), 0.7), torch.full((1, 4, 8, 8), -0.2)
    z = torch.zeros_like(gen_c)
    r = blend_step(exp_c, z, gen_c, z, 1.0, 1, 1, t=500, snb_step=False, options=o, general_primary=False)
    assert torch.allclose(r.eps, gen_c, atol=1e-6)
    # a checkerboard is (mostly) high frequency: the expert's survives, the general's is filtered out
    cb = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    r = blend_step(cb.expand(1, 4, 8, 8).clone(), z, -cb.expand(1, 4, 8, 8).clone(), z, 1.0, 1, 1, t=500,
                   snb_step=False, options=o, general_primary=False)
    corr = float((r.eps * cb).mean())
    assert corr > 0.9  # the expert's pattern, not the general's (which would give a negative correlation)


def test_gaussian_blur_against_a_dense_convolution():
    x = torch.randn(1, 2, 9, 7, generator=torch.Generator().manual_seed(3))
    sigma, r = 1.0, 3
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    a = x.numpy()

    def refl(i, n):  # torch/numpy 'reflect': d c b | a b c d | c b a
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    want = np.zeros_like(a)
    h, w = a.shape[-2:]
    for i in range(h):
        for j in range(w):
            want[..., i, j] = sum(k[di + r] * k[dj + r] * a[..., refl(i + di, h), refl(j + dj, w)]
                                  for di in range(-r, r + 1) for dj in range(-r, r + 1))
    assert np.allclose(gaussian_blur(x, sigma).numpy(), want, atol=1e-5)


def test_recolor_matches_the_style_tabs_rule_and_leaves_background_and_outline():
    from PIL import Image

    from styleid.colour import match_subject_colour

    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 81
    ring = ((yy - 16) ** 2 + (xx - 16) ** 2 >= 81) & ((yy - 16) ** 2 + (xx - 16) ** 2 < 110)
    fused = np.full((32, 32, 3), (245, 235, 200), np.uint8)  # cartoon cream (saturation 45)
    fused[disc] = (40, 70, 230)                            # a blue cartoon fill
    fused[ring] = (20, 20, 20)                             # the outline
    general = np.full((32, 32, 3), (150, 150, 150), np.uint8)
    general[(yy - 14) ** 2 + (xx - 18) ** 2 < 64] = (140, 60, 200)  # a purple photo disc elsewhere
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    got = recolor_subject(t(fused), t(general))
    got_u8 = np.rint(got[0].permute(1, 2, 0).numpy() * 255).astype(int)
    want = np.asarray(match_subject_colour(Image.fromarray(fused), Image.fromarray(general))).astype(int)
    assert np.abs(got_u8 - want).max() <= 1
    assert np.abs(got_u8[disc].mean(0) - (140, 60, 200)).max() < 3      # the subject became purple
    assert (got_u8[~disc] == fused[~disc]).all()                          # outline and background untouched


def test_recolor_in_the_pipeline_adds_the_general_run_only_when_needed(tiny_pipe):
    only = run(tiny_pipe, fusion_selection="500,1,3", mode=2, primary="expert", trajectories=("fused",),
               blend={"recolor": True})
    assert set(only.images) == {"fused"}
    both = run(tiny_pipe, fusion_selection="500,1,3", mode=2, primary="expert", blend={"recolor": True})
    plain = run(tiny_pipe, fusion_selection="500,1,3", mode=2, primary="expert")
    assert torch.equal(both.images["fused"], only.images["fused"])
    assert torch.equal(both.images["general"], plain.images["general"])
    assert torch.equal(both.images["fused"], recolor_subject(plain.images["fused"], plain.images["general"]))


def test_general_window_runs_the_secondary_where_it_is_used(tiny_pipe):
    # expert primary, mode 2 "500": SNB on t = 901..501 (5 of 10 steps); the window (500, 300] adds 401, 301
    res = run(tiny_pipe, fusion_selection="500,1,3", mode=2, primary="expert", trajectories=("fused",),
              blend={"general_window": [500, 300]})
    assert res.stats.calls["general_unet"] == 7 and res.stats.calls["expert_unet"] == 10
    plain = run(tiny_pipe, fusion_selection="500,1,3", mode=2, primary="expert", trajectories=("fused",))
    assert not torch.equal(res.images["fused"], plain.images["fused"])


def test_blend_text_of_the_app_and_api():
    from fusion.blend_options import parse_blend_text
    assert parse_blend_text("") is None and parse_blend_text("  ") is None
    assert parse_blend_text('{"general_window":[500,400],"recolor":true}') == {"general_window": [500, 400],
                                                                              "recolor": True}
    for bad, match in (("[1, 2]", "JSON object"), ("recolor", "JSON object"), ('{"recolr": true}', "unknown"),
                       ("{" + " " * 300 + "}", "at most 200")):
        with pytest.raises(ValueError, match=match):
            parse_blend_text(bad)
