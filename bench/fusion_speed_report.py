"""The Markdown report and the saliency-capture cost of bench/fusion_speed.py's results."""
from __future__ import annotations

import statistics

__all__ = ["capture_cost", "markdown"]


def capture_cost(requests: list[dict]) -> dict:
    """Per recipe: seconds with saliency capture over seconds without (the defaults otherwise)."""
    rows = {(r["recipe"], r["schedule"]): r for r in requests}
    out = {}
    for (recipe, sched), on in rows.items():
        off = rows.get((recipe, "project_batch_nocapture"))
        if sched == "project_batch" and off:
            paired = sorted(a / b for a, b in zip(on["all_seconds"], off["all_seconds"]))
            out[recipe] = dict(ratio=round(on["s_per_request"] / off["s_per_request"], 4),
                               paired_median=round(statistics.median(paired), 4))
    return out


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [f"### fusion_speed: size={a['size']}, {a['H']}x{a['W']}, {a['steps']} steps, n_samples={a['n_samples']}, "
             f"device={res['env']['device']}, dtype={res['env']['dtype']}", ""]
    if res.get("requests"):
        lines += ["| recipe | schedule | UNet calls | s/request | s/step | UNet s | s/UNet call | other s | "
                  "peak RSS MB | ratio | speed-normalised ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["requests"]:
            lines.append(f"| {r['recipe']} | {r['schedule']} | {r['unet_calls']} | {r['s_per_request']} | "
                         f"{r['s_per_step']} | {r['unet_s_per_request']} | {r['s_per_unet_call']} | "
                         f"{r['other_s_per_request']} | {r['peak_rss_mb']} | {r.get('ratio', '')} | "
                         f"{r.get('normalised_ratio', '')} |")
        lines.append("")
        lines.append("(peak RSS: the whole process, which holds both schedules' models; see 'Holding two models')")
        lines.append("")
        cap = capture_cost(res["requests"])
        if cap:
            lines.append("Saliency capture (defaults with capture on / off, same requests interleaved): " + "; ".join(
                f"{k}: {v['ratio']} (paired median {v['paired_median']})" for k, v in cap.items()))
            lines.append("")
        lines.append("Against naive (final latents bit-equal / images bit-equal / max |diff| / 8-bit images equal): " +
                     "; ".join(f"{k}: {v['latents_bit_equal']} / {v['images_bit_equal']} / "
                               f"{v['images_max_abs_diff']:.1e} / {v['uint8_equal']}" for k, v in res["bit_equal"].items()))
        lines.append("")
    if res.get("counts_50"):
        lines += [f"UNet calls per request at {res['counts_50'][0]['steps']} steps (exact):", "",
                  "| recipe | prompt == prompt1 | naive | project | ratio | project_batch calls |", "|---|---|---|---|---|---|"]
        for c in res["counts_50"]:
            lines.append(f"| {c['recipe']} | {c['same_prompt']} | {c['naive']} | {c['project']} | {c['ratio']} | "
                         f"{c['project_batch']} |")
        lines.append("")
    if res.get("components"):
        c = res["components"]
        lines.append("Component times (s): " + ", ".join(f"{k} {v}" for k, v in c.items()))
        lines.append("")
    if res.get("snb_overhead"):
        o = res["snb_overhead"]
        lines.append(f"SNB blend per step: {o['snb_s']:.5f} s = {100 * o['fraction_of_unet_call']:.3f}% of one UNet call "
                     f"({o['unet_call_s']:.3f} s); SNB+3 DDIM updates: {100 * o['sampler_fraction']:.3f}%")
        lines.append("")
    if res.get("modelled"):
        lines += ["Modelled s/request from exact counts x measured component times:", "",
                  "| recipe | steps | prompt == prompt1 | naive s | project s | time ratio | call ratio | "
                  "project_batch s | batch time ratio |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in res["modelled"]:
            lines.append(f"| {m['recipe']} | {m['steps']} | {m['same_prompt']} | {m['naive_s']} | {m['project_s']} | "
                         f"{m['ratio']} | {m['call_ratio']} | {m.get('project_batch_s', '')} | {m.get('ratio_batch', '')} |")
        lines.append("")
    if res.get("memory"):
        m = res["memory"]
        lines.append(f"Holding two models: separate components {m['separate']}, shared VAE+text encoder {m['shared']}")
        lines.append("")
    if res.get("cold_warm"):
        c = res["cold_warm"]
        lines.append(f"Cold/warm ({c['models']}, {c['steps']} steps): load {c['load_s']} s, first request (incl. load) "
                     f"{c['cold_first_request_s']} s, warm request {c['warm_request_s']} s")
    return "\n".join(lines) + "\n"
