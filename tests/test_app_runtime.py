"""studio/: the app runtime without Gradio (cache, work slots, engine registry, discovery, examples)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from studio.cache import ModelCache, model_bytes
from studio.config import StudioConfig, config_from_args
from studio.engines import EngineRegistry, _Spec
from studio.gpu import StudioError, WorkSlots, friendly_error, is_oom
from studio.models import discover, geometry, resolve_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine, 2 threads make tiny models ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeModel:
    def __init__(self, path, mb: float):
        n = int(mb * 2 ** 20 / 4)
        self.source = path
        self.unet = torch.nn.Linear(n, 1, bias=False)
        self.vae = torch.nn.Identity()
        self.text_encoder = torch.nn.Identity()


def fake_loader(sizes: dict, calls: list):
    def load(path, device=None, dtype=None):
        calls.append(Path(path).name)
        time.sleep(0.05)
        return FakeModel(path, sizes[Path(path).name])
    return load


def test_cache_loads_once_and_evicts_lru_beyond_budget(tmp_path):
    for n in "abc":
        (tmp_path / n).mkdir()
    calls = []
    cache = ModelCache(budget_bytes=int(2.5 * 2 ** 20), device="cpu", dtype=torch.float32,
                       loader=fake_loader({"a": 1, "b": 1, "c": 1}, calls))
    a = cache.get(tmp_path / "a")
    assert cache.get(str(tmp_path / "a")) is a and calls == ["a"] and cache.hits == 1
    cache.get(tmp_path / "b")
    cache.get(tmp_path / "a")          # a is now the most recently used
    cache.get(tmp_path / "c")          # 3 MB > 2.5 MB: evicts b (least recently used)
    names = [Path(k.path).name for k in cache.keys()]
    assert names == ["a", "c"] and cache.evictions == 1
    assert cache.bytes_used() <= cache.budget_bytes
    cache.get(tmp_path / "b", protect=(cache.key(tmp_path / "a"),))  # a protected: c goes
    assert [Path(k.path).name for k in cache.keys()] == ["a", "b"]
    assert "float32" in str(cache.keys()[0]) and "cpu" in cache.keys()[0].device
    # keyed by dtype too
    cache.get(tmp_path / "a", dtype=torch.float16)
    assert sum(Path(k.path).name == "a" for k in cache.keys()) >= 1
    assert cache.evict() >= 1 and len(cache) == 0


def test_cache_concurrent_get_loads_once(tmp_path):
    (tmp_path / "a").mkdir()
    calls = []
    cache = ModelCache(device="cpu", dtype=torch.float32, loader=fake_loader({"a": 0.1}, calls))
    got = []
    ts = [threading.Thread(target=lambda: got.append(cache.get(tmp_path / "a"))) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert calls == ["a"] and len({id(m) for m in got}) == 1


def test_model_bytes_counts_shared_tensors_once():
    a, b = FakeModel("a", 1), FakeModel("b", 1)
    b.unet = a.unet
    assert model_bytes([a, b]) == model_bytes([a])


def test_cache_pipeline_is_reused_and_dropped_with_its_models(tiny_dirs):
    cache = ModelCache(device="cpu", dtype=torch.float32)
    p1 = cache.pipeline(tiny_dirs["general"], tiny_dirs["expert"])
    assert cache.pipeline(tiny_dirs["general"], tiny_dirs["expert"]) is p1
    assert "vae" in p1.shared_components
    cache.evict(tiny_dirs["expert"])
    assert cache.pipeline(tiny_dirs["general"], tiny_dirs["expert"]) is not p1


def test_work_slots_limit_and_cancel():
    from fusion.sampler import Cancelled
    slots = WorkSlots(1)
    inside, peak = [0], [0]
    lock = threading.Lock()

    def job():
        with slots.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    ts = [threading.Thread(target=job) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert peak[0] == 1 and slots.busy == 0
    ev = threading.Event()
    with slots.slot():
        ev.set()
        with pytest.raises(Cancelled):
            with slots.slot(cancel=ev):
                pass
    with pytest.raises(ValueError):
        WorkSlots(0)


def test_friendly_errors():
    from fusion.loading import IncompatibleModelsError, ModelLoadError
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert "Out of memory" in friendly_error(RuntimeError("CUDA out of memory. Tried"), "fusion")
    assert friendly_error(ModelLoadError("x.ckpt: corrupt")).startswith("Could not load the model")
    assert "cannot be fused" in friendly_error(IncompatibleModelsError("width differs"))
    assert friendly_error(ValueError("steps must be >= 1")) == "steps must be >= 1"


def _ghost_engine(reg):
    import no_such_module_xyz  # noqa: F401  (not installed: a plain import that fails)
    return no_such_module_xyz.Engine()


def test_registry_lists_broken_engines_as_unavailable(tmp_path):
    cfg = StudioConfig(models_dir=tmp_path, device="cpu", style_model=tmp_path / "missing",
                       mccstn_weights=tmp_path / "mccstn")  # an empty folder, not the shipped weights
    reg = EngineRegistry(cfg, cache=None, slots=WorkSlots(1))
    reg.specs.append(_Spec("ghost", "Ghost", _ghost_engine))
    es = {e.key: e for e in reg.entries()}
    assert set(es) >= {"mccstn", "injection", "ghost"}
    assert not es["ghost"].available and "could not be imported" in es["ghost"].reason
    assert not es["mccstn"].available and "weights" in es["mccstn"].reason.lower()
    assert not es["injection"].available and "not found" in es["injection"].reason
    assert "unavailable" in es["mccstn"].status_line()
    with pytest.raises(StudioError, match="unavailable"):
        reg.stylize("mccstn", None, None, {})
    with pytest.raises(StudioError, match="unknown style engine"):
        reg.get("nope")


def test_discover_resolve_geometry(tmp_path, tiny_dirs):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "mccstn").mkdir()
    (tmp_path / "mccstn" / "mccstn.safetensors").write_bytes(b"x")
    import shutil
    shutil.copytree(tiny_dirs["general"], tmp_path / "tiny")
    found = {c.label: c for c in discover(tmp_path) if c.kind != "toy"}
    assert set(found) == {"sub/m.safetensors", "tiny"}
    assert discover(tmp_path / "missing") == [c for c in discover(None)]
    assert resolve_model("ignored", str(tmp_path / "tiny"), "General") == tmp_path / "tiny"
    with pytest.raises(ValueError, match="not found"):
        resolve_model(str(tmp_path / "nope"), "", "General")
    with pytest.raises(ValueError, match="not a model"):
        resolve_model(str(tmp_path / "notes.txt"), "", "Expert")
    with pytest.raises(ValueError, match="pick one"):
        resolve_model("", " ", "Expert")
    g = geometry(tmp_path / "tiny")
    assert (g.native, g.step) == (16, 4) and g.minimum <= g.native <= g.maximum
    sd = geometry(tmp_path / "sub" / "m.safetensors")
    assert (sd.native, sd.step) == (512, 64)


def test_examples_are_valid_recipes():
    from fusion.schedule import check_mode, parse_fusion_selection
    from studio.examples import FUSION_EXAMPLES, style_examples
    demo, r1, r2 = FUSION_EXAMPLES  # the demo (tests/test_fusion_demo.py), then the reference recipes
    assert (r1.fusion_selection, r1.mode, r1.primary) == ("600,1,1", 2, "general")
    assert (r2.fusion_selection, r2.mode, r2.primary) == ("850,1,1", 1, "expert")
    for e in FUSION_EXAMPLES:
        parse_fusion_selection(e.fusion_selection)
        check_mode(e.mode)
    for c, s in style_examples():
        assert Path(c).is_file() and Path(s).is_file() and c != s


def test_config_flags_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_MODELS_DIR", str(tmp_path))
    cfg = config_from_args(["--port", "0", "--device", "cpu", "--threads", "1"])
    assert cfg.models_dir == tmp_path and cfg.port is None and cfg.threads == 1 and cfg.preload
    from studio.config import SHIPPED_MCCSTN_DIR
    # the models folder holds no MccSTN weights: the shipped toy-world weights are used
    assert cfg.mccstn_dir() == SHIPPED_MCCSTN_DIR and (SHIPPED_MCCSTN_DIR / "mccstn.safetensors").is_file()
    assert config_from_args(["--models-dir", "/x", "--no-preload"]).models_dir == Path("/x")


def test_help_and_light_import():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--models-dir", "--device", "--share", "STUDIO_MODELS_DIR"):
        assert flag in out.stdout
    code = "import sys, app; print(sorted(m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_fusion_service_out_of_memory_is_a_clear_error(tiny_dirs, monkeypatch):
    from fusion.pipeline import FusionPipeline
    from studio.fusion_service import FuseRequest, FusionService
    cache = ModelCache(device="cpu", dtype=torch.float32)
    svc = FusionService(cache, WorkSlots(1))
    req = FuseRequest(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle",
                      steps=3, height=16, width=16)
    assert svc.run(req).images["fused"].size == (16, 16)

    def boom(self, *a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(FusionPipeline, "__call__", boom)
    with pytest.raises(StudioError, match="Out of memory"):
        svc.run(req)
    assert svc.slots.busy == 0


def test_fusion_service_streams_and_cancels(tiny_dirs, monkeypatch):
    from fusion.pipeline import FusionPipeline
    from fusion.sampler import Cancelled
    from studio.fusion_service import FuseOutcome, FuseRequest, FusionService, Preview
    svc = FusionService(ModelCache(device="cpu", dtype=torch.float32), WorkSlots(1), preview_every=2)
    req = FuseRequest(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle",
                      steps=8, height=16, width=16, fusion_selection="1000,1,1", mode=1)
    items = list(svc.stream(req))
    assert [type(i) for i in items] == [Preview] * 8 + [FuseOutcome]
    assert [i.step for i in items[:-1] if i.images] == [2, 4, 6] and len(items[-1].trace) == 8
    assert set(items[1].images) == {"general", "expert", "fused"}
    # /fuse's way: a progress item per step, no preview decoded, the same images
    decodes, orig = [], FusionPipeline.decode
    monkeypatch.setattr(FusionPipeline, "decode", lambda self, *a, **k: decodes.append(1) or orig(self, *a, **k))
    quiet = list(svc.stream(req, decode_previews=False))
    monkeypatch.undo()
    assert [type(i) for i in quiet] == [Preview] * 8 + [FuseOutcome] and not any(i.images for i in quiet[:-1])
    assert len(decodes) == 1  # the final decode only
    for k, im in items[-1].images.items():
        assert quiet[-1].images[k].tobytes() == im.tobytes()
    ev = threading.Event()
    gen = svc.stream(FuseRequest(**{**req.__dict__, "steps": 200}), ev)
    next(gen)
    ev.set()
    with pytest.raises(Cancelled):
        list(gen)
    with pytest.raises(StudioError, match="v1,kg,ke"):
        svc.run(FuseRequest(**{**req.__dict__, "fusion_selection": "x"}))
