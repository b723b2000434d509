"""Issue 16, launched app: what one outside user sends (gradio_client over loopback) never
freezes, cancels or bloats the app for another. One test per finding, each in seconds."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.tiny import save_tiny_model
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
                       style_model=Path(models["general"]), preview_every=1, concurrency=2)
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
    job = client.submit(api_name="/fuse", **_fuse_args(models, steps=40, fusion_selection="1000,1,1", mode=1))
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
