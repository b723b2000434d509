"""The content-subject masks of styleid.masks: the latent-grid mask and the silhouette lock the
expert engine applies after sampling (checked against the toy world's own renders)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from styleid.expert import ExpertTransferSettings
from styleid.masks import lock_silhouette, subject_mask
from toyworld.render import Scene, render


def _saturated(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int16)
    return (a.max(-1) - a.min(-1)) > 70


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


# a photo triangle, and a cartoon that squared it off (the cartoon expert's failure: a wrong silhouette)
TRIANGLE = render(Scene("red", "triangle", "big", "photo", 11))
WRONG = render(Scene("red", "square", "big", "cartoon", 11))


def test_lock_clears_what_lies_outside_the_content_subject_and_keeps_the_rest():
    locked = np.asarray(lock_silhouette(Image.fromarray(WRONG), Image.fromarray(TRIANGLE), grow=1))
    subject = _saturated(TRIANGLE)
    near = np.zeros_like(subject)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(subject, dy, 0), dx, 1)
    assert not (_saturated(locked) & ~near).any()  # nothing saturated outside the content's subject
    assert np.array_equal(locked[near], WRONG[near])  # inside it, the output is untouched
    assert _iou(_saturated(locked), subject) > _iou(_saturated(WRONG), subject) + 0.15  # 0.48 -> 0.67
    bg = locked[~near]
    assert (bg == bg[0]).all() and bg[0].mean() > 150  # one flat, light background colour (the cream)


def test_lock_leaves_the_output_alone_without_a_content_subject():
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    out = Image.fromarray(WRONG)
    assert lock_silhouette(out, grey) is out


def test_subject_mask_on_the_latent_grid():
    fill = subject_mask(Image.fromarray(TRIANGLE), (8, 8))
    assert fill.shape == (1, 1, 8, 8) and 0 <= fill.min() and fill.max() <= 1
    assert abs(float(fill.sum()) * 64 - _saturated(TRIANGLE).sum()) < 1e-3  # the area, cell by cell
    edge = subject_mask(Image.fromarray(TRIANGLE), (8, 8), "edge")
    solid = np.pad((fill[0, 0] > 0.5).numpy(), 1)  # independently: a cell is on the edge when its
    window = [np.roll(np.roll(solid, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # 3x3
    border = (np.any(window, 0) & ~np.all(window, 0))[1:-1, 1:-1]  # window holds subject and not
    assert edge.sum() > 0 and np.array_equal(edge[0, 0].numpy() == 1.0, border)
    assert set(edge.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="region"):
        subject_mask(Image.fromarray(TRIANGLE), (8, 8), "ring")


@pytest.mark.parametrize("field,value", [("lock_strength", 1.0), ("lock_grow", -1), ("lock", "yes"),
                                         ("subject_weight", 2.0), ("subject_region", "ring"),
                                         ("subject_band", 0)])
def test_bad_lock_and_mask_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ExpertTransferSettings(**{field: value}).validate()
