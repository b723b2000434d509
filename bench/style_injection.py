"""Style-injection benchmark on the toy world (a benchmark, not a test).

The training-free engine (styleid.injection, StyleID attention injection) stylises photo-world
scenes with cartoon-world style images on the toy diffusion models. Each pair is a photo scene
(content) and a cartoon scene of a *different* colour and shape (style), so the judge can tell
what came from where. Per arm we report

* style shift  - the judge's cartoon rate on the outputs (content images: the baseline; the
  style images: the ceiling),
* content kept - the judge reads the content caption's shape and size (and, separately, its
  colour; colour is part of "style" too, so we also count outputs with the style's colour),
* silhouette   - IoU of the object's saturated-colour mask with the content's, and the shift of
  its centroid in pixels (the judge does not read position: this is how position is checked),
* seconds per image, the feature store's peak bytes and the process's peak resident memory.

Arms: ``recon`` (inversion + sampling, no injection, no AdaIN: the reconstruction ceiling),
``adain`` (AdaIN start latent only), ``inject`` (the engine's defaults), ``inject-cartoon`` (the
same on the toy cartoon expert), ``inject-recompute`` (defaults with store="recompute", timing
and memory only, on the first few pairs). Variants: ``BASE+field=value``, e.g.
``inject+adain=false`` or ``inject+gamma=1+temperature=1``.

    python bench/style_injection.py              # 24 pairs, writes bench/results/style_injection.*
    python bench/style_injection.py --quick      # 6 pairs, no files written
    python bench/style_injection.py --model DIR  # any diffusers folder (judge metrics need 64 px)
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

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from fusion.loading import load_model  # noqa: E402
from styleid.injection import InjectionSettings, style_transfer  # noqa: E402
from styleid.attention import default_layer_indices, estimate_store_bytes  # noqa: E402
from toyworld.pixels import iou_shift, silhouette  # noqa: E402,F401  (re-exported)
from toyworld.render import COLORS, SHAPES, SIZES, Scene, render  # noqa: E402
from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH  # noqa: E402

RESULTS = REPO / "bench" / "results"
SD1_UNET_CONFIG = REPO / "assets" / "configs" / "sd1" / "unet" / "config.json"


def pairs(n: int, seed: int = 2024) -> list[tuple[Scene, Scene]]:
    """n (photo content, cartoon style) scene pairs; the style differs in colour and shape."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = Scene(COLORS[i % len(COLORS)], SHAPES[(i + i // len(COLORS)) % len(SHAPES)],
                  SIZES[rng.integers(len(SIZES))], "photo", int(rng.integers(2**31 - 1)))
        s_color = COLORS[(COLORS.index(c.color) + 1 + rng.integers(len(COLORS) - 1)) % len(COLORS)]
        s_shape = SHAPES[(SHAPES.index(c.shape) + 1 + rng.integers(len(SHAPES) - 1)) % len(SHAPES)]
        s = Scene(s_color, s_shape, SIZES[rng.integers(len(SIZES))], "cartoon", int(rng.integers(2**31 - 1)))
        out.append((c, s))
    return out


ARMS = {
    "recon": dict(inject=False, adain=False),
    "adain": dict(inject=False, adain=True),
    "inject": dict(),
    "inject-cartoon": dict(),
    "inject-recompute": dict(store="recompute"),
}


def arm_settings(arm: str) -> dict:
    """An arm's settings: a name of ARMS, or a variant "BASE+field=value+...", e.g.
    "inject+gamma=0.9+temperature=1" (fields of InjectionSettings)."""
    base, *over = arm.split("+")
    if base not in ARMS:
        raise SystemExit(f"--arms: unknown {base!r}; accepted: {', '.join(ARMS)} (optionally +field=value)")
    out = dict(ARMS[base])
    for kv in over:
        k, _, v = kv.partition("=")
        out[k] = {"true": True, "false": False}.get(v.lower(), None)
        if out[k] is None:
            try:
                out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except ValueError:
                out[k] = v
    return out


