"""The reference command line (MagicFusion's ``scripts/stable_txt2img.py``), flag-compatible.

    python -m fusion --model0 GENERAL --model1 EXPERT --outdir OUT \\
        --prompt "expert prompt" --prompt1 "general prompt" --fusion_selection 600,1,1 --mode 2

Writes, per seed, with ``name = seed_{seed}_{fusion_selection with ',' -> '_'}``::

    OUT/general_model_0/samples_{name}/00000.jpg ...   OUT/general_model_0/{name}.jpg (grid)
    OUT/expert_model_0/...                              (likewise)
    OUT/fusion_ge_{mode}/...                            (fusion_eg_{mode} when the expert is primary)

Beyond the reference: ``--seed`` takes several seeds and is honoured (the reference ignored it),
``--expert_primary`` swaps the roles, existing files are never overwritten without
``--overwrite``, and every input is checked before any model loads (by the request object,
:mod:`fusion.settings`), except the size against the loaded primary's VAE factor, checked by
the pipeline right after loading, before anything is sampled or written. Defaults: the
library's (:class:`fusion.settings.FusionSettings`, the reference script's).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .cli_request import LIBRARY_DEFAULTS as D
from .cli_request import add_pair_flags, flag_error, pair_from_args
from .loading import ModelLoadError
from .paths import TOY_DEFAULT_PROMPT
from .schedule import MODE_HELP
from .schedulers import PRESETS, SAMPLER_HELP, SAMPLERS
from .settings import DEFAULT_SEED, FusionRequest, FusionSettings, SettingsError


def _default_prompt() -> str:
    try:
        return TOY_DEFAULT_PROMPT.read_text().strip()
    except OSError:
        return "a red circle"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusion",
        description="MagicFusion: fuse two text-to-image diffusion models with Saliency-aware Noise "
                    "Blending. Writes the general model's, the expert's and the fused images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pair_flags(p)
    p.add_argument("--outdir", default="outputs/txt2img-samples", help="output folder")
    p.add_argument("--prompt", default=None, help="prompt for the expert (default: the toy world's example prompt)")
    p.add_argument("--prompt1", default=None, help="prompt for the general model (default: --prompt)")
    p.add_argument("--from_file", default=None,
                   help="run every line of this file: 'prompt' or 'prompt<TAB>prompt1'")
    p.add_argument("--negative_prompt", default=D.negative_prompt, help="unconditional prompt (reference: empty)")
    p.add_argument("--fusion_selection", default=str(D.fusion_selection),
                   help="'v1,kg,ke': v1 the DDPM timestep where the mode switches (0..1000), kg/ke > 0 the "
                        "softmax sharpness of the primary's/secondary's saliency")
    p.add_argument("--mode", type=int, default=D.mode, help="; ".join(MODE_HELP.values()))
    p.add_argument("--expert_primary", action="store_true",
                   help="make the expert (model1) the primary: its text encoder, scheduler and VAE drive the fused run")
    p.add_argument("--prompt_routing", choices=("role", "model"), default=D.prompt_routing,
                   help="fused run: 'role' = primary UNet gets prompt1, secondary gets prompt (reference); "
                        "'model' = general UNet gets prompt1, expert UNet gets prompt")
    p.add_argument("--own_uncond", action="store_true",
                   help="secondary saliency subtracts its own uncond noise (reference: the primary's)")
    p.add_argument("--ddim_steps", type=int, default=D.steps, help="DDIM sampling steps")
    p.add_argument("--sampler", choices=SAMPLERS, default=D.sampler,
                   help="; ".join(f"{k}: {v}" for k, v in SAMPLER_HELP.items()) + " (--ddim_steps sets the steps of each)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="; ".join(f"{k}: {v['sampler']}, {v['steps']} steps" for k, v in PRESETS.items())
                        + " (replaces --sampler and --ddim_steps)")
    p.add_argument("--ddim_eta", type=float, default=0.0, help="DDIM eta (only 0 is supported, as in the reference)")
    p.add_argument("--scale", type=float, default=D.guidance_scale, help="classifier-free guidance scale")
    p.add_argument("--H", type=int, default=None, help="image height in pixels (default: the model's native size)")
    p.add_argument("--W", type=int, default=None, help="image width in pixels (default: the model's native size)")
    p.add_argument("--n_samples", type=int, default=D.n_samples, help="images per seed (one batch)")
    p.add_argument("--n_iter", type=int, default=1, help="run this many consecutive seeds starting at each --seed")
    p.add_argument("--seed", type=int, nargs="+", default=[DEFAULT_SEED], help="seed(s) of the shared initial noise x_T")
    p.add_argument("--skip_grid", action="store_true", help="do not write the grid images")
    p.add_argument("--skip_save", action="store_true", help="do not write the individual samples")
    p.add_argument("--only", choices=("general", "expert", "fused"), nargs="+", default=None,
                   help="produce only these of the three images")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="weights dtype: auto = fp16 on CUDA, fp32 on CPU")
    p.add_argument("--batch_trajectories", action=argparse.BooleanOptionalAction, default=None,
                   help="one UNet call per model per step for all three runs; default: the device's measured "
                        "choice (batched on CPU and CUDA); --no-batch_trajectories: latents bit-identical to the naive loop")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on machines with <= 2 CPUs, where more threads thrash)")
    p.add_argument("--overwrite", action="store_true", help="replace files that already exist in --outdir")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


#: the most seeds one run accepts (--seed values x --n_iter); each seed is one batch of images
MAX_SEEDS = 1000


def _seeds(given: list[int], n_iter: int) -> list[int]:
    """The run's seeds, checked before any list is built: at most MAX_SEEDS, each in 0..2^63-1."""
    from .textparse import quote
    if n_iter < 1:
        raise ValueError(f"--n_iter must be >= 1, got {n_iter}")
    if len(given) * n_iter > MAX_SEEDS:
        raise ValueError(f"--seed x --n_iter: at most {MAX_SEEDS} seeds per run, got {len(given)} x {n_iter}")
    bad = [s for s in given if not 0 <= s <= 2 ** 63 - n_iter]
    if bad:
        raise ValueError(f"--seed must be in 0..2^63-1 (with --n_iter added), got {quote(str(bad[0]))}")
    return [s + k for s in given for k in range(n_iter)]


