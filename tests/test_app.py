"""The Gradio app, driven with gradio_client against a launched server (both tabs, tiny models).

The app is launched once per module with ``prevent_thread_lock=True`` on a free port; tiny
random SD-layout models (fusion/testing.py) stand in for the toy models, so the tests run whether
or not the toy models have been trained.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

from gradio_client import Client, handle_file  # noqa: E402

from studio.style_engines.base import Control, StyleEngine  # noqa: E402


class BlendEngine(StyleEngine):
    """A stand-in engine for the tests: blends the style image over the content."""

    name = "blend"
    description = "test engine: alpha blend"

    def availability(self):
        return True, ""

    def controls(self):
        return [Control("alpha", "slider", "Alpha", 0.5, 0.0, 1.0, 0.05),
                Control("size", "number", "Size", 24, 8, 64, 8)]

    def stylize(self, content, style, cancel=None, **controls):
        o = self.check_controls(controls)
        assert isinstance(o["size"], int)
        s = int(o["size"])
        return Image.blend(content.resize((s, s)), style.resize((s, s)), float(o["alpha"]))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from fusion.testing import save_tiny_model
    root = tmp_path_factory.mktemp("studio_models")
    general = save_tiny_model(root / "tiny-general", seed=0)
    expert = save_tiny_model(root / "tiny-expert", seed=1, share_from=general)
    other = save_tiny_model(root / "other-family", seed=2, cross_dim=48)
    (root / "broken.safetensors").write_bytes(b"\x00not a safetensors file at all")
    return {"root": root, "general": str(general), "expert": str(expert), "other": str(other),
            "broken": str(root / "broken.safetensors")}


@pytest.fixture(scope="module")
def app(models):
    import torch

    import app as studio_app
    from studio.config import StudioConfig
    threads = torch.get_num_threads()
    cfg = StudioConfig(models_dir=models["root"], port=None, device="cpu", memory_budget_gb=1.0, threads=1,
                       style_model=Path(models["general"]), preview_every=1,
                       mccstn_weights=Path(models["root"]) / "mccstn",  # empty: not the shipped weights
                       extra_engines=[("blend", lambda cfg, cache: BlendEngine())])
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    yield demo, client, url
    demo.close()
    torch.set_num_threads(threads)


def fuse(client, models, **kw):
    args = dict(general=models["general"], expert=models["expert"], steps=6, height=16, width=16,
                prompt="a red circle", prompt1="a red circle", seed=3)
    args.update(kw)
    return client.predict(api_name="/fuse", **args)


def test_api_names_are_stable(app):
    _, client, _ = app
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/fuse", "/fuse_stream", "/stylize", "/stop", "/saliency_step", "/random_seed", "/selection_from_sliders",
            "/sliders_from_selection", "/model_geometry", "/engine_info", "/runtime_status"} <= names


def test_the_fuse_button_streams_and_fuse_answers_once(app):
    """The page's Fuse button (and Enter in the prompt) run the streamed handler; /fuse, for
    scripts, is triggered by no component and is not a generator (one message)."""
    demo, _, _ = app
    cfg = demo.get_config_file()
    button = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "fuse_button")
    deps = {d["api_name"]: d for d in cfg["dependencies"]}
    assert [tuple(t) for t in deps["fuse_stream"]["targets"]] == [(button, "click")]
    assert deps["fuse_stream"]["types"]["generator"] and deps["fuse_on_enter"]["types"]["generator"]
    assert deps["fuse"]["targets"] == [] and not deps["fuse"]["types"]["generator"]


def test_fuse_returns_three_images_and_saliency_view(app, models):
    demo, client, _ = app
    out = fuse(client, models)
    general, expert, fused, compare, sal_p, sal_s, mask, plot, step, caption, status = out
    for p in (general, expert, fused, sal_p, sal_s, mask):
        im = Image.open(p)
        assert im.format == "PNG" and im.size == (16, 16)
    assert Image.open(plot).format == "PNG"
    assert compare is None  # /fuse leaves the page's before/after pair out: both images are above
    # primary left out: the demo's, the expert (issue 13 item 2; it was the general model before, by design)
    from studio.examples import FUSION_EXAMPLES
    assert FUSION_EXAMPLES[0].primary == "expert" and "primary: expert" in status
    assert step["maximum"] >= 1 and "captured" in step["label"]
    assert "secondary" in caption and status.startswith("Done")
    # the same request again is served by warm models: no new load
    loads = demo.studio.cache.loads
    out2 = fuse(client, models)
    assert demo.studio.cache.loads == loads and "warm models" in out2[-1]
    assert Image.open(out2[2]).tobytes() == Image.open(fused).tobytes()  # seeded: reproducible


def test_fuse_matches_the_library(app, models):
    """The UI adds nothing: the fused image is the pipeline's for the same settings (the reference's
    second recipe, every setting explicit: blend "" is the faithful SNB, not the demo's options)."""
    from fusion.pipeline import FusionPipeline, FusionSettings
    _, client, _ = app
    out = fuse(client, models, fusion_selection="850,1,1", mode=1, primary="expert", guidance=5,
               prompt="a big blue square", prompt1="a small red circle", seed=11, blend="")
    pipe = FusionPipeline.from_paths(models["general"], models["expert"], device="cpu")
    [res] = pipe("a big blue square", "a small red circle", FusionSettings(
        fusion_selection="850,1,1", mode=1, primary="expert", steps=6, guidance_scale=5.0, height=16, width=16,
        n_samples=1), seeds=[11])
    assert Image.open(out[2]).convert("RGB").tobytes() == res.pil("fused")[0].tobytes()
    assert Image.open(out[0]).convert("RGB").tobytes() == res.pil("general")[0].tobytes()


