"""Issue 16 probes: what one outside user can do to the app, measured against a launched app.

    python bench/hardening.py --label after            # this checkout
    STUDIO_ROOT=/path/to/old/checkout python bench/hardening.py --label before

Launches the app in this process (loopback, embedded toy models, CPU, one work slot), drives it
with gradio_client and raw HTTP, and prints one line per probe (seconds, MB of this process's
resident memory, error length). Uses only what every version of the app has (build_app, launch,
StudioConfig), so the same script measures the code before and after the fixes. Results go to
bench/results/hardening/<label>.json. Every probe has a time limit; a probe that runs past it
is reported as such (and cancelled).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hardening"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024


def fuse_args(**kw):
    from studio.models import TOY_EXPERT, TOY_GENERAL
    base = dict(general=str(TOY_GENERAL), expert=str(TOY_EXPERT), prompt="a red circle", prompt1="a red circle",
                seed=3, steps=10, height=64, width=64, fusion_selection="600,1,1", mode=2)
    return {**base, **kw}


def timed(job, limit):
    """(seconds, outcome text) of a submitted job, cancelled past ``limit`` seconds."""
    t0 = time.perf_counter()
    try:
        out = job.result(timeout=limit)
        text = "ok: " + str(out[-1] if isinstance(out, (list, tuple)) else out)[:80]
    except TimeoutError:
        job.cancel()
        text = f"still running after {limit} s"
    except Exception as e:  # noqa: BLE001 - the app's error is the outcome
        text = "error: " + str(e)
    return time.perf_counter() - t0, text


def probe_regex(client):
    out = {}
    for digits in (100, 140):
        text = ("1" * digits + ",") * 3
        s, msg = timed(client.submit(text, api_name="/sliders_from_selection"), 120)
        out[f"selection_{len(text)}_chars_s"] = round(s, 4)
        out[f"selection_{len(text)}_chars_error_chars"] = len(msg)
    return out


def probe_sessions(client_cls, url):
    alice, bob = client_cls(url, verbose=False), client_cls(url, verbose=False)
    job = alice.submit(api_name="/fuse_stream", **fuse_args(steps=100, fusion_selection="1000,1,1", mode=1))
    t0 = time.time()
    while not job.outputs() and time.time() - t0 < 120:
        time.sleep(0.05)
    stop = bob.predict(api_name="/stop")
    _, outcome = timed(job, 300)
    return {"other_users_stop": stop, "first_users_run": outcome[:60]}


def probe_layers(client, images):
    rss = rss_mb()
    job = client.submit(str_file(images["small"]), str_file(images["small"]), "injection",
                        injection_layers="0-10000000", injection_steps=5, api_name="/stylize")
    s, msg = timed(job, 300)
    return {"layers_s": round(s, 3), "layers_error_chars": len(msg), "layers_rss_delta_mb": round(rss_mb() - rss, 1)}


def probe_png_bomb(client, images):
    gc.collect()
    rss = rss_mb()
    job = client.submit(str_file(images["bomb"]), str_file(images["small"]), "injection", injection_steps=5,
                        api_name="/stylize")
    s, msg = timed(job, 300)
    gc.collect()
    return {"png_9000_s": round(s, 3), "png_9000_outcome": msg[:100], "png_9000_rss_delta_mb": round(rss_mb() - rss, 1)}


def probe_size(client):
    s, msg = timed(client.submit(api_name="/fuse", **fuse_args(height=2048, width=2048, steps=1)), 20)
    return {"size_2048_s": round(s, 3), "size_2048_outcome": msg[:100]}


def probe_stop(client, demo, repeats=3):
    """Seconds from sending /stop to the work slot being free, in a 200-step 128-px run (median
    of ``repeats``), and how long the /stop call itself took."""
    total, call = [], []
    for k in range(repeats):
        job = client.submit(api_name="/fuse_stream", **fuse_args(steps=200, height=128, width=128, seed=k,
                                                                 fusion_selection="1000,1,1", mode=1))
        t0 = time.time()
        while not job.outputs() and time.time() - t0 < 120:
            time.sleep(0.02)
        time.sleep(0.5)
        t0 = time.perf_counter()
        client.predict(api_name="/stop")
        call.append(time.perf_counter() - t0)
        while demo.studio.slots.busy and time.perf_counter() - t0 < 60:
            time.sleep(0.002)
        total.append(time.perf_counter() - t0)
        timed(job, 60)
    return {"stop_200_steps_128px_s": round(sorted(total)[repeats // 2], 3),
            "stop_call_s": round(sorted(call)[repeats // 2], 3)}


def probe_stop_library(size=128, steps=200):
    """Seconds from a Stop that arrives as a UNet call starts (step 4's first of 4) to the pipeline raising
    Cancelled (toy models, all three trajectories, SNB on every step)."""
    import threading

    from fusion.pipeline import FusionPipeline, FusionSettings
    from fusion.sampler import Cancelled
    from studio.models import TOY_EXPERT, TOY_GENERAL
    pipe = FusionPipeline.from_paths(str(TOY_GENERAL), str(TOY_EXPERT), device="cpu")
    stop, seen, calls = threading.Event(), {}, [0]

    def pre(module, args):
        calls[0] += 1
        if calls[0] == 16 and not stop.is_set():  # the 16th UNet call: step 4's first (step 0 makes 3, later steps 4)
            seen["t"] = time.perf_counter()
            stop.set()

    hooks = [m.unet.register_forward_pre_hook(pre) for m in (pipe.model0, pipe.model1)]
    s = FusionSettings(steps=steps, n_samples=1, height=size, width=size, mode=1, fusion_selection="1000,1,1")
    try:
        pipe("a red circle", "a red circle", s, seeds=[1], cancel=stop)
    except Cancelled:
        pass
    for h in hooks:
        h.remove()
    return {f"stop_library_{size}px_s": round(time.perf_counter() - seen["t"], 3),
            "stop_library_unet_calls_after_stop": calls[0] - 16}


def probe_nan(url):
    import httpx
    from gradio_client import Client
    a = {**fuse_args(), "seed": float("nan"), "guidance": 5.0}
    params = Client(url, verbose=False).view_api(print_info=False, return_format="dict")[
        "named_endpoints"]["/fuse"]["parameters"]
    data = [a.get(p["parameter_name"], p.get("parameter_default")) for p in params]
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("gradio_api/call/fuse", content=json.dumps({"data": data}),
                      headers={"content-type": "application/json"})
        events = http.get(f"gradio_api/call/fuse/{r.json()['event_id']}").text
    return {"nan_seed_reply": events.strip().splitlines()[-1][:120]}


def probe_burst(client, images, n):
    """RSS after warm-up, after a burst of large requests, and after it settles."""
    client.predict(api_name="/fuse", **fuse_args())
    client.predict(str_file(images["small"]), str_file(images["small"]), "injection", injection_steps=5,
                   api_name="/stylize")
    gc.collect()
    time.sleep(1)
    base = rss_mb()
    peak = base
    for k in range(n):
        client.predict(api_name="/fuse", **fuse_args(height=128, width=128, steps=20, seed=k))
        peak = max(peak, rss_mb())
        client.predict(str_file(images["large"]), str_file(images["large"]), "injection", injection_steps=5,
                       injection_resolution=256, api_name="/stylize")
        peak = max(peak, rss_mb())
    gc.collect()
    time.sleep(2)
    after = rss_mb()
    return {"burst_requests": 2 * n, "rss_warm_mb": round(base, 1), "rss_peak_mb": round(peak, 1),
            "rss_after_mb": round(after, 1), "rss_after_vs_warm_pct": round(100 * (after - base) / base, 1)}


def str_file(path):
    from gradio_client import handle_file
    return handle_file(str(path))


def make_images(folder: Path) -> dict:
    from PIL import Image
    out = {"bomb": folder / "bomb.png", "small": folder / "small.png", "large": folder / "large.png"}
    Image.new("1", (9000, 9000)).save(out["bomb"])  # 81 MP: 243 MB once decoded to RGB
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out["small"])
    Image.effect_noise((2048, 2048), 40).convert("RGB").save(out["large"])  # 4.2 MP, allowed
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="after")
    p.add_argument("--burst", type=int, default=4, help="large fusion + style requests in the burst")
    p.add_argument("--wait", type=float, default=120, help="seconds to wait for a cancelled probe's work")
    p.add_argument("--skip", nargs="*", default=[], help="probes to skip (regex sessions layers png size stop nan burst)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, os.environ.get("STUDIO_ROOT", str(Path(__file__).resolve().parent.parent)))
    import app as studio_app
    from gradio_client import Client
    from studio.config import StudioConfig
    cfg = StudioConfig(port=None, device="cpu", threads=1, memory_budget_gb=4.0, concurrency=1)
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    results = {"label": a.label, "python": sys.version.split()[0], "rss_start_mb": round(rss_mb(), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp))
        probes = [("burst", lambda: probe_burst(client, images, a.burst)), ("regex", lambda: probe_regex(client)),
                  ("sessions", lambda: probe_sessions(Client, url)), ("layers", lambda: probe_layers(client, images)),
                  ("png", lambda: probe_png_bomb(client, images)), ("stop", lambda: probe_stop(client, demo)),
                  ("stop_library", probe_stop_library),
                  ("nan", lambda: probe_nan(url)), ("size", lambda: probe_size(client))]
        probes = [(n, f) for n, f in probes if n not in a.skip]
        for k, (name, fn) in enumerate(probes):
            r = fn()
            results.update(r)
            print(name, json.dumps(r), flush=True)
            t0 = time.time()
            while k + 1 < len(probes) and demo.studio.slots.busy and time.time() - t0 < a.wait:
                time.sleep(0.1)  # a probe left running (cancelled) ends before the next starts
            if demo.studio.slots.busy:
                results[f"{name}_work_left_running"] = True
    demo.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.label}.json").write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.flush()
    os._exit(0)  # a cancelled probe's worker thread (old code) may still be running


if __name__ == "__main__":
    sys.exit(main())
