"""LoRA experts (issue 10): a base model fused with its own LoRA holds one UNet and gives the
outputs of the LoRA merged into a separate copy; bad LoRA files fail clearly before sampling."""
from __future__ import annotations

import pytest
import torch

from fusion.loading import load_model
from fusion.lora import AdapterSwitch, LoraError, LoraSettings, apply_lora, read_lora
from fusion.pipeline import FusionPipeline, FusionSettings
from tests import lora_files as LF

TOL = 2e-5  # float32 CPU: adapter-on-the-fly vs merged weights differ by rounding only
SETTINGS = FusionSettings(steps=5, n_samples=2, fusion_selection="0,1,1", mode=2, guidance_scale=5.0)


@pytest.fixture(scope="module")
def base(tiny_dirs):
    return tiny_dirs["general"]


@pytest.fixture(scope="module")
def kohya(tmp_path_factory):
    """A kohya file with UNet and text-encoder modules, alpha 2 at rank 4 (kohya scale 0.5)."""
    sd, deltas = LF.kohya_lora(rank=4, alpha=2.0, seed=3)
    return LF.save(sd, tmp_path_factory.mktemp("lora") / "kohya.safetensors"), deltas


def _peft_lora(tmp_path_factory, base, targets, name):
    """A diffusers/peft LoRA file as diffusers' LoRA trainers write it (``save_lora_weights`` of
    ``convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))``), and its updates
    ``scaling * B @ A`` per module, read from the adapter before it was saved."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    unet.add_adapter(LoraConfig(r=4, lora_alpha=2, target_modules=targets))
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    deltas = {}  # the update each LoRA layer adds to its base weight (Hu et al. 2021: W + s B A)
    for n, m in unet.named_modules():
        if hasattr(m, "lora_A") and "default" in m.lora_A:
            a, b = m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()
            d = b @ a if a.dim() == 2 else torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
            deltas[("lora_unet", n)] = d * m.scaling["default"]
    dest = tmp_path_factory.mktemp(name)
    StableDiffusionPipeline.save_lora_weights(  # with the adapter config in the header, as the trainers do now
        str(dest), unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
    return dest / "pytorch_lora_weights.safetensors", deltas


@pytest.fixture(scope="module")
def peft_file(tmp_path_factory, base):
    """Attention-only diffusers LoRA (old ``.lora.down`` key spelling after the trainers' conversion)."""
    return _peft_lora(tmp_path_factory, base, ["to_q", "to_k", "to_v", "to_out.0"], "peft_lora")[0]


@pytest.fixture(scope="module")
def peft_mixed(tmp_path_factory, base):
    """Attention + ResNet convs: the trainers' conversion leaves conv keys as ``lora_A`` and renames
    attention keys to ``.lora.down``, one file in two spellings."""
    return _peft_lora(tmp_path_factory, base, ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"], "peft_mixed")


def run(pipe, settings=SETTINGS):
    return pipe("a big red circle", settings=settings, seeds=(11,))[0]


def max_diff(a, b):
    return max((a.images[k] - b.images[k]).abs().max().item() for k in a.images)


def test_base_with_own_kohya_lora_equals_lora_merged_into_a_copy(base, kohya):
    path, deltas = kohya
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path), lora1_scale=0.7))
    general, merged = load_model(base, device="cpu"), load_model(base, device="cpu")
    LF.merge_into(merged, deltas, scale=0.7)  # kohya's W + multiplier * alpha/rank * up @ down
    got, want = run(pipe), run(FusionPipeline(general, merged))
    assert max_diff(got, want) < TOL
    # the LoRA matters: the expert differs from the base model by far more than the tolerance
    assert (got.images["expert"] - got.images["general"]).abs().max() > 100 * TOL


def test_diffusers_lora_equals_fuse_lora_on_a_second_model(base, peft_file):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(peft_file)))
    general, fused = load_model(base, device="cpu"), load_model(base, device="cpu")
    sd = StableDiffusionPipeline(vae=fused.vae, text_encoder=fused.text_encoder, tokenizer=fused.tokenizer,
                                 unet=fused.unet, scheduler=DDIMScheduler(), safety_checker=None,
                                 feature_extractor=None, requires_safety_checker=False)
    sd.load_lora_weights(str(peft_file))
    sd.fuse_lora()
    sd.unload_lora_weights()
    assert max_diff(run(pipe), run(FusionPipeline(general, fused))) < TOL


