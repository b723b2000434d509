"""Public mode: offered models only (one answer for every other path), caps, a bounded number of
requests held, uploads capped, examples cached at start-up. A launched app on loopback, driven
with gradio_client; tiny models stand in for the toy models.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from studio.style_engines.base import Control, StyleEngine  # noqa: E402
from studio.public import BUSY, MODEL_REFUSED, PublicLimits, PublicPolicy, public_requested  # noqa: E402


class SlowEngine(StyleEngine):
    """Holds the work slot for ``seconds`` (to fill the queue), then returns the content."""

    name = "slow"
    description = "test engine: sleeps"

    def availability(self):
        return True, ""

    def controls(self):
        return [Control("seconds", "number", "Seconds", 0.0, 0.0, 10.0, 0.1),
                Control("steps", "number", "Steps", 5, 1, 500, 1)]

    def stylize(self, content, style, cancel=None, **controls):
        time.sleep(float(controls.get("seconds", 0)))
        return content.resize((16, 16))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from fusion.testing import save_tiny_model
    root = tmp_path_factory.mktemp("public_models")
    offered = root / "models"
    general = save_tiny_model(offered / "tiny-general", seed=0)
    expert = save_tiny_model(offered / "tiny-expert", seed=1, share_from=general)
    outside = root / "server"
    real_elsewhere = save_tiny_model(outside / "private-model", seed=2)
    (outside / "notes.txt").write_text("not a model")
    big = outside / "big-config"
    (big / "unet").mkdir(parents=True)
    (big / "model_index.json").write_text("{}")
    (big / "unet" / "config.json").write_text(json.dumps({"sample_size": 4096}))
    return {"dir": offered, "general": str(general), "expert": str(expert),
            "missing": str(outside / "no-such-model"), "not_a_model": str(outside / "notes.txt"),
            "elsewhere": str(real_elsewhere), "big": str(big)}


LIMITS = PublicLimits(max_steps=8, max_style_steps=20, max_queue=2, max_upload_mb=0.02, cache_examples=True)


@pytest.fixture(scope="module")
def app(models, tmp_path_factory):
    import os

    import torch

    import app as studio_app
    from studio.config import StudioConfig
    from studio.space_config import SpaceModels
    cache_dir = tmp_path_factory.mktemp("examples_cache")
    old = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache_dir)
    threads = torch.get_num_threads()
    cfg = StudioConfig(models_dir=models["dir"], port=None, device="cpu", memory_budget_gb=1.0, threads=1,
                       style_model=Path(models["general"]), public=True, public_limits=LIMITS,
                       space=SpaceModels(general=Path(models["general"]), expert=Path(models["expert"])),
                       extra_engines=[("slow", lambda cfg, cache: SlowEngine())])
    demo = studio_app.build_app(cfg)
    t0 = time.perf_counter()
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    demo.startup_seconds = time.perf_counter() - t0
    yield demo, Client(url, verbose=False), url, cache_dir
    demo.close()
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
    else:
        os.environ["GRADIO_EXAMPLES_CACHE"] = old


def fuse(client, models, **kw):
    args = dict(general=models["general"], expert=models["expert"], steps=4, height=16, width=16,
                prompt="a red circle", prompt1="a red circle", seed=3)
    args.update(kw)
    return client.predict(api_name="/fuse", **args)


def error_of(call) -> str:
    with pytest.raises(Exception) as e:
        call()
    return str(e.value)


def test_public_on_with_the_flag_or_on_a_space():
    assert public_requested(True, {}) and public_requested(False, {"SPACE_ID": "someone/mccstn-studio"})
    assert not public_requested(False, {})


def test_config_flags_and_space_id(monkeypatch):
    from studio.config import PROJECT_ROOT, config_from_args
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("STUDIO_MODELS_CONFIG", raising=False)
    assert not config_from_args([]).public and config_from_args([]).models_config is None
    c = config_from_args(["--public"])
    assert c.public and c.models_config == PROJECT_ROOT / "models.yaml"
    monkeypatch.setenv("SPACE_ID", "someone/mccstn-studio")
    assert config_from_args([]).public


def test_offered_models_fuse(app, models):
    out = fuse(app[1], models)
    assert Image.open(out[2]).size == (16, 16)


@pytest.mark.parametrize("field", ["general_path", "general"])
def test_server_paths_all_get_the_same_answer(app, models, field):
    """A missing path, an existing non-model file and a real model outside the offered ones: one
    and the same message, byte for byte (no file-system oracle)."""
    client = app[1]
    answers = {what: error_of(lambda: fuse(client, models, **{field: models[what]}))
               for what in ("missing", "not_a_model", "elsewhere")}
    assert len(set(answers.values())) == 1, answers
    assert MODEL_REFUSED.format(role="General") in answers["missing"]
    assert "no-such-model" not in answers["missing"] and "notes.txt" not in answers["not_a_model"]


def test_library_answers_are_byte_identical(models):
    pol = PublicPolicy(models["dir"])
    msgs = []
    for what in ("missing", "not_a_model", "elsewhere", "big"):
        with pytest.raises(ValueError) as e:
            pol.resolve_model("", models[what], "Expert")
        msgs.append(str(e.value).encode())
    assert len(set(msgs)) == 1 and msgs[0] == MODEL_REFUSED.format(role="Expert").encode()
    assert pol.resolve_model(models["general"], "", "General") == Path(models["general"])


def test_geometry_reads_nothing_from_other_paths(app, models):
    client = app[1]
    default = client.predict(models["general"], models["expert"], "", "", "general", api_name="/model_geometry")
    other = client.predict(models["big"], models["expert"], models["big"], "", "general",
                           api_name="/model_geometry")
    assert other == default  # sample_size 4096 in that folder changes nothing


def test_path_boxes_hidden(app):
    """The path boxes sit in a hidden row (a name typed into a picker is refused like any path)."""
    cfg = app[0].config
    by_id = {c.get("props", {}).get("elem_id"): c for c in cfg["components"]}
    for box in (by_id["general_path"], by_id["expert_path"]):
        rows = [c for c in cfg["components"] if c.get("type") == "row" and _contains(cfg["layout"], c["id"], box["id"])]
        assert any(r["props"].get("visible") is False for r in rows)


def _contains(layout, parent_id, child_id) -> bool:
    def find(node, target):
        if node.get("id") == target:
            return node
        for ch in node.get("children", []) or []:
            got = find(ch, target)
            if got:
                return got
        return None
    parent = find(layout, parent_id)
    return bool(parent and find(parent, child_id))


def test_steps_capped(app, models):
    msg = error_of(lambda: fuse(app[1], models, steps=9))
    assert "greater than maximum value 8" in msg       # the page's slider ends at the cap; Gradio checks it
    from studio.fusion_service import FuseRequest
    service = app[0].studio.fusion                      # callers past the slider: the service checks
    with pytest.raises(Exception, match=r"steps: at most 8 on this public app \(asked 9\)"):
        service.run(FuseRequest(general=models["general"], expert=models["expert"], prompt="x", steps=9))


def test_the_fusion_tab_starts_as_the_demo_within_the_step_cap(app):
    """The public app starts as the demo too (issue 13 item 2), its steps clamped to the cap as its example's."""
    from studio.examples import FUSION_EXAMPLES
    d = FUSION_EXAMPLES[0]
    params = app[1].view_api(print_info=False, return_format="dict")["named_endpoints"]["/fuse"]["parameters"]
    got = {p["parameter_name"]: p.get("parameter_default") for p in params}
    assert d.steps > LIMITS.max_steps and got["steps"] == LIMITS.max_steps
    assert (got["prompt"], got["fusion_selection"], got["primary"], got["blend"]) == (
        d.prompt, d.fusion_selection, d.primary, d.blend)


