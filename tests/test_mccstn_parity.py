"""Parity of MccSTN inference with the reference (public vector tests/data/mccstn_parity)."""
import json

import numpy as np
import pytest
import torch

from tests.test_mccstn_common import single_thread, PARITY_DIR, load_png, parity_model, parity_weights
from tests.test_mccstn_common import model, weights  # noqa: F401  (shared fixtures)

CASE = "A_alpha1.0"
# tolerances from the parity README
TOL = {"out": 2e-4, "inter.content.relu5_1": 1e-4, "inter.style.relu5_1": 1e-4,
       "inter.style.D_feat": 2e-3, "inter.transform_cs.out": 2e-4}


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_parity_vector(model):
    content, style = load_png("content_a.png"), load_png("style_a.png")
    assert content.shape == (1, 3, 128, 128) and style.shape == (1, 3, 128, 96)
    out = model.stylize(content, style, alpha=1.0, preserve_color=False)
    with torch.no_grad():
        cf, sf = model.encode(content), model.encode(style)
        aes = model.aesthetic(style)
        fused = model.fuse(cf, sf, aes)
    got = {"out": out, "inter.content.relu5_1": cf[4], "inter.style.relu5_1": sf[4],
           "inter.style.D_feat": aes, "inter.transform_cs.out": fused}
    diffs = {}
    for name, tensor in got.items():
        ref = np.load(PARITY_DIR / f"{CASE}.{name}.npy")
        assert tuple(tensor.shape) == ref.shape, name
        diffs[name] = float(np.abs(tensor.numpy() - ref).max())
    print("parity max abs diff:", json.dumps(diffs))
    for name, d in diffs.items():
        assert d <= TOL[name], f"{name}: max abs diff {d:.3g} > {TOL[name]}"


def test_weights_match_keys_json():
    """The regenerated files hold exactly the keys/shapes of keys.json (the official layout)."""
    folder, why = parity_weights()
    if folder is None:
        pytest.skip(why)
    entries = json.loads((PARITY_DIR / "keys.json").read_text())
    from mccstn.checkpoint import KEY_MAPS, OFFICIAL_FILES

    by_file = {}
    for e in entries:
        by_file.setdefault(e["file"], []).append(e["key"])
    for comp, fname in OFFICIAL_FILES.items():
        assert list(KEY_MAPS[comp]) == by_file[fname], fname
