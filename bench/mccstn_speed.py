"""MccSTN benchmarks: stylisation speed and a CPU training smoke run with its loss curve.

    python bench/mccstn_speed.py stylize [--sizes 256,512] [--threads 1,2] [--repeats 3]
    python bench/mccstn_speed.py stylize --weights assets/mccstn --name mccstn_speed_shipped
    python bench/mccstn_speed.py train-smoke [--iters 60] [--stage2 50]

Weights: ``--weights DIR`` (a folder for ``MccSTN.from_pretrained``); by default random
full-width weights (He-normal convolutions, seeded) are written to a temporary folder in the
official four-file layout (speed does not depend on the values). Results go to bench/results/mccstn_speed.{json,md} and
bench/results/mccstn_train_smoke.{json,csv}; the smoke run's loss curve and last sample grid are
copied to docs/mccstn_train_smoke_loss.png and docs/mccstn_train_smoke_samples.png.
The machine's load average is recorded next to every timing: on a shared CPU it matters.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
RANDOM_WEIGHTS = "random full-width weights (He-normal convolutions, zero biases, seed 0)"


def random_weights(folder: Path, seed: int = 0) -> Path:
    """Write full-width MccSTN weights in the official four-file layout: every convolution and
    linear weight drawn from N(0, 2 / fan_in) (He init, so activations keep their scale through
    the ReLU stack), biases zero. Deterministic for a seed; values carry no meaning."""
    import torch
    from torch import nn

    from mccstn import MccSTN

    gen = torch.Generator().manual_seed(seed)
    model = MccSTN()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
    model.save_pretrained(folder, fmt="pth")
    return folder


def _weights(arg: str | None) -> tuple[Path, str]:
    if arg:
        return Path(arg), arg
    tmp = random_weights(Path(tempfile.mkdtemp(prefix="mccstn_bench_w_")))
    return tmp, RANDOM_WEIGHTS


def _machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def bench_stylize(args) -> dict:
    import torch

    from mccstn import MccSTN

    folder, desc = _weights(args.weights)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MccSTN.from_pretrained(folder, device=device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for size in [int(s) for s in args.sizes.split(",")]:
            c = torch.rand(1, 3, size, size, generator=g)
            s = torch.rand(1, 3, size, size, generator=g)
            model.stylize(c, s)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model.stylize(c.to(device), s.to(device))
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            rows.append({"size": size, "threads": threads, "device": device,
                         "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                         "repeats": args.repeats, "loadavg_1min": round(os.getloadavg()[0], 2)})
            print(rows[-1], flush=True)
    result = {"what": "seconds per MccSTN.stylize(content, style), alpha 1, content and style both "
                      "size x size, float32, after one warm-up run",
              "weights": desc, "machine": _machine(), "results": rows,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# MccSTN stylisation speed", "", result["what"] + ".", "",
             f"Machine: {result['machine']}; {result['when']}.", "",
             "| size | device | threads | median s | min s | load avg (1 min) |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['size']} | {r['device']} | {r['threads']} | {r['median_s']} | {r['min_s']} | "
              f"{r['loadavg_1min']} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    if not args.weights:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def bench_train_smoke(args) -> dict:
    import torch

    from mccstn.train import TrainConfig, train, write_toy_images

    torch.set_num_threads(args.threads)
    folder, desc = _weights(args.weights)
    work = Path(tempfile.mkdtemp(prefix="mccstn_smoke_"))
    write_toy_images(work / "content", 8, 160, "content", seed=0)
    write_toy_images(work / "style", 8, 160, "style", seed=1)
    vgg = folder / "vgg_normalised.pth"
    cfg = TrainConfig(content_dir=str(work / "content"), style_dir=str(work / "style"), vgg=str(vgg),
                      out=str(work / "run"), max_iter=args.iters, stage2_start=args.stage2,
                      batch_size=args.batch, load_size=144, crop_size=128, nce_crop=64, nce_queue=64,
                      proj_hidden=128, proj_hidden2=128, proj_dim=64, save_every=args.iters,
                      sample_every=max(1, args.iters // 4), num_workers=0, progress=True,
                      lr=args.lr)
    t0 = time.time()
    summary = train(cfg)
    run = Path(cfg.out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "losses.csv", RESULTS / "mccstn_train_smoke.csv")
    shutil.copy(run / "loss_curve.png", DOCS / "mccstn_train_smoke_loss.png")
    samples = sorted((run / "samples").glob("*.png"))
    if samples:
        shutil.copy(samples[-1], DOCS / "mccstn_train_smoke_samples.png")
    from mccstn.train import read_loss_csv

    cols = read_loss_csv(run / "losses.csv")
    first_last = {k: {"first": v[0][1], "last": v[-1][1], "n": len(v)}
                  for k, v in cols.items() if k.startswith("loss_")}
    result = {"what": "CPU training smoke run on generated images (128 px crops)",
              "config": {k: getattr(cfg, k) for k in ("max_iter", "stage2_start", "batch_size", "crop_size",
                                                       "nce_crop", "nce_queue", "proj_dim", "lr",
                                                       "nce_g_weight")},
              "encoder_init": desc, "threads": args.threads, "seconds_total": round(time.time() - t0, 1),
              "seconds_per_iter_median": statistics.median(v for _, v in cols["seconds"]),
              "losses_first_last": first_last, "machine": _machine(),
              "checkpoint_loads": None, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    from mccstn import MccSTN

    m = MccSTN.from_pretrained(summary["checkpoints"][-1], device="cpu")
    result["checkpoint_loads"] = m.source is not None
    (RESULTS / "mccstn_train_smoke.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    if not args.weights:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("stylize", help="seconds per stylisation")
    a.add_argument("--sizes", default="256,512")
    a.add_argument("--threads", default="1,2")
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--weights", default=None)
    a.add_argument("--name", default="mccstn_speed",
                   help="results file stem in bench/results (e.g. mccstn_speed_shipped for assets/mccstn)")
    a.add_argument("--device", default=None)
    b = sub.add_parser("train-smoke", help="short CPU training run; loss curve to docs/")
    b.add_argument("--iters", type=int, default=60)
    b.add_argument("--stage2", type=int, default=50)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--lr", type=float, default=1e-4)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--weights", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "stylize":
        bench_stylize(args)
    else:
        bench_train_smoke(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
