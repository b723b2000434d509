"""The shipped toy pipelines load offline (diffusers and the fusion engine) and make 64x64 images."""
import json

import numpy as np
import pytest
import torch

from toyworld.models import DEFAULT_CARTOON, DEFAULT_GENERAL

PIPES = [DEFAULT_GENERAL, DEFAULT_CARTOON]


@pytest.mark.parametrize("path", PIPES, ids=lambda p: p.name)
def test_layout_and_tokenizer(path):
    idx = json.loads((path / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionPipeline"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir()
    assert list((path / "unet").glob("*.safetensors")) and list((path / "vae").glob("*.safetensors"))
    assert (path / "README.md").exists()
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "scaled_linear" and sched["beta_start"] == 0.00085
    assert sched["beta_end"] == 0.012 and sched["steps_offset"] == 1 and not sched["clip_sample"]
    assert sched["prediction_type"] == "epsilon" and sched["set_alpha_to_one"] is False
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(path / "tokenizer"), local_files_only=True)
    assert tok.vocab_size == 49408  # the real CLIP BPE vocabulary
    assert tok("a photo of a cat").input_ids[0] == 49406


def test_expert_shares_text_encoder_and_vae_bytes():
    for sub in ("text_encoder", "vae"):
        for f in (DEFAULT_GENERAL / sub).glob("*.safetensors"):
            assert f.read_bytes() == (DEFAULT_CARTOON / sub / f.name).read_bytes()


def test_diffusers_pipeline_generates_64px():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(DEFAULT_GENERAL), local_files_only=True,
                                                   torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a big red circle", num_inference_steps=4, guidance_scale=5.0, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_fusion_engine_loads_and_fuses():
    fusion = pytest.importorskip("fusion.pipeline")
    pipe = fusion.FusionPipeline.from_paths(str(DEFAULT_GENERAL), str(DEFAULT_CARTOON), device="cpu",
                                            dtype=torch.float32)
    s = fusion.FusionSettings(fusion_selection="600,1,1", mode=2, steps=5, guidance_scale=7.5, n_samples=1,
                              primary="expert")
    res = pipe("a cartoon of a purple circle", "a purple circle", settings=s, seeds=[0])[0]
    for arm in ("general", "expert", "fused"):
        assert tuple(res.images[arm].shape) == (1, 3, 64, 64)
