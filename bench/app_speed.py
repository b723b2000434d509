"""The app against the library for the same fusion request, side by side in one process.

    python bench/app_speed.py                    # toy models, 50 steps, 1 thread, best of 3
    python bench/app_speed.py --steps 20 --repeat 5 --out bench/results/app_speed.json

One request (the shipped toy models, one prompt pair, one seed; all three images, saliency
capture on, as the app asks) is made these ways, warm, in rounds that alternate the order:

* ``pipeline``: ``FusionPipeline.__call__`` with the settings the app's service builds (the
  library alone);
* ``service``: ``FusionService.run`` (model cache, work slot, worker thread; no previews);
* ``service_stream``: ``FusionService.stream`` as the page's handler consumes it (the decoded
  previews and one progress item per step);
* ``app``: ``/fuse`` through gradio_client with its defaults, against the app launched in this
  process on loopback: Gradio's queue, the handler (no previews), image encoding of the outputs,
  the saliency view's first panels, and the client's download of every output image (a new HTTP
  connection, and SSL context, each);
* ``app_urls``: the same with ``download_files=False`` (the client gets the files' URLs);
* ``app_stream``: ``/fuse_stream`` (the page's Fuse button, streamed previews; what ``/fuse`` was
  before) with gradio_client's defaults, which download every image of every streamed update
  and the last update's images twice (once streamed, once as the result);
* ``browser``: what a browser does: ``/fuse_stream`` with ``download_files=False``, then each
  distinct final image fetched once over one kept-alive connection (the previews' fetches are
  not counted).

Per way: best and median wall seconds, the ratios to ``pipeline`` (medians of the same rounds),
and the files the client downloaded. The machine this runs on may be shared: say so when quoting
the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WAYS = ("pipeline", "service", "service_stream", "app", "app_urls", "app_stream", "browser")


class Probes:
    """Seconds spent, per request, in what the app adds: VAE decodes (``FusionPipeline.decode``:
    the previews' and the final one), Gradio's postprocessing of every streamed update and of the
    result (image encoding, the session's component state), and gradio_client's file downloads.
    Measured inside the calls, so a busy machine's waits between them do not count twice."""

    def __init__(self):
        import gradio.blocks as gb
        import gradio_client.client as gcc

        from fusion.pipeline import FusionPipeline
        self.sec: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo = []
        self._wrap(FusionPipeline, "decode", "decode")
        self._wrap(gcc.Endpoint, "_download_file", "client_download")
        orig = gb.Blocks.postprocess_data
        probes = self

        async def postprocess_data(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return await orig(self, *a, **k)
            finally:
                probes._add("gradio_postprocess", time.perf_counter() - t0)
        gb.Blocks.postprocess_data = postprocess_data
        self._undo.append((gb.Blocks, "postprocess_data", orig))

    def _add(self, key: str, dt: float) -> None:
        self.sec[key] = self.sec.get(key, 0.0) + dt
        self.calls[key] = self.calls.get(key, 0) + 1

    def _wrap(self, cls, name: str, key: str) -> None:
        orig = getattr(cls, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self._add(key, time.perf_counter() - t0)
        setattr(cls, name, timed)
        self._undo.append((cls, name, orig))

    def take(self) -> dict:
        out = {k: dict(s=round(v, 4), calls=self.calls[k]) for k, v in self.sec.items()}
        self.sec, self.calls = {}, {}
        return out

    def close(self) -> None:
        for cls, name, orig in reversed(self._undo):
            setattr(cls, name, orig)


def fuse_args(args) -> dict:
    """/fuse's arguments by API name (the UI's other fields keep their defaults)."""
    from fusion.paths import TOY_EXPERT, TOY_GENERAL
    sel, mode, primary = args.recipe.split(":")
    return dict(general=str(TOY_GENERAL), expert=str(TOY_EXPERT), prompt=args.prompt, prompt1=args.prompt1,
                seed=args.seed, steps=args.steps, guidance=args.guidance, height=args.size, width=args.size,
                fusion_selection=sel, mode=int(mode), primary=primary, sampler="ddim",
                blend="")  # the faithful SNB, as library_call (the app's own default is the demo's blend)


def service_request(a: dict):
    from studio.fusion_service import FuseRequest
    return FuseRequest(general=a["general"], expert=a["expert"], prompt=a["prompt"], prompt1=a["prompt1"],
                       seed=a["seed"], steps=a["steps"], guidance=a["guidance"], height=a["height"],
                       width=a["width"], fusion_selection=a["fusion_selection"], mode=a["mode"],
                       primary=a["primary"], sampler=a["sampler"], blend=a["blend"])


def library_call(demo, a: dict):
    """The library's call for the same request: the app's settings (one sample, saliency capture
    on, the device's batching choice), the same warm models from the app's cache."""
    from fusion.pipeline import FusionSettings
    pipe = demo.studio.cache.pipeline(Path(a["general"]), Path(a["expert"]))
    s = FusionSettings(fusion_selection=a["fusion_selection"], mode=a["mode"], primary=a["primary"],
                       steps=a["steps"], sampler=a["sampler"], guidance_scale=a["guidance"], height=a["height"],
                       width=a["width"], n_samples=1, capture_saliency=True)

    def call():
        return pipe(a["prompt"], a["prompt1"] or a["prompt"], s, seeds=[a["seed"]])
    return call


def file_urls(value) -> list[str]:
    """The distinct file URLs in a ``download_files=False`` result, in order."""
    found: list[str] = []

    def walk(v):
        if isinstance(v, dict):
            if isinstance(v.get("url"), str) and "path" in v:
                found.append(v["url"])
            else:
                for x in v.values():
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
    walk(value)
    return list(dict.fromkeys(found))


def make_ways(demo, url: str, args, probes) -> tuple[dict, dict, list]:
    import httpx
    from gradio_client import Client
    a = fuse_args(args)
    req = service_request(a)
    client = Client(url, verbose=False)
    urls_only = Client(url, verbose=False, download_files=False)
    page = httpx.Client()  # the browser's kept-alive connection
    svc = demo.studio.fusion
    counts = {}

    def stream():
        items = list(svc.stream(req))
        counts["previews_decoded"] = sum(getattr(i, "images", None) is not None for i in items[:-1])
        counts["stream_items"] = len(items)

    def browser():
        out = urls_only.predict(api_name="/fuse_stream", **a)
        for u in file_urls(out):
            t0 = time.perf_counter()
            page.get(u).raise_for_status()
            probes._add("browser_fetch", time.perf_counter() - t0)
    return {"pipeline": library_call(demo, a), "service": lambda: svc.run(req), "service_stream": stream,
            "app": lambda: client.predict(api_name="/fuse", **a),
            "app_urls": lambda: urls_only.predict(api_name="/fuse", **a),
            "app_stream": lambda: client.predict(api_name="/fuse_stream", **a),
            "browser": browser}, counts, [page]


def run(args) -> dict:
    import torch

    import app as studio_app
    from studio.config import StudioConfig
    torch.set_num_threads(args.threads)  # this thread's too (the library way runs here; OpenMP's count is per thread)
    cfg = StudioConfig(port=None, device="cpu", threads=args.threads, preview_every=args.preview_every)
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    try:
        probes = Probes()
        ways, counts, to_close = make_ways(demo, url, args, probes)
        times = {w: [] for w in WAYS}
        cpu = {w: [] for w in WAYS}
        inside = {w: [] for w in WAYS}
        for rnd in range(args.warmup + args.repeat):
            order = list(WAYS) if rnd % 2 == 0 else list(WAYS)[::-1]
            for w in order:
                probes.take()
                t0, c0 = time.perf_counter(), time.process_time()
                ways[w]()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                time.sleep(0.3)  # the client's last bookkeeping after predict returned, if any
                got = probes.take()
                if rnd >= args.warmup:
                    times[w].append(dt)
                    cpu[w].append(dc)
                    inside[w].append(got)
                print(f"  [{'warm-up' if rnd < args.warmup else rnd - args.warmup}] {w}: {dt:.2f} s, "
                      f"{dc:.2f} s CPU", flush=True)
        probes.close()
        for c in to_close:
            c.close()
        best = {w: min(v) for w, v in times.items()}
        best_cpu = {w: min(v) for w, v in cpu.items()}
        res = dict(args=vars(args), url_loopback=url.startswith("http://127.0.0.1"),
                   env=dict(code=str(Path(studio_app.__file__).resolve().parent), torch=torch.__version__,
                            threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                            loadavg=" ".join(f"{x:.1f}" for x in os.getloadavg()),
                            when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())),
                   counts=counts,
                   ways={w: dict(best_s=round(best[w], 3), median_s=round(statistics.median(times[w]), 3),
                                 all_s=[round(x, 3) for x in times[w]],
                                 ratio_best=round(best[w] / best["pipeline"], 4),
                                 ratio_median=round(statistics.median(times[w]) / statistics.median(
                                     times["pipeline"]), 4),
                                 ratio_paired=round(statistics.median(
                                     x / y for x, y in zip(times[w], times["pipeline"])), 4),
                                 best_cpu_s=round(best_cpu[w], 3), cpu_all_s=[round(x, 3) for x in cpu[w]],
                                 cpu_ratio_best=round(best_cpu[w] / best_cpu["pipeline"], 4),
                                 inside=_median_inside(inside[w])) for w in WAYS})
        res["added"] = added_work(res["ways"])
    finally:
        demo.close()
    return res


def _median_inside(rows: list[dict]) -> dict:
    keys = sorted({k for r in rows for k in r})
    return {k: dict(s=round(statistics.median(r.get(k, {}).get("s", 0.0) for r in rows), 4),
                    calls=max(r.get(k, {}).get("calls", 0) for r in rows)) for k in keys}


def added_work(ways: dict) -> dict:
    """What the app adds to the library's request, from the in-call probes (medians), as shares of
    the library's median request: preview decodes (decode seconds beyond the library's own final
    decode), Gradio's postprocessing, the client's downloads (gradio_client's, or the browser
    way's fetches)."""
    lib = ways["pipeline"]
    base, final_decode = lib["median_s"], lib["inside"].get("decode", {}).get("s", 0.0)
    out = {}
    for w in ("service_stream", "app", "app_urls", "app_stream", "browser"):
        ins = ways[w]["inside"]
        parts = dict(preview_decodes=max(ins.get("decode", {}).get("s", 0.0) - final_decode, 0.0),
                     gradio_postprocess=ins.get("gradio_postprocess", {}).get("s", 0.0),
                     client_downloads=ins.get("client_download", {}).get("s", 0.0)
                     + ins.get("browser_fetch", {}).get("s", 0.0))
        out[w] = {k: dict(s=round(v, 4), share=round(v / base, 4)) for k, v in parts.items()}
        out[w]["total_share"] = round(sum(parts.values()) / base, 4)
    return out


def markdown(res: dict) -> str:
    a, e = res["args"], res["env"]
    lines = [f"### app_speed ({a['label']}): toy models, {a['size']}x{a['size']}, {a['steps']} steps, recipe "
             f"{a['recipe']}, {e['threads']} thread(s), best of {a['repeat']} (+{a['warmup']} warm-up), "
             f"load average {e['loadavg']} at the end", "",
             "| way | best s | median s | best / pipeline | median / pipeline | paired median / pipeline | "
             "files downloaded | best CPU s | best CPU / pipeline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for w, r in res["ways"].items():
        files = max(r["inside"].get(k, {}).get("calls", 0) for k in ("client_download", "browser_fetch"))
        lines.append(f"| {w} | {r['best_s']} | {r['median_s']} | {r['ratio_best']} | {r['ratio_median']} | "
                     f"{r['ratio_paired']} | {files} | {r['best_cpu_s']} | {r['cpu_ratio_best']} |")
    lines += ["", "Paired: the median over rounds of (this way's time / the library's time in the same round); "
              "files downloaded: the most in one request (gradio_client's downloads, or the browser way's "
              "fetches over one connection)."]
    lines += ["", "CPU s: this process's CPU seconds (all threads: the app's server and the client too), "
              "which on a shared machine counts the work and not the waits for a core."]
    lines += ["", f"Decoded previews per request: {res['counts'].get('previews_decoded')} "
              f"(items streamed: {res['counts'].get('stream_items')}).", "",
              "What the app adds, measured inside the calls (medians; share of the library's median request):", "",
              "| way | preview decodes | Gradio postprocess | client downloads | total |", "|---|---|---|---|---|"]
    for w, r in res["added"].items():
        cell = lambda k: f"{r[k]['s']} s ({100 * r[k]['share']:.1f}%)"  # noqa: E731
        lines.append(f"| {w} | {cell('preview_decodes')} | {cell('gradio_postprocess')} | "
                     f"{cell('client_downloads')} | {100 * r['total_share']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--recipe", default="600,1,1:2:general", help="v1,kg,ke:mode:primary")
    ap.add_argument("--prompt", default="a cartoon of a big green triangle")
    ap.add_argument("--prompt1", default="a big green triangle")
    ap.add_argument("--seed", type=int, default=6854)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preview-every", dest="preview_every", type=int, default=0,
                    help="the app's --preview-every (0: its default)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "app_speed.json"))
    ap.add_argument("--code", default=None, help="a checkout whose app and libraries are measured (default: this one)")
    args = ap.parse_args(argv)
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve()))
    import torch
    threads = torch.get_num_threads()
    try:
        res = run(args)
    finally:
        torch.set_num_threads(threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
