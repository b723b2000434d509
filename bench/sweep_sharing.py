"""Cell sharing in sweeps: a sweep against its cells run one by one, side by side in one process.

    python bench/sweep_sharing.py                     # toy models, 20 steps (the issue's example), writes bench/results/sweep_sharing.*
    python bench/sweep_sharing.py --models tiny --steps 3 --out /tmp/s.json     # smoke run

For every grid, three ways to get the same cells (one model load, the same pipeline object):

* ``sweep``: ``run_sweep`` into a fresh folder (all files written): the general and expert images
  once, every cell of a chunk in one sampler call (mode-1 prefixes shared).
* ``one_by_one_cli``: what running ``python -m fusion`` once per cell computes: each request makes
  the general, expert and fused images (no file writing, no model reload: favourable to it).
* ``one_by_one_fused``: each cell's fused image alone, plus one request for the two references.

UNet calls are exact counts (deterministic); seconds are wall time, the methods alternating in
every repeat so that load on a shared machine hits them alike (the load average is recorded).
The sweep's cell images are checked bit-equal to the one-by-one fused images.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fusion.pipeline import FusionPipeline, FusionSettings, to_uint8  # noqa: E402
from fusion.sweep import SweepAxes, SweepSpec, run_sweep  # noqa: E402
from fusion.sweep_exec import LocalExecutor, cell_settings  # noqa: E402
from fusion.sweep_store import SweepStore  # noqa: E402

GRIDS = {
    "issue_example": dict(v1="400,600,800", kg="1", ke="1,3", mode="2", primary="general"),
    "modes_1_2_both_primaries": dict(v1="300,500,700", kg="1", ke="3", mode="1,2", primary="general,expert"),
    "mode_1_v1_sweep": dict(v1="100,200,300,400,500,600,700,800,900", kg="1", ke="3", mode="1", primary="general"),
}
METHODS = ("sweep", "one_by_one_cli", "one_by_one_fused")


def model_dirs(kind: str, tmp: Path) -> tuple[str, str]:
    if kind == "toy":
        return str(ROOT / "assets/models/toy-general"), str(ROOT / "assets/models/toy-cartoon")
    from fusion.testing import save_tiny_model
    g = save_tiny_model(tmp / "general", seed=0)
    return str(g), str(save_tiny_model(tmp / "expert", seed=1, share_from=g))


def run_method(method: str, pipe, spec: SweepSpec, tmp: Path) -> tuple[int, float, dict]:
    """(UNet calls, seconds, fused images by cell name)."""
    t0 = time.perf_counter()
    images, calls = {}, 0
    if method == "sweep":
        folder = Path(tempfile.mkdtemp(dir=tmp))
        report = run_sweep(spec, folder, LocalExecutor(pipe))
        seconds = time.perf_counter() - t0
        store = SweepStore(folder, spec)
        return report.total_calls, seconds, {c.name: store.load_images(c) for c in spec.axes.cells()}
    which = ("general", "expert", "fused") if method == "one_by_one_cli" else ("fused",)
    if method == "one_by_one_fused":
        [ref] = pipe(spec.prompt, spec.prompt1, replace(cell_settings(spec, spec.axes.cells()[0]),
                                                        trajectories=("general", "expert")), seeds=[spec.seed])
        calls += ref.stats.total_calls
    for c in spec.axes.cells():
        [res] = pipe(spec.prompt, spec.prompt1, replace(cell_settings(spec, c), trajectories=which), seeds=[spec.seed])
        calls += res.stats.total_calls
        images[c.name] = to_uint8(res.images["fused"])
    return calls, time.perf_counter() - t0, images


def bench_grid(name: str, pipe, args, m0: str, m1: str, tmp: Path) -> dict:
    spec = SweepSpec(args.prompt, args.prompt1, seed=args.seed, steps=args.steps, guidance_scale=args.scale,
                     n_samples=args.n_samples, height=args.H, width=args.W, axes=SweepAxes.parse(**GRIDS[name]),
                     model0=m0, model1=m1)
    calls, seconds, images = {}, {m: [] for m in METHODS}, {}
    for r in range(args.repeats):
        order = METHODS if r % 2 == 0 else METHODS[::-1]
        for m in order:
            calls[m], s, images[m] = run_method(m, pipe, spec, tmp)
            seconds[m].append(s)
            print(f"  {name} {m}: {calls[m]} UNet calls, {s:.1f} s", flush=True)
    best = {m: min(v) for m, v in seconds.items()}
    equal = all(np.array_equal(images["sweep"][k], images["one_by_one_fused"][k]) for k in images["sweep"])
    return {"grid": name, "axes": GRIDS[name], "cells": spec.axes.size, "unet_calls": calls,
            "seconds_best": {m: round(v, 3) for m, v in best.items()},
            "seconds_all": {m: [round(x, 3) for x in v] for m, v in seconds.items()},
            "calls_ratio_sweep_over": {m: round(calls["sweep"] / calls[m], 4) for m in METHODS[1:]},
            "seconds_ratio_sweep_over": {m: round(best["sweep"] / best[m], 4) for m in METHODS[1:]},
            "sweep_images_bit_equal_to_one_by_one": bool(equal)}


def table(res: dict) -> str:
    a = res["args"]
    lines = [f"### sweep_sharing ({a['models']} models, {a['steps']} steps, {a['n_samples']} sample(s)/cell, "
             f"{res['repeats']} repeat(s), load average {res['loadavg_before']} before / {res['loadavg_after']} after)",
             "", "| grid | cells | method | UNet calls | seconds (best) | sweep / this: calls | sweep / this: s |",
             "|---|---|---|---|---|---|---|"]
    for g in res["grids"]:
        for m in METHODS:
            rc = "" if m == "sweep" else f"{g['calls_ratio_sweep_over'][m]:.3f}"
            rs = "" if m == "sweep" else f"{g['seconds_ratio_sweep_over'][m]:.3f}"
            lines.append(f"| {g['grid']} | {g['cells']} | {m} | {g['unet_calls'][m]} | {g['seconds_best'][m]:.2f} | "
                         f"{rc} | {rs} |")
    lines.append("")
    lines.append("Sweep cell images bit-equal to the one-by-one fused images: " + ", ".join(
        f"{g['grid']}: {g['sweep_images_bit_equal_to_one_by_one']}" for g in res["grids"]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", choices=("toy", "tiny"), default="toy")
    p.add_argument("--grids", nargs="+", choices=tuple(GRIDS), default=list(GRIDS))
    p.add_argument("--prompt", default="a cartoon of a big green circle")
    p.add_argument("--prompt1", default="a big green circle")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scale", type=float, default=7.5)
    p.add_argument("--n_samples", type=int, default=1)
    p.add_argument("--H", type=int, default=None)
    p.add_argument("--W", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep_sharing.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        m0, m1 = model_dirs(args.models, tmp)
        pipe = FusionPipeline.from_paths(m0, m1, device="cpu")
        load0 = [round(x, 2) for x in os.getloadavg()]
        grids = [bench_grid(g, pipe, args, m0, m1, tmp) for g in args.grids]
    res = {"args": vars(args), "repeats": args.repeats, "machine": platform.platform(), "cpus": os.cpu_count(),
           "torch_threads": args.threads, "loadavg_before": load0,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "grids": grids}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(table(res))
    print(table(res))
    return res


if __name__ == "__main__":
    main()