def judge_all(judge, images: list[np.ndarray]) -> dict | None:
    if judge is None:
        return None
    from toyworld.judge import predict

    return predict(judge, np.stack(images))


def contact_sheet(rows, columns, path: Path, cell: int = 96):
    label_w, head = 210, 20
    sheet = Image.new("RGB", (label_w + cell * len(columns), head + cell * len(rows)), "white")
    d = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        d.text((label_w + j * cell + 3, 4), name, fill="black")
    for i, (label, imgs) in enumerate(rows):
        y = head + i * cell
        for k, line in enumerate(label.split("\n")):
            d.text((4, y + 6 + 13 * k), line, fill="black")
        for j, im in enumerate(imgs):
            if im is not None:
                sheet.paste(Image.fromarray(im).resize((cell, cell), Image.NEAREST), (label_w + j * cell, y))
    sheet.save(path)


def sd_store_estimate(steps: int = 50, size: int = 512) -> dict:
    """The feature store for SD 1.x at 512 px / 50 steps / the reference's layers, from the
    shipped config (no weights needed)."""
    from diffusers import UNet2DConditionModel

    cfg = json.loads(SD1_UNET_CONFIG.read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    layers = default_layer_indices(unet)
    cache = estimate_store_bytes(unet, size, size, steps, layers, 8, torch.float16)
    recompute = steps * 2 * 4 * (size // 8) ** 2 * 4  # inverted latents, float32
    return dict(size=size, steps=steps, layers=list(layers), cache_fp16_bytes=cache,
                recompute_bytes=recompute)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_GENERAL))
    p.add_argument("--cartoon-model", default=str(DEFAULT_CARTOON))
    p.add_argument("--judge", default=str(JUDGE_PATH))
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--arms", default="recon,adain,inject,inject+adain=false,inject-cartoon,"
                                      "inject-cartoon+adain=false,inject-recompute")
    p.add_argument("--recompute-pairs", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="style_injection")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def load_models_and_judge(a, arms: list[str]):
    """({"main": model, "cartoon": model?}, arms without inject-cartoon when that model is missing, judge)."""
    if not (Path(a.model) / "unet").is_dir():
        raise SystemExit(f"model not found at {a.model}: train the toy models first "
                         f"(python -m toyworld.train) or pass --model")
    models = {"main": load_model(a.model, device="cpu", dtype=torch.float32)}
    if any(x.startswith("inject-cartoon") for x in arms):
        if (Path(a.cartoon_model) / "unet").is_dir():
            models["cartoon"] = load_model(a.cartoon_model, device="cpu", dtype=torch.float32)
        else:
            print(f"no cartoon model at {a.cartoon_model}: skipping the inject-cartoon arm")
            arms = [x for x in arms if not x.startswith("inject-cartoon")]
    judge = None
    if Path(a.judge).is_file():
        from toyworld.judge import load_judge
        judge = load_judge(a.judge)
    else:
        print(f"no judge at {a.judge}: judge metrics skipped (silhouette, time and memory only)")
    return models, arms, judge


