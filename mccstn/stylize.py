"""MccSTN inference: ``MccSTN.from_pretrained(folder).stylize(content, style)``.

Tensor API (``stylize``, ``stylize_interpolated``, ``reconstruct``) takes float tensors
(N,3,H,W) in [0, 1] and returns the raw decoder output (N,3,H',W') before clamping, with
H' = 8*ceil(H/8), W' = 8*ceil(W/8) — the same numbers as the reference test script
(AesUST / MccSTN ``test.py``; parity checked on CPU float32 to 2e-4).

Image API (``stylize_image``, ``stylize_images``, ``interpolate_images``) takes PIL images or
paths, optionally resizes the long side, and returns PIL images cropped back to the (resized)
content size.

Small images: the encoder needs both sides >= 17 px (reflection padding at relu5_1); the
aesthetic discriminator, which sees the style image (and the content image when alpha < 1),
needs a short side >= 61 px and a long side >= 125 px. ``small_images="error"`` (the tensor
API's default) raises a :class:`ValueError` saying so; ``small_images="upsample"`` (the image
API's default) bilinearly enlarges only the discriminator's copy of the image until it fits —
its aesthetic map is nearest-resized to the style features anyway, so the output keeps the
input size. The reference instead crashes inside instance norm.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from . import checkpoint as ckpt
from .network import (FULL_WIDTHS, AestheticDiscriminator, Decoder, Encoder, StyleFusion, Widths,
                      discriminator_size_problem, encoder_size_problem)

ImageLike = Union[str, os.PathLike, Image.Image]
SMALL_IMAGE_MODES = ("error", "upsample")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


# ----------------------------------------------------------------------------------------------
# image <-> tensor
# ----------------------------------------------------------------------------------------------
def load_image(path: Union[str, os.PathLike], exif_transpose: bool = True) -> Image.Image:
    """Open an image file as RGB; a clear ``ValueError`` for files PIL cannot read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{p}: not a readable image file ({exc})") from exc


def _as_pil(img: ImageLike, what: str) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB") if img.mode != "RGB" else img
    if isinstance(img, (str, os.PathLike)):
        return load_image(img)
    raise TypeError(f"{what}: expected a PIL image or a path, got {type(img).__name__}")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (1,3,H,W) in [0,1] (x/255, like torchvision ToTensor)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(1,3,H,W) or (3,H,W) tensor -> RGB PIL image, clamped to [0,1] and rounded like
    torchvision's ``save_image`` (``x*255 + 0.5`` truncated)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = (x.detach().float().cpu().clamp(0, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")


