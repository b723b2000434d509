"""Training smoke run on generated images: finite losses, the generator-side contrastive
gradient, checkpoints that load back, resume, and config errors."""
import csv
import math
import pytest
import torch

from mccstn import MccSTN
from mccstn.train import (LOSS_COLUMNS, TrainConfig, Trainer, main, plot_loss_curves, train,
                          write_toy_images)
from tests.test_mccstn_common import parity_weights, single_thread

SMALL = dict(batch_size=1, load_size=144, crop_size=128, nce_crop=48, nce_queue=16, proj_hidden=32,
             proj_hidden2=32, proj_dim=16, num_workers=0, progress=False, sample_every=1)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder, why = parity_weights()
    if folder is None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("toy")
    write_toy_images(root / "content", 2, 144, "content", seed=0)
    write_toy_images(root / "style", 2, 144, "style", seed=1)
    return root, folder / "vgg_normalised.pth"


def _cfg(root, vgg, out, **kw):
    args = dict(SMALL, content_dir=str(root / "content"), style_dir=str(root / "style"), vgg=str(vgg),
                out=str(out))
    args.update(kw)
    return TrainConfig(**args)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_smoke_run_checkpoints_and_resume(data, tmp_path):
    """Iteration 1 (stage I) in a first run, iteration 2 (stage II) after --resume."""
    root, vgg = data
    out = tmp_path / "run"
    summary = train(_cfg(root, vgg, out, max_iter=1, stage2_start=1, save_every=5))
    assert summary["checkpoints"] == [str(out / "checkpoints" / "iter_000001")]
    assert (out / "samples" / "iter_000001.png").is_file() and (out / "loss_curve.png").is_file()
    # no silent restart in a used folder; resume continues where it stopped
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(root, vgg, out, max_iter=2))
    summary = train(_cfg(root, vgg, out, max_iter=2, stage2_start=1, save_every=5, resume=True))
    assert summary["iterations_run"] == 1
    assert torch.load(out / "train_state.pt", weights_only=True)["iteration"] == 2
    rows = _rows(out / "losses.csv")
    assert [int(r["iter"]) for r in rows] == [1, 2] and [r["stage"] for r in rows] == ["1", "2"]
    stage_only = {"loss_identity", "loss_ar1", "loss_ar2"}
    expected = {1: {"loss_identity"}, 2: {"loss_ar1", "loss_ar2"}}
    for r in rows:
        present = {k for k in LOSS_COLUMNS if r[k] != ""}
        assert present == (set(LOSS_COLUMNS) - stage_only) | expected[int(r["iter"])]
        for k in present:
            assert math.isfinite(float(r[k])), (r["iter"], k, r[k])
        assert float(r["loss_nce_g"]) > 0
    # the checkpoint loads back, as safetensors and as the four .pth files, to the same weights
    ck = out / "checkpoints" / "iter_000002"
    assert summary["checkpoints"] == [str(ck)]
    m_st = MccSTN.from_pretrained(ck, device="cpu")
    m_pth = MccSTN.from_files(*(ck / f for f in ("vgg_normalised.pth", "decoder.pth", "transformer.pth",
                                                  "discriminator.pth")), device="cpu")
    for (k, a), b in zip(m_st.state_dict().items(), m_pth.state_dict().values()):
        assert torch.equal(a, b), k
    first = MccSTN.from_pretrained(out / "checkpoints" / "iter_000001", device="cpu")
    assert not torch.equal(first.decoder.convs[0].weight, m_st.decoder.convs[0].weight)  # it trained
    ref_vgg = torch.load(vgg, weights_only=True)
    assert torch.equal(m_st.encoder.convs["conv1_1"].weight, ref_vgg["2.weight"])  # encoder stayed frozen
    img = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(m_st.stylize(img, img)).all()