def output_dirs(outdir: Path, mode: int, expert_primary: bool) -> dict[str, Path]:
    return {"general": outdir / "general_model_0", "expert": outdir / "expert_model_0",
            "fused": outdir / f"fusion_{'eg' if expert_primary else 'ge'}_{mode}"}


def planned_files(outdir: Path, mode: int, expert_primary: bool, names: list[str], n_samples: int,
                  which: tuple[str, ...], skip_grid: bool, skip_save: bool) -> list[Path]:
    dirs = output_dirs(outdir, mode, expert_primary)
    files = []
    for traj in which:
        for name in names:
            if not skip_save:
                files += [dirs[traj] / f"samples_{name}" / f"{i:05d}.jpg" for i in range(n_samples)]
            if not skip_grid:
                files.append(dirs[traj] / f"{name}.jpg")
    return files


def make_grid(images: np.ndarray, padding: int = 2) -> Image.Image:
    """One row of all samples with ``padding`` black pixels around each (torchvision's make_grid look)."""
    n, h, w, c = images.shape
    grid = np.zeros((h + 2 * padding, n * (w + padding) + padding, c), dtype=np.uint8)
    for i, im in enumerate(images):
        x = padding + i * (w + padding)
        grid[padding:padding + h, x:x + w] = im
    return Image.fromarray(grid)


def _read_prompts(args) -> list[tuple[str, str]]:
    if args.from_file:
        path = Path(args.from_file)
        if not path.is_file():
            raise ValueError(f"--from_file: file not found: {path}")
        pairs = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            parts = line.split("\t")
            pairs.append((parts[0].strip(), (parts[1] if len(parts) > 1 else parts[0]).strip()))
        if not pairs:
            raise ValueError(f"--from_file: the prompt list in {path} is empty (one prompt, or "
                             f"'prompt<TAB>prompt1', per line)")
        return pairs
    prompt = _default_prompt() if args.prompt is None else args.prompt
    return [(prompt, prompt if args.prompt1 is None else args.prompt1)]


