"""Fused-sampling speed: the naive schedule against the project's, on the same inputs, in one process.

    python bench/fusion_speed.py --size toy                       # seconds, tiny models
    python bench/fusion_speed.py --size sd1 --H 64 --W 64 --steps 4 --recipes 600,1,1:2:general
    python bench/fusion_speed.py --size sd1 --components-only     # SD 1.x component timings + model

Schedules (all produce the three images of a request: general alone, expert alone, fused):

* ``naive``: every run separate: both UNets on every fused step (``eager_secondary``), no
  sharing of identical evaluations, the two models hold their own VAE and text encoder
  (``FusionPipeline(dedupe=False)``).
* ``project``: ``share=True``, dedupe, ``batch_trajectories=False``: the secondary runs only on
  SNB steps, identical evaluations are computed once, one VAE/text encoder. Outputs bit-equal
  to naive.
* ``project_batch``: the library defaults, which on CPU and CUDA batch trajectories (every
  evaluation of one UNet at one step as one batch; equal up to float rounding), saliency
  capture on.
* ``project_batch_nocapture``: the defaults with ``capture_saliency=False``: the saliency
  capture's cost is the ratio of the two.

Requests alternate between schedules (A/B/A/B...) so that drift of a shared, noisy machine
hits all of them alike; ratios are what to read. Per schedule: UNet calls, seconds per request
(all three images), seconds per step, time inside the UNets, peak RSS (or CUDA memory), and the
ratio to naive. Also: the SNB blend's cost per step against one UNet call, memory for holding
two models with and without shared components (each in a fresh subprocess), cold and warm
request latency, and the UNet-call counts at 50 steps (exact; counted on tiny models: the
schedule, not the model size, fixes them) for ``prompt == prompt1`` and ``prompt != prompt1``.

``--size sd1`` builds SD 1.x-sized models with random weights from ``assets/configs/sd1`` (see
``bench/random_models.py``): timing does not depend on weight values. ``--size toy`` uses
``assets/models/toy-general``/``toy-cartoon`` when they exist, else the tiny test models.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fusion.loading import DiffusionModel  # noqa: E402
from fusion.paths import TOY_EXPERT, TOY_GENERAL  # noqa: E402
from fusion.pipeline import FusionPipeline, FusionSettings, to_uint8  # noqa: E402

from bench.fusion_speed_report import capture_cost, markdown  # noqa: E402,F401
from bench.measure import peak_memory, peak_rss_mb, reset_peak, rss_mb, sync  # noqa: E402,F401

DEFAULT_RECIPES = ("600,1,1:2:general", "850,1,1:1:expert")
SCHEDULES = ("naive", "project", "project_batch", "project_batch_nocapture")
TOY_DIRS = (TOY_GENERAL, TOY_EXPERT)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def make_models(size: str, device, dtype, shared: bool):
    """(general, expert); ``shared=False``: the expert holds its own VAE/text encoder copies."""
    if size == "toy" and all((d / "model_index.json").is_file() for d in TOY_DIRS):
        from fusion.loading import load_model
        g = load_model(TOY_DIRS[0], device=device, dtype=dtype, name="toy-general")
        e = load_model(TOY_DIRS[1], device=device, dtype=dtype, name="toy-cartoon")
        if shared:
            from fusion.loading import share_identical_components
            share_identical_components(g, e)
        return g, e
    from bench.random_models import make_pair
    return make_pair("sd1" if size == "sd1" else "tiny", device=device, dtype=dtype, shared=shared)


def rewrap(m: DiffusionModel) -> DiffusionModel:
    """A new DiffusionModel over the same component objects (own prompt cache)."""
    return DiffusionModel(name=m.name, source=m.source, unet=m.unet, vae=m.vae, text_encoder=m.text_encoder,
                          tokenizer=m.tokenizer, scheduler_config=dict(m.scheduler_config))


class UNetTimer:
    """Wall time spent inside the UNets' forward (forward hooks; syncs CUDA)."""

    def __init__(self, unets, device):
        self.seconds, self.device, self._t0, self.handles = 0.0, device, None, []
        for u in {id(u): u for u in unets}.values():
            self.handles.append(u.register_forward_pre_hook(self._pre))
            self.handles.append(u.register_forward_hook(self._post))

    def _pre(self, *a):
        sync(self.device)
        self._t0 = time.perf_counter()

    def _post(self, *a):
        sync(self.device)
        self.seconds += time.perf_counter() - self._t0

    def remove(self):
        for h in self.handles:
            h.remove()


