"""The LoRA row of the fusion-quality benchmark: general + its cartoon LoRA vs general + the full expert.

    python bench/fusion_quality.py --quick --threads 1 --model1 assets/models/toy-general \
        --lora1 assets/models/toy-cartoon-lora --tag lora_quick --arms expert,fused --no-timing
    python bench/fusion_quality_lora.py        # writes bench/results/fusion_quality_lora.md

Reads the LoRA run's per-image records and the full-expert run's (``fusion_quality.csv``, same
prompt file, settings and judge) and compares them on the draws both runs made: the same prompts,
seeds and samples, hence the same initial noise. The general arm is the unchanged toy-general (in
the LoRA run its passes run with the adapter disabled; tests/test_fusion_lora.py shows that equals
the base model exactly), so it is taken from the full-expert run.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("prompt_ok", "cartoon", "joint")


def _read(path: Path) -> dict:
    rows = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows[(r["prompt"], r["prompt1"], int(r["seed"]), int(r["sample"]), r["arm"])] = r
    return rows


def compare(full_csv: Path, lora_csv: Path) -> dict:
    full, lora = _read(full_csv), _read(lora_csv)
    draws = sorted({k[:4] for k in lora} & {k[:4] for k in full})
    if not draws:
        raise SystemExit(f"no common draws between {full_csv} and {lora_csv}")
    arms = {"general (toy-general)": (full, "general"), "full expert (toy-cartoon)": (full, "expert"),
            "fused with the full expert": (full, "fused"),
            "LoRA expert (toy-general + toy-cartoon-lora)": (lora, "expert"), "fused with the LoRA expert": (lora, "fused")}
    out = {"draws": len(draws), "prompts": len({d[:2] for d in draws}), "arms": {}, "by_family": {}}
    fams = sorted({full[d + ("general",)]["family"] for d in draws})
    for name, (src, arm) in arms.items():
        recs = [src[d + (arm,)] for d in draws]
        out["arms"][name] = {k: float(np.mean([int(r[k]) for r in recs])) for k in KEYS}
        out["by_family"][name] = {f: float(np.mean([int(r["joint"]) for r in recs if r["family"] == f])) for f in fams}
    return out


def markdown(res: dict, full_csv: Path, lora_csv: Path) -> str:
    fams = list(next(iter(res["by_family"].values())))
    lines = [f"Fusion quality, toy world: {res['prompts']} prompts, {res['draws']} draws per arm (same prompts, "
             f"seeds and samples in both runs; judge: toyworld/judge.py)", "",
             "| arm | prompt accuracy | cartoon rate | joint rate | " + " | ".join(f"joint: {f}" for f in fams) + " |",
             "|---|---|---|---|" + "---|" * len(fams)]
    for name, s in res["arms"].items():
        lines.append(f"| {name} | {s['prompt_ok']:.3f} | {s['cartoon']:.3f} | {s['joint']:.3f} | "
                     + " | ".join(f"{res['by_family'][name][f]:.2f}" for f in fams) + " |")
    lines += ["", "Fusion settings: the prompt file's (500,1,3, mode 2, expert primary, 50 steps, guidance 7.5), tuned "
              "for the full expert and not retuned for the LoRA. The LoRA run was `--quick` (every 5th prompt, "
              "seed 1000, 4 samples) on a loaded machine, so this is a subset of the full benchmark.",
              "", f"Sources: {full_csv.name} (full expert run) and {lora_csv.name} (LoRA run); "
              f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by bench/fusion_quality_lora.py."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", default=str(RESULTS / "fusion_quality.csv"))
    p.add_argument("--lora", default=str(RESULTS / "fusion_quality_lora_quick.csv"))
    p.add_argument("--out", default=str(RESULTS / "fusion_quality_lora.md"))
    a = p.parse_args(argv)
    full, lora = Path(a.full), Path(a.lora)
    res = compare(full, lora)
    text = markdown(res, full, lora)
    print(text)
    Path(a.out).write_text(text)
    Path(a.out).with_suffix(".json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
