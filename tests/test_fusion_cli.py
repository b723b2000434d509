"""The reference command line: its folder layout and file names, and clear errors before any work."""
import pytest
from PIL import Image

from fusion.cli import main

FAST = ["--ddim_steps", "3", "--n_samples", "2", "--H", "16", "--W", "16", "--quiet"]


def cli(tiny_dirs, outdir, *extra):
    return main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["expert"]),
                 "--outdir", str(outdir), "--prompt", "a red circle", "--prompt1", "a blue square",
                 *FAST, *extra])


def test_reference_layout_and_names(tiny_dirs, tmp_path):
    assert cli(tiny_dirs, tmp_path, "--seed", "5", "--fusion_selection", "600,1,1", "--mode", "2") == 0
    name = "seed_5_600_1_1"
    for folder in ("general_model_0", "expert_model_0", "fusion_ge_2"):
        samples = sorted(p.name for p in (tmp_path / folder / f"samples_{name}").iterdir())
        assert samples == ["00000.jpg", "00001.jpg"]  # the grid is not counted in the numbering
        grid = Image.open(tmp_path / folder / f"{name}.jpg")
        assert grid.size == (2 * (16 + 2) + 2, 16 + 4)  # one row of all samples, 2 px padding


def test_expert_primary_writes_fusion_eg(tiny_dirs, tmp_path):
    assert cli(tiny_dirs, tmp_path, "--expert_primary", "--mode", "1", "--fusion_selection", "850,1,1",
               "--only", "fused", "--skip_grid") == 0
    assert (tmp_path / "fusion_eg_1" / "samples_seed_6854_850_1_1" / "00001.jpg").is_file()
    assert not (tmp_path / "general_model_0").exists()


def test_existing_outputs_are_not_overwritten(tiny_dirs, tmp_path, capsys):
    assert cli(tiny_dirs, tmp_path, "--only", "general") == 0
    f = tmp_path / "general_model_0" / "samples_seed_6854_600_1_1" / "00000.jpg"
    before = f.read_bytes()
    f.write_bytes(b"user's file")
    with pytest.raises(SystemExit) as e:
        cli(tiny_dirs, tmp_path, "--only", "general")
    assert e.value.code == 2 and "already exist" in capsys.readouterr().err
    assert f.read_bytes() == b"user's file"
    assert cli(tiny_dirs, tmp_path, "--only", "general", "--overwrite") == 0
    assert f.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--fusion_selection", "600,1"], "fusion_selection must be three"),
    (["--fusion_selection", "a,b,c"], "fusion_selection must be three"),
    (["--fusion_selection", "600,0,1"], "kg must be a finite number > 0"),
    (["--fusion_selection", "600,1,-2"], "ke must be a finite number > 0"),
    (["--fusion_selection", "1200,1,1"], "v1 must be in 0..1000"),
    (["--mode", "3"], r"mode must be one of \[0, 1, 2\]"),
    (["--H", "15"], "--H: height must be a positive multiple of the VAE factor 2"),  # the loaded model's rule
    (["--ddim_steps", "0"], "--ddim_steps must be >= 1"),
    (["--model0", "/nonexistent/model"], "--model0: model not found"),
])
def test_bad_input_is_one_clear_error_before_loading(tiny_dirs, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        cli(tiny_dirs, tmp_path / "out", *args)
    assert e.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_empty_prompt_list_is_refused(tiny_dirs, tmp_path, capsys):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n\n")
    with pytest.raises(SystemExit):
        cli(tiny_dirs, tmp_path / "out", "--from_file", str(empty))
    err = capsys.readouterr().err
    assert "prompt list" in err and "is empty" in err


def test_corrupt_model_and_other_family_are_clear_errors(tiny_dirs, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(SystemExit):
        main(["--model0", str(bad), "--model1", str(tiny_dirs["expert"]), "--outdir", str(tmp_path / "o"), *FAST])
    assert "not a readable .safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["other_family"]),
              "--outdir", str(tmp_path / "o"), *FAST])
    assert "cannot be fused" in capsys.readouterr().err


def test_help_lists_the_reference_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--model0", "--model1", "--outdir", "--prompt", "--prompt1", "--fusion_selection", "--mode",
                 "--ddim_steps", "--scale", "--H", "--W", "--n_samples", "--seed", "--expert_primary", "--overwrite"):
        assert flag in out


# ---- one size rule (issue 11): the loaded primary's VAE factor, in the CLI as in the library ----
def _toy_cli(outdir, *extra):
    from fusion.paths import TOY_EXPERT, TOY_GENERAL
    return main(["--model0", str(TOY_GENERAL), "--model1", str(TOY_EXPERT), "--outdir", str(outdir),
                 "--prompt", "a red circle", "--ddim_steps", "2", "--n_samples", "1", "--seed", "3", "--quiet",
                 "--only", "fused", "--skip_grid", *extra])


def test_a_toy_size_not_a_multiple_of_8_runs_in_the_cli_as_in_the_library(tmp_path):
    import io

    import numpy as np

    from fusion.paths import TOY_EXPERT, TOY_GENERAL
    from fusion.pipeline import FusionPipeline, FusionSettings, to_uint8
    assert _toy_cli(tmp_path, "--H", "68", "--W", "68") == 0  # 68 = 17 x 4 (the toy VAE factor), not 8 x k
    written = np.asarray(Image.open(tmp_path / "fusion_ge_2" / "samples_seed_3_600_1_1" / "00000.jpg"))
    pipe = FusionPipeline.from_paths(str(TOY_GENERAL), str(TOY_EXPERT))
    [res] = pipe("a red circle", "a red circle", FusionSettings(steps=2, n_samples=1, height=68, width=68,
                                                               trajectories=("fused",)), seeds=[3])
    buf = io.BytesIO()
    Image.fromarray(to_uint8(res.images["fused"], rounding="truncate")[0]).save(buf, format="JPEG")
    assert written.shape == (68, 68, 3)
    assert np.array_equal(written, np.asarray(Image.open(buf)))


def test_a_bad_size_gets_the_same_error_text_from_the_cli_and_the_library(tmp_path, capsys):
    from fusion.paths import TOY_EXPERT, TOY_GENERAL
    from fusion.pipeline import FusionPipeline, FusionSettings
    pipe = FusionPipeline.from_paths(str(TOY_GENERAL), str(TOY_EXPERT))
    with pytest.raises(ValueError) as lib:
        pipe("a red circle", "a red circle", FusionSettings(steps=2, n_samples=1, height=66, width=68), seeds=[3])
    with pytest.raises(SystemExit) as e:
        _toy_cli(tmp_path / "out", "--H", "66", "--W", "68")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "VAE factor 4" in str(lib.value)
    assert f"error: --H: {lib.value}\n" in err
    assert not (tmp_path / "out").exists()