def resize_long_side(img: Image.Image, long_side: Optional[int]) -> Image.Image:
    """Resize so the longer side is ``long_side`` px (aspect kept; None/0 = unchanged)."""
    if not long_side:
        return img
    if long_side < 1:
        raise ValueError(f"long_side must be positive, got {long_side}")
    w, h = img.size
    s = long_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if size == (w, h):
        return img
    return img.resize(size, Image.BICUBIC)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` px, like torchvision's ``Resize(int)`` on PIL
    images (bilinear; the long side is ``int(size * long / short)``). 0 = unchanged."""
    if not size:
        return img
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return img.resize((nw, nh), Image.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Square centre crop like torchvision's ``CenterCrop(size)`` (pads with black if smaller)."""
    w, h = img.size
    if w < size or h < size:
        canvas = Image.new("RGB", (max(w, size), max(h, size)))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


# ----------------------------------------------------------------------------------------------
# colour preservation
# ----------------------------------------------------------------------------------------------
def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(m)
    return u @ torch.diag(s.sqrt()) @ vh


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Recolour ``source`` (3,H,W) to the colour statistics of ``target`` (3,H',W').

    CORAL as used by AdaIN's colour-preservation option: channel-standardise with the
    unbiased std, whiten with ``(f f^T + I)^(-1/2)`` (no 1/N), colour with the target's
    ``(f f^T + I)^(1/2)`` (matrix square roots by SVD), restore the target's mean and std.
    No clamping. Because the covariances carry no 1/N, images with different pixel counts get
    a std scaled by sqrt(N_target / N_source) — the reference's behaviour, kept for parity.
    Degenerate flat images get a tiny std floor instead of NaNs.
    """
    if source.dim() != 3 or target.dim() != 3 or source.shape[0] != 3 or target.shape[0] != 3:
        raise ValueError("coral expects two (3,H,W) tensors")

    def stats(x):
        f = x.reshape(3, -1)
        mean = f.mean(dim=-1, keepdim=True)
        std = f.std(dim=-1, keepdim=True).clamp_min(1e-8)
        return f, mean, std

    sf, sm, ss = stats(source)
    tf, tm, ts = stats(target)
    eye = torch.eye(3, dtype=source.dtype, device=source.device)
    sn = (sf - sm) / ss
    tn = (tf - tm) / ts
    s_cov = sn @ sn.t() + eye
    t_cov = tn @ tn.t() + eye
    moved = _sqrtm_psd(t_cov) @ (torch.linalg.inv(_sqrtm_psd(s_cov)) @ sn)
    return (moved * ts + tm).view(source.shape)


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MccSTN(nn.Module):
    """The MccSTN style-transfer network (inference side; :mod:`mccstn.train` trains it).

    Components: ``encoder`` (frozen normalised VGG-19), ``discriminator`` (multi-scale
    aesthetic discriminator), ``fusion`` (attention units at relu4_1/relu5_1 + merge conv),
    ``decoder``. Build with :meth:`from_pretrained`; a bare ``MccSTN()`` has random weights.
    """

    def __init__(self, widths: Widths = FULL_WIDTHS) -> None:
        super().__init__()
        widths.check()
        self.widths = widths
        self.encoder = Encoder(widths)
        self.discriminator = AestheticDiscriminator(widths=widths.discriminator)
        self.fusion = StyleFusion(widths.channels)
        self.decoder = Decoder(widths)
        self.source: Optional[str] = None
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    # -- weights ---------------------------------------------------------------------------
    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder,
                "fusion": self.fusion, "discriminator": self.discriminator}

    @classmethod
    def _uninitialised(cls, widths: Widths = FULL_WIDTHS) -> "MccSTN":
        """A model on the meta device: the strict loaders assign every tensor, so the random
        init (and a copy) is skipped."""
        with torch.device("meta"):
            return cls(widths)

    @classmethod
    def from_pretrained(cls, folder: Union[str, os.PathLike], device=None) -> "MccSTN":
        """Load from a folder with the four official ``.pth`` files (``vgg_normalised.pth``,
        ``decoder.pth``, ``transformer.pth``, ``discriminator.pth``) or a ``mccstn.safetensors``
        (preferred when both are there), or from a ``.safetensors`` file path.

        ``device``: None = CUDA if available else CPU. Raises
        :class:`mccstn.checkpoint.CheckpointError` naming the file and key on any mismatch.
        """
        where, parts = ckpt.read_folder(folder)
        model = cls._uninitialised(ckpt.widths_from_official(parts))
        ckpt.load_parts(model.components(), parts, where)
        model.source = where
        model.eval()
        return model.to(_default_device() if device is None else torch.device(device))

    @classmethod
    def from_files(cls, vgg: Union[str, os.PathLike], decoder: Union[str, os.PathLike],
                   transform: Union[str, os.PathLike], discriminator: Union[str, os.PathLike],
                   device=None) -> "MccSTN":
        """Load the four official files from explicit paths (the reference script's
        ``--vgg --decoder --transform --discriminator`` options)."""
        paths = {"encoder": vgg, "decoder": decoder, "fusion": transform, "discriminator": discriminator}
        parts = {comp: ckpt.torch_load_state_dict(p) for comp, p in paths.items()}
        model = cls._uninitialised(ckpt.widths_from_official(parts))
        for comp, path in paths.items():
            ckpt._load_into(model.components()[comp],
                            ckpt.convert_official(comp, parts[comp], model.components()[comp], str(path)))
        model.source = str(Path(decoder).parent)
        model.eval()
        return model.to(_default_device() if device is None else torch.device(device))

    def save_pretrained(self, folder: Union[str, os.PathLike], fmt: str = "both",
                        overwrite: bool = False) -> list[str]:
        """Write the weights: ``fmt`` = "pth" (four official files), "safetensors" or "both"."""
        if fmt not in ("pth", "safetensors", "both"):
            raise ValueError(f"fmt must be 'pth', 'safetensors' or 'both', got {fmt!r}")
        written = []
        if fmt in ("pth", "both"):
            written += ckpt.save_official(self.components(), folder, overwrite=overwrite)
        if fmt in ("safetensors", "both"):
            written.append(ckpt.save_safetensors(self.components(), Path(folder) / ckpt.SAFETENSORS_NAME,
                                                 overwrite=overwrite))
        return written

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    # -- building blocks -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1 .. relu5_1 features of an image batch."""
        return self.encoder(x)

    def aesthetic(self, x: torch.Tensor, small_images: str = "error") -> torch.Tensor:
        """The discriminator's aesthetic feature map of an image batch (see module docs)."""
        problem = discriminator_size_problem(*x.shape[-2:])
        if problem is not None:
            if small_images == "error":
                raise ValueError(f"{problem} (pass small_images='upsample' to enlarge the "
                                 f"discriminator's copy instead)")
            x = _upsample_for_discriminator(x)
        feat, _ = self.discriminator(x)
        return feat

    def fuse(self, content_feats: Sequence[torch.Tensor], style_feats: Sequence[torch.Tensor],
             aesthetic: Optional[torch.Tensor]) -> torch.Tensor:
        """Fusion-module output (the decoder input) from relu4_1 / relu5_1 features."""
        return self.fusion(content_feats[3], style_feats[3], content_feats[4], style_feats[4], aesthetic)

    # -- checks ----------------------------------------------------------------------------
    def _check_image(self, x, what: str, batch_one: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what}: expected a float tensor (N,3,H,W) in [0,1], got {type(x).__name__}")
        if x.dim() == 3:
            raise ValueError(f"{what}: expected shape (N,3,H,W), got {tuple(x.shape)}; add a batch "
                             f"dimension with .unsqueeze(0)")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{what}: expected shape (N,3,H,W), got {tuple(x.shape)}")
        if batch_one and x.shape[0] != 1:
            raise ValueError(f"{what}: expected a batch of 1, got {x.shape[0]}")
        if not x.is_floating_point():
            raise TypeError(f"{what}: expected a float tensor in [0,1], got {x.dtype} "
                            f"(divide uint8 images by 255)")
        if x.numel() and not torch.isfinite(x).all():
            raise ValueError(f"{what}: contains NaN or inf")
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{what}: values must lie in [0,1], found [{lo:.4g}, {hi:.4g}]")
        problem = encoder_size_problem(*x.shape[-2:])
        if problem is not None:
            raise ValueError(f"{what}: {problem}")
        return x.to(self.device, torch.float32)

    @staticmethod
    def _check_alpha(alpha: float) -> float:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise TypeError(f"alpha must be a number in [0,1], got {alpha!r}") from None
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha must lie in [0,1], got {alpha}")
        return a

    @staticmethod
    def _check_small(mode: str) -> str:
        if mode not in SMALL_IMAGE_MODES:
            raise ValueError(f"small_images must be one of {SMALL_IMAGE_MODES}, got {mode!r}")
        return mode

    # -- tensor API ------------------------------------------------------------------------
    @torch.no_grad()
    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0,
                preserve_color: bool = False, *, small_images: str = "error") -> torch.Tensor:
        """Stylise ``content`` (N,3,H,W) with ``style`` (1,3,Hs,Ws) or (N,3,Hs,Ws); [0,1] floats.

        Returns the raw decoder output (N,3,8*ceil(H/8),8*ceil(W/8)) before clamping, on the
        content's device. ``alpha`` in [0,1] blends in feature space with the content-content
        path (``alpha*F_cs + (1-alpha)*F_cc``; alpha 0 is the content reconstruction);
        ``preserve_color`` first recolours the style image to the content's colour statistics
        (needs N == 1 or per-sample styles).
        """
        alpha = self._check_alpha(alpha)
        self._check_small(small_images)
        out_device = content.device if isinstance(content, torch.Tensor) else self.device
        c = self._check_image(content, "content")
        s = self._check_image(style, "style")
        if s.shape[0] not in (1, c.shape[0]):
            raise ValueError(f"style batch {s.shape[0]} must be 1 or match the content batch {c.shape[0]}")
        if preserve_color:
            s = self._recolour(s, c)
        c_feats = self.encode(c)
        if alpha == 0.0:
            out = self.decoder(self._content_path(c, c_feats, small_images))
            return out.to(out_device)
        feat = self._style_path(c_feats, s, small_images)
        if alpha < 1.0:
            feat = feat * alpha + self._content_path(c, c_feats, small_images) * (1 - alpha)
        return self.decoder(feat).to(out_device)

    @torch.no_grad()
    def reconstruct(self, content: torch.Tensor, *, small_images: str = "error") -> torch.Tensor:
        """The content reconstruction path: decoder(fusion(Fc, Fc, D(content))) (= alpha 0)."""
        self._check_small(small_images)
        c = self._check_image(content, "content")
        return self.decoder(self._content_path(c, self.encode(c), small_images)).to(content.device)

    @torch.no_grad()
    def stylize_interpolated(self, content: torch.Tensor, styles: Sequence[torch.Tensor],
                             weights: Optional[Sequence[float]] = None, alpha: float = 1.0,
                             preserve_color: bool = False, *, small_images: str = "error") -> torch.Tensor:
        """Style interpolation: blend the fused features of several styles, then decode.

        ``styles``: a list of (1,3,H,W) tensors (sizes may differ) or one (K,3,H,W) batch;
        ``weights``: non-negative, normalised to sum 1 (default: equal). ``content`` must be a
        single image. ``alpha`` < 1 then blends with the content path as in :meth:`stylize`.
        """
        alpha = self._check_alpha(alpha)
        self._check_small(small_images)
        c = self._check_image(content, "content", batch_one=True)
        if isinstance(styles, torch.Tensor):
            styles = [styles[i:i + 1] for i in range(styles.shape[0])] if styles.dim() == 4 else [styles]
        styles = list(styles)
        if not styles:
            raise ValueError("need at least one style image")
        w = normalise_weights(weights, len(styles))
        c_feats = self.encode(c)
        feat = torch.zeros_like(c_feats[3])
        for i, (st, wi) in enumerate(zip(styles, w)):
            s = self._check_image(st, f"style {i}", batch_one=True)
            if preserve_color:
                s = self._recolour(s, c)
            feat = feat + wi * self._style_path(c_feats, s, small_images)
        if alpha < 1.0:
            feat = feat * alpha + self._content_path(c, c_feats, small_images) * (1 - alpha)
        return self.decoder(feat).to(content.device)

    def _style_path(self, c_feats, s, small_images):
        s_feats = self.encode(s)
        a = self.aesthetic(s, small_images)
        n = c_feats[3].shape[0]
        if s.shape[0] != n:
            s_feats = [f.expand(n, *f.shape[1:]) for f in s_feats]
            a = a.expand(n, *a.shape[1:])
        return self.fuse(c_feats, s_feats, a)

    def _content_path(self, c, c_feats, small_images):
        return self.fuse(c_feats, c_feats, self.aesthetic(c, small_images))

    @staticmethod
    def _recolour(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if s.shape[0] == c.shape[0]:
            return torch.stack([coral(s[i], c[i]) for i in range(s.shape[0])])
        if c.shape[0] != 1:
            raise ValueError("preserve_color with one style and several contents: stylise the "
                             "contents one at a time (the style is recoloured per content)")
        return coral(s[0], c[0]).unsqueeze(0)

    # -- image API -------------------------------------------------------------------------
    def stylize_image(self, content: ImageLike, style: ImageLike, alpha: float = 1.0,
                      preserve_color: bool = False, long_side: Optional[int] = None,
                      style_long_side: Optional[int] = None, crop_to_input: bool = True,
                      small_images: str = "upsample") -> Image.Image:
        """Stylise PIL images or image paths; returns a PIL image.

        ``long_side`` resizes the content's longer side first (None = keep); ``style_long_side``
        likewise for the style (None = same as ``long_side``). The 8-aligned network output is
        cropped back to the (resized) content size unless ``crop_to_input=False``.
        """
        c_img = resize_long_side(_as_pil(content, "content"), long_side)
        s_img = resize_long_side(_as_pil(style, "style"),
                                 long_side if style_long_side is None else style_long_side)
        out = self.stylize(pil_to_tensor(c_img), pil_to_tensor(s_img), alpha=alpha,
                           preserve_color=preserve_color, small_images=small_images)
        if crop_to_input:
            out = out[..., :c_img.height, :c_img.width]
        return tensor_to_pil(out)

    def stylize_images(self, contents: Iterable[ImageLike], style: ImageLike, **kwargs) -> list[Image.Image]:
        """Stylise a batch of content images (any sizes) with one style; same options as
        :meth:`stylize_image`. Runs one image at a time to bound memory."""
        s_img = _as_pil(style, "style")
        return [self.stylize_image(c, s_img, **kwargs) for c in contents]

    def interpolate_images(self, content: ImageLike, styles: Sequence[ImageLike],
                           weights: Optional[Sequence[float]] = None, alpha: float = 1.0,
                           preserve_color: bool = False, long_side: Optional[int] = None,
                           style_long_side: Optional[int] = None, crop_to_input: bool = True,
                           small_images: str = "upsample") -> Image.Image:
        """Image-level style interpolation (see :meth:`stylize_interpolated`)."""
        c_img = resize_long_side(_as_pil(content, "content"), long_side)
        sl = long_side if style_long_side is None else style_long_side
        s_t = [pil_to_tensor(resize_long_side(_as_pil(s, f"style {i}"), sl)) for i, s in enumerate(styles)]
        out = self.stylize_interpolated(pil_to_tensor(c_img), s_t, weights, alpha=alpha,
                                        preserve_color=preserve_color, small_images=small_images)
        if crop_to_input:
            out = out[..., :c_img.height, :c_img.width]
        return tensor_to_pil(out)


def normalise_weights(weights: Optional[Sequence[float]], n: int) -> list[float]:
    """Interpolation weights divided by their sum (equal weights when None)."""
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"got {len(w)} interpolation weights for {n} styles")
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"interpolation weights must be finite and non-negative, got {w}")
    total = sum(w)
    if total <= 0:
        raise ValueError("interpolation weights must not all be zero")
    return [x / total for x in w]


def _upsample_for_discriminator(x: torch.Tensor) -> torch.Tensor:
    """Bilinearly enlarge ``x`` until the aesthetic discriminator accepts it."""
    h, w = x.shape[-2:]
    scale = max(64.0 / min(h, w), 128.0 / max(h, w), 1.0)
    while True:
        nh, nw = max(1, math.ceil(h * scale)), max(1, math.ceil(w * scale))
        if discriminator_size_problem(nh, nw) is None:
            break
        scale *= 1.25
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
