"""Style-quality benchmark: every style engine and its baseline on photo->cartoon toy pairs.

Each pair is a photo-world render (content: every colour x shape x size in turn) and a cartoon
render of another colour and shape (style). An output is judged by the toy world's judge
(toyworld/judge.py, a CNN trained only on ground-truth renders) and by pixels:

* cartoon rate            - the judge reads style "cartoon";
* subject kept            - the judge reads the content's shape and size (and shape alone);
* silhouette IoU / shift  - the object's saturated-colour mask against the content's, and the
                            centroid shift in px (the judge does not read position);
* colour kept             - the judge reads the content's colour (the goal with preserve-colour on);
* colour from style       - the judge reads the style's colour (the goal with it off);
* seconds per image and the peak resident memory while the arm ran (RSS sampled every 10 ms).

Reference rows: the content and style renders, and the *oracle* (the content scene rendered by
the cartoon renderer: what a perfect transfer would look like; its IoU is the ceiling, as the
eyes and outline are not "saturated"). Outputs bigger than 64 px are area-downsampled for the
judge. Arms (``--arms``, ``NAME+field=value`` overrides a setting):

* ``styleid``          - StyleID with its published defaults (styleid.injection, general model): the baseline;
* ``styleid-cartoon``  - the same on the cartoon expert;
* ``expert``           - styleid.expert.expert_transfer (invert with the general model, sample with the
                         cartoon expert) at its defaults (strength 0.6, silhouette lock with a 0.3 re-draw),
                         preserve-colour on; ``expert-recolour``: off; ``expert-nolock``: the engine's
                         defaults before the lock (strength 0.5, no lock);
* ``mccstn``           - the shipped toy-world MccSTN weights (assets/mccstn), alpha 1, preserve-colour on in
                         the app's "subject" colour mode (recolour only the stylised subject);
                         ``mccstn-official``: preserve-colour on, the reference recipe (the whole style image
                         recoloured first); ``mccstn-recolour``: off. ``+colour_mode=`` picks the mode.

    python bench/style_quality.py                  # 48 benchmark pairs -> bench/results/style_quality.*
    python bench/style_quality.py --pairs dev --n 8 --arms expert,expert+strength=0.8   # tuning
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH  # noqa: E402
from toyworld.pixels import iou_shift, silhouette  # noqa: E402,F401  (re-exported)
from toyworld.render import COLORS, SHAPES, SIZES, Scene, render  # noqa: E402

RESULTS = REPO / "bench" / "results"
MCCSTN_WEIGHTS = REPO / "assets" / "mccstn"
#: seeds of the two pair sets: settings are tuned on "dev" only, reported on "bench"
PAIR_SEEDS = {"dev": 99, "bench": 2024}


def pairs(n: int, seed: int) -> list[tuple[Scene, Scene]]:
    """n (photo content, cartoon style) pairs; contents cycle through all colour x shape x size
    combinations, each style has another colour and another shape."""
    rng = np.random.default_rng(seed)
    combos = [(c, s, z) for c in COLORS for s in SHAPES for z in SIZES]
    order = rng.permutation(len(combos))
    out = []
    for i in range(n):
        col, shp, siz = combos[order[i % len(combos)]]
        content = Scene(col, shp, siz, "photo", int(rng.integers(2**31 - 1)))
        s_col = rng.choice([c for c in COLORS if c != col])
        s_shp = rng.choice([s for s in SHAPES if s != shp])
        style = Scene(str(s_col), str(s_shp), str(rng.choice(SIZES)), "cartoon", int(rng.integers(2**31 - 1)))
        out.append((content, style))
    return out


def to_judge_size(img: Image.Image, size: int = 64) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BOX)
    return np.asarray(img)


class PeakRSS:
    """Peak resident memory of this process while the block runs (polls /proc every 10 ms)."""

    def __enter__(self):
        self.peak, self._stop = self._rss(), threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        return False

    def _poll(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------------
# arms
# ----------------------------------------------------------------------------------------------
ARMS = {
    "styleid": ("injection", {}),
    "styleid-cartoon": ("injection-cartoon", {}),
    "expert": ("expert", {"preserve_color": True}),
    "expert-recolour": ("expert", {"preserve_color": False}),
    "expert-nolock": ("expert", {"preserve_color": True, "strength": 0.5, "lock": False}),
    "mccstn": ("mccstn", {"preserve_color": True, "alpha": 1.0, "long_side": 256, "colour_mode": "subject"}),
    "mccstn-official": ("mccstn", {"preserve_color": True, "alpha": 1.0, "long_side": 256, "colour_mode": "official"}),
    "mccstn-recolour": ("mccstn", {"preserve_color": False, "alpha": 1.0, "long_side": 256}),
}
DEFAULT_ARMS = "styleid,expert,expert-recolour,expert-nolock,mccstn,mccstn-official,mccstn-recolour"


def parse_arm(arm: str) -> tuple[str, dict]:
    base, *over = arm.split("+")
    if base not in ARMS:
        raise SystemExit(f"--arms: unknown {base!r}; accepted: {', '.join(ARMS)} (optionally +field=value)")
    kind, settings = ARMS[base]
    settings = dict(settings)
    for kv in over:
        k, _, v = kv.partition("=")
        low = v.lower()
        if low in ("true", "false"):
            settings[k] = low == "true"
        else:
            try:
                settings[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except ValueError:
                settings[k] = v
    return kind, settings


class Runners:
    """Loads each model once and turns (kind, settings) into a callable (content, style) -> image."""

    def __init__(self, general: str, cartoon: str, mccstn_dir: str):
        self.paths = {"general": general, "cartoon": cartoon}
        self.mccstn_dir = mccstn_dir
        self._models: dict = {}

    def model(self, which: str):
        if which not in self._models:
            from fusion.loading import load_model
            self._models[which] = load_model(self.paths[which], device="cpu", dtype=torch.float32)
        return self._models[which]

    def make(self, kind: str, settings: dict):
        if kind.startswith("injection"):
            from styleid.injection import InjectionSettings, style_transfer
            m = self.model("cartoon" if kind.endswith("cartoon") else "general")
            s = InjectionSettings(**settings)
            return lambda c, st: style_transfer(m, c, st, s)[0]
        if kind == "expert":
            from styleid.expert import ExpertTransferSettings, expert_transfer
            settings = dict(settings)
            g, e = self.model("general"), self.model(settings.pop("sampler", "cartoon"))
            s = ExpertTransferSettings(**settings)
            return lambda c, st: expert_transfer(g, e, c, st, s)[0]
        if kind == "mccstn":
            from studio.style_engines.mccstn import MccSTNEngine
            settings = dict(settings)
            eng = MccSTNEngine(self.mccstn_dir, device="cpu", colour_mode=settings.pop("colour_mode", "subject"))
            ok, why = eng.availability()
            if not ok:
                return None
            eng.model()  # load outside the timed loop
            return lambda c, st: eng.stylize(c.resize((256, 256), Image.BICUBIC),
                                             st.resize((256, 256), Image.BICUBIC), **settings)
        raise ValueError(kind)


# ----------------------------------------------------------------------------------------------
# judging and reporting
# ----------------------------------------------------------------------------------------------
METRICS = ("cartoon", "shape_size_kept", "shape_kept", "iou", "centroid_shift_px", "color_kept",
           "color_from_style", "seconds")


def judge_records(judge, prs, images: list[np.ndarray], arm: str, seconds=None) -> list[dict]:
    from toyworld.judge import predict

    v = predict(judge, np.stack(images))
    rows = []
    for i, ((c, s), img) in enumerate(zip(prs, images)):
        iou, shift = iou_shift(silhouette(img), silhouette(render(c)))
        rows.append(dict(arm=arm, pair=i, content=f"{c.size} {c.color} {c.shape}",
                         style=f"{s.size} {s.color} {s.shape}",
                         judged=f'{v["size"][i]} {v["color"][i]} {v["shape"][i]} ({v["style"][i]})',
                         cartoon=int(v["style"][i] == "cartoon"),
                         shape_size_kept=int(v["shape"][i] == c.shape and v["size"][i] == c.size),
                         shape_kept=int(v["shape"][i] == c.shape), iou=round(iou, 4),
                         centroid_shift_px=round(shift, 3), color_kept=int(v["color"][i] == c.color),
                         color_from_style=int(v["color"][i] == s.color),
                         seconds=None if seconds is None else round(seconds[i], 4)))
    return rows


def summarise(records: list[dict], arms: list[str], peaks: dict) -> dict:
    out = {}
    for arm in arms:
        rs = [r for r in records if r["arm"] == arm]
        if not rs:
            continue
        out[arm] = {"n": len(rs)}
        for k in METRICS:
            vals = [r[k] for r in rs if r.get(k) is not None and r[k] == r[k]]
            out[arm][k] = float(np.mean(vals)) if vals else None
        out[arm]["peak_rss_mib"] = peaks.get(arm)
    return out


def table(summary: dict) -> str:
    def f(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    lines = ["| arm | n | cartoon rate | shape+size kept | shape kept | silhouette IoU | centroid shift px | "
             "colour kept | colour from style | s / image | peak RSS MiB |", "|---" * 11 + "|"]
    for arm, s in summary.items():
        lines.append(f"| {arm} | {s['n']} | {f(s['cartoon'])} | {f(s['shape_size_kept'])} | {f(s['shape_kept'])} | "
                     f"{f(s['iou'])} | {f(s['centroid_shift_px'], '{:.2f}')} | {f(s['color_kept'])} | "
                     f"{f(s['color_from_style'])} | {f(s['seconds'], '{:.2f}')} | {f(s['peak_rss_mib'], '{:.0f}')} |")
    return "\n".join(lines)


def contact_sheet(prs, columns: dict, path: Path, rows: int = 12, cell: int = 80) -> None:
    names = list(columns)
    label_w, head = 150, 18
    n = min(rows, len(prs))
    sheet = Image.new("RGB", (label_w + cell * len(names), head + cell * n), "white")
    d = ImageDraw.Draw(sheet)
    for j, name in enumerate(names):
        d.text((label_w + j * cell + 2, 3), name[:13], fill="black")
    for i in range(n):
        c, s = prs[i]
        d.text((4, head + i * cell + 6), f"{c.size} {c.color} {c.shape}\n+ {s.color} {s.shape}", fill="black")
        for j, name in enumerate(names):
            img = columns[name][i] if i < len(columns[name]) else None
            if img is not None:
                sheet.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST),
                            (label_w + j * cell, head + i * cell))
    sheet.save(path)


def run_arms(runners: Runners, arms: list[str], prs, contents, styles, log=print):
    outputs, seconds, peaks, skipped = {}, {}, {}, []
    for arm in arms:
        kind, settings = parse_arm(arm)
        fn = runners.make(kind, settings)
        if fn is None:
            skipped.append(arm)
            log(f"  {arm}: skipped (engine unavailable)")
            continue
        outs, secs = [], []
        with PeakRSS() as mem:
            for c, s in zip(contents, styles):
                t = time.perf_counter()
                img = fn(Image.fromarray(c), Image.fromarray(s))
                secs.append(time.perf_counter() - t)
                outs.append(to_judge_size(img))
        outputs[arm], seconds[arm], peaks[arm] = outs, secs, mem.peak / 2**20
        log(f"  {arm}: {len(outs)} images, {np.mean(secs):.2f} s/image", flush=True)
    return outputs, seconds, peaks, skipped


def combine(parts: list[str], out: Path, name: str) -> dict:
    """Merge the CSV/JSON of runs made on the same pairs (e.g. the diffusion arms and, once its
    training ended, the MccSTN arms) into ``name``.csv/.json/.md; contact sheets stay per run."""
    records, summary, heads, arms = [], {}, [], {}
    for part in parts:
        data = json.loads((out / f"{part}.json").read_text())
        with open(out / f"{part}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        seen = set(summary)
        records += [r for r in rows if r["arm"] not in seen]
        summary.update({k: v for k, v in data["summary"].items() if k not in seen})
        arms.update(data["arms"])
        heads.append((out / f"{part}.md").read_text().split("\n")[0] + f" [{part}.png]")
    (out / f"{name}.json").write_text(json.dumps(dict(summary=summary, arms=arms, parts=parts), indent=2) + "\n")
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
        w.writeheader()
        w.writerows(records)
    (out / f"{name}.md").write_text("\n".join(heads) + "\n\n" + table(summary) + "\n")
    print(table(summary))
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", choices=sorted(PAIR_SEEDS), default="bench")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--arms", default=DEFAULT_ARMS)
    p.add_argument("--general", default=str(DEFAULT_GENERAL))
    p.add_argument("--cartoon", default=str(DEFAULT_CARTOON))
    p.add_argument("--mccstn", default=str(MCCSTN_WEIGHTS))
    p.add_argument("--judge", default=str(JUDGE_PATH))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="style_quality")
    p.add_argument("--no-write", action="store_true", help="print only (tuning runs)")
    p.add_argument("--combine", default="", help="comma-separated earlier run names to merge into --name")
    a = p.parse_args(argv)
    if a.combine:
        return combine([x for x in a.combine.split(",") if x], Path(a.out), a.name)
    torch.set_num_threads(a.threads)
    from toyworld.judge import load_judge

    judge = load_judge(a.judge)
    prs = pairs(a.n, PAIR_SEEDS[a.pairs])
    contents = [render(c) for c, _ in prs]
    styles = [render(s) for _, s in prs]
    oracle = [render(Scene(c.color, c.shape, c.size, "cartoon", c.seed)) for c, _ in prs]
    arms = [x for x in a.arms.split(",") if x]
    t0 = time.time()
    outputs, seconds, peaks, skipped = run_arms(Runners(a.general, a.cartoon, a.mccstn), arms, prs, contents, styles)
    records = []
    for name, imgs in (("content images", contents), ("style images", styles), ("oracle cartoon", oracle)):
        records += judge_records(judge, prs, imgs, name)
    for arm in outputs:
        records += judge_records(judge, prs, outputs[arm], arm, seconds[arm])
    names = ["content images", "style images", "oracle cartoon"] + list(outputs)
    summary = summarise(records, names, peaks)
    head = (f"Style-quality benchmark: {a.n} {a.pairs} photo->cartoon pairs, CPU float32, torch threads "
            f"{a.threads}, {time.time() - t0:.0f} s wall (machine shared with other jobs: seconds are "
            f"under load). Skipped (unavailable): {', '.join(skipped) or 'none'}.")
    text = table(summary)
    print(head + "\n" + text)
    if not a.no_write:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{a.name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
        (out / f"{a.name}.json").write_text(json.dumps(dict(
            summary=summary, pairs=a.pairs, n=a.n, arms={x: parse_arm(x) for x in arms}, skipped=skipped,
            threads=a.threads, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), indent=2) + "\n")
        (out / f"{a.name}.md").write_text(head + "\n\n" + text + "\n")
        cols = {"content": contents, "style": styles, "oracle": oracle, **outputs}
        contact_sheet(prs, cols, out / f"{a.name}.png")
        print(f"wrote {out}/{a.name}.csv, .json, .md, .png")
    return summary


if __name__ == "__main__":
    main()
