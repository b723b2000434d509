"""Issue 16, launched app: what one outside user sends (gradio_client over loopback) never
freezes, cancels or bloats the app for another. One test per finding, each in seconds."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from studio.style_engines.base import StyleEngine  # noqa: E402


class EchoEngine(StyleEngine):
    """A stand-in style engine: returns the content at 16x16 (the tests are about the inputs)."""

    name = "echo"

    def availability(self):
        return True, ""

    def controls(self):
        return []

    def stylize(self, content, style, cancel=None, **controls):
        return content.resize((16, 16))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from fusion.testing import save_tiny_model
    root = tmp_path_factory.mktemp("hardening_models")
    general = save_tiny_model(root / "tiny-general", seed=0)
    expert = save_tiny_model(root / "tiny-expert", seed=1, share_from=general)
    return {"root": root, "general": str(general), "expert": str(expert)}


@pytest.fixture(scope="module")
def app(models):
    import torch

    import app as studio_app
    from studio.config import StudioConfig
    threads = torch.get_num_threads()
    cfg = StudioConfig(models_dir=models["root"], port=None, device="cpu", memory_budget_gb=1.0, threads=1,
                       style_model=Path(models["general"]), preview_every=1, concurrency=2,
                       extra_engines=[("echo", lambda cfg, cache: EchoEngine())])
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()
    torch.set_num_threads(threads)


def _fuse_args(models, **kw):
    return {**dict(general=models["general"], expert=models["expert"], steps=6, height=16, width=16,
                   prompt="a red circle", prompt1="a red circle", seed=3), **kw}


def _long_run(client, models):
    """A 40-step fusion; returns the job once its first preview has arrived."""
    job = client.submit(api_name="/fuse_stream", **_fuse_args(models, steps=40, fusion_selection="1000,1,1", mode=1))
    t0 = time.time()
    while not job.outputs() and time.time() - t0 < 60:
        time.sleep(0.05)
    assert job.outputs(), "no preview arrived"
    return job


def _wait_idle(demo, seconds=30):
    t0 = time.time()
    while demo.studio.slots.busy and time.time() - t0 < seconds:
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# finding 2: one cancel slot per session
# ---------------------------------------------------------------------------------------------
def test_one_users_stop_never_cancels_another_users_run(app, models):
    demo, url = app
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    job = _long_run(alice, models)
    assert bob.predict(api_name="/stop") == "Nothing was running."
    assert job.result(timeout=120)[-1].startswith("Done")  # alice's run went on to the end
    _wait_idle(demo)


def test_with_concurrency_2_both_users_runs_finish(app, models):
    demo, url = app
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    job = _long_run(alice, models)
    assert bob.predict(api_name="/fuse", **_fuse_args(models))[-1].startswith("Done")
    assert not job.done()  # bob's short run finished while alice's was still going: both ran at once
    assert job.result(timeout=120)[-1].startswith("Done")
    _wait_idle(demo)


def test_a_users_own_stop_still_cancels_their_run(app, models):
    demo, url = app
    alice = Client(url, verbose=False)
    job = _long_run(alice, models)
    assert alice.predict(api_name="/stop") == "Stopped."
    with pytest.raises(Exception):
        job.result(timeout=60)
    _wait_idle(demo)
    assert demo.studio.slots.busy == 0


# ---------------------------------------------------------------------------------------------
# finding 4: pixel bombs are refused from the header; non-images get a clear error
# ---------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _stylize(client, content, style):
    return client.predict(handle_file(str(content)), handle_file(str(style)), "echo", api_name="/stylize")


def test_a_9000x9000_png_is_refused_before_decoding(app, tmp_path):
    _, url = app
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 MP, a few kB on disk; 243 MB once decoded to RGB
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 20), (200, 10, 10)).save(small)
    client = Client(url, verbose=False)
    rss, t0 = _rss_mb(), time.perf_counter()
    with pytest.raises(AppError, match=r"Content: 9000x9000 is 81.0 megapixels, more than .*16.8"):
        _stylize(client, bomb, small)
    assert time.perf_counter() - t0 < 10 and _rss_mb() - rss < 100  # decoded, it would be +243 MB
    assert _stylize(client, small, small)[1].startswith("Done")


def test_a_file_that_is_not_an_image_gets_a_clear_error(app, tmp_path):
    _, url = app
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 10)
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 20)).save(small)
    with pytest.raises(AppError, match="Style: not an image file"):
        _stylize(Client(url, verbose=False), small, text)


# ---------------------------------------------------------------------------------------------
# finding 5: sizes are limited on the server, from the model, whatever its config claims
# ---------------------------------------------------------------------------------------------
def test_sizes_beyond_twice_the_native_size_are_refused_at_once(app, models):
    demo, url = app
    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    with pytest.raises(AppError, match="height 64 is above this app's limit of 32 px"):  # tiny models: 16 px
        client.predict(api_name="/fuse", **_fuse_args(models, height=64))
    assert time.perf_counter() - t0 < 10 and demo.studio.slots.busy == 0
    assert client.predict(api_name="/fuse", **_fuse_args(models, height=32, width=32, steps=1))[-1].startswith("Done")


def test_a_config_claiming_sample_size_4096_cannot_raise_the_limit(app, models, tmp_path):
    import json
    demo, url = app
    big = tmp_path / "claims-4096"
    (big / "unet").mkdir(parents=True)
    (big / "vae").mkdir()
    (big / "model_index.json").write_text("{}")
    (big / "unet" / "config.json").write_text(json.dumps({"sample_size": 4096, "down_block_types": ["a"] * 4}))
    (big / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [1, 2, 3, 4]}))
    client = Client(url, verbose=False)
    h, w = client.predict(models["general"], models["expert"], str(big), "", "general", api_name="/model_geometry")
    assert h["maximum"] == w["maximum"] == demo.studio.limits.max_side == 1024  # not 32768
    assert h["value"] <= 1024 and h["minimum"] < h["maximum"]
    with pytest.raises(AppError, match="1024"):  # Gradio's slider bound or the service's limit
        client.predict(api_name="/fuse", **_fuse_args(models, general_path=str(big), height=2048, width=2048))


# ---------------------------------------------------------------------------------------------
# finding 6: numbers, paths and uploads as models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("steps", float("nan"), "steps must be a finite whole number"),
    ("seed", float("nan"), "seed must be a finite whole number"),
    ("height", float("nan"), "height must be a finite whole number"),
    ("steps", 2.5, "steps must be a whole number, got 2.5"),
    ("seed", 1.5, "seed must be a whole number, got 1.5"),
    ("seed", float("inf"), "seed must be a finite whole number"),
])
def test_nan_and_fractions_are_refused_by_name(app, models, field, value, message):
    # raw JSON over HTTP, as the probe sent it (gradio_client itself refuses NaN)
    import json

    import httpx
    _, url = app
    a = {**_fuse_args(models), "guidance": 5.0, "fusion_selection": "600,1,1", "mode": 2, field: value}
    params = Client(url, verbose=False).view_api(print_info=False, return_format="dict")[
        "named_endpoints"]["/fuse"]["parameters"]  # positional order; the rest at their defaults
    data = [a.get(p["parameter_name"], p.get("parameter_default")) for p in params]
    body = json.dumps({"data": data})  # NaN/Infinity tokens, as JavaScript would not send
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("gradio_api/call/fuse", content=body, headers={"content-type": "application/json"})
        events = http.get(f"gradio_api/call/fuse/{r.json()['event_id']}").text
    assert "event: error" in events and re.search(message, events), events[-300:]


def test_a_5000_character_model_path_is_refused_briefly(app, models):
    _, url = app
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="5000 characters, more than 1024") as e:
        client.predict(api_name="/fuse", **_fuse_args(models, general_path="/" + "a" * 4999))
    assert len(str(e.value)) < 400


def test_an_uploaded_file_is_never_loaded_as_a_model(app, models, tmp_path):
    from studio.limits import upload_dirs
    _, url = app
    client = Client(url, verbose=False)
    upload = upload_dirs()[0] / "i16-test" / "model.safetensors"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"\x00" * 64)
    try:
        with pytest.raises(AppError, match="upload folder"):
            client.predict(api_name="/fuse", **_fuse_args(models, expert_path=str(upload)))
    finally:
        upload.unlink()
