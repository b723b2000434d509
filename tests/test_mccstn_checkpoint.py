"""Strict loading of the official four-file layout, safetensors round trip, encoder init."""
import pytest
import torch

from mccstn import CheckpointError, MccSTN
from mccstn.checkpoint import (OFFICIAL_FILES, find_weights, load_encoder_init, read_safetensors,
                               save_safetensors, torchvision_vgg19_to_encoder)
from tests.test_mccstn_common import single_thread, link_weights, load_png, parity_model, parity_weights
from tests.test_mccstn_common import weights  # noqa: F401  (shared fixture)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _tampered(tmp_path, weights, fname, edit):
    folder = link_weights(tmp_path / "w", skip=(fname,))
    sd = torch.load(weights / fname, weights_only=True)
    edit(sd)
    torch.save(sd, folder / fname)
    return folder


def test_missing_key_names_file_and_key(tmp_path, weights):
    folder = _tampered(tmp_path, weights, "decoder.pth", lambda sd: sd.pop("28.bias"))
    with pytest.raises(CheckpointError, match=r"decoder\.pth.*missing key '28\.bias'"):
        MccSTN.from_pretrained(folder, device="cpu")


def test_extra_key_names_file_and_key(tmp_path, weights):
    folder = _tampered(tmp_path, weights, "transformer.pth",
                       lambda sd: sd.__setitem__("AesSA_4_1.extra.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"transformer\.pth.*unexpected key 'AesSA_4_1\.extra\.weight'"):
        MccSTN.from_pretrained(folder, device="cpu")


def test_misshaped_tensor_names_file_and_key(tmp_path, weights):
    folder = _tampered(tmp_path, weights, "discriminator.pth",
                       lambda sd: sd.__setitem__("score_models.2.0.weight", torch.zeros(1, 512, 1, 1)))
    with pytest.raises(CheckpointError, match=r"discriminator\.pth.*'score_models\.2\.0\.weight'.*shape"):
        MccSTN.from_pretrained(folder, device="cpu")


def test_swapped_files_are_named(tmp_path, weights):
    folder = link_weights(tmp_path / "w", skip=("transformer.pth",))
    (folder / "transformer.pth").symlink_to(weights / "decoder.pth")
    with pytest.raises(CheckpointError, match=r"transformer\.pth.*look like decoder\.pth"):
        MccSTN.from_pretrained(folder, device="cpu")


def test_missing_file_and_non_state_dict(tmp_path, weights):
    folder = link_weights(tmp_path / "w", skip=("vgg_normalised.pth",))
    with pytest.raises(CheckpointError, match=r"missing vgg_normalised\.pth"):
        MccSTN.from_pretrained(folder, device="cpu")
    (folder / "vgg_normalised.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"vgg_normalised\.pth: cannot be read"):
        MccSTN.from_pretrained(folder, device="cpu")
    torch.save({"net": {"a": torch.zeros(1)}, "epoch": 3}, folder / "vgg_normalised.pth")
    with pytest.raises(CheckpointError, match="training checkpoint"):
        MccSTN.from_pretrained(folder, device="cpu")


class _Opaque:
    """Pickled by reference: weights_only loading must refuse it."""


def test_pickled_object_refused_by_weights_only(tmp_path, weights):
    folder = link_weights(tmp_path / "w", skip=("decoder.pth",))
    torch.save({"1.weight": _Opaque()}, folder / "decoder.pth")  # a non-allowlisted global
    with pytest.raises(CheckpointError, match=r"decoder\.pth.*weights_only"):
        MccSTN.from_pretrained(folder, device="cpu")


def test_safetensors_round_trip(tmp_path, weights):
    model = parity_model()
    path = save_safetensors(model.components(), tmp_path / "m" / "mccstn.safetensors")
    with pytest.raises(FileExistsError):
        save_safetensors(model.components(), path)
    parts = read_safetensors(path)
    for comp, fname in OFFICIAL_FILES.items():
        ref = torch.load(weights / fname, weights_only=True)
        assert sorted(parts[comp]) == sorted(ref), fname
        for k in ref:
            assert torch.equal(parts[comp][k], ref[k]), (fname, k)
    # folder with only the safetensors file, and the file path itself
    for where in (tmp_path / "m", path):
        m2 = MccSTN.from_pretrained(where, device="cpu")
        for (k1, v1), (k2, v2) in zip(model.state_dict().items(), m2.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2), k1
    c, s = load_png("content_a.png"), load_png("style_a.png")
    assert torch.equal(model.stylize(c, s), m2.stylize(c, s))


def test_save_pretrained_pth_round_trip(tmp_path):
    model = parity_model()
    written = model.save_pretrained(tmp_path / "p", fmt="pth")
    assert sorted(p.split("/")[-1] for p in written) == sorted(OFFICIAL_FILES.values())
    assert find_weights(tmp_path / "p")[0] == "pth"
    m2 = MccSTN.from_pretrained(tmp_path / "p", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(FileExistsError):
        model.save_pretrained(tmp_path / "p", fmt="pth")


def test_safetensors_bad_key(tmp_path):
    from safetensors.torch import save_file

    save_file({"nonsense.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key 'nonsense.weight'"):
        MccSTN.from_pretrained(tmp_path / "x.safetensors", device="cpu")


def _fake_torchvision_vgg19():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    sd, cin, idx = {}, 3, 0
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.full((v, cin, 3, 3), 0.001 * (idx + 1))
        sd[f"features.{idx}.bias"] = torch.zeros(v)
        cin, idx = v, idx + 2
    sd["classifier.0.weight"] = torch.zeros(4, 4)
    return sd


def test_torchvision_vgg19_init(tmp_path):
    from mccstn.network import Encoder

    sd = _fake_torchvision_vgg19()
    torch.save(sd, tmp_path / "vgg19.pth")
    enc = Encoder()
    assert load_encoder_init(enc, tmp_path / "vgg19.pth") == "torchvision"
    assert torch.equal(enc.convs["conv4_1"].weight, sd["features.19.weight"])
    assert torch.equal(enc.convs["conv5_4"].weight, sd["features.34.weight"])
    x = torch.rand(1, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(enc.convs["color"](x), (x - mean) / std)
    bn = dict(sd)
    bn["features.1.running_mean"] = torch.zeros(64)
    with pytest.raises(CheckpointError, match="vgg19_bn"):
        torchvision_vgg19_to_encoder(bn, enc)
    del sd["features.28.weight"]
    with pytest.raises(CheckpointError, match="features.28.weight"):
        torchvision_vgg19_to_encoder(sd, enc)


def test_vgg_normalised_init(weights):
    from mccstn.network import Encoder

    enc = Encoder()
    assert load_encoder_init(enc, weights / "vgg_normalised.pth") == "vgg_normalised"
    ref = torch.load(weights / "vgg_normalised.pth", weights_only=True)
    assert torch.equal(enc.convs["conv5_1"].weight, ref["42.weight"])


# ---- widths read from the checkpoint ------------------------------------------------------------
#: the published vgg_normalised.pth (AdaIN's nn.Sequential): index -> (out, in, k) of each conv,
#: written from the published layout (64-64 | 128-128 | 256 x4 | 512 x4 | 512 x4), not from mccstn
PUBLISHED_VGG = {0: (3, 3, 1), 2: (64, 3, 3), 5: (64, 64, 3), 9: (128, 64, 3), 12: (128, 128, 3),
                 16: (256, 128, 3), 19: (256, 256, 3), 22: (256, 256, 3), 25: (256, 256, 3),
                 29: (512, 256, 3), 32: (512, 512, 3), 35: (512, 512, 3), 38: (512, 512, 3),
                 42: (512, 512, 3), 45: (512, 512, 3), 48: (512, 512, 3), 51: (512, 512, 3)}


def _published_vgg_state():
    state = {}
    for idx, (cout, cin, k) in PUBLISHED_VGG.items():
        state[f"{idx}.weight"] = torch.empty(cout, cin, k, k, device="meta")
        state[f"{idx}.bias"] = torch.empty(cout, device="meta")
    return state


def test_real_full_width_vgg_layout_loads_unchanged():
    from mccstn.checkpoint import convert_official, widths_from_official
    from mccstn.network import Encoder, Widths

    state = _published_vgg_state()
    widths = widths_from_official({"encoder": state})
    assert widths.stages == (64, 128, 256, 512, 512) and widths.conv5_tail
    with torch.device("meta"):
        enc = Encoder(widths)
    converted = convert_official("encoder", state, enc, "vgg_normalised.pth")
    assert len(converted) == 34  # 17 convs, weight + bias, every key of the file
    enc.load_state_dict(converted, strict=True, assign=True)


def test_narrow_network_without_conv5_tail_round_trips(tmp_path):
    from mccstn.network import Widths

    torch.manual_seed(0)
    widths = Widths.divided(8, conv5_tail=False)
    model = MccSTN(widths).eval()
    path = save_safetensors(model.components(), tmp_path / "mccstn.safetensors")
    parts = read_safetensors(path)
    assert "45.weight" not in parts["encoder"] and parts["encoder"]["42.weight"].shape[0] == 64
    loaded = MccSTN.from_pretrained(tmp_path, device="cpu")
    assert loaded.widths == widths
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    s = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.stylize(x, s, small_images="upsample"), loaded.stylize(x, s, small_images="upsample"))


def test_mismatched_widths_between_files_name_the_file(tmp_path):
    from mccstn.network import Widths

    narrow = MccSTN(Widths.divided(8, conv5_tail=False))
    other = MccSTN(Widths.divided(4, conv5_tail=False))
    folder = tmp_path / "mixed"
    narrow.save_pretrained(folder, fmt="pth")
    import mccstn.checkpoint as ck
    torch.save(ck.to_official("decoder", other.decoder), folder / "decoder.pth")
    with pytest.raises(CheckpointError, match=r"decoder\.pth.*shape"):
        MccSTN.from_pretrained(folder, device="cpu")