def test_mixed_spelling_diffusers_lora_loads_every_tensor(base, peft_mixed):
    path, deltas = peft_mixed
    from safetensors import safe_open
    keys = list(safe_open(str(path), "pt").keys())
    assert any(".lora.down." in k for k in keys) and any(".lora_A." in k for k in keys)  # the fixture is mixed
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path)))
    merged = load_model(base, device="cpu")
    LF.merge_into(merged, deltas)
    assert max_diff(run(pipe), run(FusionPipeline(load_model(base, device="cpu"), merged))) < TOL


def test_same_base_holds_one_unet_vae_and_text_encoder(base, peft_file):
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(peft_file)))
    m0, m1 = pipe.model0, pipe.model1
    assert m0.unet is m1.unet and m0.vae is m1.vae and m0.text_encoder is m1.text_encoder
    assert m0.unet_adapter is None and m1.unet_adapter.startswith("lora_")


def test_text_encoder_lora_keys_are_applied_to_the_lora_side_only(base, kohya):
    path, _ = kohya
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path)))
    m0, m1 = pipe.model0, pipe.model1
    assert m0.unet is m1.unet and m0.text_encoder is not m1.text_encoder
    e0, e1 = m0.encode_prompts(["a red circle"]), m1.encode_prompts(["a red circle"])
    plain = load_model(base, device="cpu").encode_prompts(["a red circle"])
    assert torch.equal(e0, plain) and (e1 - plain).abs().max() > 1e-3


def test_batched_and_unshared_sampling_do_not_mix_the_two_sides(base, kohya):
    path, deltas = kohya
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path)))
    merged = load_model(base, device="cpu")
    LF.merge_into(merged, deltas)
    want = run(FusionPipeline(load_model(base, device="cpu"), merged))
    for kw in (dict(batch_trajectories=True), dict(share=False), dict(batch_trajectories=True, share=False)):
        got = run(pipe, FusionSettings(**{**SETTINGS.__dict__, **kw}))
        assert max_diff(got, want) < TOL, kw
        assert set(got.stats.calls) == {"general_unet", "expert_unet"}


def test_adapter_switches_only_when_the_side_changes(base, peft_file):
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(peft_file)))
    switch = AdapterSwitch.of(pipe.model0.unet)
    before = switch.switches
    run(pipe, FusionSettings(**{**SETTINGS.__dict__, "trajectories": ("expert",)}))
    assert switch.switches - before <= 1  # one enable for the whole request, not one per step
    before = switch.switches
    res = run(pipe)  # base and LoRA passes alternate: at most one switch per UNet pass
    assert 0 < switch.switches - before <= res.stats.total_calls


def test_lora_scale_zero_gives_the_base_model(base, peft_file):
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(peft_file), lora1_scale=0))
    res = run(pipe, FusionSettings(**{**SETTINGS.__dict__, "trajectories": ("general", "expert")}))
    assert (res.images["expert"] - res.images["general"]).abs().max() < TOL


def test_lora0_applies_to_the_general_side(base, peft_file):
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora0=str(peft_file)))
    assert pipe.model0.unet_adapter is not None and pipe.model1.unet_adapter is None


# ---- bad input: one clear error naming the file, before any sampling ---------------------------------------
def _sgm_sdxl_keys(te2: bool):
    # kohya SDXL naming (sd-scripts sdxl_original_unet: input_blocks/middle_block/output_blocks), 2048-dim context
    sd = {}
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    sd[f"{name}.lora_down.weight"] = torch.zeros(4, 2048)
    sd[f"{name}.lora_up.weight"] = torch.zeros(640, 4)
    sd[f"{name}.alpha"] = torch.tensor(4.0)
    if te2:
        n2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
        sd[f"{n2}.lora_down.weight"], sd[f"{n2}.lora_up.weight"] = torch.zeros(4, 1280), torch.zeros(1280, 4)
        sd[f"{n2}.alpha"] = torch.tensor(4.0)
    return sd


def _with_width(width: int):
    # SD 2.x / SDXL kohya files in diffusers block naming: the cross-attention k/v take the family's text width
    mods = [m for m in LF.tiny_unet_modules(context=width) if "attn2" in m[0]]
    return LF.kohya_lora(text=False, unet_modules=mods)[0]


