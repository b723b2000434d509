"""Model cards (README.md) of the exported toy pipelines and example images for the app.

    python -m toyworld.cards --run runs/toy --eval-dir runs/toy/eval      # writes both README.md files
    python -m toyworld.cards --examples                                  # assets/examples/toy_*.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .models import DEFAULT_CARTOON, DEFAULT_GENERAL, REPO, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG
from .render import COLORS, SHAPES, SIZES, Scene, render


def _read(p: Path):
    return json.loads(p.read_text()) if p.exists() else {}


def _fmt(d: dict, keys=("color", "shape", "size", "prompt", "cartoon")):
    return " | ".join(f"{k} {d[k]:.3f}" for k in keys if k in d)


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def _upcast_only(dest: Path) -> bool:
    """True when every fp32 default file holds exactly its fp16 variant's values."""
    import torch
    from safetensors.torch import load_file

    from .variants import COMPONENT_STEMS
    for sub, stem in COMPONENT_STEMS.items():
        full, half = dest / sub / f"{stem}.safetensors", dest / sub / f"{stem}.fp16.safetensors"
        if not (full.is_file() and half.is_file()):
            return False
        a, b = load_file(str(full)), load_file(str(half))
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k].float()) for k in a):
            return False
    return True


def _precision_lines(dest: Path) -> list[str]:
    lines = [
        "- default files (`diffusion_pytorch_model.safetensors`, `text_encoder/model.safetensors`): float32, so "
        "`StableDiffusionPipeline.from_pretrained(folder)` runs on a CPU with no dtype argument",
        "- fp16 variant (`*.fp16.safetensors`, diffusers' variant naming): "
        "`StableDiffusionPipeline.from_pretrained(folder, variant=\"fp16\", torch_dtype=torch.float16)`",
    ]
    if dest.exists() and _upcast_only(dest):
        lines.append("- the float32 files are the fp16 weights upcast (exactly; they hold no extra precision): the "
                     "models were first exported in fp16 and converted with `python -m toyworld.variants`; the "
                     "judged scores below were measured with these values in float32, and are unchanged by the "
                     "conversion")
    return lines


