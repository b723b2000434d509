"""ZeroGPU: the model-running calls wrapped with ``spaces.GPU`` only on a ZeroGPU Space.

``spaces`` is not installed here; a stub module stands in for it. The stub does what the real
decorator does at the boundary (spaces 0.51.3, zero/wrappers.py): it calls ``duration`` with the
call's arguments, pickles the arguments into the "worker" and every result (each yield of a
generator) back, and closes the worker's generator when the caller closes its own. Its pickler
refuses torch tensors, so a tensor crossing the boundary fails the test. The GPU itself (the
scheduling, the fork) is stubbed.
"""
from __future__ import annotations

import io
import pickle
import sys
import threading
import types

import pytest
import torch

from studio.config import StudioConfig
from studio.fusion_service import FuseOutcome, FuseRequest, Preview
from studio.runtime import Studio
from studio.zerogpu import GpuCalls, ZeroGPUSettings, load_spaces, zero_gpu_requested


class NoTensorPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            raise TypeError(f"a torch tensor ({obj.device}) would cross the process boundary")
        return NotImplemented


def cross(obj):
    buf = io.BytesIO()
    NoTensorPickler(buf).dump(obj)
    return pickle.loads(buf.getvalue())


def make_stub_spaces():
    mod = types.ModuleType("spaces")
    mod.wrapped, mod.calls, mod.closed = [], [], []

    def GPU(task=None, *, duration=None, size=None):
        if task is None:
            return lambda t: GPU(t, duration=duration, size=size)
        mod.wrapped.append(task)
        import inspect
        if inspect.isgeneratorfunction(task):
            def handler(*args, **kwargs):
                mod.calls.append((task.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                a, kw = cross((args, kwargs))
                gen = task(*a, **kw)
                try:
                    for item in gen:
                        yield cross(item)
                except GeneratorExit:
                    mod.closed.append(task.__name__)
                    gen.close()
                    raise
        else:
            def handler(*args, **kwargs):
                mod.calls.append((task.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                a, kw = cross((args, kwargs))
                return cross(task(*a, **kw))
        handler.__wrapped__ = task
        return handler

    mod.GPU = GPU
    return mod


@pytest.fixture
def stub_spaces(monkeypatch):
    mod = make_stub_spaces()
    monkeypatch.setitem(sys.modules, "spaces", mod)
    return mod


@pytest.fixture
def studio(tiny_dirs):
    cfg = StudioConfig(device="cpu", memory_budget_gb=1.0, threads=1, preview_every=1,
                       style_model=tiny_dirs["general"])
    return Studio(cfg)


def request(tiny_dirs, **kw):
    args = dict(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle", steps=4,
                height=16, width=16, seed=3, fusion_selection="600,1,1", mode=2)
    args.update(kw)
    return FuseRequest(**args)


def test_variable_values_as_spaces_reads_them():
    assert zero_gpu_requested({"SPACES_ZERO_GPU": "true"}) and zero_gpu_requested({"SPACES_ZERO_GPU": "1"})
    assert not zero_gpu_requested({}) and not zero_gpu_requested({"SPACES_ZERO_GPU": "false"})


def test_not_wrapped_without_the_variable(monkeypatch, stub_spaces, studio, tiny_dirs):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    calls = GpuCalls(studio, load_spaces())
    assert not calls.active and stub_spaces.wrapped == []
    items = list(calls.fuse(request(tiny_dirs), threading.Event()))
    assert isinstance(items[-1], FuseOutcome) and stub_spaces.calls == []


def test_variable_without_spaces_installed_runs_unwrapped(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails as when it is not installed
    assert load_spaces() is None


def test_fusion_wrapped_streams_and_only_cpu_objects_cross(monkeypatch, stub_spaces, studio, tiny_dirs):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    calls = GpuCalls(studio, load_spaces())
    assert calls.active and len(stub_spaces.wrapped) == 2
    items = list(calls.fuse(request(tiny_dirs, steps=4), threading.Event()))
    previews = [i for i in items if isinstance(i, Preview)]
    assert [p.step for p in previews] == [1, 2, 3, 4]            # one item per step: streaming works
    assert sum(p.images is not None for p in previews) >= 2       # decoded previews crossed too
    out = items[-1]
    assert isinstance(out, FuseOutcome) and set(out.images) == {"general", "expert", "fused"}
    assert out.images["fused"].size == (16, 16)
    assert [name for name, _ in stub_spaces.calls] == ["_fuse_in_worker"]
    # the same request unwrapped gives the same image (the wrapper changes where, not what)
    plain = studio.fusion.run(request(tiny_dirs, steps=4))
    assert plain.images["fused"].tobytes() == out.images["fused"].tobytes()


def test_duration_estimated_from_steps_size_and_images(monkeypatch, stub_spaces, studio, tiny_dirs):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    s = ZeroGPUSettings(base_seconds=10, fuse_step_seconds=0.5, min_seconds=15, max_seconds=120)
    assert s.fuse_seconds(50, 512, 512) == 35                     # 10 + 50 * 0.5
    assert s.fuse_seconds(50, 512, 512, images=2) == 60
    assert s.fuse_seconds(20, 768, 768) == 33                     # 10 + 20 * 0.5 * 2.25 = 32.5 -> 33
    assert s.fuse_seconds(1, 64, 64) == 15 and s.fuse_seconds(500, 1024, 1024) == 120  # clipped
    calls = GpuCalls(studio, load_spaces(), s)
    list(calls.fuse(request(tiny_dirs, steps=3), threading.Event()))
    list(calls.fuse(request(tiny_dirs, steps=8), threading.Event()))
    assert [d for _, d in stub_spaces.calls] == [s.fuse_seconds(3, 16, 16), s.fuse_seconds(8, 16, 16)]


def test_stop_in_the_app_process_closes_the_worker(monkeypatch, stub_spaces, studio, tiny_dirs):
    from fusion.sampler import Cancelled
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    calls = GpuCalls(studio, load_spaces())
    cancel = threading.Event()
    seen = []
    with pytest.raises(Cancelled):
        for item in calls.fuse(request(tiny_dirs, steps=30), cancel):
            seen.append(item)
            if len(seen) == 2:
                cancel.set()  # what /stop does for this session
    assert len(seen) == 2 and stub_spaces.closed == ["_fuse_in_worker"]
    assert studio.slots.busy == 0 or _wait_free(studio)            # the worker let go of the slot


def _wait_free(studio, seconds=10.0):
    import time
    t0 = time.time()
    while studio.slots.busy and time.time() - t0 < seconds:
        time.sleep(0.05)
    return studio.slots.busy == 0


def test_style_transfer_wrapped(monkeypatch, stub_spaces, studio):
    from PIL import Image
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    calls = GpuCalls(studio, load_spaces())
    a, b = Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 200))
    out = calls.stylize("injection", a, b, {"steps": 5})
    assert out.size[0] > 0 and [n for n, _ in stub_spaces.calls] == ["_stylize_in_worker"]
    assert stub_spaces.calls[0][1] == ZeroGPUSettings().style_seconds_for(a, b)


def test_app_wraps_its_model_calls_and_preloads(monkeypatch, stub_spaces, tiny_dirs):
    """build_app on a ZeroGPU Space: fusion and style calls wrapped; preload builds the pipeline
    in this process (no torch.compile)."""
    import app as studio_app
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    cfg = StudioConfig(device="cpu", memory_budget_gb=1.0, threads=1, port=None, style_model=tiny_dirs["general"])
    demo = studio_app.build_app(cfg)
    assert demo.gpu_calls.active
    assert {t.__name__ for t in stub_spaces.wrapped} == {"_fuse_in_worker", "_stylize_in_worker"}
    demo.gpu_calls.preload([(tiny_dirs["general"], tiny_dirs["expert"])])
    pipe = demo.studio.cache.pipeline(tiny_dirs["general"], tiny_dirs["expert"])
    assert demo.studio.cache.loads == 2 and "compile" not in pipe.optimizations


def test_previews_stream_through_the_launched_app(monkeypatch, stub_spaces, tiny_dirs):
    """Through Gradio and a real client: the wrapped fusion still streams previews, then the result."""
    import time

    from gradio_client import Client
    from PIL import Image

    import app as studio_app
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    cfg = StudioConfig(device="cpu", memory_budget_gb=1.0, threads=1, port=None, preview_every=1,
                       style_model=tiny_dirs["general"])
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    try:
        job = Client(url, verbose=False).submit(
            api_name="/fuse_stream", general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), steps=6,
            height=16, width=16, prompt="a red circle", prompt1="a red circle", seed=3)
        final = job.result(timeout=120)
        outputs = job.outputs()
        assert len(outputs) >= 3 and final[10].startswith("Done")          # previews, then the result
        assert [n for n, _ in stub_spaces.calls] == ["_fuse_in_worker"]
        # /fuse (for scripts) runs in the same wrapped worker, decodes no previews, same images
        once = Client(url, verbose=False).predict(
            api_name="/fuse", general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), steps=6,
            height=16, width=16, prompt="a red circle", prompt1="a red circle", seed=3)
        assert [n for n, _ in stub_spaces.calls] == ["_fuse_in_worker"] * 2
        assert once[10].startswith("Done")
        for a, b in zip(once[:3], final[:3]):
            assert Image.open(a).tobytes() == Image.open(b).tobytes()
    finally:
        demo.close()
        time.sleep(0.1)