def _lycoris(kind: str):
    name = LF.kohya_name("lora_unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    parts = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b") if kind == "loha" else ("lokr_w1", "lokr_w2")
    sd = {f"{name}.{p}": torch.zeros(8, 8) for p in parts}
    sd[f"{name}.alpha"] = torch.tensor(4.0)
    return sd


def _missing_targets():
    mods = [("down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_q", 8, 8, False)]
    return LF.kohya_lora(text=False, unet_modules=mods)[0]


def _diffusers_sdxl():
    return {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(4, 2048),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.zeros(640, 4),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 1280),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(1280, 4)}


BAD = {
    "sdxl_kohya": (lambda: _sgm_sdxl_keys(te2=True), "second text encoder"),
    "sdxl_kohya_unet_only": (lambda: _sgm_sdxl_keys(te2=False), "2048-dim cross-attention (SDXL)"),
    "sdxl_diffusers": (_diffusers_sdxl, "second text encoder"),
    "sd2_width": (lambda: _with_width(1024), "1024-dim cross-attention (SD 2.x)"),
    "sdxl_width": (lambda: _with_width(2048), "2048-dim cross-attention (SDXL)"),
    "loha": (lambda: _lycoris("loha"), "LoHa"),
    "lokr": (lambda: _lycoris("lokr"), "LoKr"),
    "missing_targets": (_missing_targets, "do not exist in this model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_lora_fails_before_loading_or_sampling(case, base, tmp_path, monkeypatch):
    make, words = BAD[case]
    path = LF.save(make(), tmp_path / f"{case}.safetensors")
    calls = []
    monkeypatch.setattr(FusionPipeline, "__call__", lambda *a, **k: calls.append(1))
    with pytest.raises(LoraError) as e:
        FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path)))
    assert str(path) in str(e.value) and words in str(e.value), str(e.value)
    assert not calls


def test_a_refused_lora_leaves_the_model_untouched(base, tmp_path):
    model = load_model(base, device="cpu")
    path = LF.save(_with_width(1024), tmp_path / "sd2.safetensors")
    with pytest.raises(LoraError):
        apply_lora(model, path)
    assert not getattr(model.unet, "peft_config", None)


def test_missing_and_non_lora_files_are_named(tmp_path):
    with pytest.raises(LoraError, match="not found"):
        read_lora(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LoraError, match="junk.safetensors"):
        read_lora(junk)


def test_lora_settings_reject_a_non_number_scale():
    with pytest.raises(ValueError, match="lora1_scale"):
        LoraSettings(lora1="x.safetensors", lora1_scale="strong").side(1)


# ---- command line ----------------------------------------------------------------------------------------------
CLI_FAST = ["--ddim_steps", "2", "--n_samples", "1", "--quiet", "--fusion_selection", "0,1,1", "--skip_grid"]


def test_cli_fuses_a_base_model_with_its_own_lora(base, peft_file, tmp_path, capsys):
    from fusion.cli import main

    out = tmp_path / "o"
    assert main(["--model0", str(base), "--model1", str(base), "--lora1", str(peft_file), "--lora1_scale", "0.8",
                 "--outdir", str(out), *CLI_FAST]) == 0
    for sub in ("general_model_0", "expert_model_0", "fusion_ge_2"):
        assert list((out / sub).rglob("*.jpg")), sub