def run_arms(a, arms, models, prs, contents, styles, n, t_start):
    """Stylise every pair with every arm: (outputs per arm, one record per image)."""
    arm_cfg = {x: arm_settings(x) for x in arms}
    outputs = {arm: [] for arm in arms}
    records = []
    for arm in arms:
        model = models["cartoon" if arm.startswith("inject-cartoon") else "main"]
        k = a.recompute_pairs if arm.startswith("inject-recompute") else n
        for i in range(min(k, n)):
            s = InjectionSettings(**{"steps": a.steps, **arm_cfg[arm]})
            out, st = style_transfer(model, Image.fromarray(contents[i]), Image.fromarray(styles[i]), s)
            o = np.asarray(out)
            outputs[arm].append(o)
            ref = contents[i] if o.shape == contents[i].shape else np.asarray(
                Image.fromarray(contents[i]).resize(o.shape[1::-1], Image.BILINEAR))
            iou, shift = iou_shift(silhouette(o), silhouette(ref))
            records.append(dict(arm=arm, pair=i, content=f"{prs[i][0].size} {prs[i][0].color} {prs[i][0].shape}",
                                style=f"{prs[i][1].size} {prs[i][1].color} {prs[i][1].shape}",
                                iou=round(iou, 4), centroid_shift_px=round(shift, 3),
                                seconds=round(st.seconds, 4), store_peak_bytes=st.store_peak_bytes,
                                rss_peak_bytes=st.rss_peak_bytes, unet_rows=st.unet_rows))
        print(f"  {arm}: {min(k, n)} images, {time.time() - t_start:.0f} s so far", flush=True)
    return outputs, records


def judge_records(judge, arms, prs, contents, styles, outputs, records) -> dict:
    """The judge's verdicts per image set; adds the per-image verdict fields to ``records``."""
    verdicts = {"content": judge_all(judge, contents), "style": judge_all(judge, styles)}
    for arm in arms:
        verdicts[arm] = judge_all(judge, outputs[arm])
    if judge is not None:
        for r in records:
            v = verdicts[r["arm"]]
            i = r["pair"]
            c, s = prs[i]
            r.update(judged=f'{v["size"][i]} {v["color"][i]} {v["shape"][i]} ({v["style"][i]})',
                     cartoon=int(v["style"][i] == "cartoon"),
                     shape_size_kept=int(v["shape"][i] == c.shape and v["size"][i] == c.size),
                     shape_kept=int(v["shape"][i] == c.shape),
                     color_kept=int(v["color"][i] == c.color),
                     color_from_style=int(v["color"][i] == s.color),
                     shape_from_style=int(v["shape"][i] == s.shape))
    return verdicts


def summarise(judge, arms, prs, verdicts, records, n) -> dict:
    def mean(arm, key):
        r = [x[key] for x in records if x["arm"] == arm and key in x]
        r = [x for x in r if x == x]
        return float(np.mean(r)) if r else None

    summary = {}
    if judge is not None:
        for ref in ("content", "style"):
            v = verdicts[ref]
            scenes = [c if ref == "content" else s for c, s in prs]
            summary[ref] = dict(n=n, cartoon=float(np.mean([x == "cartoon" for x in v["style"]])),
                                shape_size_kept=float(np.mean([v["shape"][i] == scenes[i].shape and
                                                               v["size"][i] == scenes[i].size for i in range(n)])),
                                color_kept=float(np.mean([v["color"][i] == scenes[i].color for i in range(n)])))
    for arm in arms:
        summary[arm] = dict(n=sum(1 for x in records if x["arm"] == arm))
        for key in ("cartoon", "shape_size_kept", "shape_kept", "color_kept", "color_from_style",
                    "shape_from_style", "iou", "centroid_shift_px", "seconds"):
            summary[arm][key] = mean(arm, key)
        summary[arm]["store_peak_bytes"] = max(x["store_peak_bytes"] for x in records if x["arm"] == arm)
    return summary


