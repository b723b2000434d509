"""Export a training checkpoint as small shipped weights: one float16 ``mccstn.safetensors``.

    python -m mccstn.train_export runs/mccstn/checkpoints/iter_000300 assets/mccstn

The inference loader (:func:`mccstn.checkpoint.load_folder`) reads float16 tensors and upcasts
them to float32, so halving the file costs only float16 rounding (the export reports the largest
output difference it causes on a test image). ``conv5_2`` .. ``conv5_4`` of the encoder are part
of the official layout but never used by MccSTN (its features end at relu5_1); they are left out,
and the loader (which reads the widths and the presence of conv5_2 from the file) builds none.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import checkpoint as ckpt
from .stylize import MccSTN

from .network import ENCODER_CONVS, UNUSED_ENCODER_CONVS  # noqa: E402


def export_small(src: str | Path, dst: str | Path, metadata: Optional[dict] = None,
                 overwrite: bool = False) -> dict:
    """Write ``dst/mccstn.safetensors`` (float16) from a checkpoint folder or file ``src``.

    Returns {"path", "bytes", "max_abs_diff"}: the latter is the largest pixel difference
    (0-1 scale) between the float32 and the exported network on a fixed 128x128 test image.
    """
    dst = Path(dst)
    out_file = dst / ckpt.SAFETENSORS_NAME
    if out_file.exists() and not overwrite:
        raise FileExistsError(f"{out_file} exists (pass overwrite=True)")
    full = MccSTN.from_pretrained(src, device="cpu")
    from safetensors.torch import save_file

    unused = {f"{idx}.{p}" for name, idx, *_ in ENCODER_CONVS if name in UNUSED_ENCODER_CONVS
              for p in ("weight", "bias")}
    tensors = {}
    for comp in ckpt.OFFICIAL_FILES:
        for key, t in ckpt.to_official(comp, full.components()[comp]).items():
            if comp == "encoder" and key in unused:
                continue  # conv5_2..conv5_4: never used, not shipped (the loader builds no tail)
            tensors[f"{ckpt.SAFETENSORS_PREFIX[comp]}.{key}"] = t.to(torch.float16)
    meta = {"format": ckpt.FORMAT_TAG, "dtype": "float16", "source": str(src)}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    dst.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out_file)
    small = MccSTN.from_pretrained(out_file, device="cpu")
    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(1, 3, 128, 128, generator=g), torch.rand(1, 3, 128, 128, generator=g)
    with torch.no_grad():
        diff = (full.stylize(c, s, small_images="upsample") - small.stylize(c, s, small_images="upsample")).abs().max()
    return {"path": str(out_file), "bytes": out_file.stat().st_size, "max_abs_diff": float(diff)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mccstn.train_export", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="checkpoint folder (four .pth files or mccstn.safetensors) or .safetensors file")
    ap.add_argument("dst", help="output folder")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    import json
    print(json.dumps(export_small(a.src, a.dst, overwrite=a.overwrite)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
