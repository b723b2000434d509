"""Shared helpers for the MccSTN tests (this module holds no tests).

The synthetic parity weights are regenerated once per test process from
tests/data/mccstn_parity/make_weights.py into a temporary folder (about 150 MB, a few
seconds); nothing under /work/shared is read.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PARITY_DIR = Path(__file__).parent / "data" / "mccstn_parity"
WEIGHT_FILES = ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth")

_cache: dict = {}


def single_thread():
    """Generator for an autouse fixture: run a test with one intra-op thread, then restore.

    The 2 CPU cores are shared with other jobs; under that oversubscription torch's 2-thread
    CPU kernels were measured about 10x slower than 1 thread (1.2 s vs 12 s per 128 px
    stylisation), so the MccSTN tests run single-threaded.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parity_weights() -> tuple[Path | None, str]:
    """(folder with the four regenerated .pth files, "") or (None, reason to skip)."""
    if "weights" not in _cache:
        tmp = Path(tempfile.mkdtemp(prefix="mccstn_parity_w_"))
        atexit.register(shutil.rmtree, tmp, True)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, str(PARITY_DIR / "make_weights.py"), str(tmp)],
                              capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode == 0:
            _cache["weights"] = (tmp, "")
        elif proc.returncode == 2:
            _cache["weights"] = (None, "this torch build cannot regenerate the parity weights "
                                       "bit-exactly (make_weights.py sha256 check failed: "
                                       + proc.stderr.strip().splitlines()[-1] + ")")
        else:
            _cache["weights"] = (None, f"make_weights.py failed (rc {proc.returncode}): {proc.stderr[-500:]}")
    return _cache["weights"]


def parity_model():
    """The MccSTN model on CPU with the regenerated parity weights (cached)."""
    from mccstn import MccSTN

    if "model" not in _cache:
        folder, _ = parity_weights()
        _cache["model"] = MccSTN.from_pretrained(folder, device="cpu")
    return _cache["model"]


def load_png(name: str) -> torch.Tensor:
    arr = np.asarray(Image.open(PARITY_DIR / name).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def link_weights(dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A folder of symlinks to the parity weight files (minus ``skip``), for tampering tests."""
    src, _ = parity_weights()
    dst.mkdir(parents=True, exist_ok=True)
    for f in WEIGHT_FILES:
        if f not in skip:
            os.symlink(src / f, dst / f)
    return dst


# ---- fixtures shared by the MccSTN test files (imported there by name) -------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def weights():
    """The regenerated parity weights folder (skips with the reason when they can't be made)."""
    folder, why = parity_weights()
    if folder is None:
        pytest.skip(why)
    return folder


@pytest.fixture(scope="module")
def model(weights):
    """The MccSTN network loaded from the parity weights."""
    return parity_model()
