"""Tests of the training-free attention-injection engine (styleid.injection, StyleID recipe)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fusion.loading import load_model
from fusion.sampler import alphas_cumprod
from styleid import injection as inj
from styleid.injection import InjectionSettings, style_transfer
from studio.style_engines.injection import InjectionEngine
from styleid.attention import (FeatureStore, InjectionCall, decoder_self_attention_layers,
                               default_layer_indices, estimate_store_bytes, injected_attention,
                               installed, parse_layers, processor_names)
from fusion.testing import SCHEDULER, save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
STEPS = 8


@pytest.fixture(autouse=True)
def one_thread():
    # the machine is shared: two busy-waiting threads on tiny tensors are far slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("inj") / "tiny", seed=3)
    return load_model(folder, device="cpu")


def _img(seed, w=20, h=16):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _plain_ddim(model, z0, steps):
    """Inversion and sampling written out here, straight on the UNet (no processors)."""
    ts, al = inj.schedule(model, steps)
    e = model.encode_prompts([""])
    x = z0.clone()
    asc = ts[::-1]
    with torch.no_grad():
        for k, t in enumerate(asc):
            a_from = float(al[0]) if k == 0 else float(al[asc[k - 1]])
            eps = model.unet(x, torch.full((x.shape[0],), t), encoder_hidden_states=e.expand(x.shape[0], -1, -1)).sample
            x = inj.ddim_inverse_step(x, eps, a_from, float(al[t]))
        x = x[:1]
        for i, t in enumerate(ts):
            a_prev = float(al[ts[i + 1]]) if i + 1 < len(ts) else float(al[0])
            eps = model.unet(x, torch.full((1,), t), encoder_hidden_states=e).sample
            a_t = float(al[t])
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
            x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


# ---------------------------------------------------------------------------------------------
# the processor swap
# ---------------------------------------------------------------------------------------------
def test_swap_is_bit_equal_without_injection(model):
    unet = model.unet
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    e = model.encode_prompts(["", "a red circle"])
    t = torch.tensor([500, 500])
    before = dict(unet.attn_processors)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=e).sample
        names = processor_names(unet, default_layer_indices(unet))
        with installed(unet, names) as procs:
            assert sum(type(p).__name__ == "InjectionProcessor" for p in procs.values()) == len(names)
            out0 = unet(x, t, encoder_hidden_states=e).sample
            out1 = unet(x, t, encoder_hidden_states=e, cross_attention_kwargs={"injection": None}).sample
            store = FeatureStore(frozenset(names), frozenset({500}))
            out2 = unet(x, t, encoder_hidden_states=e,
                        cross_attention_kwargs={"injection": InjectionCall("record", 500, store)}).sample
    assert torch.equal(ref, out0) and torch.equal(ref, out1) and torch.equal(ref, out2)
    assert len(store.data) == len(names)  # recording only observes
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)  # restored


def test_swap_restores_on_error(model):
    before = dict(model.unet.attn_processors)
    with pytest.raises(RuntimeError):
        with installed(model.unet, processor_names(model.unet, default_layer_indices(model.unet))):
            raise RuntimeError("boom")
    assert all(model.unet.attn_processors[k] is v for k, v in before.items())


def test_injection_off_is_plain_ddim(model):
    c, s = _img(1), _img(2)
    st = InjectionSettings(steps=STEPS, inject=False, adain=False)
    out, stats = style_transfer(model, c, s, st)
    cc, ss = inj.prepare_images(inj.load_image(c), inj.load_image(s), model.native_size, "crop", inj.grid_multiple(model))
    z0 = inj.encode_image(model, [cc, ss])
    [ref] = inj.decode_latent(model, _plain_ddim(model, z0, STEPS))
    assert np.array_equal(np.asarray(out), np.asarray(ref))
    assert stats.store_peak_bytes == 0
    # and sampling inside the installed processors, with no injection call, is bit-equal too
    ts, al = inj.schedule(model, STEPS)
    zT, _ = inj.invert(model, z0, ts, al)
    plain, _ = inj.sample(model, zT[:1], ts, al, st)
    with installed(model.unet, processor_names(model.unet, default_layer_indices(model.unet))):
        swapped, _ = inj.sample(model, zT[:1], ts, al, st)
    assert torch.equal(plain, swapped)


# ---------------------------------------------------------------------------------------------
# inversion
# ---------------------------------------------------------------------------------------------
class _EpsOfT(torch.nn.Module):
    """A 'UNet' whose noise estimate depends on t only: DDIM inversion is then exactly undone
    by sampling, if and only if the two pair their steps the same way."""

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False, cross_attention_kwargs=None):
        g = torch.Generator().manual_seed(int(t[0]))
        return (torch.randn(x.shape, generator=g),)


class _GaussianDenoiser(torch.nn.Module):
    """The exact noise predictor for N(0, I) data: eps(x, t) = sqrt(1 - alpha_t) x."""

    def __init__(self):
        super().__init__()
        self.alphas = alphas_cumprod(SCHEDULER)

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False, cross_attention_kwargs=None):
        return ((1 - self.alphas[t]).sqrt().view(-1, 1, 1, 1) * x,)


def _fake_model(unet):
    return SimpleNamespace(unet=unet, dtype=torch.float32, device=torch.device("cpu"),
                           prediction_type="epsilon", scheduler_config=dict(SCHEDULER),
                           encode_prompts=lambda p: torch.zeros(len(p), 2, 4))


@pytest.mark.parametrize("steps", [10, 50])
def test_inversion_pairs_steps_exactly(steps):
    m = _fake_model(_EpsOfT())
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ts, al = inj.schedule(m, steps)
    zT, _ = inj.invert(m, z0, ts, al)
    z, _ = inj.sample(m, zT[:1], ts, al, InjectionSettings(inject=False, adain=False))
    assert (z - z0[:1]).norm() / z0[:1].norm() < 1e-4


def test_inversion_reconstructs_with_a_true_denoiser():
    m = _fake_model(_GaussianDenoiser())
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    errs = []
    for steps in (10, 50):
        ts, al = inj.schedule(m, steps)
        zT, _ = inj.invert(m, z0, ts, al)
        z, _ = inj.sample(m, zT, ts, al, InjectionSettings(inject=False, adain=False))
        errs.append(float((z - z0).norm() / z0.norm()))
    assert errs[1] < 2e-3 and errs[1] < errs[0] / 5  # measured 0.019 -> 0.0008


TOY = ROOT / "assets" / "models" / "toy-general"


@pytest.mark.skipif(not (TOY / "unet").is_dir(), reason="toy model not trained yet (assets/models/toy-general)")
def test_toy_model_reconstructs_its_content():
    from toyworld.render import Scene, render

    m = load_model(TOY, device="cpu")
    img = Image.fromarray(render(Scene("red", "square", "big", "photo", seed=5)))
    z0 = inj.encode_image(m, [img, img])
    ts, al = inj.schedule(m, 50)
    zT, _ = inj.invert(m, z0, ts, al)
    z, _ = inj.sample(m, zT[:1], ts, al, InjectionSettings(inject=False, adain=False))
    assert (z - z0[:1]).norm() / z0[:1].norm() < 0.1  # 0.025 measured on an early checkpoint


# ---------------------------------------------------------------------------------------------
# the attention math
# ---------------------------------------------------------------------------------------------
def _attn(model):
    return model.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn1


def test_gamma_one_temperature_one_keeps_content_queries(model):
    attn = _attn(model)
    g = torch.Generator().manual_seed(0)
    c, s = torch.randn(1, 64, 8, generator=g), torch.randn(1, 64, 8, generator=g)
    x1, x2 = torch.randn(2, 64, 8, generator=g), torch.randn(2, 64, 8, generator=g)
    with torch.no_grad():
        o1 = injected_attention(attn, x1, c, s, gamma=1.0, temperature=1.0)
        o2 = injected_attention(attn, x2, c, s, gamma=1.0, temperature=1.0)
        # by hand: softmax(q_c k_s^T / sqrt(d)) v_s, heads split
        h, d = attn.heads, 8 // attn.heads
        q = attn.to_q(c).view(1, 64, h, d).transpose(1, 2)
        k = attn.to_k(s).view(1, 64, h, d).transpose(1, 2)
        v = attn.to_v(s).view(1, 64, h, d).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1)
        ref = attn.to_out[0]((w @ v).transpose(1, 2).reshape(1, 64, 8))
    assert torch.equal(o1, o2)  # the current queries play no part
    torch.testing.assert_close(o1[:1], ref, atol=1e-5, rtol=1e-5)
    # T scales the logits: T=2 on the layer equals T=1 with the content doubled through to_q
    with torch.no_grad():
        w2 = torch.softmax(2 * q @ k.transpose(-1, -2) / d ** 0.5, -1)
        ref2 = attn.to_out[0]((w2 @ v).transpose(1, 2).reshape(1, 64, 8))
        o3 = injected_attention(attn, x1, c, s, gamma=1.0, temperature=2.0)
    torch.testing.assert_close(o3[:1], ref2, atol=1e-5, rtol=1e-5)


def test_gamma_zero_self_injection_is_plain_attention(model):
    attn = _attn(model)
    x = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = attn(x)
        same = injected_attention(attn, x, x, x, gamma=0.0, temperature=1.0)
        mixed = injected_attention(attn, x, x, x, gamma=0.4, temperature=1.0)
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mixed, plain, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the whole transfer
# ---------------------------------------------------------------------------------------------
def test_injection_changes_output_and_store_is_bounded(model):
    c, s = _img(3), _img(4)
    out_on, st_on = style_transfer(model, c, s, InjectionSettings(steps=STEPS))
    out_off, _ = style_transfer(model, c, s, InjectionSettings(steps=STEPS, inject=False))
    assert out_on.size == (16, 16) and not np.array_equal(np.asarray(out_on), np.asarray(out_off))
    layers = default_layer_indices(model.unet)
    assert st_on.layers == layers and st_on.unet_rows == 3 * STEPS
    assert st_on.store_peak_bytes == estimate_store_bytes(model.unet, 16, 16, STEPS, layers,
                                                          model.vae_scale_factor, model.dtype)


def test_recompute_matches_cache(model):
    c, s = _img(5), _img(6)
    a, sa = style_transfer(model, c, s, InjectionSettings(steps=STEPS, store="cache"))
    b, sb = style_transfer(model, c, s, InjectionSettings(steps=STEPS, store="recompute"))
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2
    assert sb.unet_rows == 2 * STEPS + 3 * STEPS and sb.store_peak_bytes < sa.store_peak_bytes


def test_guided_prompt_runs(model):
    out, st = style_transfer(model, _img(7), _img(8), InjectionSettings(steps=4, prompt="a cartoon", guidance=3.0))
    assert out.size == (16, 16) and st.unet_rows == 2 * 4 + 2 * 4


def test_fit_modes(model):
    wide = _img(9, w=40, h=20)
    for fit, size in (("crop", (32, 32)), ("stretch", (32, 32)), ("aspect", (64, 32))):
        out, _ = style_transfer(model, wide, _img(10, w=9, h=30),
                                InjectionSettings(steps=2, resolution=35, fit=fit))
        assert out.size == size, fit


def test_adain_matches_style_statistics():
    g = torch.Generator().manual_seed(0)
    c, s = torch.randn(1, 4, 8, 8, generator=g), 3 * torch.randn(1, 4, 8, 8, generator=g) + 2
    a = inj.adain(c, s)
    torch.testing.assert_close(a.mean((2, 3)), s.mean((2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.std((2, 3)), s.std((2, 3)), atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------
def test_sd1_default_layers_are_the_references():
    from diffusers import UNet2DConditionModel

    cfg = json.loads((ROOT / "assets/configs/sd1/unet/config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    layers = decoder_self_attention_layers(unet)
    assert len(layers) == 12 and [l.index for l in layers if l.names] == list(range(3, 12))
    assert default_layer_indices(unet) == (6, 7, 8, 9, 10, 11)
    assert parse_layers("6-8,11", unet) == (6, 7, 8, 11)
    assert processor_names(unet, (11,)) == ["up_blocks.3.attentions.2.transformer_blocks.0.attn1.processor"]
    # SD 1.x, 512 px, 50 steps, fp16: 50 x 2 x (3 x 1024 x 640 + 3 x 4096 x 320) x 2 bytes
    assert estimate_store_bytes(unet, 512, 512, 50, (6, 7, 8, 9, 10, 11)) == 1_179_648_000
    with pytest.raises(ValueError, match="layers.*accepted"):
        parse_layers("0-2", unet)


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("gamma", 1.5), ("gamma", -0.1), ("gamma", "high"), ("temperature", 0), ("steps", 0), ("steps", 2.5),
    ("fit", "pad"), ("store", "disk"), ("resolution", -16), ("adain", "yes"), ("guidance", float("nan")),
    ("layers", 3.5),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: .*accepted"):
        InjectionSettings(**{field: value}).validate()


def test_bad_images(model, tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("not an image")
    good = _img(0)
    with pytest.raises(ValueError, match="content: .*not a readable image"):
        style_transfer(model, txt, good, InjectionSettings(steps=2))
    with pytest.raises(ValueError, match=r"style: the image is empty \(0x0"):
        style_transfer(model, good, Image.new("RGB", (0, 0)), InjectionSettings(steps=2))
    with pytest.raises(FileNotFoundError):
        style_transfer(model, tmp_path / "missing.png", good, InjectionSettings(steps=2))
    with pytest.raises(ValueError, match="expected a PIL image"):
        style_transfer(model, np.zeros((8, 8, 3)), good, InjectionSettings(steps=2))
    rgba = Image.new("RGBA", (12, 12), (255, 0, 0, 0))
    assert inj.load_image(rgba).getpixel((0, 0)) == (255, 255, 255)


def test_engine(model, tmp_path):
    eng = InjectionEngine(model)
    assert eng.availability() == (True, "")
    d = eng.defaults()
    assert d["gamma"] == 0.75 and d["temperature"] == 1.5 and d["steps"] == 50 and d["adain"] and d["inject"]
    assert set(d) == {f for f in InjectionSettings.__dataclass_fields__}
    path = tmp_path / "c.png"
    _img(11).save(path)
    out = eng.stylize(path, _img(12), steps=3, gamma=0.5)
    assert isinstance(out, Image.Image) and eng.last_stats.timesteps == 3
    with pytest.raises(ValueError, match="unknown control"):
        eng.stylize(_img(1), _img(2), strength=2)
    with pytest.raises(ValueError, match="gamma"):
        eng.stylize(_img(1), _img(2), gamma=2)


def test_engine_missing_model_is_lazy_and_says_so(tmp_path):
    eng = InjectionEngine(tmp_path / "nowhere")
    ok, why = eng.availability()
    assert not ok and "not found" in why and "\n" not in why
    with pytest.raises(ValueError, match="gamma"):  # settings are checked before loading
        eng.stylize(_img(1), _img(2), gamma=-1)
    with pytest.raises(ValueError, match="not found"):
        eng.stylize(_img(1), _img(2))
    default = InjectionEngine()
    if not (inj.DEFAULT_MODEL / "unet").is_dir():
        ok, why = default.availability()
        assert not ok and "toyworld.train" in why
