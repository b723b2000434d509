"""Real photos of any mode reach the style engines as sensible 8-bit RGB; huge ones are downscaled
with a note; bad inputs get errors naming the field."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from studio.style_engines.inputs import downscale, to_rgb
from studio.limits import open_upload


def _roundtrip(img: Image.Image, fmt: str) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt)
    buf.seek(0)
    return Image.open(buf)


def test_16_bit_greyscale_png_keeps_its_tones():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img = _roundtrip(Image.fromarray(ramp), "PNG")  # PIL reads it as mode I;16 or I
    out = np.asarray(to_rgb(img))
    assert out.shape == (64, 64, 3)
    assert out[0, 0, 0] < 5 and out[-1, -1, 0] > 250 and 100 < out[32, 0, 0] < 156


def test_transparent_pixels_become_white_not_black():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    out = np.asarray(to_rgb(_roundtrip(rgba, "PNG")))
    assert tuple(out[4, 4]) == (255, 255, 255) and tuple(out[0, 0]) == (255, 0, 0)


def test_cmyk_jpeg_and_greyscale_are_accepted():
    cmyk = _roundtrip(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    r, g, b = np.asarray(to_rgb(cmyk)).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60
    grey = to_rgb(_roundtrip(Image.new("L", (16, 16), 128), "PNG"))
    assert grey.mode == "RGB" and abs(int(np.asarray(grey)[0, 0, 0]) - 128) <= 1


def test_huge_images_are_downscaled_with_a_note_and_small_ones_are_untouched():
    big, note = downscale(Image.new("RGB", (5000, 2500)), 2048, "content")
    assert big.size == (2048, 1024) and "5000x2500" in note and "2048x1024" in note
    small = Image.new("RGB", (300, 200))
    assert downscale(small, 2048) == (small, None)


def test_bad_uploads_name_the_field(tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match="Style: not an image file"):
        open_upload(str(junk), "Style")
    with pytest.raises(ValueError, match="content: the image is empty"):
        to_rgb(Image.new("RGB", (0, 0)), "content")
    with pytest.raises(ValueError, match="content: expected a PIL image"):
        to_rgb("x.png", "content")
