"""The app's first example is the fusion-quality benchmark's recommendation on a blind-spot prompt
(issue 13 item 2): its settings are the prompt file's for its family, and in the toy world the judge
reads its fused image (the app's request path, the reference seed) as the right cartoon while the
expert alone gets the prompt wrong."""
import sys
from pathlib import Path

import torch

from studio.examples import DEMO, FUSION_EXAMPLES, FUSION_PROMPTS

ROOT = Path(__file__).resolve().parent.parent


def _bench_settings(family):
    """The settings the benchmark itself runs for ``family`` (bench/fusion_quality.settings_for)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fusion_quality as fq
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return fq.settings_for(fq.load_prompt_set(FUSION_PROMPTS), family).validated()


def _app_settings(example):
    """The library settings the app builds for the example (studio.fusion_service.FuseRequest)."""
    from studio.fusion_service import FuseRequest
    req = FuseRequest(general="toy-general", expert="toy-cartoon", prompt=example.prompt, prompt1=example.prompt1, seed=example.seed, steps=example.steps,
                      guidance=example.guidance, fusion_selection=example.fusion_selection, mode=example.mode,
                      primary=example.primary, blend=example.blend)
    return req, req.settings(example.steps, None, None).validated()


def test_first_example_uses_the_benchmarks_recommended_settings_for_its_family():
    demo = FUSION_EXAMPLES[0]
    want = _bench_settings(DEMO["family"])
    _, got = _app_settings(demo)
    for name in ("fusion_selection", "mode", "primary", "steps", "guidance_scale", "blend"):
        assert getattr(got, name) == getattr(want, name), name
    assert got.blend.active  # the recommendation goes beyond the faithful SNB
    assert demo.caption and "\n" not in demo.caption


def test_first_example_fused_image_is_the_right_cartoon_where_the_expert_fails():
    from fusion.pipeline import FusionPipeline, to_uint8
    from toyworld.grammar import parse
    from toyworld.judge import load_judge, predict
    from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL, JUDGE_PATH

    demo = FUSION_EXAMPLES[0]
    req, settings = _app_settings(demo)
    pipe = FusionPipeline.from_paths(str(DEFAULT_GENERAL), str(DEFAULT_CARTOON), device="cpu", dtype=torch.float32)
    res = pipe(req.prompt, req.prompt1, settings, seeds=[demo.seed])[0]
    judge = load_judge(JUDGE_PATH)
    want = {k: v for k, v in parse(demo.prompt).items() if v is not None and k != "style"}
    seen = {arm: {k: v[0] for k, v in predict(judge, to_uint8(res.images[arm])).items()} for arm in res.images}
    assert {k: seen["fused"][k] for k in want} == want and seen["fused"]["style"] == "cartoon", seen
    assert {k: seen["expert"][k] for k in want} != want, seen   # the blind spot: the expert alone fails
    assert seen["general"]["style"] == "photo", seen           # and the general model draws a photo
