"""One request object (issue 11): fusion.settings.FusionRequest is validated once, without models,
by its own rules; the front ends build it and keep their defaults where they were."""
import pytest
import torch

from fusion.schedule import FusionSelection
from fusion.settings import FusionRequest, FusionSettings, LoraSettings, PairChoice, SettingsError


def test_a_request_validates_without_any_model_or_file(tmp_path):
    missing = str(tmp_path / "no-such-model")
    req = FusionRequest(PairChoice(missing, missing), "a red circle", seeds=[3],
                        settings=FusionSettings(fusion_selection="850,1,2", mode=1, height=68, width=68))
    ok = req.validated()  # nothing is read: the paths do not even exist
    assert ok.prompt1 == "a red circle" and ok.seeds == (3,)
    assert ok.settings.fusion_selection == FusionSelection(850, 1.0, 2.0)
    assert ok.settings.height == 68  # the VAE factor is the loaded model's (pipeline.check_inputs)


@pytest.mark.parametrize("change,field,says", [
    (dict(settings=FusionSettings(fusion_selection="600,1")), "fusion_selection", "fusion_selection must be three"),
    (dict(settings=FusionSettings(mode=3)), "mode", "mode must be one of"),
    (dict(settings=FusionSettings(steps=0)), "steps", "steps must be an integer in 1..1000"),
    (dict(settings=FusionSettings(height=0)), "height", "height must be a positive multiple"),
    (dict(settings=FusionSettings(guidance_scale=float("nan"))), "guidance_scale", "finite"),
    (dict(seeds=[-1]), "seeds", "seed must be an integer in 0..2"),
    (dict(seeds=[]), "seeds", "at least one"),
    (dict(prompt=None), "prompt", "prompt must be a string"),
    (dict(models=PairChoice("a", "b", LoraSettings(lora1="x", lora1_scale=float("inf")))), "lora1_scale",
     "lora1_scale must be finite"),
])
def test_each_bad_field_is_named(change, field, says):
    base = dict(models=PairChoice("a", "b"), prompt="p")
    with pytest.raises(SettingsError, match=says) as e:
        FusionRequest(**{**base, **change}).validated()
    assert e.value.field == field


def test_the_pair_check_names_the_side_and_the_file(tiny_dirs, tmp_path):
    good = str(tiny_dirs["general"])
    with pytest.raises(SettingsError, match="model not found") as e:
        PairChoice(good, str(tmp_path / "gone")).check()
    assert e.value.field == "model1"
    with pytest.raises(SettingsError, match="LoRA file not found") as e:
        PairChoice(good, good, LoraSettings(lora0=str(tmp_path / "x.safetensors"))).check()
    assert e.value.field == "lora0"
    assert PairChoice(good, good).check().model1 == good


def test_the_app_parses_fusion_selection_once_per_request(tiny_dirs, monkeypatch):
    import fusion.pipeline
    import fusion.schedule
    import fusion.settings
    from studio.cache import ModelCache
    from studio.fusion_service import FuseRequest, FusionService
    from studio.gpu import WorkSlots

    texts = []
    real = fusion.schedule.parse_fusion_selection

    def counting(text):
        if not isinstance(text, FusionSelection):
            texts.append(text)
        return real(text)

    monkeypatch.setattr(fusion.schedule, "parse_fusion_selection", counting)
    monkeypatch.setattr(fusion.settings, "parse_fusion_selection", counting)
    monkeypatch.setattr(fusion.pipeline, "parse_fusion_selection", counting, raising=False)  # where it used to be
    svc = FusionService(ModelCache(device="cpu", dtype=torch.float32), WorkSlots(1))
    out = svc.run(FuseRequest(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle",
                              steps=3, height=16, width=16, fusion_selection=" 700,1,2 ", mode=2))
    assert texts == ["700,1,2"] and out.fusion_selection == "700,1,2"


def test_defaults_stay_where_they_were():
    from fusion.cli import build_parser
    from fusion.sweep import build_parser as sweep_parser
    from studio.examples import FUSION_EXAMPLES
    from studio.fusion_service import FuseRequest
    from studio.requests import APP
    from studio.sweep_service import SweepRequest

    # the command line's are the reference script's (shared/spec/fusion.md): DDIM 100, guidance 10, 8 samples
    a = build_parser().parse_args([])
    assert (a.ddim_steps, a.scale, a.n_samples, a.seed, a.fusion_selection, a.mode) == (100, 10.0, 8, [6854],
                                                                                         "600,1,1", 2)
    s = sweep_parser().parse_args(["--out", "x"])
    assert (s.ddim_steps, s.scale, s.n_samples, s.seed) == (100, 10.0, 1, 6854)
    lib = FusionSettings()
    assert (lib.steps, lib.guidance_scale, lib.n_samples) == (a.ddim_steps, a.scale, a.n_samples)
    # the app's: the demo's recipe (issue 13 item 2: changed by design from the reference's first recipe,
    # "600,1,1" mode 2 general primary, which stays the library's and the CLI's), the sweep's 20 steps,
    # one image each
    demo = FUSION_EXAMPLES[0]
    f = FuseRequest(general="g", expert="e", prompt="p")
    recipe = ("steps", "guidance", "seed", "fusion_selection", "mode", "primary", "blend")
    assert [getattr(f, k) for k in recipe] == [getattr(APP, k) for k in recipe] == [getattr(demo, k) for k in recipe]
    assert (f.fusion_selection, f.primary) != (lib.fusion_selection, lib.primary) and f.blend  # not the library's
    assert SweepRequest(general="g", expert="e", prompt="p").steps == APP.sweep_steps == 20
    assert f.settings(f.steps, None, None).n_samples == APP.n_samples == 1


def test_the_request_modules_import_without_torch_or_gradio():
    import subprocess
    import sys
    code = ("import sys, fusion.settings, fusion.cli_request, studio.requests; "
            "print(sorted(m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_the_readme_request_example_runs(tmp_path):
    from fusion import FusionPipeline, FusionRequest, FusionSettings, PairChoice
    from fusion.paths import TOY_EXPERT, TOY_GENERAL
    req = FusionRequest(PairChoice(str(TOY_GENERAL), str(TOY_EXPERT)), "a cartoon of a big green triangle",
                        "a big green triangle", seeds=(1,), settings=FusionSettings(steps=2, n_samples=1)).validated()
    pipe = FusionPipeline.from_choice(req.models)
    [res] = pipe.run(req)
    [alone] = pipe(req.prompt, req.prompt1, FusionSettings(steps=2, n_samples=1), seeds=[1])
    assert torch.equal(res.images["fused"], alone.images["fused"]) and res.images["fused"].shape == (1, 3, 64, 64)