def parse_recipe(text: str) -> dict:
    """"v1,kg,ke:mode:primary" -> FusionSettings kwargs."""
    try:
        sel, mode, primary = text.split(":")
        return dict(fusion_selection=sel, mode=int(mode), primary=primary)
    except ValueError:
        raise SystemExit(f"--recipes: expected 'v1,kg,ke:mode:primary' (e.g. 600,1,1:2:general), got {text!r}")


def schedule_settings(name: str, base: dict) -> FusionSettings:
    if name == "naive":
        return FusionSettings(**base, share=False, eager_secondary=True, batch_trajectories=False)
    if name == "project":
        return FusionSettings(**base, batch_trajectories=False)
    if name == "project_batch":
        return FusionSettings(**base)  # the defaults: batched on CPU and CUDA (fusion.fastpath)
    if name == "project_batch_nocapture":
        return FusionSettings(**{**base, "capture_saliency": False})
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------
def count_calls(recipes, steps: int = 50) -> list[dict]:
    """Exact UNet calls per request for every schedule, same and different prompts (tiny models)."""
    from bench.random_models import make_pair
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only add waiting on a busy machine
    try:
        return _count_calls(recipes, steps, make_pair)
    finally:
        torch.set_num_threads(threads)


def _count_calls(recipes, steps, make_pair) -> list[dict]:
    g, e = make_pair("tiny", shared=False)
    pipes = {"naive": FusionPipeline(g, e, dedupe=False), "project": FusionPipeline(rewrap(g), rewrap(e))}
    rows = []
    for recipe in recipes:
        for prompts in (("a red circle", "a red circle"), ("a red circle", "a blue square")):
            row = {"recipe": recipe, "steps": steps, "same_prompt": prompts[0] == prompts[1]}
            for sched in SCHEDULES:
                p = pipes["naive" if sched == "naive" else "project"]
                s = schedule_settings(sched, dict(parse_recipe(recipe), steps=steps, n_samples=1, height=16,
                                                  width=16, capture_saliency=False))
                [r] = p(prompts[0], prompts[1], s, seeds=[0])
                row[sched] = r.stats.total_calls
                row[sched + "_rows"] = sum(r.stats.rows.values())
            row["ratio"] = round(row["project"] / row["naive"], 4)
            row["ratio_batch_calls"] = round(row["project_batch"] / row["naive"], 4)
            rows.append(row)
    return rows