def test_generator_contrastive_term_reaches_the_generator(data, tmp_path):
    root, vgg = data
    trainer = Trainer(_cfg(root, vgg, tmp_path / "g", max_iter=1))
    g = torch.Generator().manual_seed(3)
    content, style = torch.rand(1, 3, 128, 128, generator=g), torch.rand(1, 3, 128, 128, generator=g)
    m = trainer.model
    with torch.no_grad():
        cf, sf = m.encoder(content), m.encoder(style)
    out = m.decoder(m.fusion(cf[3], sf[3], cf[4], sf[4]))
    loss = trainer.generator_nce(out, style)
    params = trainer.generator_parameters()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    dec_norm = sum(float(gr.norm()) for p, gr in zip(params, grads)
                   if gr is not None and any(p is q for q in m.decoder.parameters()))
    fus_norm = sum(float(gr.norm()) for p, gr in zip(params, grads)
                   if gr is not None and any(p is q for q in m.fusion.parameters()))
    assert math.isfinite(float(loss.detach())) and dec_norm > 0 and fus_norm > 0 and math.isfinite(dec_norm)
    # the projector is not what the generator term trains
    assert all(p.grad is None for p in trainer.projector.parameters())


def test_config_errors(data, tmp_path, capsys):
    root, vgg = data
    _cfg(root, vgg, tmp_path / "x", crop_size=64, load_size=64).validate()  # D sees an enlarged copy
    with pytest.raises(ValueError, match="too small for the encoder"):
        _cfg(root, vgg, tmp_path / "x", crop_size=16, load_size=16).validate()
    with pytest.raises(ValueError, match="--vgg"):
        _cfg(root, "", tmp_path / "x").validate()
    with pytest.raises(ValueError, match="nce_layers"):
        _cfg(root, vgg, tmp_path / "x", nce_layers="0,7").validate()
    assert main(["--content_dir", str(root / "content"), "--style_dir", str(root / "nope"),
                 "--vgg", str(vgg), "--out", str(tmp_path / "y")]) == 2
    assert "style_dir" in capsys.readouterr().err


def test_train_cli_flags():
    from mccstn.train import build_parser

    text = build_parser().format_help()
    for flag in ("--nce_g_weight", "--resume", "--lr_decay", "--save_every", "--content_dir", "--vgg"):
        assert flag in text
    args = build_parser().parse_args(["--nce_g_weight", "0.2", "--no-progress", "--resume"])
    cfg = TrainConfig(**vars(args))
    assert cfg.nce_g_weight == 0.2 and cfg.progress is False and cfg.resume is True


def test_loss_curve_png(tmp_path):
    path = tmp_path / "l.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["iter", "stage", "loss_content", "loss_identity", "loss_ar1"])
        for i in range(1, 21):
            w.writerow([i, 1 if i < 10 else 2, 3.0 / i, "" if i >= 10 else 1.0 / i, "" if i < 10 else 0.1])
    png = plot_loss_curves(path, tmp_path / "curve.png")
    from PIL import Image

    im = Image.open(png)
    assert im.size[0] > 300 and im.size[1] > 100


def test_identity_warm_up_rows_and_clipping(tmp_path):
    """Warm-up iterations (stage 0) log only the identity loss and the output's pixel std; the
    run then goes on to stage I. A narrow toy encoder file sets the network's widths."""
    from mccstn import checkpoint as ck
    from mccstn.network import Encoder, Widths

    write_toy_images(tmp_path / "content", 2, 96, "content", seed=0)
    write_toy_images(tmp_path / "style", 2, 96, "style", seed=1)
    torch.manual_seed(0)
    torch.save(ck.to_official("encoder", Encoder(Widths.divided(8, conv5_tail=False))), tmp_path / "vgg.pth")
    cfg = _cfg(tmp_path, tmp_path / "vgg.pth", tmp_path / "run", load_size=96, crop_size=64, nce_crop=64,
               max_iter=2, warmup_iters=1, stage2_start=-1, save_every=5, clip_grad_norm=1.0)
    summary = train(cfg)
    rows = _rows(tmp_path / "run" / "losses.csv")
    assert [r["stage"] for r in rows] == ["0", "1"]
    assert rows[0]["loss_identity"] and not rows[0]["loss_style"] and rows[1]["loss_style"]
    assert all(0.0 <= float(r["out_std"]) <= 0.5 for r in rows)
    model = MccSTN.from_pretrained(summary["checkpoints"][-1], device="cpu")
    assert model.widths.stages == (8, 16, 32, 64, 64) and model.widths.discriminator == (8, 16, 32, 64)
