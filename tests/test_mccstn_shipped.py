"""The MccSTN weights shipped in assets/mccstn: they load offline, stylise a toy render, and the
app lists MccSTN as available on a fresh install (no --mccstn-weights, empty models folder)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mccstn.checkpoint import find_weights  # noqa: E402
from toyworld.render import Scene, render  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "mccstn"


def _saturated(img: np.ndarray) -> np.ndarray:
    a = img.astype(np.int16)
    return (a.max(-1) - a.min(-1)) > 70


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def shipped_model():
    from mccstn import MccSTN
    torch.manual_seed(0)
    return MccSTN.from_pretrained(SHIPPED, device="cpu")


def test_shipped_folder_holds_one_small_safetensors_and_a_model_card():
    kind, path = find_weights(SHIPPED)
    assert kind == "safetensors", path
    assert Path(path).stat().st_size < 100 * 2**20
    card = (SHIPPED / "README.md").read_text()
    for must in ("toy world", "cannot", "vgg_normalised.pth", "python -m mccstn.train"):
        assert must in card


def _stylise_easy_pair(model) -> tuple[Image.Image, np.ndarray]:
    content = render(Scene("red", "circle", "big", "photo", 3))
    style = render(Scene("blue", "square", "big", "cartoon", 4))
    up = lambda a: Image.fromarray(a).resize((128, 128), Image.BICUBIC)  # noqa: E731
    return model.stylize_image(up(content), up(style), preserve_color=True), content


def test_shipped_weights_load_offline_in_float32_and_stylise_a_render(shipped_model):
    assert all(p.dtype == torch.float32 for p in shipped_model.parameters())
    out, _ = _stylise_easy_pair(shipped_model)
    assert out.size == (128, 128) and out.mode == "RGB"


@pytest.mark.xfail(strict=True, reason="the shipped weights trained 42 iterations on a shared CPU and "
                   "decode a flat dark grey image (assets/mccstn/README.md); an XPASS means better "
                   "weights were shipped: make this a plain test")
def test_shipped_weights_keep_the_subject_of_a_render(shipped_model):
    out, content = _stylise_easy_pair(shipped_model)
    small = np.asarray(out.convert("RGB").resize((64, 64), Image.BOX))
    assert small.std() > 10  # not a flat image
    assert _iou(_saturated(small), _saturated(content)) > 0.5


def test_fresh_install_lists_mccstn_as_available(tmp_path):
    from studio.config import StudioConfig
    from studio.engines import EngineRegistry
    from studio.gpu import WorkSlots

    cfg = StudioConfig(models_dir=tmp_path, device="cpu")  # an empty models folder
    reg = EngineRegistry(cfg, cache=None, slots=WorkSlots(1))
    entry = reg.get("mccstn")
    assert entry.available, entry.reason
    assert Path(cfg.mccstn_dir()).resolve() == SHIPPED.resolve()


def test_user_weights_in_the_models_folder_win_over_the_shipped_ones(tmp_path):
    from studio.config import StudioConfig

    (tmp_path / "mccstn").mkdir()
    for f in ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth"):
        (tmp_path / "mccstn" / f).write_bytes(b"x")
    assert StudioConfig(models_dir=tmp_path).mccstn_dir() == tmp_path / "mccstn"
