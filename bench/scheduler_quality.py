"""Fused joint rate of the fast samplers at few steps against DDIM 50 and 100 (a benchmark).

The toy world's fusion-quality loop (bench/fusion_quality.py: same prompts, settings per family,
judge) on the fused arm only, once per configuration: DDIM at 50 and 100 steps, and each of
DPM-Solver++ 2M, DPM-Solver++ 2M Karras, UniPC and Euler at 10, 15 and 20 steps. Every
configuration starts from the same x_T per seed, so the rates are paired.

Time per request (fused image only, one sample) is measured separately, all configurations
interleaved per prompt in one process (so machine load hits them alike), median over prompts.

A configuration qualifies as the "fast" preset when its joint rate is within ``--tolerance``
(0.02) of DDIM 100 and its time at most ``--time_share`` (30%) of DDIM 100's.

    python bench/scheduler_quality.py                         # writes bench/results/scheduler_quality.*
    python bench/scheduler_quality.py --limit 3 --seeds 1000 --no_write   # plumbing check
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import fusion_quality as fq  # noqa: E402  (bench/ is on sys.path when run as a script)
import torch  # noqa: E402

from fusion.pipeline import FusionPipeline  # noqa: E402
from fusion.schedulers import SAMPLERS  # noqa: E402

BASELINES = (("ddim", 50), ("ddim", 100))
FAST_STEPS = (10, 15, 20)


def configurations(samplers=None, steps=FAST_STEPS) -> list[tuple[str, int]]:
    """DDIM 100 (the reference) first, then the fast ones by step count, DDIM 50 last."""
    fast = [s for s in (samplers or SAMPLERS) if s != "ddim"]
    return [BASELINES[1]] + [(s, k) for k in steps for s in fast] + [BASELINES[0]]


def label(cfg) -> str:
    return f"{cfg[0]} {cfg[1]}"


def overrides(cfg) -> dict:
    return {"sampler": cfg[0], "steps": cfg[1], "trajectories": ("fused",)}


def judge_all(pipe, judge, spec, items, seeds, n_samples, configs, log=print, partial: Path | None = None) -> dict:
    """Joint rate per configuration; with ``partial``, results so far are kept in that JSON file
    after every configuration and reused by a rerun with the same prompts and seeds."""
    key = dict(prompts=[it["prompt"] for it in items], seeds=seeds, samples=n_samples)
    out = {}
    if partial is not None and partial.is_file():
        old = json.loads(partial.read_text())
        if old.get("key") == key:
            out = old["quality"]
    for cfg in configs:
        if label(cfg) in out:
            continue
        t0 = time.time()
        recs, _ = fq.run(pipe, judge, spec, items, seeds, n_samples, capture=False, overrides=overrides(cfg),
                         log=None)
        fused = [r for r in recs if r["arm"] == "fused"]
        out[label(cfg)] = {k: float(np.mean([r[k] for r in fused])) for k in ("prompt_ok", "cartoon", "joint")}
        out[label(cfg)]["n"] = len(fused)
        out[label(cfg)]["joint_by_draw"] = [r["joint"] for r in fused]
        if log:
            log(f"  {label(cfg):22s} joint {out[label(cfg)]['joint']:.3f}  ({time.time() - t0:.0f} s)")
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(dict(key=key, quality=out)))
    return {label(c): out[label(c)] for c in configs}


def time_all(pipe, spec, items, configs, seed=0) -> dict:
    """Median seconds of one fused request (one sample) per configuration, interleaved."""
    from dataclasses import replace

    times = {label(c): [] for c in configs}
    for item in items:
        for cfg in configs:
            s = replace(fq.settings_for(spec, item["family"], n_samples=1, **overrides(cfg)), capture_saliency=False)
            t0 = time.perf_counter()
            pipe(item["prompt"], item["prompt1"], settings=s, seeds=[seed])
            times[label(cfg)].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def paired_gap(a: list[int], b: list[int]) -> tuple[float, float]:
    """Mean of a - b over paired draws and its standard error."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def table(quality, secs, tolerance, time_share) -> tuple[str, list[str]]:
    ref_q, ref_t = quality["ddim 100"], secs["ddim 100"]
    lines = ["| sampler, steps | joint rate | vs DDIM 100 (paired, +- s.e.) | prompt acc | cartoon | "
             "s / fused image | time vs DDIM 100 | preset? |", "|---|---|---|---|---|---|---|---|"]
    qualifying = []
    for name, q in quality.items():
        gap, se = paired_gap(q["joint_by_draw"], ref_q["joint_by_draw"])
        share = secs[name] / ref_t
        ok = name != "ddim 100" and gap >= -tolerance and share <= time_share
        if ok:
            qualifying.append(name)
        lines.append(f"| {name} | {q['joint']:.3f} | {gap:+.3f} +- {se:.3f} | {q['prompt_ok']:.3f} | "
                     f"{q['cartoon']:.3f} | {secs[name]:.3f} | {share:.2f} | {'yes' if ok else ''} |")
    return "\n".join(lines), qualifying


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model0", default=str(fq.DEFAULT_GENERAL))
    p.add_argument("--model1", default=str(fq.DEFAULT_CARTOON))
    p.add_argument("--judge", default=str(fq.JUDGE_PATH))
    p.add_argument("--prompts", default=str(fq.PROMPTS))
    p.add_argument("--out", default=str(fq.RESULTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", default="1000,1001", help="comma-separated seeds (the prompt file's first two)")
    p.add_argument("--samples", type=int, default=4, help="samples per seed (one batch)")
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts (plumbing checks)")
    p.add_argument("--every", type=int, default=1, help="every k-th prompt of the file (a smaller, spread set)")
    p.add_argument("--samplers", default="", help="comma-separated subset of the fast samplers")
    p.add_argument("--steps", default="10,15,20")
    p.add_argument("--timing_prompts", type=int, default=6)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--time_share", type=float, default=0.30)
    p.add_argument("--no_write", action="store_true")
    p.add_argument("--only", default="", help="judge only these configurations ('ddim 100,euler 10'), "
                   "keep them in the partial file and stop (parallel workers; a last run without it merges)")
    p.add_argument("--partial", default="", help="partial-results file (default: OUT/scheduler_quality_partial.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    spec = fq.load_prompt_set(a.prompts)
    judge = fq.load_judge(a.judge)
    pipe = FusionPipeline.from_paths(a.model0, a.model1, device="cpu", dtype=torch.float32)
    items = spec["prompts"][::a.every]
    items = items[:a.limit] if a.limit else items
    seeds = [int(x) for x in a.seeds.split(",")]
    configs = configurations([s for s in a.samplers.split(",") if s] or None,
                             tuple(int(k) for k in a.steps.split(",")))
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    if only:
        unknown = [x for x in only if x not in map(label, configs)]
        if unknown:
            p.error(f"--only: unknown configurations {unknown}; known: {[label(c) for c in configs]}")
        configs = [c for c in configs if label(c) in only]
    partial = Path(a.partial) if a.partial else Path(a.out) / "scheduler_quality_partial.json"
    t0 = time.time()
    print(f"{len(items)} prompts x {len(seeds)} seeds x {a.samples} samples, {len(configs)} configurations, "
          f"torch threads {a.threads}", flush=True)
    quality = judge_all(pipe, judge, spec, items, seeds, a.samples, configs, log=lambda m: print(m, flush=True),
                        partial=None if a.no_write else partial)
    if only:
        return quality, None, None
    step = max(1, len(items) // max(1, a.timing_prompts))
    secs = time_all(pipe, spec, items[::step][:a.timing_prompts], configs)
    text, qualifying = table(quality, secs, a.tolerance, a.time_share)
    fast = min(qualifying, key=lambda k: secs[k]) if qualifying else None
    print(text)
    print(f"fast preset: {fast or 'none qualifies'} (joint within {a.tolerance} of DDIM 100 at <= "
          f"{a.time_share:.0%} of its time); {time.time() - t0:.0f} s in all")
    if not a.no_write:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(n_prompts=len(items), every=a.every, seeds=seeds, samples_per_seed=a.samples, threads=a.threads,
                    date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), tolerance=a.tolerance,
                    time_share=a.time_share, fast_preset=fast, qualifying=qualifying,
                    settings={f: {**spec["defaults"], **v["settings"]} for f, v in spec["families"].items()})
        (out / "scheduler_quality.json").write_text(json.dumps(dict(meta, quality=quality, seconds=secs), indent=1))
        (out / "scheduler_quality.md").write_text(
            f"# Fused joint rate by sampler (toy world)\n\n{text}\n\nfast preset: {fast or 'none qualifies'}\n\n"
            f"{len(items)} prompts (every {a.every}. of the prompt file) x seeds {seeds} x {a.samples} samples per configuration (fused arm only, "
            f"settings per family from the prompt file), torch threads {a.threads}, measured {meta['date']} on the "
            f"shared 2-core CPU while other jobs ran (timings: medians over {a.timing_prompts} prompts, all "
            f"configurations interleaved in one process).\n")
        print(f"wrote {out}/scheduler_quality.json, .md")
    return quality, secs, fast


if __name__ == "__main__":
    main()