def test_samples_and_sweep_cells_capped(models):
    from types import SimpleNamespace
    pol = PublicPolicy(models["dir"], limits=PublicLimits(max_samples=2, max_sweep_cells=12))
    pol.check_fuse(SimpleNamespace(steps=4, n_samples=2))
    with pytest.raises(ValueError, match=r"samples: at most 2 per request on this public app \(asked 3\)"):
        pol.check_fuse(SimpleNamespace(steps=4, n_samples=3))
    pol.check_sweep(12)
    with pytest.raises(ValueError, match=r"sweep: at most 12 cells"):
        pol.check_sweep(13)


def test_style_steps_capped(app, tmp_path):
    a = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(a)
    msg = error_of(lambda: app[1].predict(handle_file(str(a)), handle_file(str(a)), "slow", slow_steps=21,
                                         api_name="/stylize"))
    assert "slow steps: at most 20 on this public app (asked 21)" in msg


def test_queue_bounded_with_a_busy_message(app, tmp_path):
    """max_queue 2: one running, one waiting, the third is told to try again (at once)."""
    client = app[1]
    a = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(a)
    results = {}

    def call(i, seconds):
        t0 = time.perf_counter()
        try:
            Client(app[2], verbose=False).predict(handle_file(str(a)), handle_file(str(a)), "slow",
                                                  slow_seconds=seconds, api_name="/stylize")
            results[i] = ("ok", time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            results[i] = (str(e), time.perf_counter() - t0)

    ts = [threading.Thread(target=call, args=(i, 3.0)) for i in range(2)]
    [t.start() for t in ts]
    deadline = time.time() + 20
    while app[0].studio.admission.held < 2 and time.time() < deadline:
        time.sleep(0.05)
    call(2, 0.0)
    [t.join(30) for t in ts]
    assert [results[i][0] for i in (0, 1)] == ["ok", "ok"]
    assert BUSY.format(held=2) in results[2][0] and results[2][1] < 2.5
    assert client.predict(api_name="/random_seed") >= 0  # still answering


def test_upload_bytes_capped(app, tmp_path):
    import numpy as np
    big = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > LIMITS.max_upload_mb * 2 ** 20
    msg = error_of(lambda: app[1].predict(handle_file(str(big)), handle_file(str(big)), "slow",
                                         api_name="/stylize"))
    assert "size" in msg.lower() or "large" in msg.lower(), msg


def test_examples_cached_at_start_up(app):
    cache_dir = app[3]
    files = [p for p in Path(cache_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".csv" for p in files), files
    assert sum(p.suffix in (".png", ".webp") for p in files) >= 3   # the fused example images


@pytest.mark.parametrize("values, message", [
    ({"max_stepz": 3}, "unknown cap"),
    ({"max_steps": 0}, "expected a positive int"),
    ({"max_steps": 2.5}, "expected a positive int"),
    ({"cache_examples": "yes"}, "expected a positive bool"),
])
def test_limits_from_models_yaml_checked(values, message):
    with pytest.raises(ValueError, match=message):
        PublicLimits.from_mapping(values)
    assert PublicLimits.from_mapping({"max_steps": 30}).max_steps == 30


def test_upload_pixels_capped_before_decoding(app, tmp_path):
    """A small file that decodes to more pixels than the public cap (4.2 MP) is refused by name."""
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (2100, 2100), (10, 200, 30)).save(bomb, optimize=True)   # 4.41 MP in ~17 KB
    assert bomb.stat().st_size < LIMITS.max_upload_mb * 2 ** 20
    small = tmp_path / "small.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(small)
    msg = error_of(lambda: app[1].predict(handle_file(str(bomb)), handle_file(str(small)), "slow",
                                         api_name="/stylize"))
    assert "Content: 2100x2100 is 4.4 megapixels, more than this app's 4.2" in msg, msg


def test_lora_paths_all_get_the_same_answer(models, tmp_path):
    from studio.models import TOY_LORA
    from studio.public import LORA_REFUSED
    listed = tmp_path / "listed" / "cartoon.safetensors"
    listed.parent.mkdir()
    listed.write_bytes(b"")
    pol = PublicPolicy(models["dir"], loras=[listed])
    msgs = set()
    for text in (models["missing"], models["not_a_model"], str(tmp_path / "elsewhere.safetensors")):
        with pytest.raises(ValueError) as e:
            pol.resolve_lora("", text, "Expert")
        msgs.add(str(e.value).encode())
    assert msgs == {LORA_REFUSED.format(role="Expert").encode()}
    assert pol.resolve_lora("", "", "Expert") is None                       # no LoRA
    assert pol.resolve_lora(str(listed), "", "Expert") == listed             # models.yaml's
    if TOY_LORA.is_file():
        assert pol.resolve_lora(str(TOY_LORA), "", "Expert") == TOY_LORA     # the shipped one


def test_lora_refused_through_the_api(app, models):
    msg = error_of(lambda: fuse(app[1], models, expert_lora_path=models["not_a_model"]))
    assert "Expert LoRA: not one of the LoRAs this app offers" in msg


def sweep(client, models, **kw):
    args = dict(general=models["general"], expert=models["expert"], general_path="", expert_path="",
                prompt="a red circle", prompt1="a red circle", negative="", seed=3, steps=3, guidance=7.5,
                height=16, width=16, sampler="ddim", general_lora="", expert_lora="", general_lora_path="",
                expert_lora_path="", general_lora_scale=1.0, expert_lora_scale=1.0, v1="400,800", kg="1", ke="1",
                mode="2", primary="general", judge=False)
    args.update(kw)
    return client.predict(*args.values(), api_name="/sweep")


def test_sweep_runs_on_offered_models(app, models):
    assert sweep(app[1], models)[2].startswith("2 of 2 cells done")


def test_sweep_cells_capped(app, models):
    msg = error_of(lambda: sweep(app[1], models, v1="100,200,300,400,500,600,700,800,900", ke="1,2"))
    assert "sweep: at most 16 cells per request on this public app (asked 18)" in msg


def test_sweep_refuses_server_paths_like_fusion(app, models):
    answers = {error_of(lambda: sweep(app[1], models, general_path=models[w])) for w in ("missing", "not_a_model")}
    assert len(answers) == 1 and MODEL_REFUSED.format(role="General") in answers.pop()
