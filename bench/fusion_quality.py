"""Fusion-quality benchmark on the toy world (a benchmark, not a test).

MagicFusion's claim in miniature: fusing the general model (knows every colour and shape, draws
photos) with the cartoon expert (draws cartoons, but has blind spots: colours and a shape it never
saw) gives images that are *both* what the prompt asks for *and* cartoons more often than either
model alone.

For every prompt of a fixed set (assets/toyworld/fusion_prompts.json, mostly aimed at the expert's
blind spots) and every seed, one fusion request makes three images from the same x_T: general alone,
expert alone, fused.  The judge (toyworld.judge, trained on ground-truth renders only) reads each
image; per arm we report

* prompt accuracy - every attribute the prompt names (colour, shape, size) is right,
* cartoon rate    - the judge calls the style cartoon,
* joint rate      - both,
* seconds per image (arm run on its own), and seconds per whole request (all three images).

Fusion settings are fixed per prompt family (in the prompt file); ``--tune`` runs a small grid on
separate development seeds and prints it, which is how those settings were chosen.

    python bench/fusion_quality.py                 # full run, writes bench/results/fusion_quality.*
    python bench/fusion_quality.py --quick         # 8 prompts x 1 seed, no files written
    python bench/fusion_quality.py --tune          # the settings grid on dev seeds
    python bench/fusion_quality.py --model1 assets/models/toy-general \
        --lora1 assets/models/toy-cartoon-lora --tag lora   # the expert as a LoRA on the general model
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import cv2  # noqa: E402
import torch  # noqa: E402

from fusion.pipeline import FusionPipeline, FusionSettings, to_uint8  # noqa: E402
from toyworld.grammar import parse  # noqa: E402
from toyworld.judge import load_judge, predict  # noqa: E402
from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH  # noqa: E402

PROMPTS = REPO / "assets" / "toyworld" / "fusion_prompts.json"
RESULTS = REPO / "bench" / "results"
ARMS = ("general", "expert", "fused")


def load_prompt_set(path=PROMPTS):
    spec = json.loads(Path(path).read_text())
    return spec


def settings_for(spec, family, **over):
    fam = dict(spec["defaults"])
    fam.update(spec["families"][family]["settings"])
    fam.update(over)
    return FusionSettings(fusion_selection=fam["fusion_selection"], mode=int(fam["mode"]),
                          primary=fam["primary"], steps=int(fam["steps"]), sampler=str(fam.get("sampler", "ddim")),
                          guidance_scale=float(fam["guidance_scale"]), n_samples=int(fam.get("n_samples", 1)),
                          capture_saliency=bool(fam.get("capture_saliency", False)),
                          trajectories=tuple(fam.get("trajectories", ARMS)),
                          own_uncond=bool(fam.get("own_uncond", False)), blend=fam.get("blend"))


def judge_images(judge, images_by_arm, item):
    """Per arm, per sample: (prompt_ok, cartoon, judged attributes)."""
    want = parse(item["prompt"])
    out = {}
    for arm, img in images_by_arm.items():
        pred = predict(judge, img)
        rows = []
        for i in range(len(img)):
            attrs = {k: pred[k][i] for k in pred}
            ok = all(attrs[k] == v for k, v in want.items() if v is not None and k != "style")
            rows.append((bool(ok), attrs["style"] == "cartoon", attrs))
        out[arm] = rows
    return out


def heat(m: np.ndarray, size: int) -> np.ndarray:
    """A [0,1] map to a jet-coloured RGB uint8 image."""
    u8 = np.clip(m * 255, 0, 255).astype(np.uint8)
    u8 = cv2.resize(u8, (size, size), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)[:, :, ::-1]


def contact_sheet(rows, path, cell=96):
    """rows: list of (label, [general, expert, fused] uint8 64x64x3, mask map (h,w) or None)."""
    label_w = 300
    head = 22
    H = head + cell * len(rows)
    W = label_w + 4 * cell
    sheet = np.full((H, W, 3), 255, np.uint8)
    for j, name in enumerate(("general", "expert", "fused", "mask: secondary")):
        cv2.putText(sheet, name, (label_w + j * cell + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for i, (label, imgs, mask) in enumerate(rows):
        y = head + i * cell
        for k, line in enumerate(label.split("\n")):
            cv2.putText(sheet, line, (4, y + 18 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                        cv2.LINE_AA)
        for j, im in enumerate(imgs):
            sheet[y:y + cell, label_w + j * cell:label_w + (j + 1) * cell] = cv2.resize(
                im, (cell, cell), interpolation=cv2.INTER_NEAREST)
        if mask is not None:
            sheet[y:y + cell, label_w + 3 * cell:label_w + 4 * cell] = heat(mask, cell)
    from PIL import Image

    Image.fromarray(sheet).save(path)


def run(pipe, judge, spec, items, seeds, n_samples, capture=True, overrides=None, log=print):
    """All arms for every item x seed (n_samples images per seed, one batch); returns per-image
    records and contact-sheet rows (first sample of the first seed)."""
    records, sheet_rows = [], []
    arms = tuple((overrides or {}).get("trajectories", ARMS))
    for n, item in enumerate(items):
        fam = item["family"]
        for k, seed in enumerate(seeds):
            s = settings_for(spec, fam, **{**(overrides or {}), "n_samples": n_samples,
                                          "capture_saliency": capture and k == 0})
            res = pipe(item["prompt"], item["prompt1"], settings=s, seeds=[seed])[0]
            imgs = {a: to_uint8(res.images[a]) for a in arms}
            verdict = judge_images(judge, imgs, item)
            for a in arms:
                for j, (ok, cart, attrs) in enumerate(verdict[a]):
                    records.append(dict(prompt=item["prompt"], prompt1=item["prompt1"], family=fam, seed=seed,
                                        sample=j, arm=a, prompt_ok=int(ok), cartoon=int(cart),
                                        joint=int(ok and cart),
                                        judged=f'{attrs["size"]} {attrs["color"]} {attrs["shape"]} ({attrs["style"]})',
                                        request_seconds=round(res.seconds, 4)))
            if k == 0 and capture:
                mask = None
                if res.saliency:
                    mask = torch.stack([st.mask[0, 0] for st in res.saliency]).mean(0).numpy()
                label = f'{item["prompt"]}\n[{fam}] seed {seed}, sample 0\n' + " | ".join(
                    f'{a[0]}:{"P" if verdict[a][0][0] else "-"}{"C" if verdict[a][0][1] else "-"}' for a in arms)
                sheet_rows.append((label, [imgs[a][0] for a in arms], mask))
        if log and (n + 1) % 5 == 0:
            print(f"  {n + 1}/{len(items)} prompts", flush=True)
    return records, sheet_rows


def summarize(records):
    out = {}
    for a in ARMS:
        r = [x for x in records if x["arm"] == a]
        out[a] = {k: float(np.mean([x[k] for x in r])) for k in ("prompt_ok", "cartoon", "joint")}
        out[a]["n"] = len(r)
    return out


def by_family(records):
    fams = sorted({x["family"] for x in records})
    return {f: summarize([x for x in records if x["family"] == f]) for f in fams}


def arm_seconds(pipe, spec, items, seed=0):
    """Seconds per image for each arm run on its own, and for a whole request (all three)."""
    out = {}
    for arm in ARMS + ("request",):
        ts = []
        for item in items:
            s = settings_for(spec, item["family"], n_samples=1)
            if arm != "request":
                from dataclasses import replace

                s = replace(s, trajectories=(arm,))
            t0 = time.perf_counter()
            pipe(item["prompt"], item["prompt1"], settings=s, seeds=[seed])
            ts.append(time.perf_counter() - t0)
        out[arm] = float(np.median(ts))
    return out


def table(summary, secs, fams=None):
    lines = ["| arm | prompt accuracy | cartoon rate | joint rate | s / image |", "|---|---|---|---|---|"]
    for a in ARMS:
        s = summary[a]
        lines.append(f"| {a} | {s['prompt_ok']:.3f} | {s['cartoon']:.3f} | {s['joint']:.3f} | "
                     f"{secs.get(a, float('nan')):.3f} |")
    lines.append(f"\nWhole request (general + expert + fused, one seed): {secs.get('request', float('nan')):.3f} s")
    if fams:
        lines.append("\nJoint rate by prompt family (general / expert / fused):")
        for f, s in fams.items():
            lines.append(f"  {f:14s} n={s['general']['n']:3d}  " + " / ".join(
                f"{s[a]['joint']:.2f}" for a in ARMS) + "   prompt acc " + " / ".join(
                f"{s[a]['prompt_ok']:.2f}" for a in ARMS))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model0", default=str(DEFAULT_GENERAL))
    p.add_argument("--model1", default=str(DEFAULT_CARTOON))
    p.add_argument("--judge", default=str(JUDGE_PATH))
    p.add_argument("--prompts", default=str(PROMPTS))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tune", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", default="", help='with --tune: "primary:mode:v1,kg,ke;..."')
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts (plumbing checks)")
    p.add_argument("--seeds", default="", help="comma-separated seeds instead of the prompt file's")
    p.add_argument("--lora1", default=None, help="LoRA applied to model1 (e.g. the toy cartoon LoRA on toy-general)")
    p.add_argument("--lora1_scale", type=float, default=1.0)
    p.add_argument("--tag", default="", help="results go to fusion_quality_<tag>.* (default: fusion_quality.*); "
                                             "with --quick too")
    p.add_argument("--arms", default=",".join(ARMS), help="which of general,expert,fused to run")
    p.add_argument("--no-timing", action="store_true", help="skip the seconds-per-image runs")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    spec = load_prompt_set(a.prompts)
    judge = load_judge(a.judge)
    from fusion.lora import LoraSettings
    pipe = FusionPipeline.from_paths(a.model0, a.model1, device="cpu", dtype=torch.float32,
                                     lora=LoraSettings(lora1=a.lora1, lora1_scale=a.lora1_scale))
    items = spec["prompts"]
    if a.tune:
        return tune(pipe, judge, spec, a.grid)
    seeds = spec["seeds"]
    n_samples = int(spec.get("samples_per_seed", 1))
    if a.quick:
        items, seeds = items[::5], seeds[:1]
    if a.limit:
        items = items[:a.limit]
    if a.seeds:
        seeds = [int(x) for x in a.seeds.split(",")]
    t0 = time.time()
    arms = tuple(x for x in a.arms.split(",") if x)
    records, rows = run(pipe, judge, spec, items, seeds, n_samples,
                        overrides=None if arms == ARMS else {"trajectories": arms})
    summary = summarize(records)
    fams = by_family(records)
    secs = {} if a.no_timing else arm_seconds(pipe, spec, items[:: max(1, len(items) // 8)])
    settings = {f: {**spec["defaults"], **v["settings"]} for f, v in spec["families"].items()}
    print(f"\nFusion-quality benchmark: {len(items)} prompts x {len(seeds)} seed(s) x {n_samples} samples, "
          f"{time.time() - t0:.0f} s, torch threads {a.threads}")
    print("Fusion settings per family:")
    for f, s in settings.items():
        print(f"  {f:14s} fusion_selection {s['fusion_selection']!r} mode {s['mode']} primary {s['primary']} "
              f"steps {s['steps']} scale {s['guidance_scale']}")
    print(table(summary, secs, fams))
    if not a.quick or a.tag:
        out = Path(a.out)
        if a.limit or a.seeds or a.quick:
            print("(partial run: results not representative)")
        out.mkdir(parents=True, exist_ok=True)
        stem = f"fusion_quality_{a.tag}" if a.tag else "fusion_quality"
        with open(out / f"{stem}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
        (out / f"{stem}.json").write_text(json.dumps(dict(
            summary=summary, by_family=fams, seconds_per_image=secs, settings=settings,
            n_prompts=len(items), seeds=seeds, samples_per_seed=n_samples, models=[a.model0, a.model1], judge=a.judge,
            lora1=a.lora1, lora1_scale=a.lora1_scale if a.lora1 else None,
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), threads=a.threads,
            contact_sheet="rows: first sample of each prompt; columns general / expert / fused / mask, the mean over "
                          "the SNB steps of M (1 = the secondary model's noise was used; with the expert as primary "
                          "the secondary is the general model)"), indent=2))
        if arms == ARMS:  # the sheet's columns are the three arms
            contact_sheet(rows, out / f"{stem}.png")
        print(f"wrote {out}/{stem}.csv, .json" + (", .png" if arms == ARMS else ""))
    return summary


def tune(pipe, judge, spec, grid_text=""):
    """Grid of fusion settings on the development seeds (never the benchmark's), fused arm only.
    grid_text: "primary:mode:v1,kg,ke;..." (default: a coarse grid over roles, modes and v1)."""
    grid = [dict(primary=g.split(":")[0], mode=int(g.split(":")[1]), fusion_selection=g.split(":")[2],
                 **({"guidance_scale": float(g.split(":")[3])} if len(g.split(":")) > 3 else {}))
            for g in grid_text.split(";") if g] or [dict(primary=pr, mode=m, fusion_selection=f"{v1},1,1")
            for pr, m, v1s in (("expert", 2, (500, 700, 850)), ("general", 1, (600, 800, 900)),
                               ("general", 2, (600,)))
            for v1 in v1s]
    fams = sorted(spec["families"])
    items = [x for f in fams for x in [it for it in spec["prompts"] if it["family"] == f][:4]]
    print("fused arm: joint (prompt, cartoon) per family on dev seeds", spec["dev_seeds"], flush=True)
    for g in grid:
        g = dict(g, trajectories=("fused",))
        recs, _ = run(pipe, judge, spec, items, spec["dev_seeds"], 2, capture=False, overrides=g, log=None)
        cells = []
        for f in fams:
            r = [x for x in recs if x["family"] == f]
            cells.append(f"{f}: {np.mean([x['joint'] for x in r]):.2f} "
                         f"({np.mean([x['prompt_ok'] for x in r]):.2f},{np.mean([x['cartoon'] for x in r]):.2f})")
        print(f"{g['primary']:8s} mode {g['mode']} {g['fusion_selection']:9s} scale {g.get('guidance_scale', '-')} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
