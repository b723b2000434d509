"""Real SD 1.x single files: the complete SD 1.5 key list (tests/data, written from the CompVis
module layout by tests/ldm_architecture.py) maps onto the shipped SD 1.x configs; other families
are refused by name; a tiny checkpoint in exactly that naming loads and fuses."""
import pytest
import torch
from safetensors.torch import save_file

import fusion.loading as loading
from fusion.loading import SD1_CONFIG_DIR, ModelLoadError, load_model
from tests.ldm_architecture import (CLIP, EMA, JSON_PATH, UNET, VAE, AutoencoderSettings, TextEncoderSettings,
                                    UNetSettings, ema_name, read_json, single_file_shapes)
from tests.ldm_layout import model_to_ldm, with_training_extras

SD15 = read_json(JSON_PATH)
#: the tiny test models (fusion/testing.py) described in LDM terms
TINY = dict(unet=UNetSettings(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1,),
                              context_dim=32),
            vae=AutoencoderSettings(ch=8, ch_mult=(1, 2), num_res_blocks=1),
            text=TextEncoderSettings(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                     max_position_embeddings=16))


def _meta_state_dict(shapes):
    ints = {"model_ema.num_updates": torch.int32}
    return {k: torch.empty(v, device="meta", dtype=torch.int64 if k.endswith("position_ids") else
                           ints.get(k, torch.float32)) for k, v in shapes.items()}


def _load_meta(monkeypatch, tmp_path, shapes, name="sd15.safetensors", **kw):
    """Run the loader's single-file path on a state dict of meta tensors (names and shapes only)."""
    path = tmp_path / name
    path.write_bytes(b"")  # the tensors come from the patched reader
    monkeypatch.setattr(loading, "read_state_dict", lambda p: _meta_state_dict(shapes))
    return loading._load_single_file(path, kw.pop("config_dir", SD1_CONFIG_DIR), **kw), path


def test_committed_key_list_is_the_independent_description():
    assert SD15 == single_file_shapes()
    assert len(SD15) == 1831  # 686 UNet + 686 EMA + 2 EMA counters + 248 VAE + 197 CLIP + 12 schedule


def _squeeze(shape):
    """1x1 conv weights compare equal to linear ones (the VAE attention projections)."""
    return tuple(shape[:2]) if len(shape) == 4 and shape[2:] == (1, 1) else tuple(shape)


def test_every_sd15_key_maps_onto_the_shipped_sd1_configs(monkeypatch, tmp_path):
    m, _ = _load_meta(monkeypatch, tmp_path, SD15)
    for module, prefix in ((m.unet, UNET), (m.vae, VAE), (m.text_encoder, CLIP)):
        file_keys = [k for k in SD15 if k.startswith(prefix) and not k.endswith("position_ids")]
        got = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("position_ids")}
        assert len(got) == len(file_keys), prefix  # one model tensor per file tensor, none left over
        assert sorted(map(_squeeze, got.values())) == sorted(_squeeze(SD15[k]) for k in file_keys), prefix
    assert (m.cross_attention_dim, m.text_hidden_size, m.latent_channels) == (768, 768, 4)


def test_ema_copies_are_used_only_when_asked(monkeypatch, tmp_path):
    m, _ = _load_meta(monkeypatch, tmp_path, SD15, use_ema=True)
    assert len(m.unet.state_dict()) == 686
    emaless = {k: v for k, v in SD15.items() if not k.startswith(EMA)}
    with pytest.raises(ModelLoadError, match=r"sd15.safetensors: EMA weights were asked for, but the file has no"):
        _load_meta(monkeypatch, tmp_path, emaless, use_ema=True)


def _variant(drop=(), **replace):
    shapes = {k: v for k, v in SD15.items() if not k.startswith(drop)} if drop else dict(SD15)
    shapes.update(replace)
    return shapes


SDXL = {k.replace("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."): v
        for k, v in SD15.items()}
SD2 = {**{k: v for k, v in SD15.items() if not k.startswith("cond_stage_model.")},
       "cond_stage_model.model.token_embedding.weight": (49408, 1024),
       "cond_stage_model.model.positional_embedding": (77, 1024)}


@pytest.mark.parametrize("shapes,match", [
    (SD2, r"x.safetensors: this is an SD 2.x checkpoint \(OpenCLIP text encoder under 'cond_stage_model.model"),
    (_variant(**{UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}),
     r"x.safetensors: UNet cross-attention context width is 1024 \(SD 2.x uses 1024\)"),
    (SDXL, r"x.safetensors: this is an SDXL checkpoint \(text encoders under 'conditioner.embedders"),
    (_variant(**{UNET + "input_blocks.0.0.weight": (320, 9, 3, 3)}),
     r"x.safetensors: UNet input conv takes 9 channels \(an inpainting UNet"),
    (_variant(drop=VAE), r"x.safetensors: incomplete single-file checkpoint: no VAE \(first_stage_model"),
    (_variant(drop="cond_stage_model."), r"no text encoder \(cond_stage_model.transformer"),
], ids=["sd2-openclip", "sd2-context-1024", "sdxl", "inpainting-9ch", "no-vae", "no-text-encoder"])
def test_other_families_are_refused_naming_file_and_mismatch(monkeypatch, tmp_path, shapes, match):
    with pytest.raises(ModelLoadError, match=match):
        _load_meta(monkeypatch, tmp_path, shapes, name="x.safetensors")


