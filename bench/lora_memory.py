"""Memory and speed of a LoRA expert: two full models vs one base model + its LoRA.

    python bench/lora_memory.py      # toy: toy-general + toy-cartoon vs toy-general + toy-cartoon-lora
    python bench/lora_memory.py --sd1           # also SD 1.x-size random-weight models (memory only)

Memory: each way is loaded in a fresh child process (RSS never shrinks back, so one process
cannot measure both); reported are the resident set after the imports, after loading and after
one request (``VmRSS`` from /proc/self/status), and the bytes of the distinct parameters held.
Speed: both ways loaded side by side in one process, requests alternated, median seconds per
request (general + expert + fused images, one seed).

SD 1.x size (``--sd1``): random weights at real scale (bench/random_models.py) in fp16 to keep it
cheap on this machine: two UNets + one VAE/text encoder (a fine-tune sharing them) vs one set +
a rank-16 kohya-layout LoRA on every attention projection (written to a temp file, loaded like a
user's file). Memory only: a request at 512 px takes minutes on this CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = REPO / "bench" / "results"
from fusion.paths import TOY_EXPERT as TOY_CARTOON  # noqa: E402
from fusion.paths import TOY_GENERAL, TOY_LORA  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _settings(steps: int):
    from fusion.pipeline import FusionSettings
    return FusionSettings(steps=steps, n_samples=1, fusion_selection="500,1,3", mode=2, primary="expert",
                          guidance_scale=7.5, capture_saliency=False)


def toy_pipe(way: str):
    import torch
    from fusion.lora import LoraSettings
    from fusion.pipeline import FusionPipeline
    if way == "full":
        return FusionPipeline.from_paths(TOY_GENERAL, TOY_CARTOON, device="cpu", dtype=torch.float32)
    return FusionPipeline.from_paths(TOY_GENERAL, TOY_GENERAL, device="cpu", dtype=torch.float32,
                                     lora=LoraSettings(lora1=str(TOY_LORA)))


def sd1_models(way: str):
    import torch
    from bench.random_models import SCHEDULER_CONFIG, _tokenizer, build_sd1_components, make_pair
    from fusion.loading import DiffusionModel
    from fusion.lora import apply_lora, view
    if way == "full":  # the expert holds the general's VAE and text encoder (what dedupe ends with)
        return make_pair("sd1", dtype=torch.float16, shared=True)
    c = build_sd1_components(0, "cpu", torch.float16)
    base = DiffusionModel(name="sd1-random", source="random:sd1:0", unet=c["unet"], vae=c["vae"],
                          text_encoder=c["text_encoder"], tokenizer=_tokenizer("sd1"),
                          scheduler_config=dict(SCHEDULER_CONFIG))
    path = Path(tempfile.mkdtemp()) / "sd1_rank16.safetensors"
    _write_kohya_attention_lora(c["unet"], path, rank=16)
    out = view(base, unet_adapter=None, loras=()), apply_lora(base, path, 1.0)
    out[1].lora_file_mb = path.stat().st_size / 2 ** 20
    return out


def _write_kohya_attention_lora(unet, path: Path, rank: int):
    """kohya naming (lora_unet_<module path, '.' -> '_'>.lora_down/lora_up/alpha) on every
    attention projection, fp16 random weights."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, m in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                          "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")):
            k = "lora_unet_" + name.replace(".", "_")
            sd[f"{k}.lora_down.weight"] = (torch.randn(rank, m.in_features, generator=g) * 0.01).half()
            sd[f"{k}.lora_up.weight"] = (torch.randn(m.out_features, rank, generator=g) * 0.01).half()
            sd[f"{k}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(path))
    return path


def child(size: str, way: str) -> dict:
    import torch
    torch.set_num_threads(1)
    from fusion.pipeline import FusionPipeline  # noqa: F401  (imports counted in the baseline)
    from studio.cache import model_bytes
    r0 = rss_mb()
    t0 = time.perf_counter()
    if size == "toy":
        pipe = toy_pipe(way)
        m0, m1 = pipe.model0, pipe.model1
    else:
        from fusion.pipeline import FusionPipeline as FP
        m0, m1 = sd1_models(way)
        pipe = FP(m0, m1, dedupe=False)
    load_s = time.perf_counter() - t0
    r1 = rss_mb()
    out = dict(size=size, way=way, rss_after_imports_mb=r0, rss_after_load_mb=r1, load_mb=r1 - r0,
               load_seconds=load_s, param_mb=model_bytes([m0, m1]) / 2 ** 20,
               unets=len({id(m0.unet), id(m1.unet)}), text_encoders=len({id(m0.text_encoder), id(m1.text_encoder)}))
    out["lora_file_mb"] = getattr(m1, "lora_file_mb", None) or (
        TOY_LORA.stat().st_size / 2 ** 20 if size == "toy" and way == "lora" else None)
    if size == "toy":
        pipe("a cartoon of a big green triangle", "a photo of a big green triangle", settings=_settings(50))
        out["rss_after_request_mb"] = rss_mb()
    return out


def run_child(size: str, way: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", size, way], capture_output=True, text=True,
                         timeout=1800, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"child {size}/{way} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed(repeats: int, steps: int) -> dict:
    import torch
    torch.set_num_threads(1)
    pipes = {w: toy_pipe(w) for w in ("full", "lora")}
    s = _settings(steps)
    times = {w: [] for w in pipes}
    for w, p in pipes.items():  # warm-up
        p("a cartoon of a big green triangle", "a photo of a big green triangle", settings=s)
    for _ in range(repeats):
        for w, p in pipes.items():
            t0 = time.perf_counter()
            p("a cartoon of a big green triangle", "a photo of a big green triangle", settings=s)
            times[w].append(time.perf_counter() - t0)
    med = {w: statistics.median(v) for w, v in times.items()}
    return dict(steps=steps, repeats=repeats, seconds_per_request=med, all_seconds=times,
                lora_over_full=med["lora"] / med["full"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sd1", action="store_true", help="also SD 1.x-size random models (memory only)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--speed-only", action="store_true",
                   help="rerun the timing only; the memory rows come from the last bench/results/lora_memory.json")
    p.add_argument("--child", nargs=2, metavar=("SIZE", "WAY"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return
    if a.speed_only:
        rows = json.loads((RESULTS / "lora_memory.json").read_text())["rows"]
    else:
        rows = [run_child("toy", w) for w in ("full", "lora")]
        if a.sd1:
            rows += [run_child("sd1", w) for w in ("full", "lora")]
    sp = speed(a.repeats, a.steps)
    lines = ["| models | way | UNets held | text encoders | parameters (MB) | RSS growth on load (MB) | load (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {'two full models' if r['way'] == 'full' else 'base + LoRA'} | {r['unets']} | "
                     f"{r['text_encoders']} | {r['param_mb']:.1f} | {r['load_mb']:.0f} | {r['load_seconds']:.1f} |")
    sec = sp["seconds_per_request"]
    lines.append(f"\nToy s/request ({sp['steps']} steps, general + expert + fused, median of {sp['repeats']}, "
                 f"alternated in one process, 1 thread): two full models {sec['full']:.3f} s, base + LoRA "
                 f"{sec['lora']:.3f} s (ratio {sp['lora_over_full']:.2f})")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora_memory.json").write_text(json.dumps(dict(
        rows=rows, speed=sp, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        load=os.getloadavg()), indent=2))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "lora_memory.md").write_text(f"{text}\n\nMeasured {stamp}, load average {os.getloadavg()[0]:.1f} "
                                            f"on 2 cores (other jobs running: timings are under load).\n")


if __name__ == "__main__":
    main()
