"""One short GPU check: SD 1.x-size random weights, fp16, 512x512, 50 steps (and 20).

Reports seconds per plain image (one model, CFG, decode), per fused request (three images:
general, expert, fused) for the naive schedule, the project's unbatched schedule (``project``),
the library defaults (``project_batch``: batched on CUDA), the defaults without saliency capture
(its cost), and the defaults with each fast sampler at ``--sampler_steps``; the ratios
fused/plain and project/naive, UNet calls, and peak GPU memory; then one table. Optionally
repeats with ``torch.compile`` (``--compile``).

    bash bench/gpu_check.sh                      # on a machine with a GPU (< 5 min)
    python bench/gpu_check.py --size tiny --steps 2 --H 32 --W 32   # CPU smoke test

Requests alternate between the variants (A/B/C/A/B/C), medians are reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.fusion_speed import make_models, rewrap, schedule_settings, sync  # noqa: E402
from fusion.pipeline import FusionPipeline, FusionSettings  # noqa: E402
from fusion.schedulers import SAMPLERS  # noqa: E402


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" and not args.fp32 else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    g, e = make_models("sd1" if args.size == "sd1" else "toy", device, dtype, shared=False)
    build_s = time.perf_counter() - t0
    naive = FusionPipeline(g, e, dedupe=False, channels_last=not args.no_channels_last and device.type == "cuda")
    proj = FusionPipeline(rewrap(g), rewrap(e), channels_last=not args.no_channels_last and device.type == "cuda",
                          compile=args.compile)
    base = dict(fusion_selection=args.recipe.split(":")[0], mode=int(args.recipe.split(":")[1]),
                primary=args.recipe.split(":")[2], steps=args.steps, height=args.H, width=args.W,
                n_samples=args.n_samples, guidance_scale=7.5)
    variants = {
        "plain": (proj, FusionSettings(**base, trajectories=("general",), capture_saliency=False)),
        "naive": (naive, schedule_settings("naive", base)),
        "project": (proj, schedule_settings("project", base)),
        "project_batch": (proj, schedule_settings("project_batch", base)),
        "project_batch_nocapture": (proj, schedule_settings("project_batch_nocapture", base)),
    }
    for name in [x for x in args.samplers.split(",") if x]:
        variants[f"{name}_{args.sampler_steps}"] = (proj, FusionSettings(**{**base, "steps": args.sampler_steps},
                                                                         sampler=name))
    times = {k: [] for k in variants}
    calls = {}
    peak = {}
    for rep in range(args.warmup + args.repeat):
        for name, (pipe, s) in variants.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t1 = time.perf_counter()
            [r] = pipe(args.prompt, None, s, seeds=[args.seed])
            sync(device)
            dt = time.perf_counter() - t1
            calls[name] = r.stats.total_calls
            if device.type == "cuda":
                peak[name] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
            if rep >= args.warmup:
                times[name].append(dt)
            print(f"  {'warmup' if rep < args.warmup else 'run'} {name}: {dt:.3f} s, {calls[name]} UNet calls",
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = dict(
        device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        dtype=str(dtype).replace("torch.", ""), size=args.size, H=args.H, W=args.W, steps=args.steps,
        n_samples=args.n_samples, recipe=args.recipe, compile=args.compile, optimizations=proj.optimizations,
        build_s=round(build_s, 2), unet_calls=calls, peak_cuda_mb=peak,
        s_per_plain_image=round(med["plain"] / args.n_samples, 4),
        s_per_request={k: round(v, 4) for k, v in med.items() if k != "plain"},
        fused_over_plain={k: round(v / med["plain"], 3) for k, v in med.items() if k != "plain"},
        project_over_naive={k: round(med[k] / med["naive"], 4) for k in ("project", "project_batch")},
        saliency_capture_cost=round(med["project_batch"] / med["project_batch_nocapture"] - 1, 4),
        all_seconds={k: [round(x, 4) for x in v] for k, v in times.items()},
        torch=torch.__version__)
    return res


def table(res: dict) -> str:
    """One markdown table of a run: per variant s/request, ratio to naive, UNet calls, peak memory."""
    head = (f"{res['size']} {res['H']}x{res['W']} {res['dtype']} on {res['gpu'] or res['device']}, "
            f"{res['steps']} steps (samplers: see name), plain image {res['s_per_plain_image']} s, "
            f"saliency capture cost {100 * res['saliency_capture_cost']:+.1f}%")
    lines = [head, "", "| variant | s / request | vs naive | x plain | UNet calls | peak MB |", "|---|---|---|---|---|---|"]
    naive = res["s_per_request"]["naive"]
    for k, v in res["s_per_request"].items():
        lines.append(f"| {k} | {v} | {v / naive:.3f} | {res['fused_over_plain'][k]} | {res['unet_calls'][k]} | "
                     f"{res['peak_cuda_mb'].get(k, '-')} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("sd1", "tiny"), default="sd1")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--H", type=int, default=512)
    ap.add_argument("--W", type=int, default=512)
    ap.add_argument("--n_samples", type=int, default=1)
    ap.add_argument("--recipe", default="600,1,1:2:general")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt", default="a cartoon red circle on a green background")
    ap.add_argument("--seed", type=int, default=6854)
    ap.add_argument("--device", default=None)
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNets (CUDA)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--samplers", default="dpmpp_2m,dpmpp_2m_karras,unipc,euler",
                    help="fast samplers to time with the defaults (comma-separated; '' for none)")
    ap.add_argument("--sampler_steps", type=int, default=20)
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    bad = [x for x in args.samplers.split(",") if x and x not in SAMPLERS]
    if bad:
        ap.error(f"--samplers: unknown {bad}; choose from {list(SAMPLERS)}")
    res = run(args)
    text = json.dumps(res, indent=1)
    print(text)
    print(table(res))
    print(f"\nplain image {res['s_per_plain_image']} s; fused request (3 images): "
          + ", ".join(f"{k} {v} s (x{res['fused_over_plain'][k]} plain)" for k, v in res["s_per_request"].items())
          + "; project/naive " + ", ".join(f"{k} {v}" for k, v in res["project_over_naive"].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