# ---- a tiny checkpoint written in exactly that naming ----------------------------------------
def _tiny_ldm(tiny_dirs, ema_from_expert=False):
    ref = load_model(tiny_dirs["general"], device="cpu")
    sd = model_to_ldm(ref.unet, ref.vae, ref.text_encoder)
    ema = None
    if ema_from_expert:
        exp = load_model(tiny_dirs["expert"], device="cpu")
        ema = model_to_ldm(exp.unet, exp.vae, exp.text_encoder)
    return ref, with_training_extras(sd, ema_from=ema)


def test_tiny_checkpoint_has_exactly_the_described_names(tiny_dirs):
    _, sd = _tiny_ldm(tiny_dirs, ema_from_expert=True)
    assert {k: tuple(v.shape) for k, v in sd.items()} == single_file_shapes(**TINY)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


@pytest.mark.parametrize("fmt,dtype", [("safetensors", torch.float32), ("ckpt", torch.float32),
                                       ("flat.ckpt", torch.float32), ("safetensors", torch.float16),
                                       ("ckpt", torch.bfloat16)])
def test_tiny_real_layout_file_loads_to_the_same_weights(tiny_dirs, tmp_path, fmt, dtype):
    ref, sd = _tiny_ldm(tiny_dirs, ema_from_expert=True)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    path = tmp_path / f"real.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    elif fmt == "flat.ckpt":
        torch.save(sd, path)
    else:
        torch.save({"state_dict": sd, "global_step": 470000}, path)
    m = load_model(path, device="cpu", config_dir=tiny_dirs["general"])
    assert m.dtype == torch.float32
    for name in ("unet", "vae", "text_encoder"):  # the file's values (rounded to its dtype), upcast
        got, want = getattr(m, name).state_dict(), getattr(ref, name).state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k].to(dtype).float()) for k in want), name


def test_tiny_real_layout_file_with_ema_loads_the_ema_unet(tiny_dirs, tmp_path):
    ref, sd = _tiny_ldm(tiny_dirs, ema_from_expert=True)
    save_file(sd, str(tmp_path / "real.safetensors"))
    expert = load_model(tiny_dirs["expert"], device="cpu")
    m = load_model(tmp_path / "real.safetensors", device="cpu", config_dir=tiny_dirs["general"], use_ema=True)
    assert _same(m.unet, expert.unet) and not _same(m.unet, ref.unet)
    assert _same(m.vae, ref.vae) and _same(m.text_encoder, ref.text_encoder)


def test_tiny_real_layout_file_fuses_with_a_folder_model(tiny_dirs, tmp_path):
    from fusion.pipeline import FusionPipeline, FusionSettings
    _, sd = _tiny_ldm(tiny_dirs)
    save_file(sd, str(tmp_path / "general.safetensors"))
    pipe = FusionPipeline.from_paths(tmp_path / "general.safetensors", tiny_dirs["expert"], device="cpu",
                                     config_dir=tiny_dirs["general"])
    assert pipe.shared_components == ["vae", "text_encoder"]  # same weights as the expert's folder files
    (r,) = pipe("a red circle", settings=FusionSettings(steps=3, n_samples=1, height=16, width=16), seeds=[3])
    img = r.images["fused"]
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all() and img.std() > 0.01


@pytest.mark.parametrize("extra,match", [
    ({"cond_stage_model.model.token_embedding.weight": torch.zeros(8, 4)}, "this is an SD 2.x checkpoint"),
    ({"conditioner.embedders.1.model.token_embedding.weight": torch.zeros(8, 4)}, "this is an SDXL checkpoint"),
], ids=["sd2", "sdxl"])
def test_cli_refuses_another_family_before_sampling(tiny_dirs, tmp_path, capsys, extra, match):
    from fusion.cli import main
    _, sd = _tiny_ldm(tiny_dirs)
    path = tmp_path / "other.safetensors"
    save_file({**sd, **extra}, str(path))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model0", str(path), "--model1", str(tiny_dirs["expert"]), "--config", str(tiny_dirs["general"]),
              "--outdir", str(out), "--ddim_steps", "2", "--n_samples", "1", "--H", "16", "--W", "16", "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{path}: {match}" in err and err.count("error:") == 1
    assert not out.exists() or not any(out.rglob("*.png"))


def test_cli_use_ema_on_a_file_without_ema_copies_is_a_clear_error(tiny_dirs, tmp_path, capsys):
    from fusion.cli import main
    _, sd = _tiny_ldm(tiny_dirs)
    path = tmp_path / "no_ema.safetensors"
    save_file(sd, str(path))
    with pytest.raises(SystemExit):
        main(["--model0", str(path), "--model1", str(tiny_dirs["expert"]), "--config", str(tiny_dirs["general"]),
              "--outdir", str(tmp_path / "out"), "--use_ema", "--ddim_steps", "2", "--quiet"])
    assert f"{path}: EMA weights were asked for, but the file has no EMA copies" in capsys.readouterr().err
