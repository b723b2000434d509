"""Command line matching the reference test script (AesUST / MccSTN ``test.py``).

    python -m mccstn --content C.jpg --style S.jpg --output outputs --alpha 1.0
    python -m mccstn --content_dir photos/ --style_dir paintings/ --preserve_color
    python -m mccstn --content C.jpg --style a.jpg,b.jpg --style_interpolation_weights 1,3

Outputs are named ``{content}_stylized_{style}{save_ext}`` (``{content}_interpolation{save_ext}``
for style interpolation), as in the reference. Differences, on purpose: weights come from one
folder (``--weights``, the four .pth files or ``mccstn.safetensors``) unless all four of
``--vgg --decoder --transform --discriminator`` are given; only image files are taken from the
folders; existing outputs are never overwritten without ``--overwrite`` (checked before any
work starts); ``--content_size``/``--style_size`` resize the *short* side like torchvision's
``Resize(int)``; the saved image is the 8-aligned network output as in the reference unless
``--crop_to_input``; style images too small for the aesthetic discriminator are enlarged for it
(``--small_images error`` to refuse them instead).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_WEIGHTS = "models/mccstn"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mccstn", description="MccSTN style transfer.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--content", help="content image file")
    ap.add_argument("--content_dir", help="folder of content images (used when --content is not given)")
    ap.add_argument("--style", help="style image file, or several separated by commas for interpolation")
    ap.add_argument("--style_dir", help="folder of style images (used when --style is not given)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS,
                    help="folder with vgg_normalised.pth, decoder.pth, transformer.pth, "
                         "discriminator.pth or mccstn.safetensors (or a .safetensors file)")
    ap.add_argument("--vgg", help="explicit path to vgg_normalised.pth (needs all four paths)")
    ap.add_argument("--decoder", help="explicit path to decoder.pth")
    ap.add_argument("--transform", help="explicit path to transformer.pth")
    ap.add_argument("--discriminator", help="explicit path to discriminator.pth")
    ap.add_argument("--content_size", type=int, default=0,
                    help="resize the content's short side to this (0 keeps the size)")
    ap.add_argument("--style_size", type=int, default=0,
                    help="resize the style's short side to this (0 keeps the size)")
    ap.add_argument("--crop", action="store_true", help="centre-crop to a size x size square after resizing")
    ap.add_argument("--save_ext", default=".jpg", help="output file extension")
    ap.add_argument("--output", default="./outputs", help="output folder")
    ap.add_argument("--preserve_color", action="store_true", help="keep the content's colours")
    ap.add_argument("--alpha", type=float, default=1.0, help="stylisation strength in [0,1]")
    ap.add_argument("--style_interpolation_weights", default="",
                    help="comma-separated weights for several --style images")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ap.add_argument("--crop_to_input", action="store_true",
                    help="crop the 8-aligned output back to the input size")
    ap.add_argument("--small_images", choices=("upsample", "error"), default="upsample",
                    help="images too small for the aesthetic discriminator: enlarge its copy, or fail")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    return ap


def _image_files(folder: str) -> list[Path]:
    from .stylize import IMAGE_EXTENSIONS

    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no image files in {folder}")
    return files


def _prepare(img, size: int, crop: bool):
    from .stylize import center_crop, resize_short_side

    img = resize_short_side(img, size)
    return center_crop(img, size) if crop else img


def run(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import CheckpointError
    from .stylize import MccSTN, load_image, normalise_weights, pil_to_tensor, tensor_to_pil

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0,1], got {args.alpha}")
    if args.crop and (args.content_size <= 0 or args.style_size <= 0):
        raise ValueError("--crop needs --content_size and --style_size > 0 (the square's side)")
    if args.content_size < 0 or args.style_size < 0:
        raise ValueError("--content_size/--style_size must be >= 0")
    ext = args.save_ext if args.save_ext.startswith(".") else "." + args.save_ext
    if ext.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
        raise ValueError(f"unsupported --save_ext {args.save_ext!r}")

    if args.content:
        contents = [Path(args.content)]
        if not contents[0].is_file():
            raise ValueError(f"--content {args.content} not found")
    elif args.content_dir:
        contents = _image_files(args.content_dir)
    else:
        raise ValueError("give --content or --content_dir")
    interp_weights = None
    if args.style:
        styles = [Path(s.strip()) for s in args.style.split(",") if s.strip()]
        for s in styles:
            if not s.is_file():
                raise ValueError(f"--style {s} not found")
        if len(styles) > 1:
            if not args.style_interpolation_weights:
                raise ValueError("several --style images need --style_interpolation_weights")
            try:
                raw = [float(w) for w in args.style_interpolation_weights.split(",")]
            except ValueError:
                raise ValueError("--style_interpolation_weights must be comma-separated numbers") from None
            interp_weights = normalise_weights(raw, len(styles))
    elif args.style_dir:
        styles = _image_files(args.style_dir)
    else:
        raise ValueError("give --style or --style_dir")

    out_dir = Path(args.output)
    jobs = []
    for c in contents:
        if interp_weights is not None:
            jobs.append((c, styles, out_dir / f"{c.stem}_interpolation{ext}"))
        else:
            jobs.extend((c, [s], out_dir / f"{c.stem}_stylized_{s.stem}{ext}") for s in styles)
    names = [j[2] for j in jobs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"two inputs would write the same file {sorted(dupes)[0]} (same file stems)")
    if not args.overwrite:
        clash = [str(n) for n in names if n.exists()]
        if clash:
            raise FileExistsError(f"{clash[0]} exists ({len(clash)} output(s) in all); "
                                  f"pass --overwrite or choose another --output")

    explicit = [args.vgg, args.decoder, args.transform, args.discriminator]
    if any(explicit):
        if not all(explicit):
            raise ValueError("--vgg, --decoder, --transform and --discriminator go together")
        model = MccSTN.from_files(*explicit, device=args.device)
    else:
        model = MccSTN.from_pretrained(args.weights, device=args.device)
    out_dir.mkdir(parents=True, exist_ok=True)

    failed = 0
    for content_path, style_paths, out_path in jobs:
        try:
            c_img = _prepare(load_image(content_path), args.content_size, args.crop)
            s_imgs = [_prepare(load_image(s), args.style_size, args.crop) for s in style_paths]
            c = pil_to_tensor(c_img)
            t0 = time.time()
            if interp_weights is not None:
                out = model.stylize_interpolated(c, [pil_to_tensor(s) for s in s_imgs], interp_weights,
                                                 alpha=args.alpha, preserve_color=args.preserve_color,
                                                 small_images=args.small_images)
            else:
                out = model.stylize(c, pil_to_tensor(s_imgs[0]), alpha=args.alpha,
                                    preserve_color=args.preserve_color, small_images=args.small_images)
            if out.is_cuda:
                torch.cuda.synchronize()
            elapsed = time.time() - t0
            if args.crop_to_input:
                out = out[..., :c_img.height, :c_img.width]
            img = tensor_to_pil(out)
            if ext.lower() in (".jpg", ".jpeg"):
                img.save(out_path, quality=95)
            else:
                img.save(out_path)
            print(f"{out_path}  ({elapsed:.3f} s)")
        except (ValueError, FileNotFoundError, CheckpointError) as exc:
            failed += 1
            print(f"error: {content_path.name} + {', '.join(s.name for s in style_paths)}: {exc}",
                  file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