def request_from_args(args, prompt: str, prompt1: str, seeds: list[int]) -> FusionRequest:
    """The request of the flags (not yet validated)."""
    return FusionRequest(pair_from_args(args), prompt, prompt1, tuple(seeds), FusionSettings(
        fusion_selection=args.fusion_selection, mode=args.mode, primary="expert" if args.expert_primary else "general",
        steps=args.ddim_steps, sampler=args.sampler, guidance_scale=args.scale, height=args.H, width=args.W,
        n_samples=args.n_samples, negative_prompt=args.negative_prompt, prompt_routing=args.prompt_routing,
        own_uncond=args.own_uncond, trajectories=tuple(args.only) if args.only else FusionSettings.trajectories,
        capture_saliency=False, batch_trajectories=args.batch_trajectories))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SettingsError as e:
        parser.exit(2, f"error: {flag_error(e)}\n")
    except (ValueError, ModelLoadError) as e:
        parser.exit(2, f"error: {e}\n")


def _run(args) -> int:
    # 1. every input checked before any model loads: the CLI's own flags, then the request
    if args.preset:
        args.sampler, args.ddim_steps = PRESETS[args.preset]["sampler"], PRESETS[args.preset]["steps"]
    if args.ddim_eta != 0:
        raise ValueError(f"--ddim_eta: only 0 (deterministic DDIM, as the reference) is supported, got {args.ddim_eta}")
    for flag in ("ddim_steps", "n_samples", "n_iter"):  # counts (their ranges: the settings)
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    pairs = _read_prompts(args)
    seeds = _seeds(args.seed, args.n_iter)
    req = request_from_args(args, *pairs[0], seeds).validated()
    req.models.check(read_loras=True)
    s = req.settings
    sel, which, expert_primary = s.fusion_selection, s.trajectories, s.primary == "expert"
    outdir = Path(args.outdir)
    names = [f"seed_{seed}_{sel.slug}" for seed in seeds]
    if len(pairs) > 1:
        names = [f"{n}_p{j:03d}" for j in range(len(pairs)) for n in names]
    existing = [f for f in planned_files(outdir, s.mode, expert_primary, names, s.n_samples, which,
                                         args.skip_grid, args.skip_save) if f.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{len(existing)} output file(s) already exist, e.g. {existing[0]}; nothing was "
                         f"overwritten. Pass --overwrite to replace them, or choose another --outdir")

    # 2. models; then the size against the loaded primary's VAE factor, before anything is written
    import torch
    from tqdm import tqdm
    from .loading import default_device, default_dtype
    from .pipeline import FusionPipeline, to_uint8

    if args.threads is not None or (os.cpu_count() or 1) <= 2:
        torch.set_num_threads(max(1, args.threads or 1))
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # no per-module casting notices in the CLI's output
    device = torch.device(args.device) if args.device else default_device()
    dtype = {"auto": default_dtype(device), "fp32": torch.float32, "fp16": torch.float16,
             "bf16": torch.bfloat16}[args.precision]
    pipe = FusionPipeline.from_choice(req.models, device=device, dtype=dtype)
    req = replace(req, settings=pipe.check_inputs(req.prompt, req.prompt1, s, seeds))

    # 3. run and write
    dirs = output_dirs(outdir, s.mode, expert_primary)
    written = 0
    for j, (prompt, prompt1) in enumerate(pairs):
        bar = None if args.quiet else tqdm(total=len(seeds) * s.steps, desc=f"prompt {j + 1}/{len(pairs)}",
                                           unit="step", file=sys.stderr)
        results = pipe.run(replace(req, prompt=prompt, prompt1=prompt1),
                           callback=(lambda si, ev: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        for res in results:
            name = f"seed_{res.seed}_{sel.slug}" + (f"_p{j:03d}" if len(pairs) > 1 else "")
            for traj in which:
                arr = to_uint8(res.images[traj], rounding="truncate")
                if not args.skip_save:
                    sdir = dirs[traj] / f"samples_{name}"
                    sdir.mkdir(parents=True, exist_ok=True)
                    for i, im in enumerate(arr):
                        Image.fromarray(im).save(sdir / f"{i:05d}.jpg")
                        written += 1
                if not args.skip_grid:
                    dirs[traj].mkdir(parents=True, exist_ok=True)
                    make_grid(arr).save(dirs[traj] / f"{name}.jpg")
                    written += 1
            print(f"seed {res.seed}: {res.stats.total_calls} UNet calls {dict(res.stats.calls)}, "
                  f"{res.seconds:.2f} s ({res.settings.sampler}, {res.settings.steps} steps)", file=sys.stderr)
    print(f"wrote {written} image(s) to {outdir}/ ({', '.join(str(dirs[t].name) for t in which)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
