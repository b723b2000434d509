"""The style-quality benchmark's pairs and measures, and each style engine on one easy pair.

The engine checks are the benchmark's measures on a single, easy photo->cartoon pair (a big red
circle with a cartoon blue square as the style), judged against the content render itself and
against the toy world's own cartoon rendering of the same scene (an independent reference).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import style_quality as sq  # noqa: E402
from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH  # noqa: E402
from toyworld.render import COLORS, SHAPES, SIZES, Scene, render  # noqa: E402

CONTENT = Scene("red", "circle", "big", "photo", 11)
STYLE = Scene("blue", "square", "big", "cartoon", 12)


def test_benchmark_pairs_cover_every_content_and_take_styles_of_other_colour_and_shape():
    prs = sq.pairs(48, sq.PAIR_SEEDS["bench"])
    assert len(prs) == 48
    assert {(c.color, c.shape, c.size) for c, _ in prs} == {(a, b, z) for a in COLORS for b in SHAPES for z in SIZES}
    assert all(c.style == "photo" and s.style == "cartoon" for c, s in prs)
    assert all(s.color != c.color and s.shape != c.shape for c, s in prs)


def test_dev_pairs_are_not_benchmark_pairs():
    dev = {(c, s) for c, s in sq.pairs(48, sq.PAIR_SEEDS["dev"])}
    bench = {(c, s) for c, s in sq.pairs(48, sq.PAIR_SEEDS["bench"])}
    assert not dev & bench


def test_silhouette_iou_is_high_for_the_same_scene_in_either_style_and_low_for_another_scene():
    photo = render(CONTENT)
    cartoon_same = render(Scene(CONTENT.color, CONTENT.shape, CONTENT.size, "cartoon", CONTENT.seed))
    other = render(Scene("red", "triangle", "small", "photo", 5))
    assert sq.iou_shift(sq.silhouette(photo), sq.silhouette(photo))[0] == 1.0
    assert sq.iou_shift(sq.silhouette(cartoon_same), sq.silhouette(photo))[0] > 0.7
    assert sq.iou_shift(sq.silhouette(other), sq.silhouette(photo))[0] < 0.4


@pytest.fixture(scope="module")
def judge():
    from toyworld.judge import load_judge
    return load_judge(JUDGE_PATH)


@pytest.fixture(scope="module")
def runners():
    torch.set_num_threads(1)
    return sq.Runners(str(DEFAULT_GENERAL), str(DEFAULT_CARTOON), str(sq.MCCSTN_WEIGHTS))


def _judge_one(judge, runners, arm, content=CONTENT, style=STYLE):
    kind, settings = sq.parse_arm(arm)
    fn = runners.make(kind, settings)
    assert fn is not None, f"{arm} unavailable"
    img = sq.to_judge_size(fn(Image.fromarray(render(content)), Image.fromarray(render(style))))
    [row] = sq.judge_records(judge, [(content, style)], [img], arm)
    return row


def test_expert_engine_makes_a_cartoon_keeping_the_colour_and_silhouette(judge, runners):
    row = _judge_one(judge, runners, "expert")
    assert row["cartoon"] == 1 and row["color_kept"] == 1, row
    assert row["iou"] > 0.6, row  # measured 0.69; StyleID's defaults: 0.40 on this pair


def test_expert_engine_keeps_the_shape_of_an_easy_pair(judge, runners):
    # was an xfail: the cartoon expert redrew this big red circle with square corners ('big red
    # square'; expert-nolock, bench shape+size 0.854 of 48). With the silhouette lock (the defaults
    # since issue 12) it is judged 'big red circle (cartoon)'; bench: shape+size 1.000 of 48 pairs.
    assert _judge_one(judge, runners, "expert")["shape_size_kept"] == 1
    assert _judge_one(judge, runners, "expert-nolock")["shape_size_kept"] == 0  # the lock is what keeps it


@pytest.mark.xfail(strict=True, reason="StyleID's defaults on the toy models lose the subject even on this "
                   "easy pair (silhouette IoU 0.40, centroid shift 5.3 px when measured): the baseline "
                   "the expert engine replaces; an XPASS means the baseline changed")
def test_styleid_baseline_keeps_the_silhouette_of_an_easy_pair(judge, runners):
    row = _judge_one(judge, runners, "styleid")
    assert row["iou"] > 0.5, row



def test_expert_engine_rejects_bad_settings_naming_the_field():
    from studio.style_engines.expert import ExpertEngine

    eng = ExpertEngine()
    assert eng.availability() == (True, "")
    with pytest.raises(ValueError, match="strength"):
        eng.settings(strength=1.5)
    with pytest.raises(ValueError, match="unknown control"):
        eng.settings(strenght=0.5)
    with pytest.raises(ValueError, match="general_weight"):
        eng.settings(general_weight=-0.1)


ARM_ENGINE = {"expert": "expert", "mccstn": "mccstn", "styleid": "injection"}


def test_style_tab_defaults_to_the_engine_that_measures_best(tmp_path):
    import json

    from studio.config import StudioConfig
    from studio.engines import EngineRegistry
    from studio.gpu import WorkSlots

    summary = json.loads((REPO / "bench" / "results" / "style_quality_diffusion.json").read_text())["summary"]
    scored = {arm: s["cartoon"] + s["shape_size_kept"] for arm, s in summary.items() if arm in ARM_ENGINE}
    best = ARM_ENGINE[max(scored, key=scored.get)]
    reg = EngineRegistry(StudioConfig(models_dir=tmp_path, device="cpu"), cache=None, slots=WorkSlots(1))
    assert reg.default_key() == best
    assert "toy" in reg.get(best).status_line()  # the card says where its weights came from


#: the style tab's first example: a photo red ball with a cartoon yellow triangle as the style
BALL, TRIANGLE = Scene("red", "circle", "big", "photo", 3), Scene("yellow", "triangle", "small", "cartoon", 4)


def test_mccstn_subject_colour_keeps_the_content_colour_and_the_cartoon_look(judge, runners):
    # the app's default: preserve colour in "subject" mode (judged "big red circle (cartoon)", IoU 0.87)
    row = _judge_one(judge, runners, "mccstn", BALL, TRIANGLE)
    assert row["cartoon"] == 1 and row["color_kept"] == 1, row
    assert row["shape_size_kept"] == 1 and row["iou"] > 0.6, row
    again = _judge_one(judge, runners, "mccstn", BALL, TRIANGLE)
    assert again == row  # deterministic
    # the reference recipe on the same pair: the colour is kept but the judge reads a photo
    official = _judge_one(judge, runners, "mccstn-official", BALL, TRIANGLE)
    assert official["color_kept"] == 1 and official["cartoon"] == 0, official


def test_the_combined_benchmark_ranks_the_default_engine_first(tmp_path):
    """bench/results/style_quality.json (every engine's row, 48 bench pairs): the registry's default
    engine is the one whose default arm scores best (cartoon + shape+size), and meets the targets."""
    import json

    from studio.config import StudioConfig
    from studio.engines import EngineRegistry
    from studio.gpu import WorkSlots

    summary = json.loads((REPO / "bench" / "results" / "style_quality.json").read_text())["summary"]
    scored = {arm: s["cartoon"] + s["shape_size_kept"] for arm, s in summary.items() if arm in ARM_ENGINE}
    assert set(scored) == set(ARM_ENGINE)
    best = max(scored, key=scored.get)
    reg = EngineRegistry(StudioConfig(models_dir=tmp_path, device="cpu"), cache=None, slots=WorkSlots(1))
    assert reg.default_key() == ARM_ENGINE[best]
    by_engine = {ARM_ENGINE[arm]: score for arm, score in scored.items()}
    order = [e.key for e in reg.entries() if e.key in by_engine]
    assert order == sorted(by_engine, key=by_engine.get, reverse=True)  # the registry lists them best first
    assert summary[best]["cartoon"] >= 0.95 and summary[best]["shape_size_kept"] >= 0.9
