"""The shipped judge scores ground-truth renders correctly."""
import numpy as np

from toyworld.data import ATTRS, dataset
from toyworld.judge import accuracy, load_judge, predict
from toyworld.render import Scene, render


def test_judge_on_heldout_renders():
    j = load_judge()
    imgs, lab, _ = dataset(None, 300, 987_654, None, workers=1)
    acc = accuracy(j, imgs, lab)
    for a in ATTRS:
        assert acc[a] >= 0.97, acc


def test_judge_reads_a_known_scene():
    j = load_judge()
    img = np.stack([render(Scene("purple", "triangle", "big", "cartoon", seed=4)),
                    render(Scene("orange", "circle", "small", "photo", seed=5))])
    p = predict(j, img)
    assert p["color"] == ["purple", "orange"] and p["shape"] == ["triangle", "circle"]
    assert p["size"] == ["big", "small"] and p["style"] == ["cartoon", "photo"]
