"""Fusion options beyond SNB (fusion/blend_options.py), one row each, per prompt family (a benchmark).

Every row runs the fused arm only (the general image too where ``recolor`` needs it) on the prompt
file's fixed seeds; the faithful SNB row (the prompt file's defaults, no options) stays in the table.
Per family: the joint rate (prompt right and cartoon) over all draws, and its spread over seeds (min -
max of the per-seed joint rates). ``--dev`` runs the dev seeds instead (tuning only).

    python bench/fusion_quality_options.py                      # all rows, fixed seeds, 1 sample per seed
    python bench/fusion_quality_options.py --rows faithful,recommended --samples 4
    python bench/fusion_quality_options.py --dev --limit-per-family 4     # tuning on dev seeds
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import fusion_quality as fq  # noqa: E402

#: the rows: label -> settings over the prompt file's defaults ("recommended": the per-family settings)
ROWS = {
    "faithful": {},
    "own_uncond": {"own_uncond": True},
    "late_mix_0.2": {"blend": {"late_general_weight": 0.2}},
    "lowfreq_500_300": {"blend": {"lowfreq_window": [500, 300], "lowfreq_sigma": 1.0}},
    "general_window_500_400": {"blend": {"general_window": [500, 400]}},
    "recolor": {"blend": {"recolor": True}},
    "general_window+recolor": {"blend": {"general_window": [500, 400], "recolor": True}},
    "shape_lock+recolor": {"blend": {"shape_lock": True, "recolor": True}},
    "shape_lock_prompt+recolor": {"blend": {"shape_lock": True, "shape_lock_prompt": True, "recolor": True}},
    "recommended": None,  # the prompt file's per-family settings (composed from the rows above by --merge)
}


def row_spec(spec: dict, row: str) -> dict:
    """The prompt file with every family's settings replaced by the row's over the defaults without their
    options beyond the paper (``faithful``: the reference SNB with the file's schedule; ``recommended``: as stored)."""
    over = ROWS[row]
    if over is None:
        return spec
    defaults = {k: v for k, v in spec["defaults"].items() if k not in ("blend", "own_uncond")}
    return dict(spec, defaults=defaults, families={f: {"settings": dict(over)} for f in spec["families"]})


def effective(spec: dict, family: str) -> dict:
    """A family's settings as run (defaults + family settings), for matching rows."""
    return {**spec["defaults"], **spec["families"][family]["settings"]}


def compose_recommended(spec: dict, results: dict) -> dict | None:
    """The recommended row from the rows already run: per family, the row whose settings are the stored
    ones (None when a family's stored settings are no row's)."""
    fams = {}
    for f in spec["families"]:
        want = effective(spec, f)
        hit = [r for r in results if ROWS.get(r) is not None and effective(row_spec(spec, r), f) == want]
        if not hit:
            return None
        fams[f] = dict(results[hit[0]]["families"][f], from_row=hit[0])
    return fams


def merge(out: Path, tags: list[str], spec: dict) -> dict:
    """Combine the runs ``fusion_quality_options_<tag>.json`` into ``fusion_quality_options.{json,md,csv}``."""
    results, records, meta = {}, [], {}
    for tag in tags:
        d = json.loads((out / f"fusion_quality_{tag}.json").read_text())
        for r in d["rows"].values():
            r.setdefault("samples_per_seed", d.get("samples_per_seed", 1))
        results.update(d["rows"])
        meta = {k: v for k, v in d.items() if k != "rows"}
        with open(out / f"fusion_quality_{tag}.csv") as f:
            records += list(csv.DictReader(f))
    faithful_csv = out / "fusion_quality.csv"  # the faithful SNB's full benchmark (3 arms, 4 samples per seed)
    if "faithful" not in results and faithful_csv.is_file():
        with open(faithful_csv) as f:
            rows = [r for r in csv.DictReader(f) if r["arm"] == "fused"]
        for r in rows:
            for k in ("joint", "prompt_ok", "cartoon", "seed", "sample"):
                r[k] = int(r[k])
        for label, keep, k in (("faithful (bench/results/fusion_quality.csv, 4 samples/seed)", rows, 4),
                               ("faithful (same csv, sample 0 of each seed)", [r for r in rows if r["sample"] == 0], 1)):
            results[label] = dict(families=family_rows(keep), all_joint=float(np.mean([r["joint"] for r in keep])),
                                  settings={}, source=str(faithful_csv.name), samples_per_seed=k)
    rec = compose_recommended(spec, results)
    if rec is not None and "recommended" not in results:
        n = sum(v["n"] for v in rec.values())
        draws = {results[v["from_row"]].get("samples_per_seed", 1) for v in rec.values()}
        results["recommended"] = dict(families=rec, all_joint=sum(v["joint"] * v["n"] for v in rec.values()) / n,
                                      composed=True, settings={f: spec["families"][f]["settings"] for f in rec},
                                      samples_per_seed=min(draws))
    fams = sorted(spec["families"])
    (out / "fusion_quality_options.json").write_text(json.dumps(dict(meta, rows=results, merged_from=tags), indent=2))
    (out / "fusion_quality_options_table.md").write_text(markdown(results, fams) + "\n")
    with open(out / "fusion_quality_options.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    print(markdown(results, fams))
    return results


def family_rows(records: list[dict]) -> dict:
    """{family: {joint, prompt_ok, cartoon, n, seed_min, seed_max}} from per-image records."""
    out = {}
    for f in sorted({r["family"] for r in records}):
        rs = [r for r in records if r["family"] == f]
        per_seed = [np.mean([r["joint"] for r in rs if r["seed"] == s]) for s in sorted({r["seed"] for r in rs})]
        out[f] = dict(joint=float(np.mean([r["joint"] for r in rs])),
                      prompt_ok=float(np.mean([r["prompt_ok"] for r in rs])),
                      cartoon=float(np.mean([r["cartoon"] for r in rs])), n=len(rs),
                      seed_min=float(min(per_seed)), seed_max=float(max(per_seed)))
    return out


def markdown(results: dict, fams: list[str]) -> str:
    head = "| option | draws/seed | " + " | ".join(fams) + " | all |"
    lines = [head, "|" + "---|" * (len(fams) + 3)]
    for row, res in results.items():
        cells = [f"{res['families'][f]['joint']:.2f} [{res['families'][f]['seed_min']:.2f}-"
                 f"{res['families'][f]['seed_max']:.2f}]" for f in fams]
        lines.append(f"| {row} | {res.get('samples_per_seed', 1)} | " + " | ".join(cells)
                     + f" | {res['all_joint']:.3f} |")
    return "\n".join(lines)


def _write(out: Path, stem: str, results: dict, records: list[dict], meta: dict) -> None:
    (out / f"{stem}.json").write_text(json.dumps(dict(meta, rows=results), indent=2))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--samples", type=int, default=1, help="samples per seed (first draws of each seed's batch)")
    p.add_argument("--dev", action="store_true", help="the dev seeds (tuning), results not written")
    p.add_argument("--limit-per-family", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="options")
    p.add_argument("--out", default=str(fq.RESULTS))
    p.add_argument("--merge", default="", help="comma list of tags already run: write the combined table")
    a = p.parse_args(argv)
    if a.merge:
        return merge(Path(a.out), [t for t in a.merge.split(",") if t], fq.load_prompt_set())
    import torch

    from fusion.pipeline import FusionPipeline
    from toyworld.judge import load_judge
    from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH

    torch.set_num_threads(a.threads)
    spec = fq.load_prompt_set()
    judge = load_judge(JUDGE_PATH)
    pipe = FusionPipeline.from_paths(str(DEFAULT_GENERAL), str(DEFAULT_CARTOON), device="cpu", dtype=torch.float32)
    seeds = spec["dev_seeds"] if a.dev else spec["seeds"]
    fams = sorted(spec["families"])
    items = spec["prompts"]
    if a.limit_per_family:
        items = [x for f in fams for x in [it for it in items if it["family"] == f][:a.limit_per_family]]
    results, all_records = {}, []
    for row in [r for r in a.rows.split(",") if r]:
        t0 = time.time()
        recs, _ = fq.run(pipe, judge, row_spec(spec, row), items, seeds, a.samples, capture=False,
                         overrides={"trajectories": ("fused",)}, log=None)
        for r in recs:
            r["option"] = row
        all_records += recs
        results[row] = dict(families=family_rows(recs), all_joint=float(np.mean([r["joint"] for r in recs])),
                            seconds=time.time() - t0, samples_per_seed=a.samples, settings=ROWS[row] if ROWS[row] is not None else {
                                f: v["settings"] for f, v in spec["families"].items()})
        print(f"{row:26s} " + " | ".join(f"{f} {results[row]['families'][f]['joint']:.2f}" for f in fams)
              + f" | all {results[row]['all_joint']:.3f}  ({results[row]['seconds']:.0f} s)", flush=True)
        if not a.dev:  # written after every row: a long run keeps what it has done
            _write(Path(a.out), f"fusion_quality_{a.tag}", results, all_records, dict(
                seeds=seeds, samples_per_seed=a.samples, n_prompts=len(items), threads=a.threads,
                defaults=spec["defaults"], date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                cell="joint rate of the fused arm over all draws [min - max of the per-seed joint rates]"))
    print(markdown(results, fams))
    return results


if __name__ == "__main__":
    main()