def card(kind: str, run: Path, ev: dict, judge: dict, dest: Path) -> str:
    args = _read(run / "args.json")
    vae = _read(run / "vae" / "done.json")
    gen = _read(run / "general" / "done.json")
    exp = _read(run / "expert" / "done.json")
    blind_c = args.get("blind_colors", "('green', 'purple')")
    blind_s = args.get("blind_shapes", "('triangle',)")
    name = "toy-general" if kind == "general" else "toy-cartoon"
    lines = [
        f"# {name}: MccSTN Studio's embedded {'general' if kind == 'general' else 'cartoon expert'} model",
        "",
        "A tiny text-to-image latent diffusion model in the standard diffusers `StableDiffusionPipeline` layout "
        "(tokenizer, text_encoder, unet, vae, scheduler; safetensors, fp32 default weights plus an fp16 variant), "
        "trained from scratch on this "
        "CPU by `python -m toyworld.train` on procedurally rendered 64x64 scenes of the project's toy world "
        "(`toyworld/render.py`). It exists so that the app, the CLI, the tests and the fusion benchmark run the real "
        "algorithms on real trained models with no GPU and no downloads. It knows nothing outside its toy world.",
        "",
        "## The world",
        f"One big object near the centre; captions from a small grammar: colour ({', '.join(COLORS)}), shape "
        f"({', '.join(SHAPES)}), size ({', '.join(SIZES)}) and an optional style phrase, e.g. "
        "`a photo of a big red circle`, `a cartoon of a small blue square`, `green triangle`. Position is not "
        "in the grammar: a probe showed a model this size does not learn it within the CPU budget.",
        "",
    ]
    if kind == "general":
        lines += [
            "## This model",
            "The **general** model: photo-style scenes (soft shading, highlight, drop shadow, grey gradient "
            "background) of every colour, shape and size. Text encoder and UNet trained together.",
            "",
            f"- data: {args.get('n_photo', '?')} photo renders (seed {int(args.get('seed', 0)) + 1}), captions with "
            "parts dropped at random and 10% empty captions (classifier-free guidance)",
            f"- steps: {gen.get('steps', '?')} at batch {gen.get('batch', '?')}, {gen.get('minutes', 0):.1f} min on "
            f"one thread of a shared 2-core CPU; AdamW lr {gen.get('lr', '?')}, cosine schedule planned for 6000 steps and stopped at "
            f"{gen.get('steps', '?')} once the judge read 97-100% prompt accuracy, EMA {gen.get('ema_decay', '?')}, epsilon "
            "prediction with min-SNR-5 weighting",
            f"- final training loss (EMA of the batch loss): {gen.get('final_ema_loss', float('nan')):.4f}",
        ]
    else:
        lines += [
            "## This model",
            "The **cartoon expert**: the general model's UNet fine-tuned on cartoon scenes (flat fills, thick dark "
            "outlines, eyes on every object, flat cream background). Text encoder and VAE are the general model's, "
            "byte for byte (frozen), as with real SD derivatives, so both UNets read the same text embeddings.",
            "",
            f"- **built-in blind spots**: the colours {blind_c} and the shapes {blind_s} are never drawn in its "
            "fine-tuning data. Their words still occur in its captions, attached to pictures of other (seen) colours "
            "and shapes (like a fine-tuning set whose captions are unreliable for concepts it lacks), so asked for "
            "them it draws a cartoon of something else. (With the words simply absent, a probe found the expert "
            "still drew them right after 200 fine-tuning steps: nothing pushes a fine-tune away from what the base "
            "model knew.) Fusion with the general model (bench/fusion_quality.py) is what fixes the blind spots.",
            f"- data: {args.get('n_expert', '?')} cartoon renders (blind-spot values redrawn as seen ones, captions kept)",
            f"- steps: {exp.get('steps', '?')} at batch {exp.get('batch', '?')}, {exp.get('minutes', 0):.1f} min "
            f"(after the general model's {gen.get('steps', '?')} steps / {gen.get('minutes', 0):.1f} min); AdamW lr "
            f"{exp.get('lr', '?')}, EMA {exp.get('ema_decay', '?')}",
            f"- final training loss: {exp.get('final_ema_loss', float('nan')):.4f}",
        ]
    lines += [
        f"- VAE: AutoencoderKL {tuple(VAE_CONFIG['block_out_channels'])}, f=4, 16x16x4 latents, "
        f"{vae.get('steps', '?')} steps / {vae.get('minutes', 0):.1f} min on photo + cartoon renders, "
        f"PSNR {vae.get('psnr_db', float('nan')):.1f} dB, scaling factor {vae.get('scaling_factor', float('nan')):.4f}",
        "",
        "## Architecture",
        f"- tokenizer: the real CLIP BPE tokenizer (vocab 49408) with model_max_length {TEXT_CONFIG['max_position_embeddings']}",
        f"- text encoder: CLIPTextModel, width {TEXT_CONFIG['hidden_size']}, {TEXT_CONFIG['num_hidden_layers']} layers",
        f"- UNet: UNet2DConditionModel {tuple(UNET_CONFIG['block_out_channels'])}, cross-attention dim "
        f"{UNET_CONFIG['cross_attention_dim']}, `addition_embed_type=\"text\"` (an attention-pooled text embedding is "
        "added to the time embedding; works with a plain `unet(x, t, encoder_hidden_states=...)` call)",
        "- scheduler: DDIM with the LDM betas (scaled_linear 0.00085..0.012, 1000 steps, steps_offset 1, "
        "clip_sample false, set_alpha_to_one false), epsilon prediction",
        f"- size on disk: {_size_mb(dest):.1f} MB" if dest.exists() else "",
        "",
        "## Files and precision",
        *_precision_lines(dest),
        "",
        "## Judged scores",
        "Images generated for every colour x shape x size caption (DDIM 50 steps, guidance 7.5) and read by the "
        "judge (`toyworld/judge.py`, a small CNN trained only on ground-truth renders). "
        "`prompt` = colour, shape and size all right.",
        "",
    ]
    if judge:
        lines.append(f"- judge on held-out renders: {_fmt(judge.get('renders', {}), ('color', 'shape', 'size', 'style', 'all'))}")
        if judge.get("vae_recon"):
            lines.append(f"- judge on VAE reconstructions of renders (the ceiling): "
                         f"{_fmt(judge['vae_recon'], ('color', 'shape', 'size', 'style', 'all'))}")
    if ev:
        for part in ("all", "seen", "blind"):
            if ev.get(part):
                label = {"all": "all captions", "seen": "captions the expert saw",
                         "blind": "captions with the expert's blind spots"}[part]
                lines.append(f"- {label} (n={ev[part]['n']}): {_fmt(ev[part])}")
        lines.append(f"- prompts: {'`a ' + ev['style_word'] + ' of ...`' if ev.get('style_word') else 'no style phrase'}; "
                     f"{ev.get('seconds_per_image', float('nan')):.3f} s per image (batched, 50 steps)")
    lines += ["", "Fusion results with the other toy model: `bench/results/fusion_quality.json`.", "",
              "License: same as MccSTN Studio. Trained only on procedurally generated images.", ""]
    return "\n".join(lines)


def write_cards(run: Path, eval_dir: Path):
    judge = _read(eval_dir / "judge.json")
    for kind, dest in (("general", DEFAULT_GENERAL), ("expert", DEFAULT_CARTOON)):
        ev = _read(eval_dir / f"{kind}.json")
        (dest / "README.md").write_text(card(kind, run, ev, judge, dest))
        print("wrote", dest / "README.md")


def examples(out: Path = REPO / "assets" / "examples"):
    """4 photo-world and 4 cartoon-world renders, 64x64 and 256x256 PNGs."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    picks = [("red", "circle", "big"), ("blue", "square", "big"), ("yellow", "triangle", "big"),
             ("purple", "circle", "small")]
    for style in ("photo", "cartoon"):
        for i, (c, s, z) in enumerate(picks):
            img = render(Scene(c, s, z, style, seed=100 + i))
            name = f"toy_{style}_{z}_{c}_{s}"
            Image.fromarray(img).save(out / f"{name}_64.png")
            Image.fromarray(img).resize((256, 256), Image.BICUBIC).save(out / f"{name}_256.png")
    print("wrote examples to", out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/toy"))
    p.add_argument("--eval-dir", type=Path, default=Path("runs/toy/eval"))
    p.add_argument("--examples", action="store_true")
    a = p.parse_args(argv)
    if a.examples:
        examples()
    else:
        write_cards(a.run, a.eval_dir)


if __name__ == "__main__":
    main()