def test_cli_bad_lora_is_one_error_before_any_model_loads(base, tmp_path, capsys, monkeypatch):
    from fusion import cli, lora

    bad = LF.save(_lycoris("loha"), tmp_path / "loha.safetensors")
    monkeypatch.setattr(lora, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as e:
        cli.main(["--model0", str(base), "--model1", str(base), "--lora1", str(bad),
                  "--outdir", str(tmp_path / "o"), *CLI_FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(bad) in err and "LoHa" in err


# ---- the app's service layer -----------------------------------------------------------------------------------
def test_app_service_fuses_a_base_with_its_lora_from_one_load_and_survives_a_bad_lora(base, peft_file, tmp_path):
    from studio.cache import ModelCache
    from studio.fusion_service import FuseRequest, FusionService
    from studio.gpu import StudioError, WorkSlots

    svc = FusionService(ModelCache(device="cpu", dtype=torch.float32), WorkSlots(1))
    req = FuseRequest(general=str(base), expert=str(base), expert_lora_path_box=str(peft_file), prompt="a red circle",
                      steps=3, height=16, width=16, fusion_selection="0,1,1")
    out = svc.run(req)
    assert out.images["fused"].size == (16, 16) and svc.cache.loads == 1
    pipe = svc.cache.pipeline(str(base), str(base), lora=svc._lora(req))  # the cached pipeline
    assert pipe.model0.unet is pipe.model1.unet and pipe.model1.unet_adapter is not None
    bad = LF.save(_with_width(1024), tmp_path / "sd2_lora.safetensors")
    with pytest.raises(StudioError) as e:
        svc.run(FuseRequest(**{**req.__dict__, "expert_lora_path_box": str(bad)}))
    assert str(bad) in str(e.value) and "1024-dim cross-attention" in str(e.value)
    assert svc.run(req).images["fused"].size == (16, 16) and svc.slots.busy == 0  # still answering, still warm
    assert svc.cache.loads == 1


def test_lora_picker_lists_models_loras_folder_and_model_picker_skips_it(tmp_path, peft_file):
    import shutil

    from studio.models import discover, discover_loras
    (tmp_path / "loras" / "styles").mkdir(parents=True)
    shutil.copy(peft_file, tmp_path / "loras" / "cartoon.safetensors")
    shutil.copy(peft_file, tmp_path / "loras" / "styles" / "ink.safetensors")
    labels = [c.label for c in discover_loras(tmp_path)]
    assert "cartoon.safetensors" in labels and "styles/ink.safetensors" in labels
    assert not any("loras" in c.path for c in discover(tmp_path))


# ---- the toy world's LoRA training stage -----------------------------------------------------------------------
def test_toyworld_lora_stage_writes_a_lora_that_fits_toy_general_and_resumes(tmp_path):
    from toyworld import train
    from toyworld.models import DEFAULT_GENERAL

    if not (DEFAULT_GENERAL / "unet").is_dir():
        pytest.skip("toy-general is not in this checkout")
    args = ["--stage", "lora", "--out", str(tmp_path / "run"), "--threads", "1", "--n-expert", "40",
            "--lora-steps", "2", "--lora-batch", "4", "--ckpt-every", "1", "--lora-export", str(tmp_path / "out")]
    train.main(args)
    done = (tmp_path / "run" / "lora" / "done.json").read_text()
    assert '"steps": 2' in done
    lora = read_lora(tmp_path / "out" / "pytorch_lora_weights.safetensors")
    model = apply_lora(load_model(DEFAULT_GENERAL, device="cpu", dtype=torch.float32), lora)
    assert model.unet_adapter and not lora.text_encoder
    train.main(args)  # finished: a rerun does not train again
    assert (tmp_path / "run" / "lora" / "done.json").read_text() == done


def test_shape_lock_redraw_runs_the_expert_side_of_a_shared_unet(base, kohya):
    """The shape lock's re-draw (fusion/shape_lock.py) is the expert's: with the expert a LoRA on the
    general model's own UNet (one UNet, two sides), it equals the run with the LoRA merged into a copy."""
    from dataclasses import replace

    path, deltas = kohya
    # the general model primary and alone on the last steps: its side is the last the sampler ran
    s = replace(SETTINGS, fusion_selection="600,1,1", mode=2, primary="general", trajectories=("fused",),
                blend={"shape_lock": True, "shape_lock_redraw": 0.4, "shape_lock_prompt": True})
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(path), lora1_scale=0.7))
    assert pipe.model0.unet is pipe.model1.unet
    general, merged = load_model(base, device="cpu"), load_model(base, device="cpu")
    LF.merge_into(merged, deltas, scale=0.7)
    got, want = run(pipe, s), run(FusionPipeline(general, merged), s)
    assert got.stats.rows["shape_lock_redraw"] == 2 * 3 * 2  # 2 of 5 steps, inversion + guided sampling
    assert max_diff(got, want) < TOL
    # the re-draw matters, and the adapter does: the base model's re-draw is far from it
    assert (got.images["fused"] - run(pipe).images["fused"]).abs().max() > 100 * TOL
    base_side = FusionPipeline(general, load_model(base, device="cpu"))
    assert (run(base_side, s).images["fused"] - got.images["fused"]).abs().max() > 100 * TOL
