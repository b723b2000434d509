"""The shipped toy-world MccSTN weights (assets/mccstn/mccstn.safetensors): small, loading offline,
stylising a render deterministically and keeping its silhouette on an easy pair; a fresh install
reports MccSTN available; weights a user puts in the models folder still win."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from studio.config import SHIPPED_MCCSTN_DIR, StudioConfig  # noqa: E402
from toyworld.render import Scene, render  # noqa: E402

OFFICIAL = ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth")
SHIPPED = SHIPPED_MCCSTN_DIR / "mccstn.safetensors"


@pytest.fixture(scope="module")
def model():
    from mccstn import MccSTN

    torch.set_num_threads(1)
    return MccSTN.from_pretrained(SHIPPED_MCCSTN_DIR, device="cpu")


def _saturated(img: np.ndarray) -> np.ndarray:
    """The toy objects are the saturated pixels (photo backgrounds are grey, cartoon ones cream)."""
    a = img.astype(np.int16)
    return (a.max(-1) - a.min(-1)) > 70


def _easy_pair():
    content = Image.fromarray(render(Scene("red", "circle", "big", "photo", 3))).resize((256, 256), Image.BICUBIC)
    style = Image.fromarray(render(Scene("yellow", "triangle", "small", "cartoon", 4))).resize((256, 256), Image.BICUBIC)
    return content, style


def test_shipped_weights_are_one_small_float16_file():
    from safetensors import safe_open

    assert SHIPPED.is_file()
    assert SHIPPED.stat().st_size < 10 * 2 ** 20
    with safe_open(str(SHIPPED), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
    assert "vgg_normalised.45.weight" not in keys  # conv5_2..conv5_4 (unused) are not shipped


def test_fresh_install_reports_mccstn_available(tmp_path):
    from studio.engines import EngineRegistry
    from studio.gpu import WorkSlots

    cfg = StudioConfig(models_dir=tmp_path, device="cpu")  # an empty models folder
    assert cfg.mccstn_dir() == SHIPPED_MCCSTN_DIR
    entry = EngineRegistry(cfg, cache=None, slots=WorkSlots(1)).get("mccstn")
    assert entry.available, entry.reason


def test_shipped_weights_stylise_a_render_keeping_its_silhouette(model):
    content, style = _easy_pair()
    out = model.stylize_image(content, style, preserve_color=True)
    again = model.stylize_image(content, style, preserve_color=True)
    assert out.size == (256, 256) and np.array_equal(np.asarray(out), np.asarray(again))
    small = np.asarray(out.resize((64, 64), Image.BOX))
    assert small.std() > 10, "flat output"
    want, got = _saturated(np.asarray(content.resize((64, 64), Image.BOX))), _saturated(small)
    iou = (want & got).sum() / max(1, (want | got).sum())
    assert iou >= 0.5, f"silhouette IoU {iou:.2f}"


def test_user_weights_in_the_models_folder_are_used(tmp_path):
    (tmp_path / "mccstn").mkdir()
    for f in OFFICIAL:
        (tmp_path / "mccstn" / f).write_bytes(b"x")
    assert StudioConfig(models_dir=tmp_path).mccstn_dir() == tmp_path / "mccstn"


def test_the_card_says_what_the_weights_are_and_how_they_were_trained():
    card = (SHIPPED_MCCSTN_DIR / "README.md").read_text()
    for must in ("python -m mccstn.train_encoder", "python -m mccstn.train", "vgg_normalised.pth",
                 "cannot", "held-out"):
        assert must in card, must
