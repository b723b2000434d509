"""Shared tiny models for the fusion tests (built once per test session)."""
from __future__ import annotations

import pytest

from fusion.testing import save_tiny_model


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """general: seed 0; expert: fine-tuned look-alike (own UNet, same VAE/text encoder files);
    other_family: cross-attention width 48 instead of 32."""
    root = tmp_path_factory.mktemp("tiny_models")
    general = save_tiny_model(root / "general", seed=0)
    expert = save_tiny_model(root / "expert", seed=1, share_from=general)
    other = save_tiny_model(root / "other_family", seed=2, cross_dim=48)
    return {"general": general, "expert": expert, "other_family": other}


@pytest.fixture(scope="session")
def tiny_pipe(tiny_dirs):
    from fusion.pipeline import FusionPipeline
    return FusionPipeline.from_paths(tiny_dirs["general"], tiny_dirs["expert"], device="cpu")
