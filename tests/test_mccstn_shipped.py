"""Where the app finds MccSTN weights: no weights ship with the project (a 42-iteration toy run gave
a network that decodes flat grey, see assets/mccstn/README.md), so a fresh install names the folder
to fill; weights a user puts there, or in assets/mccstn, are found."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.config import SHIPPED_MCCSTN_DIR, StudioConfig  # noqa: E402

OFFICIAL = ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth")


def test_fresh_install_reports_mccstn_unavailable_naming_the_folder(tmp_path):
    from studio.engines import EngineRegistry
    from studio.gpu import WorkSlots

    cfg = StudioConfig(models_dir=tmp_path, device="cpu")  # an empty models folder
    entry = EngineRegistry(cfg, cache=None, slots=WorkSlots(1)).get("mccstn")
    assert not entry.available
    assert "mccstn" in entry.reason and "weights" in entry.reason.lower(), entry.reason


def test_user_weights_in_the_models_folder_are_used(tmp_path):
    (tmp_path / "mccstn").mkdir()
    for f in OFFICIAL:
        (tmp_path / "mccstn" / f).write_bytes(b"x")
    assert StudioConfig(models_dir=tmp_path).mccstn_dir() == tmp_path / "mccstn"


def test_weights_placed_in_the_assets_folder_are_the_fallback(tmp_path, monkeypatch):
    import studio.config as config

    assets = tmp_path / "assets_mccstn"
    assets.mkdir()
    (assets / "mccstn.safetensors").write_bytes(b"x")
    monkeypatch.setattr(config, "SHIPPED_MCCSTN_DIR", assets)
    assert StudioConfig(models_dir=tmp_path / "models").mccstn_dir() == assets


def test_the_card_says_no_weights_ship_and_how_to_train_them():
    card = (SHIPPED_MCCSTN_DIR / "README.md").read_text()
    for must in ("not shipped", "python -m mccstn.train_encoder", "python -m mccstn.train", "vgg_normalised.pth"):
        assert must in card, must
