"""The style-engine registry and adapters (studio/engines.py, studio/style_engines/): each engine
is built once per app, the diffusion engines take their models from the warm model cache, every
engine gets ``cancel``, and the libraries (styleid/, mccstn/) carry no UI code."""
from __future__ import annotations

import ast
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusion.ddim import Cancelled
from fusion.paths import MCCSTN_WEIGHTS_DIR, TOY_EXPERT, TOY_GENERAL
from studio.cache import ModelCache
from studio.config import StudioConfig
from studio.engines import EngineRegistry
from studio.gpu import StudioError, WorkSlots
from studio.style_engines.base import Control, StyleEngine
from tests.test_mccstn_common import single_thread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _img(seed, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


class RecordingEngine(StyleEngine):
    """Remembers what the registry handed it."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def availability(self):
        return True, ""

    def controls(self):
        return [Control("n", "number", "N", 1, 0, 10, 1)]

    def stylize(self, content, style, cancel=None, **controls):
        self.calls.append((cancel, self.check_controls(controls)))
        return content


def test_registry_builds_each_engine_once_and_hands_it_cancel(tmp_path):
    built = []

    def factory(cfg, cache):
        built.append(RecordingEngine())
        return built[-1]

    cfg = StudioConfig(models_dir=tmp_path, device="cpu", mccstn_weights=tmp_path / "mccstn",
                       extra_engines=[("rec", factory)])
    reg = EngineRegistry(cfg, cache=None, slots=WorkSlots(1))
    first = {e.key: e.engine for e in reg.entries()}
    again = {e.key: e.engine for e in reg.entries(refresh=True)}
    assert set(first) == {"expert", "mccstn", "injection", "rec"}
    assert all(again[k] is first[k] and first[k] is not None for k in first)
    ev = threading.Event()
    reg.stylize("rec", _img(0), _img(1), {"n": 3.0, "other_engine_control": 1}, cancel=ev)
    reg.stylize("rec", _img(0), _img(1), {})
    assert len(built) == 1 and reg.get("rec").engine is built[0]
    (cancel1, opts1), (cancel2, opts2) = built[0].calls
    assert cancel1 is ev and opts1 == {"n": 3} and isinstance(opts1["n"], int)
    assert cancel2 is None and opts2 == {"n": 1}


def test_diffusion_engines_share_the_warm_cache_and_load_nothing_twice(tmp_path):
    if not ((TOY_GENERAL / "unet").is_dir() and (TOY_EXPERT / "unet").is_dir()):
        pytest.skip("the embedded toy models are not built")
    cache = ModelCache(device="cpu", dtype=torch.float32)
    cfg = StudioConfig(models_dir=tmp_path, device="cpu", style_model=TOY_GENERAL,
                       mccstn_weights=tmp_path / "mccstn")
    reg = EngineRegistry(cfg, cache=cache, slots=WorkSlots(1))
    engines = {e.key: e.engine for e in reg.entries()}
    assert cache.loads == 0  # listing loads nothing
    c, s = _img(2, 64), _img(3, 64)
    out = reg.stylize("expert", c, s, {"steps": 4})
    assert cache.loads == 2 and out.size == (64, 64)
    out = reg.stylize("injection", c, s, {"steps": 2})
    assert cache.loads == 2 and out.size == (64, 64)  # the general model came from the cache
    reg.stylize("injection", c, s, {"steps": 2})
    assert cache.loads == 2 and cache.hits == 2
    assert {e.key: e.engine for e in reg.entries(refresh=True)} == engines
    assert engines["injection"]._model is None  # the model is held by the cache only
    assert engines["expert"]._models == {}


def test_a_set_cancel_stops_the_diffusion_engines_before_any_unet_call(tmp_path):
    from fusion.testing import save_tiny_model
    from studio.style_engines.expert import ExpertEngine
    from studio.style_engines.injection import InjectionEngine

    folder = save_tiny_model(tmp_path / "tiny", seed=3)
    ev = threading.Event()
    ev.set()
    calls = []
    inj = InjectionEngine(folder, loader=lambda p: calls.append(p) or _load(p))
    with pytest.raises(Cancelled):
        inj.stylize(_img(4, 16), _img(5, 16), cancel=ev, steps=2)
    assert calls == [folder]  # the loader was asked (every run), the work stopped at the first step
    exp = ExpertEngine(folder, folder, load_pair=lambda: (_load(folder),) * 2)
    with pytest.raises(Cancelled):
        exp.stylize(_img(4, 16), _img(5, 16), cancel=ev, steps=2)


def _load(path):
    from fusion.loading import load_model
    return load_model(path, device="cpu")


def test_mccstn_engine_checks_cancel_and_forgets_a_load_error_when_the_files_change(tmp_path):
    from studio.style_engines.mccstn import MccSTNEngine

    shipped = MCCSTN_WEIGHTS_DIR / "mccstn.safetensors"
    if not shipped.is_file():
        pytest.skip("no shipped MccSTN weights")
    w = tmp_path / "w"
    w.mkdir()
    (w / "mccstn.safetensors").write_bytes(b"not a safetensors file")
    eng = MccSTNEngine(w, device="cpu")
    assert eng.availability() == (True, "")  # the file name looks right ...
    with pytest.raises(ValueError):
        eng.stylize(_img(6, 64), _img(7, 64))
    ok, why = eng.availability()  # ... the error is remembered while the file stays the same
    assert not ok and "unusable" in why
    assert eng.availability()[0] is False
    shutil.copy(shipped, w / "mccstn.safetensors")
    assert eng.availability() == (True, "")
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        eng.stylize(_img(6, 64), _img(7, 64), cancel=ev, long_side=256)
    assert eng.stylize(_img(6, 64), _img(7, 64), cancel=threading.Event(), long_side=256).size == (256, 256)


def test_registry_reports_a_failed_run_and_keeps_the_engine(tmp_path):
    class Failing(RecordingEngine):
        def stylize(self, content, style, cancel=None, **controls):
            raise ValueError("no good")

    eng = Failing()
    cfg = StudioConfig(models_dir=tmp_path, device="cpu", mccstn_weights=tmp_path / "mccstn",
                       extra_engines=[("bad", lambda cfg, cache: eng)])
    reg = EngineRegistry(cfg, cache=None, slots=WorkSlots(1))
    with pytest.raises(StudioError, match="no good"):
        reg.stylize("bad", _img(0), _img(1), {})
    assert reg.get("bad").engine is eng and reg.get("bad").available


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_libraries_carry_no_ui_code_and_nothing_imports_the_old_modules():
    gone = ("mccstn.injection", "mccstn.injection_attn", "mccstn.engines", "mccstn.mccstn_engine",
            "mccstn.expert_engine", "mccstn.expert_transfer", "mccstn.images", "studio.injection_engine")
    for mod in gone:
        assert not (ROOT / (mod.replace(".", "/") + ".py")).exists(), mod
    files = [p for d in ("fusion", "mccstn", "styleid", "studio", "toyworld", "bench", "tests")
             for p in (ROOT / d).rglob("*.py")] + [ROOT / "app.py"]
    for p in files:
        bad = {m for m in _imports(p) if m in gone or m.startswith("studio.injection_engine")}
        assert not bad, f"{p.relative_to(ROOT)} imports {bad}"
    for lib in ("styleid", "mccstn"):
        for p in (ROOT / lib).rglob("*.py"):
            src = p.read_text()
            assert not any(m.split(".")[0] in ("studio", "gradio") for m in _imports(p)), p
            assert "Control(" not in src, f"{p.relative_to(ROOT)} holds UI controls"


def test_benchmarks_run_no_test_scripts():
    for p in (ROOT / "bench").glob("*.py"):
        src = p.read_text()
        assert '"tests"' not in src and "tests/data" not in src, p.name  # no paths into tests/
        assert not any(m == "tests" or m.startswith("tests.") for m in _imports(p)), p.name


def test_mccstn_speed_bench_writes_its_own_random_weights(tmp_path, monkeypatch):
    import bench.mccstn_speed as ms
    from mccstn import MccSTN

    folder = ms.random_weights(tmp_path / "w")
    assert sorted(f.name for f in folder.iterdir()) == sorted(
        ("vgg_normalised.pth", "decoder.pth", "transformer.pth", "discriminator.pth"))
    model = MccSTN.from_pretrained(folder, device="cpu")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feats = model.encode(x)
    assert all(torch.isfinite(f).all() and f.abs().mean() > 1e-3 for f in feats)  # He init keeps the scale
    monkeypatch.setattr(ms, "RESULTS", tmp_path / "results")
    res = ms.main(["stylize", "--sizes", "128", "--threads", "1", "--repeats", "1", "--name", "t"])
    assert res == 0
    out = (tmp_path / "results" / "t.json").read_text()
    assert ms.RANDOM_WEIGHTS in out and "\"size\": 128" in out