def _fuse_defaults(client) -> dict:
    """/fuse's parameter defaults by API name, as the API info gives them (the widgets' start-up values)."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/fuse"]["parameters"]
    return {p["parameter_name"]: p.get("parameter_default") for p in params}


def _component(demo, elem_id):
    [c] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return c


def test_the_fusion_tab_starts_as_the_demo(app):
    """Issue 13 item 2: the Fusion tab's start-up values are the demo example's (read from the prompt
    file's recommended settings), so the first Fuse click shows fusion; its caption stands by the
    Fuse button. (Before: the reference's first recipe, "600,1,1" mode 2 with the general model primary.)"""
    from fusion.schedule import parse_fusion_selection
    from studio.examples import FUSION_EXAMPLES, REFERENCE_RECIPES
    demo, client, _ = app
    d = FUSION_EXAMPLES[0]
    got = _fuse_defaults(client)
    want = dict(prompt=d.prompt, prompt1=d.prompt1, fusion_selection=d.fusion_selection, mode=d.mode,
                primary=d.primary, seed=d.seed, steps=d.steps, guidance=d.guidance, blend=d.blend)
    assert {k: got[k] for k in want} == want
    assert d.blend and (d.fusion_selection, d.primary) != (REFERENCE_RECIPES[0].fusion_selection,
                                                          REFERENCE_RECIPES[0].primary)
    sel = parse_fusion_selection(d.fusion_selection)
    assert [_component(demo, k).value for k in ("v1", "fusion_selection")] == [sel.v1, d.fusion_selection]
    assert d.caption in _component(demo, "start_caption").value


def test_fuse_with_parameters_left_out_runs_the_demo(app, models):
    """A /fuse call that leaves the recipe out gets the widgets' start-up values: the demo's settings,
    bit for bit the library's run of them (a tiny size and few steps given)."""
    from fusion.blend_options import parse_blend_text
    from fusion.pipeline import FusionPipeline, FusionSettings
    from studio.examples import FUSION_EXAMPLES, REFERENCE_RECIPES
    _, client, _ = app
    out = client.predict(api_name="/fuse", general=models["general"], expert=models["expert"], steps=4,
                         height=16, width=16)
    pipe = FusionPipeline.from_paths(models["general"], models["expert"], device="cpu")

    def library(e):
        [res] = pipe(e.prompt, e.prompt1, FusionSettings(
            fusion_selection=e.fusion_selection, mode=e.mode, primary=e.primary, steps=4, guidance_scale=e.guidance,
            height=16, width=16, n_samples=1, blend=parse_blend_text(e.blend)), seeds=[e.seed])
        return res.pil("fused")[0].tobytes(), res.pil("expert")[0].tobytes()
    fused, expert = (Image.open(out[i]).convert("RGB").tobytes() for i in (2, 1))
    assert (fused, expert) == library(FUSION_EXAMPLES[0])
    assert fused != library(REFERENCE_RECIPES[0])[0]  # the old start-up would have given another image


def test_fuse_sampler_choice_is_the_librarys(app, models):
    from fusion.pipeline import FusionPipeline, FusionSettings
    _, client, _ = app
    out = fuse(client, models, sampler="dpmpp_2m", steps=5, seed=12, prompt1="a blue square",
               fusion_selection="600,1,1", mode=2, primary="general", guidance=7.5, blend="")
    pipe = FusionPipeline.from_paths(models["general"], models["expert"], device="cpu")
    [res] = pipe("a red circle", "a blue square", FusionSettings(
        steps=5, sampler="dpmpp_2m", guidance_scale=7.5, height=16, width=16, n_samples=1), seeds=[12])
    assert Image.open(out[2]).convert("RGB").tobytes() == res.pil("fused")[0].tobytes()


def test_fuse_streams_previews(app, models):
    _, client, _ = app
    job = client.submit(api_name="/fuse_stream", general=models["general"], expert=models["expert"], steps=8,
                        height=16, width=16)
    outs = list(job)
    assert len(outs) >= 3                      # previews (preview_every=1) and the final result
    assert any("Sampling: step" in o[-1] for o in outs[:-1])
    assert outs[-1][-1].startswith("Done")


def test_previews_clear_the_last_runs_saliency_view(app, models):
    """Every streamed preview gives every output a value (none is left to Gradio's skip, which
    rebuilds the component at every preview): the previous run's saliency view is cleared."""
    from studio.ui.saliency_view import SAMPLING
    _, client, _ = app
    first = fuse(client, models, steps=8, fusion_selection="500,1,1", mode=2)
    assert first[4] and first[9] != SAMPLING           # a run with saliency panels
    outs = list(client.submit(api_name="/fuse_stream", general=models["general"], expert=models["expert"], steps=8,
                              height=16, width=16, fusion_selection="500,1,1", mode=2))
    previews, final = outs[:-1], outs[-1]
    assert previews and all(o[3] is None and o[4] is None and o[7] is None and o[9] == SAMPLING for o in previews)
    assert all(o[2] for o in previews)                  # the fused preview itself
    assert final[4] and final[9] != SAMPLING and final[-1].startswith("Done")


def _files(out) -> list:
    """The image files in a /fuse result (the before/after pair counts as two)."""
    return [p for v in out for p in (v if isinstance(v, (list, tuple)) else [v])
            if isinstance(p, str) and Path(p).is_file()]


def test_fuse_sends_each_output_once_and_decodes_no_preview(app, models, monkeypatch):
    """A script's /fuse: gradio_client (its defaults) downloads every image of every message it
    gets; /fuse sends one, so each output image is downloaded once, and no preview is decoded.
    The page's streamed /fuse_stream costs more downloads and ends with the same images."""
    import gradio_client.client as gcc

    from fusion.pipeline import FusionPipeline
    client = Client(app[2], verbose=False)  # its own: another client's last downloads may still run
    got, decodes = [], []
    orig_dl, orig_decode = gcc.Endpoint._download_file, FusionPipeline.decode

    def download(self, x):
        if self.client is client:
            got.append(x["path"])
        return orig_dl(self, x)
    monkeypatch.setattr(gcc.Endpoint, "_download_file", download)
    monkeypatch.setattr(FusionPipeline, "decode",
                        lambda self, *a, **k: decodes.append(1) or orig_decode(self, *a, **k))
    kw = dict(steps=8, fusion_selection="500,1,1", mode=2)
    out = fuse(client, models, **kw)
    files = _files(out)
    assert len(files) >= 7 and out[-1].startswith("Done")  # 3 images, 3 saliency panels, the plot
    assert len(got) == len(files) and len(decodes) == 1     # once each; the final decode only
    got.clear(), decodes.clear()
    streamed = client.predict(api_name="/fuse_stream", general=models["general"], expert=models["expert"],
                              height=16, width=16, prompt="a red circle", prompt1="a red circle", seed=3, **kw)
    assert len(got) > len(files) and len(decodes) > 1      # the previews (preview_every=1)
    pixels = lambda p: Image.open(p).tobytes()  # noqa: E731
    for k in (0, 1, 2, 4, 5, 6, 7):                         # the same images and saliency view
        assert pixels(streamed[k]) == pixels(out[k])
    # the page's before/after pair: the primary's image and the fused one
    primary = out[0] if "primary: general" in out[-1] else out[1]
    assert [pixels(p) for p in streamed[3]] == [pixels(primary), pixels(out[2])]
    assert streamed[8] == out[8] and streamed[9] == out[9]  # the step slider, the caption


def test_stop_cancels_a_fuse_run(app, models):
    """/fuse has no previews to wait for, and Stop still ends it before the next UNet call."""
    from gradio_client.exceptions import AppError
    demo, client, _ = app
    job = client.submit(api_name="/fuse", general=models["general"], expert=models["expert"], steps=200,
                        height=16, width=16, fusion_selection="1000,1,1", mode=1)
    t0 = time.time()
    while not demo.studio.slots.busy and not job.done() and time.time() - t0 < 60:
        time.sleep(0.02)
    assert demo.studio.slots.busy, "the run never started"
    assert client.predict(api_name="/stop") == "Stopped."
    with pytest.raises(AppError, match="Stopped"):
        job.result(timeout=60)
    t0 = time.time()
    while demo.studio.slots.busy and time.time() - t0 < 30:
        time.sleep(0.05)
    assert demo.studio.slots.busy == 0
    assert fuse(client, models)[-1].startswith("Done")


def test_saliency_scrub_runs_no_model(app, models):
    demo, client, _ = app
    out = fuse(client, models, steps=10, fusion_selection="500,1,1", mode=2)
    n = out[8]["maximum"] + 1
    calls = {k: d.calls for k, d in demo.studio.cache.pipeline(models["general"], models["expert"])._denoisers.items()}
    first = out[4]
    seen = set()
    for k in range(n):
        p, s, m, plot, caption = client.predict(k, api_name="/saliency_step")
        seen.add(Image.open(p).tobytes())
        assert "% of latent pixels from the secondary" in caption
    assert len(seen) > 1 and Image.open(first).tobytes() in seen
    after = {k: d.calls for k, d in demo.studio.cache.pipeline(models["general"], models["expert"])._denoisers.items()}
    assert after == calls


def test_mode_0_has_no_saliency_but_works(app, models):
    _, client, _ = app
    # blend "": without the demo's recolouring, mode 0's fused image is the primary's (the general model here)
    out = fuse(client, models, mode=0, primary="general", blend="")
    assert out[4] is None and "No SNB step" in out[9]
    assert Image.open(out[2]).tobytes() == Image.open(out[0]).tobytes()  # fused = the primary's


@pytest.mark.parametrize("kw,message", [
    (dict(fusion_selection="600;1;1"), "v1,kg,ke"),
    (dict(general_path="/no/such/model"), "not found"),
    (dict(expert="OTHER"), "cannot be fused"),
    (dict(expert="BROKEN"), "Could not load the model"),
    (dict(height=15), "multiple"),
])
def test_errors_are_clear_and_the_app_stays_up(app, models, kw, message):
    from gradio_client.exceptions import AppError
    _, client, _ = app
    kw = {k: (models[v.lower()] if v in ("OTHER", "BROKEN") else v) for k, v in kw.items()}
    with pytest.raises(AppError, match=message):
        fuse(client, models, **kw)
    assert "Device: cpu" in client.predict(api_name="/runtime_status")


def test_stop_cancels_cleanly(app, models):
    from gradio_client.exceptions import AppError
    demo, client, _ = app
    job = client.submit(api_name="/fuse_stream", general=models["general"], expert=models["expert"], steps=200,
                        height=16, width=16, fusion_selection="1000,1,1", mode=1)
    t0 = time.time()
    while not job.outputs() and time.time() - t0 < 60:
        time.sleep(0.05)
    assert job.outputs(), "no preview arrived"
    assert client.predict(api_name="/stop") == "Stopped."
    try:
        job.result(timeout=60)
    except (AppError, Exception):  # a cancelled job ends with "Stopped." or as cancelled
        pass
    t0 = time.time()
    while demo.studio.slots.busy and time.time() - t0 < 30:
        time.sleep(0.05)
    assert demo.studio.slots.busy == 0            # the worker released its slot
    out = fuse(client, models)                    # and the next request runs
    assert out[-1].startswith("Done")


def test_selection_string_and_sliders(app):
    from gradio_client.exceptions import AppError
    _, client, _ = app
    assert client.predict(700, 1.5, 0.5, api_name="/selection_from_sliders") == "700,1.5,0.5"
    assert client.predict("850, 1, 2", api_name="/sliders_from_selection") == [850, 1.0, 2.0, "850,1,2"] or \
        tuple(client.predict("850, 1, 2", api_name="/sliders_from_selection")) == (850, 1.0, 2.0, "850,1,2")
    with pytest.raises(AppError, match="v1"):
        client.predict("1200,1,1", api_name="/sliders_from_selection")
    seed = client.predict(api_name="/random_seed")
    assert isinstance(seed, (int, float)) and 0 <= seed < 2 ** 31


def test_model_geometry_follows_primary(app, models):
    _, _, url = app
    client = Client(url, verbose=False)  # own session: the narrowed size bounds stay in it
    h, w = client.predict(models["general"], models["expert"], "", "", "general", api_name="/model_geometry")
    assert h["value"] == w["value"] == 16 and h["step"] == 4


def test_stylize_with_an_available_engine(app, tmp_path):
    _, client, _ = app
    c, s = tmp_path / "c.png", tmp_path / "s.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(c)
    Image.new("RGB", (20, 20), (0, 0, 255)).save(s)
    out, status = client.predict(content=handle_file(str(c)), style=handle_file(str(s)), engine="blend",
                                 blend_alpha=0.25, blend_size=16, api_name="/stylize")
    im = Image.open(out)
    assert im.format == "PNG" and im.size == (16, 16)
    r, g, b = im.convert("RGB").getpixel((8, 8))
    assert r > b > 0 and "Done" in status


def test_stylize_injection_engine_on_the_diffusion_model(app, tmp_path):
    demo, client, _ = app
    c, s = tmp_path / "c.png", tmp_path / "s.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(c)
    Image.new("RGB", (32, 32), (30, 30, 200)).save(s)
    out, _ = client.predict(content=handle_file(str(c)), style=handle_file(str(s)), engine="injection",
                            injection_steps=5, api_name="/stylize")
    assert Image.open(out).size[0] > 0
    assert any("tiny-general" in k.path for k in demo.studio.cache.keys())  # shared, warm model


def test_engine_without_weights_is_unavailable_not_a_crash(app, tmp_path):
    from gradio_client.exceptions import AppError
    _, client, _ = app
    line = client.predict("mccstn", api_name="/engine_info")
    text = line[0] if isinstance(line, (list, tuple)) else line
    assert "unavailable" in text and "weights" in text.lower()
    c = tmp_path / "c.png"
    Image.new("RGB", (16, 16)).save(c)
    with pytest.raises(AppError, match="unavailable"):
        client.predict(content=handle_file(str(c)), style=handle_file(str(c)), engine="mccstn",
                       api_name="/stylize")
    with pytest.raises(AppError, match="content image and a style image"):
        client.predict(content=None, style=None, engine="blend", api_name="/stylize")


def test_page_serves(app):
    import urllib.request
    _, _, url = app
    html = urllib.request.urlopen(url, timeout=30).read().decode()
    assert "MccSTN Studio" in html or "gradio" in html.lower()


def test_defaults_are_the_toy_models(app):
    """With no model arguments /fuse uses the embedded toy models (or says how to get them)."""
    from gradio_client.exceptions import AppError

    from studio.models import toy_models_present
    _, _, url = app
    client = Client(url, verbose=False)
    if not toy_models_present():
        with pytest.raises(AppError, match="toy models are missing"):
            client.predict(api_name="/fuse", steps=4)
        return
    out = client.predict(api_name="/fuse", steps=8)
    assert Image.open(out[2]).size == (64, 64) and out[-1].startswith("Done")