def run_requests(pipes, recipes, args, device) -> tuple[list[dict], dict]:
    """Interleaved requests; returns per (recipe, schedule) rows and bit-equality checks."""
    prompt, prompt1 = args.prompt, args.prompt1 if args.prompt1 is not None else args.prompt
    unets = [m.unet for p in pipes.values() for m in (p.model0, p.model1)]
    timer = UNetTimer(unets, device)
    rows, equal = [], {}
    try:
        for ri, recipe in enumerate(recipes):
            base = dict(parse_recipe(recipe), steps=args.steps, n_samples=args.n_samples, height=args.H,
                        width=args.W)
            samples = {s: [] for s in args.schedules}
            images = {}
            order = list(args.schedules)
            for rep in range(args.warmup + args.repeat):
                # A/B/A/B; reversed every other round (A/B/B/A) so neither always goes first
                for sched in (order if (rep + ri) % 2 == 0 else order[::-1]):
                    pipe = pipes["naive" if sched == "naive" else "project"]
                    for m in (pipe.model0, pipe.model1):
                        m.prompt_cache.clear()  # every request encodes its prompts (a new request)
                    s = schedule_settings(sched, base)
                    gc.collect()
                    reset_peak(device)
                    timer.seconds = 0.0
                    sync(device)
                    t0 = time.perf_counter()
                    final: dict = {}
                    [r] = pipe(prompt, prompt1, s, seeds=[args.seed],
                               callback=lambda si, ev: final.update(ev.latents) if ev.index == ev.total - 1 else None)
                    sync(device)
                    dt = time.perf_counter() - t0
                    mem = peak_memory(device)
                    if rep >= args.warmup:
                        samples[sched].append(dict(seconds=dt, unet_seconds=timer.seconds, calls=r.stats.total_calls,
                                                   rows=sum(r.stats.rows.values()), **mem))
                    images[sched] = (final, r.images)
                    print(f"  [{recipe} {sched} {'warmup' if rep < args.warmup else rep - args.warmup}] "
                          f"{dt:.2f} s, {r.stats.total_calls} UNet calls", flush=True)
            for sched in args.schedules:
                if sched != "naive" and "naive" in images:
                    (lat_n, img_n), (lat_s, img_s) = images["naive"], images[sched]
                    equal[f"{recipe} {sched}"] = dict(
                        latents_bit_equal=all(torch.equal(lat_n[k], lat_s[k]) for k in lat_n),
                        images_bit_equal=all(torch.equal(img_n[k], img_s[k]) for k in img_n),
                        images_max_abs_diff=max(float((img_n[k] - img_s[k]).abs().max()) for k in img_n),
                        uint8_equal=all(bool((to_uint8(img_n[k]) == to_uint8(img_s[k])).all()) for k in img_n))
            naive_s = statistics.median(x["seconds"] for x in samples["naive"]) if "naive" in samples else None
            for sched in args.schedules:
                xs = samples[sched]
                sec = statistics.median(x["seconds"] for x in xs)
                unet = statistics.median(x["unet_seconds"] for x in xs)
                row = dict(recipe=recipe, schedule=sched, unet_calls=xs[0]["calls"], unet_rows=xs[0]["rows"],
                           s_per_request=round(sec, 3), s_per_step=round(sec / args.steps, 4),
                           unet_s_per_request=round(unet, 3), other_s_per_request=round(sec - unet, 3),
                           s_per_unet_call=round(unet / xs[0]["calls"], 4),
                           all_seconds=[round(x["seconds"], 3) for x in xs],
                           peak_rss_mb=max(x["peak_rss_mb"] for x in xs))
                if "peak_cuda_mb" in xs[0]:
                    row["peak_cuda_mb"] = max(x["peak_cuda_mb"] for x in xs)
                if naive_s:
                    row["ratio"] = round(sec / naive_s, 4)
                    # paired ratios (each request against the naive one of its round) and their spread
                    pr = [x["seconds"] / y["seconds"] for x, y in zip(xs, samples["naive"])]
                    row["paired_ratios"] = [round(v, 4) for v in pr]
                    # speed-normalised: each request in units of its own UNet-call time (the same
                    # work in every schedule), so a machine that speeds up or slows down between
                    # requests cancels out; equals the plain ratio on a quiet machine
                    eq = lambda x: x["seconds"] / (x["unet_seconds"] / x["calls"])  # noqa: E731
                    row["normalised_ratio"] = round(statistics.median(eq(x) for x in xs)
                                                    / statistics.median(eq(y) for y in samples["naive"]), 4)
                rows.append(row)
    finally:
        timer.remove()
    return rows, equal


def time_it(fn, device, min_reps: int = 1, min_seconds: float = 0.0) -> float:
    """Median seconds of ``fn`` over at least ``min_reps`` runs (and ``min_seconds`` in all)."""
    ts = []
    t_start = time.perf_counter()
    while len(ts) < min_reps or time.perf_counter() - t_start < min_seconds:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@torch.no_grad()