def table(summary, arms, n) -> str:
    def f(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    lines = ["| arm | n | cartoon rate | shape+size kept | colour kept | colour from style | silhouette IoU | "
             "centroid shift px | s / image | feature store |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ref in ("content", "style"):
        if ref in summary:
            sref = summary[ref]
            lines.append(f"| {ref} images | {n} | {sref['cartoon']:.3f} | {sref['shape_size_kept']:.3f} | "
                         f"{sref['color_kept']:.3f} | - | - | - | - | - |")
    for arm in arms:
        sa = summary[arm]
        lines.append(f"| {arm} | {sa['n']} | {f(sa['cartoon'])} | {f(sa['shape_size_kept'])} | {f(sa['color_kept'])} | "
                     f"{f(sa['color_from_style'])} | {f(sa['iou'])} | {f(sa['centroid_shift_px'], '{:.2f}')} | "
                     f"{f(sa['seconds'], '{:.2f}')} | {sa['store_peak_bytes'] / 2**20:.2f} MiB |")
    return "\n".join(lines)


def write_results(a, r: dict) -> None:
    """The CSV of records, the JSON summary, the Markdown table and the contact sheet."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records, arms, n, prs, judge, verdicts = r["records"], r["arms"], r["n"], r["prs"], r["judge"], r["verdicts"]
    with open(out / f"{a.name}.csv", "w", newline="") as fh:
        keys = list(dict.fromkeys(k for rec in records for k in rec))
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(records)
    (out / f"{a.name}.json").write_text(json.dumps(dict(
        summary=r["summary"], n_pairs=n, steps=a.steps, arms=arms, layers=r["layers"],
        models={"main": a.model, "cartoon": a.cartoon_model if "cartoon" in r["models"] else None},
        judge=a.judge if judge is not None else None, rss_peak_bytes=r["rss"], sd_estimate=r["sd"],
        threads=a.threads, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), indent=2))
    (out / f"{a.name}.md").write_text(r["head"] + "\n\n" + r["text"] + "\n")
    cols = ["content", "style"] + [x for x in arms if not x.startswith("inject-recompute")]
    rows = []
    for i in range(min(n, 12)):
        c, s = prs[i]
        label = f"{c.size} {c.color} {c.shape}\n+ cartoon {s.color} {s.shape}"
        if judge is not None and "inject" in verdicts and verdicts["inject"] is not None:
            v = verdicts["inject"]
            label += f'\ninject: {v["size"][i]} {v["color"][i]}\n  {v["shape"][i]} ({v["style"][i]})'
        rows.append((label, [r["contents"][i], r["styles"][i]] + [r["outputs"][x][i] for x in cols[2:]]))
    contact_sheet(rows, cols, out / f"{a.name}.png")
    print(f"wrote {out}/{a.name}.csv, .json, .md, .png")


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    n = 6 if a.quick else a.n
    models, arms, judge = load_models_and_judge(a, [x for x in a.arms.split(",") if x])
    prs = pairs(n)
    contents = [render(c) for c, _ in prs]
    styles = [render(s) for _, s in prs]
    t_start = time.time()
    outputs, records = run_arms(a, arms, models, prs, contents, styles, n, t_start)
    verdicts = judge_records(judge, arms, prs, contents, styles, outputs, records)
    summary = summarise(judge, arms, prs, verdicts, records, n)
    rss = max(x["rss_peak_bytes"] for x in records)
    sd = sd_store_estimate()
    toy_layers = list(default_layer_indices(models["main"].unet))
    text = table(summary, arms, n)
    head = (f"Style-injection benchmark: {n} photo->cartoon pairs, {a.steps} DDIM steps, model {a.model}, "
            f"layers {toy_layers}, CPU float32, torch threads {a.threads}, {time.time() - t_start:.0f} s.\n"
            f"Process peak RSS {rss / 2**20:.0f} MiB (models, judge and Python included).\n"
            f"SD 1.x estimate (512 px, 50 steps, layers {sd['layers']}): feature store "
            f"{sd['cache_fp16_bytes'] / 2**30:.2f} GiB fp16 for the pair with store='cache', "
            f"{sd['recompute_bytes'] / 2**20:.1f} MiB with store='recompute'.")
    print(head)
    print(text)
    if not a.quick:
        write_results(a, dict(records=records, arms=arms, n=n, prs=prs, judge=judge, verdicts=verdicts,
                              summary=summary, layers=toy_layers, models=models, rss=rss, sd=sd, head=head,
                              text=text, contents=contents, styles=styles, outputs=outputs))
    return summary

if __name__ == "__main__":
    main()
