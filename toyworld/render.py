"""Procedural 64x64 scenes in two styles, with their captions.

The world is deliberately small: one big object per scene, described by
colour x shape x size.  The probe in docs/spec (toyworld.md) showed that a tiny
text-to-image model learns colour within minutes, shape more slowly and
position not at all in the CPU budget, so the grammar keeps only attributes
that are global and large (colour, a few very different silhouettes, and
big/small), and the object is always near the centre.

Two styles:

* ``photo``   - soft shading, a specular highlight, a blurred drop shadow and
  a smooth grey gradient background with faint texture.
* ``cartoon`` - flat fill, thick dark outline, two cartoon eyes on every
  object and a flat pale-cream background.

Everything is drawn with OpenCV at 4x resolution and area-downsampled, so edges
are anti-aliased.  A scene is a pure function of its ``Scene`` record (which
includes its own integer seed for the random jitter), so rendering is
deterministic and order independent.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import cv2
import numpy as np

SIZE = 64
_SS = 4  # supersampling factor
_S = SIZE * _SS

STYLES = ("photo", "cartoon")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("circle", "square", "triangle")
SIZES = ("big", "small")

# Base RGB of every colour name.  Hues are spread so a small judge and a small
# diffusion model can tell them apart easily.
RGB = {
    "red": (214, 38, 38),
    "orange": (245, 138, 20),
    "yellow": (238, 214, 36),
    "green": (36, 160, 64),
    "blue": (38, 84, 222),
    "purple": (138, 48, 184),
}

# Object half-extent in pixels (at 64x64) for each size word.
_RADIUS = {"big": 21.0, "small": 12.5}

CARTOON_BG = (250, 238, 205)


@dataclasses.dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    size: str
    style: str
    seed: int = 0

    def attributes(self) -> dict:
        return {"color": self.color, "shape": self.shape, "size": self.size, "style": self.style}


def sample_scene(rng: np.random.Generator, style: str | None = None,
                 colors: Sequence[str] = COLORS, shapes: Sequence[str] = SHAPES,
                 sizes: Sequence[str] = SIZES) -> Scene:
    """Draw a random scene (uniform over the allowed attribute values)."""
    return Scene(
        color=str(colors[rng.integers(len(colors))]),
        shape=str(shapes[rng.integers(len(shapes))]),
        size=str(sizes[rng.integers(len(sizes))]),
        style=style if style is not None else str(STYLES[rng.integers(len(STYLES))]),
        seed=int(rng.integers(2**31 - 1)),
    )


# --------------------------------------------------------------------------- geometry

def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray | None:
    """Vertices (float, in 64-px units) of a polygonal shape; None for circles."""
    if shape == "circle":
        return None
    if shape == "square":
        k = r * 0.86  # same visual area as the circle, roughly
        pts = [(-k, -k), (k, -k), (k, k), (-k, k)]
    elif shape == "triangle":
        # upright equilateral triangle, centroid at the centre, slightly larger
        rr = r * 1.22
        pts = [(rr * math.cos(a), rr * math.sin(a)) for a in
               (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)]
        pts = [(x, y + r * 0.12) for x, y in pts]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return np.array([(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts], dtype=np.float64)


def _mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Supersampled float mask (S x S) in 0..1 of the object silhouette."""
    m = np.zeros((_S, _S), np.uint8)
    poly = _shape_polygon(shape, cx, cy, r, angle)
    if poly is None:
        cv2.circle(m, (int(round(cx * _SS)), int(round(cy * _SS))), int(round(r * _SS)), 255, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(m, [np.round(poly * _SS).astype(np.int32)], 255, cv2.LINE_AA)
    return m.astype(np.float32) / 255.0


def _down(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- styles

def _jitter_color(base, rng: np.random.Generator, amount: float) -> np.ndarray:
    c = np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)
    return np.clip(c, 0, 255)


def _render_photo(scene: Scene, rng: np.random.Generator, cx, cy, r, angle) -> np.ndarray:
    # background: vertical grey gradient with faint smooth texture
    top = rng.uniform(185, 215)
    bottom = rng.uniform(120, 150)
    tint = rng.uniform(-6, 6, 3)
    ys = np.linspace(0.0, 1.0, _S, dtype=np.float32)[:, None, None]
    bg = (top + (bottom - top) * ys) + tint[None, None, :].astype(np.float32)
    bg = np.broadcast_to(bg, (_S, _S, 3)).copy()
    tex = rng.normal(0, 1, (8, 8)).astype(np.float32)
    tex = cv2.resize(tex, (_S, _S), interpolation=cv2.INTER_CUBIC)
    bg += tex[:, :, None] * 4.0

    # drop shadow: blurred, offset silhouette darkening the background
    m = _mask(scene.shape, cx, cy, r, angle)
    off = int(round(r * 0.22 * _SS))
    sh = np.zeros_like(m)
    sh[off:, off:] = m[:-off, :-off]
    k = int(r * 0.5 * _SS) | 1
    sh = cv2.GaussianBlur(sh, (k, k), 0)
    bg *= (1.0 - 0.45 * sh)[:, :, None]

    # object: shaded fill, lit from the top-left, with a specular highlight
    base = _jitter_color(RGB[scene.color], rng, 12)
    yy, xx = np.mgrid[0:_S, 0:_S].astype(np.float32) / _SS
    lx, ly = cx - 0.45 * r, cy - 0.45 * r
    d = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / (1.9 * r)
    shade = np.clip(1.18 - 0.62 * d, 0.45, 1.2)
    obj = base[None, None, :] * shade[:, :, None]
    spec = np.exp(-(((xx - (cx - 0.4 * r)) ** 2 + (yy - (cy - 0.4 * r)) ** 2) / (2 * (0.16 * r) ** 2)))
    obj = obj + (255.0 - obj) * (0.75 * spec)[:, :, None]
    out = bg * (1 - m[:, :, None]) + obj * m[:, :, None]
    return out


def _render_cartoon(scene: Scene, rng: np.random.Generator, cx, cy, r, angle) -> np.ndarray:
    bg = np.empty((_S, _S, 3), np.float32)
    bg[:] = _jitter_color(CARTOON_BG, rng, 4)
    base = _jitter_color(RGB[scene.color], rng, 6)
    m = _mask(scene.shape, cx, cy, r, angle)
    # thick dark outline = dilated silhouette minus silhouette
    t = int(round((2.6 if scene.size == "big" else 2.0) * _SS))
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * t + 1, 2 * t + 1))
    outer = cv2.dilate(m, kern)
    ink = np.array((28, 22, 30), np.float32)
    out = bg * (1 - outer[:, :, None]) + ink * outer[:, :, None]
    out = out * (1 - m[:, :, None]) + base * m[:, :, None]
    # eyes: two white ovals with black pupils in the upper half of the object
    er = r * 0.2
    ey = cy - r * (0.12 if scene.shape != "triangle" else -0.12)
    img = np.clip(out, 0, 255).astype(np.uint8)
    for sx in (-1, 1):
        ex = cx + sx * r * 0.36
        c = (int(round(ex * _SS)), int(round(ey * _SS)))
        axes = (int(round(er * _SS)), int(round(er * 1.25 * _SS)))
        cv2.ellipse(img, c, axes, 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.ellipse(img, c, axes, 0, 0, 360, (28, 22, 30), max(1, int(0.7 * _SS)), cv2.LINE_AA)
        pc = (int(round((ex + 0.25 * er) * _SS)), int(round((ey + 0.2 * er) * _SS)))
        cv2.circle(img, pc, int(round(er * 0.55 * _SS)), (20, 16, 24), -1, cv2.LINE_AA)
    return img.astype(np.float32)


def render(scene: Scene) -> np.ndarray:
    """Render one scene to a uint8 RGB array of shape (64, 64, 3)."""
    if scene.style not in STYLES:
        raise ValueError(f"unknown style {scene.style!r}")
    if scene.color not in RGB:
        raise ValueError(f"unknown colour {scene.color!r}")
    rng = np.random.default_rng(scene.seed)
    r = _RADIUS[scene.size] * rng.uniform(0.92, 1.08)
    cx = SIZE / 2 + rng.uniform(-3.0, 3.0)
    cy = SIZE / 2 + rng.uniform(-3.0, 3.0)
    angle = rng.uniform(-0.18, 0.18) if scene.shape != "circle" else 0.0
    if scene.style == "photo":
        img = _render_photo(scene, rng, cx, cy, r, angle)
    else:
        img = _render_cartoon(scene, rng, cx, cy, r, angle)
    img = _down(np.clip(img, 0, 255).astype(np.float32))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_batch(scenes: Iterable[Scene]) -> np.ndarray:
    """Render many scenes to a uint8 array (N, 64, 64, 3)."""
    return np.stack([render(s) for s in scenes])