def component_times(model: DiffusionModel, args, device, batch_sizes=(1, 2, 4)) -> dict:
    """Seconds for: one UNet call at CFG batch 2n (and others), one SNB blend, one DDIM update,
    one VAE decode of n images, one text-encoder pass; interleaved rounds, medians."""
    from fusion import snb
    from fusion.sampler import ddim_step
    f = model.vae_scale_factor
    n, h, w = args.n_samples, args.H // f, args.W // f
    dt = model.dtype
    ctx = model.encode_prompts(["", args.prompt])
    gen = torch.Generator("cpu").manual_seed(0)
    x = {b: torch.randn((b * n, model.latent_channels, h, w), generator=gen).to(device, dt) for b in batch_sizes}
    eps = [torch.randn((n, model.latent_channels, h, w), generator=gen).to(device, dt) for _ in range(4)]
    tt = {b: torch.full((b * n,), 500, device=device, dtype=torch.long) for b in batch_sizes}
    cx = {b: ctx.repeat_interleave(n, 0).repeat(b // 2 if b >= 2 else 1, 1, 1)[:b * n] for b in batch_sizes}
    out = {f"unet_b{b * n}": [] for b in batch_sizes}
    out.update(snb_blend=[], ddim_step=[], vae_decode_per_image=[], text_encode=[])
    for _ in range(args.component_rounds):
        for b in batch_sizes:
            out[f"unet_b{b * n}"].append(time_it(lambda: model.unet(x[b], tt[b], encoder_hidden_states=cx[b],
                                                                    return_dict=False), device))
        out["snb_blend"].append(time_it(lambda: snb.blend(*eps, 10.0, 1.0, 1.0), device, 5, 0.2))
        out["ddim_step"].append(time_it(lambda: ddim_step(eps[0], eps[1], 0.5, 0.6), device, 5, 0.1))
        out["vae_decode_per_image"].append(time_it(
            lambda: model.vae.decode(eps[0] / model.scaling_factor, return_dict=False), device) / n)

        def enc():
            model.prompt_cache.clear()
            model.encode_prompts([args.prompt])
        out["text_encode"].append(time_it(enc, device))
    return {k: round(statistics.median(v), 5) for k, v in out.items()}


def modelled_ratios(comp: dict, counts: list[dict], n: int) -> list[dict]:
    """Predicted seconds per request from exact call counts and measured component times:
    calls x UNet(2n) + 3 decodes + SNB/DDIM work + text encodes (naive encodes more prompts)."""
    u = comp[f"unet_b{2 * n}"]
    rows = []
    for c in counts:
        steps = c["steps"]
        per_step = 3 * comp["ddim_step"] + comp["snb_blend"]  # upper bound: SNB on every step
        fixed = 3 * comp["vae_decode_per_image"] * n + steps * per_step
        # text-encoder passes per request (memoised per encoder and text): naive 4 (same prompts)
        # or 5 (the fused primary's encoder also encodes the other model's prompt); project 2 or 3
        naive_s = c["naive"] * u + fixed + (4 if c["same_prompt"] else 5) * comp["text_encode"]
        proj_s = c["project"] * u + fixed + (2 if c["same_prompt"] else 3) * comp["text_encode"]
        row = dict(recipe=c["recipe"], steps=steps, same_prompt=c["same_prompt"], naive_s=round(naive_s, 2),
                   project_s=round(proj_s, 2), ratio=round(proj_s / naive_s, 4), call_ratio=c["ratio"])
        b4 = comp.get(f"unet_b{4 * n}")
        if b4 is not None and "project_batch_rows" in c:
            # batched calls carry 2n..6n rows: a line through the 2n- and 4n-row call times
            per_row = (b4 - u) / (2 * n)
            t_batch = c["project_batch"] * (u - 2 * n * per_row) + c["project_batch_rows"] * per_row
            batch_s = t_batch + fixed + (2 if c["same_prompt"] else 3) * comp["text_encode"]
            row.update(project_batch_s=round(batch_s, 2), ratio_batch=round(batch_s / naive_s, 4))
        rows.append(row)
    return rows


def memory_in_subprocess(size: str, shared: bool, device: str, dtype: str) -> dict:
    """Hold two models in a fresh process: RSS after building, peak RSS, bytes of parameters."""
    code = (
        "import sys, json, torch, gc; sys.path.insert(0, %r)\n"
        "from bench.fusion_speed import make_models, rss_mb, peak_rss_mb\n"
        "dev = torch.device(%r); dt = getattr(torch, %r)\n"
        "base = rss_mb()\n"
        "g, e = make_models(%r, dev, dt, shared=%r)\n"
        "gc.collect()\n"
        "uniq = {id(p): p for m in (g, e) for c in (m.unet, m.vae, m.text_encoder) for p in c.parameters()}\n"
        "out = dict(rss_mb=round(rss_mb() - base, 1), peak_rss_mb=round(peak_rss_mb() - base, 1),\n"
        "           param_mb=round(sum(p.numel() * p.element_size() for p in uniq.values()) / 2**20, 1))\n"
        "if dev.type == 'cuda': out['cuda_mb'] = round(torch.cuda.memory_allocated(dev) / 2**20, 1)\n"
        "print('RESULT', json.dumps(out))\n"
    ) % (str(ROOT), device, dtype, size, shared)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (r.stderr or r.stdout)[-500:]}


def cold_warm(args, device, dtype) -> dict:
    """Cold: load two models from disk + first request; warm: the same pipeline's next request
    (different prompt: text encoding included). Toy/tiny models saved in the diffusers layout."""
    from fusion.loading import load_model
    with tempfile.TemporaryDirectory() as tmp:
        if all((d / "model_index.json").is_file() for d in TOY_DIRS):
            dirs = TOY_DIRS
        else:
            from fusion.testing import save_tiny_model
            g = save_tiny_model(Path(tmp) / "general", seed=0)
            dirs = (g, save_tiny_model(Path(tmp) / "expert", seed=1, share_from=g))
        s = FusionSettings(steps=args.steps, n_samples=args.n_samples)
        t0 = time.perf_counter()
        pipe = FusionPipeline(load_model(dirs[0], device=device, dtype=dtype),
                              load_model(dirs[1], device=device, dtype=dtype))
        t_load = time.perf_counter() - t0
        pipe("a red circle", settings=s, seeds=[0])
        t_cold = time.perf_counter() - t0
        warm = []
        for i in range(2):
            t1 = time.perf_counter()
            pipe(f"a blue square {i}", settings=s, seeds=[1 + i])
            warm.append(time.perf_counter() - t1)
        return dict(models=[str(d.relative_to(ROOT)) if str(d).startswith(str(ROOT)) else Path(d).name for d in dirs],
                    load_s=round(t_load, 3), cold_first_request_s=round(t_cold, 3),
                    warm_request_s=round(min(warm), 3), steps=args.steps)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("toy", "tiny", "sd1"), default="toy",
                    help="toy: assets/models/toy-* if present, else the tiny test models; tiny: always those")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--H", type=int, default=None, help="image height (default: 64 toy... 256 sd1)")
    ap.add_argument("--W", type=int, default=None)
    ap.add_argument("--n_samples", type=int, default=1)
    ap.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), help="v1,kg,ke:mode:primary ...")
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt", default="a cartoon red circle on a green background")
    ap.add_argument("--prompt1", default=None, help="the general model's prompt (default: --prompt)")
    ap.add_argument("--seed", type=int, default=6854)
    ap.add_argument("--device", default=None)
    ap.add_argument("--fp16", action="store_true", help="half precision (default on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNets (CUDA only)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-requests", dest="requests", action="store_false", help="skip the end-to-end requests")
    ap.add_argument("--components-only", action="store_true", help="component timings, model and memory only")
    ap.add_argument("--component-rounds", type=int, default=2)
    ap.add_argument("--no-components", dest="components", action="store_false", help="skip component timings")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--no-cold-warm", dest="cold_warm", action="store_false")
    ap.add_argument("--count-steps", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fusion_speed.json"))
    ap.add_argument("--md", default=None, help="markdown table path (default: --out with .md)")
    ap.add_argument("--rerender", default=None, metavar="JSON",
                    help="recompute the model and rewrite the markdown of a saved result; runs nothing")
    args = ap.parse_args(argv)
    if args.rerender:
        res = json.loads(Path(args.rerender).read_text())
        if res.get("components"):
            res["modelled"] = modelled_ratios(res["components"], res["counts_50"] + res["counts_bench_steps"],
                                              res["args"]["n_samples"])
        Path(args.rerender).write_text(json.dumps(res, indent=1))
        md = markdown(res)
        Path(args.rerender).with_suffix(".md").write_text(md)
        print(md)
        return res
    if args.components_only:
        args.requests = False
    if args.threads:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            return _main(args)
        finally:
            torch.set_num_threads(threads)
    return _main(args)


def _main(args) -> dict:
    args.H = args.H or (256 if args.size == "sd1" else 64)
    args.W = args.W or args.H
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if (args.fp16 or device.type == "cuda") else torch.float32
    for r in args.recipes:
        parse_recipe(r)
    res = {"args": vars(args), "env": dict(device=str(device), dtype=str(dtype).replace("torch.", ""),
                                           torch=torch.__version__, threads=torch.get_num_threads(),
                                           cpu_count=os.cpu_count(), machine=platform.machine(),
                                           when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}
    if device.type == "cuda":
        res["env"]["gpu"] = torch.cuda.get_device_name(device)

    print(f"UNet calls at {args.count_steps} steps (exact, tiny models)...", flush=True)
    res["counts_50"] = count_calls(args.recipes, args.count_steps)
    res["counts_bench_steps"] = count_calls(args.recipes, args.steps)

    print(f"building {args.size} models on {device} ({res['env']['dtype']})...", flush=True)
    t0 = time.perf_counter()
    g, e = make_models(args.size, device, dtype, shared=False)  # separately held components
    res["build_s"] = round(time.perf_counter() - t0, 2)
    pipes = {"naive": FusionPipeline(g, e, dedupe=False, channels_last=device.type == "cuda")}
    g2, e2 = rewrap(g), rewrap(e)
    pipes["project"] = FusionPipeline(g2, e2, compile=args.compile)
    res["shared_components"] = pipes["project"].shared_components
    print(f"  built in {res['build_s']} s; project pipeline shares {res['shared_components']}", flush=True)

    if args.requests:
        res["requests"], res["bit_equal"] = run_requests(pipes, args.recipes, args, device)
        res["saliency_capture"] = capture_cost(res["requests"])

    if args.components:
        print("component timings...", flush=True)
        res["components"] = component_times(g2, args, device)
        c = res["components"]
        u = c[f"unet_b{2 * args.n_samples}"]
        res["snb_overhead"] = dict(snb_s=c["snb_blend"], unet_call_s=u,
                                   fraction_of_unet_call=round(c["snb_blend"] / u, 6),
                                   sampler_fraction=round((c["snb_blend"] + 3 * c["ddim_step"]) / u, 6))
        res["modelled"] = modelled_ratios(c, res["counts_50"] + res["counts_bench_steps"], args.n_samples)
    del pipes, g, e, g2, e2
    gc.collect()

    if args.memory:
        print("memory for two models (fresh subprocesses)...", flush=True)
        dt_name = str(dtype).replace("torch.", "")
        res["memory"] = {"separate": memory_in_subprocess(args.size, False, str(device), dt_name),
                         "shared": memory_in_subprocess(args.size, True, str(device), dt_name)}
    if args.cold_warm:
        print("cold/warm latency (toy models from disk)...", flush=True)
        res["cold_warm"] = cold_warm(args, device, dtype)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    Path(args.md or out.with_suffix(".md")).write_text(md)
    print()
    print(md)
    return res


if __name__ == "__main__":
    main()
