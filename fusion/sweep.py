"""Sweeps: a grid of fusion settings for one prompt pair and one seed.

    python -m fusion.sweep --prompt P --prompt1 P1 --v1 400,600,800 --kg 1 --ke 1,3 --mode 2 \\
        --seed 6854 --ddim_steps 20 --out DIR

Any of ``--v1 --kg --ke --mode --primary`` is an axis (a comma list). Writes ``DIR/results.csv``
(one row per cell: v1, kg, ke, mode, primary, seed, image path relative to DIR, secondary pixel
share, judge scores with ``--judge``), ``DIR/cells/*.png``, ``DIR/general.png``, ``DIR/expert.png``
and the labelled ``DIR/grid.png``. Running the same command again skips the cells already done;
a different axis list on the same folder adds its cells. ``--ray local`` / ``--ray ADDRESS`` runs
the cells as Ray tasks (see :mod:`fusion.sweep_ray`).

Library::

    from fusion.sweep import SweepAxes, SweepSpec, LocalExecutor, run_sweep
    spec = SweepSpec("a cartoon of a green circle", "a green circle", seed=1000, steps=20,
                     axes=SweepAxes.parse(v1="400,600,800", ke="1,3"), model0=..., model1=...)
    report = run_sweep(spec, "out/sweep", LocalExecutor(pipe))
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cli_request import LIBRARY_DEFAULTS as D
from .cli_request import add_pair_flags, check_pair, flag_error
from .schedule import MODE_HELP
from .schedulers import SAMPLERS
from .settings import DEFAULT_SEED, SettingsError
from .sweep_spec import MAX_CELLS_WITHOUT_CONFIRM, SweepAxes, SweepCell, SweepSpec
from .sweep_store import GRID, SweepStore

__all__ = ["SweepAxes", "SweepCell", "SweepSpec", "SweepReport", "LocalExecutor", "run_sweep", "main"]


def __getattr__(name):  # LocalExecutor lives with the sampler code; imported lazily (torch)
    if name in ("LocalExecutor", "PipelineRecipe"):
        from . import sweep_exec
        return getattr(sweep_exec, name)
    raise AttributeError(name)


@dataclass
class SweepReport:
    """What a run did: cells in the grid, run now, skipped (done before); UNet forward passes
    per model and evaluations shared; seconds of sampling+decoding."""

    out: Path
    cells: int
    ran: int
    skipped: int
    unet_calls: dict[str, int] = field(default_factory=dict)
    shared: int = 0
    seconds: float = 0.0

    @property
    def total_calls(self) -> int:
        return sum(self.unet_calls.values())


def run_sweep(spec: SweepSpec, out, executor, judge: bool = False, confirm_large: bool = False,
              cancel=None, on_chunk: Callable | None = None, judge_path=None) -> SweepReport:
    """Run every cell of ``spec`` not already done in ``out``; write its files; return a report.

    Every input is checked (and the folder's manifest compared) before the executor loads a
    model; the size against the loaded primary's VAE factor is checked by the pipeline before
    the first chunk runs, and the folder is written only after that chunk.
    ``on_chunk(chunk_output, rows)`` after each finished chunk (for streaming UIs).
    """
    spec.check(confirm_large)
    store = SweepStore(out, spec)
    store.check()
    scorer = None
    if judge:
        from .sweep_judge import CellJudge
        scorer = CellJudge(spec.prompt, judge_path)
    cells = spec.axes.cells()
    done = store.done(cells)
    todo = [c for c in cells if c not in done]
    from .sweep_exec import plan_chunks

    size = executor.chunk_size(len(todo)) if hasattr(executor, "chunk_size") else executor.max_cells
    chunks = plan_chunks(todo, not store.references_done(), max_cells=size)
    begun = not chunks
    if begun:
        store.begin()
    report = SweepReport(Path(out), len(cells), len(todo), len(done))
    rows = dict(done)
    for result in executor.map(spec, chunks, cancel=cancel):
        if not begun:  # after the first chunk: a request the loaded models refuse writes nothing
            store.begin()
            begun = True
        if result.references:
            store.write_references(result.references)
        for co in result.cells:
            rows[co.cell] = store.write_cell(co.cell, co.images, co.secondary_share)
        store.write_results()
        for k, v in result.unet_calls.items():
            report.unet_calls[k] = report.unet_calls.get(k, 0) + v
        report.shared += result.shared
        report.seconds += result.seconds
        if scorer is not None:  # after the images are safe on disk
            for co in result.cells:
                rows[co.cell] = store.update_judge(co.cell, scorer.score(co.images))
            store.write_results()
        if on_chunk is not None:
            on_chunk(result, rows)
    if scorer is not None:  # cells done by an earlier run without --judge
        for c in cells:
            if rows[c].get("judge") in (None, ""):
                rows[c] = store.update_judge(c, scorer.score(store.load_images(c)))
    store.write_results()
    write_grid(store, spec, rows)
    return report


def write_grid(store: SweepStore, spec: SweepSpec, rows: dict) -> Path:
    from .sweep_grid import render_grid

    images = {c: store.load_images(c) for c in spec.axes.cells() if c in rows}
    fixed = ", ".join(f"{a}={v}" for a, v in spec.axes.as_text().items() if a not in spec.axes.varied)
    title = (f"{spec.prompt!r} / {spec.prompt1!r}, seed {spec.seed}, {spec.steps} steps, scale "
             f"{spec.guidance_scale:g}" + (f"; {fixed}" if fixed else ""))
    path = store.root / GRID
    render_grid(spec.axes, images, rows, title=title).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusion.sweep",
        description="A grid of fusion settings for one prompt pair and seed. Any of --v1 --kg --ke --mode "
                    "--primary is an axis: a comma list, e.g. --v1 400,600,800.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (resumable: done cells are skipped)")
    p.add_argument("--prompt", default=None, help="prompt for the expert (default: the toy world's example prompt)")
    p.add_argument("--prompt1", default=None, help="prompt for the general model (default: --prompt)")
    p.add_argument("--v1", default="600", help="axis: DDPM timestep(s) where the mode switches (0..1000)")
    p.add_argument("--kg", default="1", help="axis: softmax sharpness of the primary's saliency (> 0)")
    p.add_argument("--ke", default="1", help="axis: softmax sharpness of the secondary's saliency (> 0)")
    p.add_argument("--mode", default="2", help="axis: " + "; ".join(MODE_HELP.values()))
    p.add_argument("--primary", default="general", help="axis: general (model0) and/or expert (model1)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the shared initial noise x_T")
    add_pair_flags(p)
    p.add_argument("--negative_prompt", default="", help="unconditional prompt")
    p.add_argument("--prompt_routing", choices=("role", "model"), default="role",
                   help="fused run's prompt routing (as in python -m fusion)")
    p.add_argument("--own_uncond", action="store_true", help="secondary saliency subtracts its own uncond noise")
    p.add_argument("--ddim_steps", type=int, default=D.steps, help="DDIM sampling steps")
    p.add_argument("--sampler", choices=SAMPLERS, default=D.sampler, help="sampler (as in python -m fusion)")
    p.add_argument("--scale", type=float, default=D.guidance_scale, help="classifier-free guidance scale")
    p.add_argument("--H", type=int, default=None, help="image height (default: the model's native size)")
    p.add_argument("--W", type=int, default=None, help="image width (default: the model's native size)")
    p.add_argument("--n_samples", type=int, default=SweepSpec.n_samples, help="images per cell (one batch from --seed)")
    p.add_argument("--judge", action="store_true", help="toy world: score every cell with the judge")
    p.add_argument("--yes", action="store_true", help=f"run grids of more than {MAX_CELLS_WITHOUT_CONFIRM} cells")
    p.add_argument("--ray", default=None, metavar="local|ADDRESS",
                   help="run cells as Ray tasks: 'local' starts a local cluster, else a cluster address "
                        "(e.g. ray://head:10001 or auto)")
    p.add_argument("--ray_workers", type=int, default=None,
                   help="Ray workers (one model pair each; default: one per GPU, else per CPU, at most the chunks)")
    p.add_argument("--ray_gpus_per_worker", type=float, default=None,
                   help="GPUs per Ray worker (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="weights dtype: auto = fp16 on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--batch_trajectories", action="store_true",
                   help="one UNet call per model per step for all cells of a chunk (faster on GPUs; images then "
                        "depend on the grouping up to float rounding)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def recipe_for(spec: SweepSpec, args):
    """How the workers load the pair (models, LoRAs, device, precision, threads)."""
    from .lora import LoraSettings
    from .sweep_exec import PipelineRecipe

    lora = LoraSettings(spec.lora0, spec.lora1, spec.lora0_scale, spec.lora1_scale)
    return PipelineRecipe(spec.model0, spec.model1, spec.config, args.device, args.precision, args.threads,
                          lora=lora if lora.any else None, use_ema=args.use_ema)


def spec_from_args(args) -> SweepSpec:
    """The sweep of a command line, fully checked (no model is loaded)."""
    from .cli import _default_prompt

    axes = SweepAxes.parse(v1=args.v1, kg=args.kg, ke=args.ke, mode=args.mode, primary=args.primary)
    pair = check_pair(args)  # the model files, and the LoRAs read, before any model loads
    prompt = _default_prompt() if args.prompt is None else args.prompt
    expand = (lambda p: None if p is None else str(Path(p).expanduser()))
    spec = SweepSpec(prompt=prompt, prompt1=args.prompt1, seed=args.seed, axes=axes, steps=args.ddim_steps,
                     sampler=args.sampler, guidance_scale=args.scale, height=args.H, width=args.W, n_samples=args.n_samples,
                     negative_prompt=args.negative_prompt, prompt_routing=args.prompt_routing,
                     own_uncond=args.own_uncond, model0=expand(pair.model0), model1=expand(pair.model1),
                     config=args.config, lora0=expand(pair.lora.side(0)[0]), lora1=expand(pair.lora.side(1)[0]),
                     lora0_scale=args.lora0_scale, lora1_scale=args.lora1_scale)
    spec.check(confirm_large=args.yes)
    if args.judge and any(v not in (None, 64) for v in (args.H, args.W)):
        raise ValueError("--judge reads 64x64 images (the toy world's size); drop --H/--W or set them to 64")
    for flag in ("ray_workers", "threads"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValueError(f"--{flag} must be >= 1, got {v}")
    SweepStore(args.out, spec).check()
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .loading import ModelLoadError

    try:
        return _run(args)
    except SettingsError as e:  # named by its flag (here --primary and --n_samples are flags of their own)
        parser.exit(2, f"error: {flag_error(e, {'primary': 'primary'})}\n")
    except (ValueError, ModelLoadError) as e:
        parser.exit(2, f"error: {e}\n")


def _run(args) -> int:
    spec = spec_from_args(args)  # 1. everything checked before any model loads
    from .sweep_exec import LocalExecutor

    recipe = recipe_for(spec, args)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(desc="sweep", unit="step", file=sys.stderr)
    progress = (lambda done, total: bar.update(1)) if bar is not None else None
    if args.ray:
        from .sweep_ray import RayExecutor
        executor = RayExecutor(recipe, address=args.ray, workers=args.ray_workers,
                               gpus_per_worker=args.ray_gpus_per_worker, batch_trajectories=args.batch_trajectories,
                               progress=progress)
    else:
        from diffusers.utils import logging as diffusers_logging
        diffusers_logging.set_verbosity_error()
        executor = LocalExecutor(recipe=recipe, batch_trajectories=args.batch_trajectories, progress=progress)
    try:
        report = run_sweep(spec, args.out, executor, judge=args.judge, confirm_large=args.yes)
    finally:
        if bar is not None:
            bar.close()
        if hasattr(executor, "close"):
            executor.close()
    print(f"{report.ran} cell(s) run, {report.skipped} already done; {report.total_calls} UNet calls "
          f"{report.unet_calls}, {report.shared} shared evaluations, {report.seconds:.1f} s; "
          f"wrote {Path(args.out) / 'results.csv'} and {Path(args.out) / GRID}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
