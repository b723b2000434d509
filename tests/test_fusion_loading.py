"""Offline loading: diffusers folders, single-file LDM-layout .safetensors and .ckpt, refusals."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from fusion.loading import (IncompatibleModelsError, ModelLoadError, SD1_CONFIG_DIR, check_fusable, load_model,
                            share_identical_components)
from fusion.single_file import convert_ldm_state_dict, fit_text_encoder_keys
from tests.ldm_layout import model_to_ldm


def _equal_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_diffusers_folder_loads_offline(tiny_dirs):
    m = load_model(tiny_dirs["general"], device="cpu")
    assert (m.latent_channels, m.cross_attention_dim, m.vae_scale_factor) == (4, 32, 2)
    assert m.dtype == torch.float32 and m.prediction_type == "epsilon"
    emb = m.encode_prompts(["a red circle", ""])
    assert emb.shape == (2, 16, 32)


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_single_file_in_ldm_layout_loads_to_the_same_weights(tiny_dirs, tmp_path, fmt):
    ref = load_model(tiny_dirs["general"], device="cpu")
    sd = model_to_ldm(ref.unet, ref.vae, ref.text_encoder)
    path = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "global_step": torch.tensor(5)}, path)
    m = load_model(path, device="cpu", config_dir=tiny_dirs["general"])
    for name in ("unet", "vae", "text_encoder"):
        assert _equal_weights(getattr(m, name), getattr(ref, name)), name
    assert m.name == "model"


def test_sd1_key_layout_converts_with_the_shipped_configs():
    """The shipped SD 1.x configs and the converter agree on every key and shape (on the meta
    device: the real 1 B-parameter layout, no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    import json
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(SD1_CONFIG_DIR / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(SD1_CONFIG_DIR / "vae")))
        cfg = json.loads((SD1_CONFIG_DIR / "text_encoder" / "config.json").read_text())
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
    ldm = model_to_ldm(unet, vae, te)
    assert sum(k.startswith("model.diffusion_model.") for k in ldm) == len(unet.state_dict())
    _, unet_sd, _, vae_sd, _, te_sd = convert_ldm_state_dict(ldm, SD1_CONFIG_DIR)
    for module, converted in ((unet, unet_sd), (vae, vae_sd)):
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    expected = {k for k in te.state_dict() if not k.endswith("position_ids")}
    assert set(fit_text_encoder_keys(te_sd, expected)) == expected


class LevelledCLIPTextModel(torch.nn.Module):
    """A text encoder whose state dict has the ``text_model.`` level, as transformers 4's did."""

    def __init__(self, config):
        super().__init__()
        from transformers import CLIPTextModel
        inner = CLIPTextModel(config)
        self.text_model = getattr(inner, "text_model", inner)  # the same under transformers 4 and 5
        self.config = config


@pytest.mark.parametrize("file_has_level", [True, False])
@pytest.mark.parametrize("model_has_level", [True, False])
def test_text_encoder_keys_fit_either_layout_of_file_and_model(tiny_dirs, file_has_level, model_has_level):
    from fusion.loading import _build
    from transformers import CLIPTextModel
    ref = load_model(tiny_dirs["general"], device="cpu").text_encoder
    bare = {k.removeprefix("text_model."): v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    sd = {("text_model." + k if file_has_level else k): v for k, v in bare.items()}
    cls = LevelledCLIPTextModel if model_has_level else CLIPTextModel
    te = _build(cls, ref.config, sd, "te.safetensors",
                ignore=("text_model.embeddings.position_ids", "embeddings.position_ids"), fit_keys=fit_text_encoder_keys)
    assert all(k.startswith("text_model.") == model_has_level for k in te.state_dict())
    got = {k.removeprefix("text_model."): v for k, v in te.state_dict().items() if not k.endswith("position_ids")}
    assert got.keys() == bare.keys() and all(torch.equal(got[k], bare[k]) for k in bare)


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": Evil()}}, f, protocol=2)  # torch.save's protocol
    with pytest.raises(ModelLoadError, match="refused to load. This checkpoint is a pickle that asks to run code"):
        load_model(path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("name,content", [("broken.safetensors", b"\x00not a safetensors file" * 10),
                                          ("broken.ckpt", b"garbage" * 20)])
def test_corrupt_file_is_a_clear_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match="not a readable"):
        load_model(p, device="cpu")


def test_missing_path_and_non_model_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope", device="cpu")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a model"):
        load_model(tmp_path / "notes.txt", device="cpu")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(ModelLoadError, match="missing unet/"):
        load_model(tmp_path / "empty_folder", device="cpu")


def test_single_file_without_unet_keys_is_refused(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(p))
    with pytest.raises(ModelLoadError, match="not an SD 1.x-family"):
        load_model(p, device="cpu")


def test_models_of_different_families_are_named_plainly(tiny_dirs):
    a = load_model(tiny_dirs["general"], device="cpu")
    b = load_model(tiny_dirs["other_family"], device="cpu")
    with pytest.raises(IncompatibleModelsError, match=r"cross-attention width .*: general has 32, other_family has 48"):
        check_fusable(a, b)


def test_identical_components_are_held_once(tiny_dirs):
    g = load_model(tiny_dirs["general"], device="cpu")
    e = load_model(tiny_dirs["expert"], device="cpu")
    assert share_identical_components(g, e) == ["vae", "text_encoder"]
    assert e.vae is g.vae and e.text_encoder is g.text_encoder and e.unet is not g.unet
    other = load_model(tiny_dirs["other_family"], device="cpu")
    assert share_identical_components(g, other) == []
