"""The shipped toy pipelines: plain diffusers runs them with no extra arguments (fp32 default
weights), the fp16 variant holds the same weights in half precision, and the project's loader reads
exactly the weights the toy-world numbers were measured with."""
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fusion.loading import load_model
from toyworld.variants import COMPONENT_STEMS

ROOT = Path(__file__).resolve().parent.parent
MODELS = [ROOT / "assets" / "models" / n for n in ("toy-general", "toy-cartoon")]
IDS = ["toy-general", "toy-cartoon"]
#: the repository's size budget for the shipped models (identical files are stored once by git)
BUDGET_BYTES = 100 * 10**6


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_plain_diffusers_generates_from_each_shipped_model_with_no_arguments(folder):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    img = pipe("a big red circle", num_inference_steps=4, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.shape == (32, 32, 3)
    assert img.std() > 0.05  # not a flat image


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_fp16_variant_loads_in_plain_diffusers_with_the_same_weights(folder):
    from diffusers import StableDiffusionPipeline
    half = StableDiffusionPipeline.from_pretrained(str(folder), variant="fp16", torch_dtype=torch.float16)
    for sub, stem in COMPONENT_STEMS.items():
        default = load_file(str(folder / sub / f"{stem}.safetensors"))
        loaded = getattr(half, sub).state_dict()
        assert getattr(half, sub).dtype == torch.float16, sub
        for k, v in load_file(str(folder / sub / f"{stem}.fp16.safetensors")).items():
            assert torch.equal(default[k], v.float()), f"{sub}: {k}"  # the default file is the exact upcast
            name = k if k in loaded else next(n for n in loaded if n.endswith(k))
            assert torch.equal(loaded[name], v), f"{sub}: {k}"


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_project_loader_reads_the_shipped_weights_unchanged(folder):
    m = load_model(folder, device="cpu")
    for sub, stem in COMPONENT_STEMS.items():
        want = {k: v.float() for k, v in load_file(str(folder / sub / f"{stem}.fp16.safetensors")).items()}
        got = {k: v for k, v in getattr(m, sub).state_dict().items() if not k.endswith("position_ids")}
        assert len(got) == len(want), sub
        for k, v in want.items():
            name = k if k in got else next(n for n in got if n.endswith(k))
            assert torch.equal(got[name], v), f"{sub}: {k}"


def test_shipped_models_fit_the_repository_budget():
    unique = {}
    for f in (ROOT / "assets" / "models").rglob("*"):
        if f.is_file():
            unique[hashlib.sha256(f.read_bytes()).hexdigest()] = f.stat().st_size
    assert sum(unique.values()) < BUDGET_BYTES


def test_project_loader_reads_the_fp16_files_for_an_fp16_model(monkeypatch):
    import safetensors.torch as st
    read = []
    real_load = st.load_file
    monkeypatch.setattr(st, "load_file", lambda p, *a, **k: read.append(Path(p).name) or real_load(p, *a, **k))
    half = load_model(MODELS[0], device="cpu", dtype=torch.float16)
    assert sorted(read) == ["diffusion_pytorch_model.fp16.safetensors"] * 2 + ["model.fp16.safetensors"]
    read.clear()
    full = load_model(MODELS[0], device="cpu")
    assert "model.safetensors" in read and half.dtype == torch.float16
    for sub in COMPONENT_STEMS:
        a, b = getattr(half, sub).state_dict(), getattr(full, sub).state_dict()
        assert all(torch.equal(a[k], b[k].half()) for k in a if a[k].is_floating_point()), sub
