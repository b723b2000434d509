"""What saliency capture costs a request: the library defaults with capture on against capture off,
side by side in one process, plus what the app's saliency view derives after the run.

    python bench/capture_overhead.py                          # toy models, 50 steps, 1 thread
    python bench/capture_overhead.py --label before --out bench/results/capture_overhead_before.json

The schedules are bench/fusion_speed.py's ``project_batch`` (the defaults, capture on) and
``project_batch_nocapture``; requests alternate (A/B, then B/A) so that drift of a shared, busy
machine hits both alike. Per request: wall seconds and this process's CPU seconds
(``time.process_time``: on a machine other jobs load, it counts this process's own work, not
the time it waited for a core). ``view``: after each captured request, what the app's saliency
view derives from the trace (the panels of the first captured step over the fused image, the
share plot and the caption, as ``studio.ui.saliency_view`` does after a run). The overhead is
(on + view) / off - 1, from medians and from pairs.

Works on any revision that has ``fusion.views.SaliencyTrace.from_steps`` (to measure the code
before a change: run this file with that revision's checkout first on ``sys.path``, ``--code``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def _paths(code: str | None) -> None:
    """bench.* from this checkout; fusion from ``code`` when given (a checkout of another revision)."""
    sys.path.insert(0, str(ROOT))
    if code is not None:
        sys.path.insert(0, str(Path(code).resolve()))


def view_work(r, steps: int) -> None:
    """What the saliency view derives after a run (sample 0; the fused image under the mask)."""
    from fusion.views import SaliencyTrace
    size = (r.images["fused"].shape[-1], r.images["fused"].shape[-2])
    trace = SaliencyTrace.from_steps(r.saliency, total_steps=steps, size=size, primary=r.settings.primary)
    if len(trace):
        trace.panels(0, image=r.pil("fused")[0])
        trace.describe(0)
        trace.plot(0)
    else:
        trace.plot()


class CaptureClock:
    """Wall and CPU seconds spent inside the capture's own methods (``SaliencyRecorder.record``
    per step, ``SaliencyRecorder.steps`` once): the capture's direct work, which the noise of a
    busy machine cannot hide the way it hides a difference of two request times."""

    def __init__(self):
        from fusion.capture import SaliencyRecorder
        self.cls, self.wall, self.cpu, self._orig = SaliencyRecorder, 0.0, 0.0, {}
        for name in ("record", "steps"):
            self._orig[name] = orig = getattr(SaliencyRecorder, name)
            setattr(SaliencyRecorder, name, self._timed(orig))

    def _timed(self, fn):
        def wrapper(*a, **k):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                self.wall += time.perf_counter() - w
                self.cpu += time.thread_time() - c
        return wrapper

    def take(self) -> tuple[float, float]:
        out, self.wall, self.cpu = (self.wall, self.cpu), 0.0, 0.0
        return out

    def close(self):
        for name, fn in self._orig.items():
            setattr(self.cls, name, fn)


def measure(pipe, recipe: str, args, clock: CaptureClock) -> dict:
    from bench.fusion_speed import parse_recipe, schedule_settings
    base = dict(parse_recipe(recipe), steps=args.steps, n_samples=args.n_samples, height=args.H, width=args.W)
    order = ["project_batch", "project_batch_nocapture"]
    got: dict[str, list[dict]] = {s: [] for s in order}
    for rep in range(args.warmup + args.repeat):
        for sched in (order if rep % 2 == 0 else order[::-1]):
            for m in (pipe.model0, pipe.model1):
                m.prompt_cache.clear()
            s = schedule_settings(sched, base)
            gc.collect()
            clock.take()
            w0, c0 = time.perf_counter(), time.process_time()
            [r] = pipe(args.prompt, args.prompt, s, seeds=[args.seed])
            w1, c1 = time.perf_counter(), time.process_time()
            inside = clock.take()
            view = (0.0, 0.0)
            if sched == "project_batch":
                view_work(r, args.steps)
                view = (time.perf_counter() - w1, time.process_time() - c1)
            if rep >= args.warmup:
                got[sched].append(dict(wall=w1 - w0, cpu=c1 - c0, view_wall=view[0], view_cpu=view[1],
                                       inside_wall=inside[0], inside_cpu=inside[1], captured=len(r.saliency)))
            print(f"  [{recipe} {sched}] {w1 - w0:.2f} s wall, {c1 - c0:.2f} s CPU; capture's own work "
                  f"{inside[0] * 1e3:.2f} ms, view {view[0] * 1e3:.1f} ms wall", flush=True)
    on, off = got["project_batch"], got["project_batch_nocapture"]
    row = dict(recipe=recipe, captured_steps=on[0]["captured"])
    for clock in ("wall", "cpu"):
        med_on = statistics.median(x[clock] for x in on)
        med_view = statistics.median(x[f"view_{clock}"] for x in on)
        med_off = statistics.median(x[clock] for x in off)
        pairs = sorted((a[clock] + a[f"view_{clock}"]) / b[clock] for a, b in zip(on, off))
        med_inside = statistics.median(x[f"inside_{clock}"] for x in on)
        row[clock] = dict(on_s=round(med_on, 4), view_s=round(med_view, 5), off_s=round(med_off, 4),
                          capture_work_s=round(med_inside, 6),
                          direct_overhead=round((med_inside + med_view) / med_off, 5),
                          overhead=round((med_on + med_view) / med_off - 1, 4),
                          paired_overhead_median=round(statistics.median(pairs) - 1, 4),
                          on_all=[round(x[clock], 3) for x in on], off_all=[round(x[clock], 3) for x in off])
    return row


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [f"### capture_overhead ({res['label']}): {a['size']} models, {a['H']}x{a['W']}, {a['steps']} steps, "
             f"n_samples={a['n_samples']}, {a['repeat']} pairs, {res['env']['threads']} thread(s), "
             f"load average at start {res['env']['loadavg']}", "",
             "| recipe | SNB steps captured | clock | capture on s | capture off s | capture's own work s | view s | "
             "direct cost (work + view) / off | on + view vs off (medians) | (paired median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for clock in ("cpu", "wall"):
            c = r[clock]
            lines.append(f"| {r['recipe']} | {r['captured_steps']} | {clock} | {c['on_s']} | {c['off_s']} | "
                         f"{c['capture_work_s']} | {c['view_s']} | {100 * c['direct_overhead']:.3f}% | "
                         f"{100 * c['overhead']:+.2f}% | {100 * c['paired_overhead_median']:+.2f}% |")
    lines += ["", "cpu: process CPU seconds for the requests (thread CPU seconds for the capture's own work); "
              "wall: seconds on the clock. The direct cost is what the capture itself does; the on/off "
              "difference of whole requests also holds the machine's noise."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--H", type=int, default=64)
    ap.add_argument("--W", type=int, default=64)
    ap.add_argument("--n_samples", type=int, default=1)
    ap.add_argument("--recipes", nargs="+", default=["600,1,1:2:general", "850,1,1:1:expert"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt", default="a cartoon red circle on a green background")
    ap.add_argument("--seed", type=int, default=6854)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", choices=("toy", "tiny"), default="toy")
    ap.add_argument("--label", default="after")
    ap.add_argument("--code", default=None, help="a checkout whose fusion/ is measured (default: this one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "capture_overhead.json"))
    args = ap.parse_args(argv)
    _paths(args.code)
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    import torch

    import fusion
    from bench.fusion_speed import make_models
    from fusion.pipeline import FusionPipeline
    g, e = make_models(args.size, torch.device("cpu"), torch.float32, shared=True)
    pipe = FusionPipeline(g, e)
    res = dict(label=args.label, args=vars(args),
               env=dict(threads=torch.get_num_threads(), torch=torch.__version__, code=str(Path(fusion.__file__).parent),
                        loadavg=" ".join(f"{x:.1f}" for x in os.getloadavg()),
                        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    clock = CaptureClock()
    try:
        res["rows"] = [measure(pipe, recipe, args, clock) for recipe in args.recipes]
    finally:
        clock.close()
    res["env"]["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
