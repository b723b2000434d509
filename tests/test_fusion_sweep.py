"""Sweeps of fusion settings (issue 13, item 3): axes, cells, shared work, files, resuming, bad input."""
import csv
import hashlib
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fusion.pipeline import FusionSettings, to_uint8
from fusion.sampler import ddim_timesteps
from fusion.schedule import uses_snb
from fusion.sweep import SweepAxes, SweepSpec, main, run_sweep
from fusion.sweep_exec import Chunk, LocalExecutor, cell_settings, plan_chunks, run_chunk
from fusion.sweep_grid import grid_layout
from fusion.sweep_spec import SweepCell

PROMPT, PROMPT1, SEED, STEPS = "a red circle", "a blue square", 11, 6


def spec_for(tiny_dirs, **axes):
    return SweepSpec(PROMPT, PROMPT1, seed=SEED, steps=STEPS, axes=SweepAxes.parse(**axes), n_samples=2,
                     height=16, width=16, model0=str(tiny_dirs["general"]), model1=str(tiny_dirs["expert"]))


def folder_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class NoModels:
    """An executor that fails if the sweep asks it for any work."""
    max_cells = 64

    def map(self, spec, chunks, cancel=None):
        if chunks:
            raise AssertionError(f"a model was needed for {chunks}")
        return iter(())


class Recording(LocalExecutor):
    def __init__(self, pipe):
        super().__init__(pipe)
        self.ran = []

    def map(self, spec, chunks, cancel=None):
        for ch in chunks:
            self.ran += [c.name for c in ch.cells]
        return super().map(spec, chunks, cancel)


# ---- axes and cells ----------------------------------------------------------------------------
def test_axes_are_comma_lists_and_cells_every_combination():
    axes = SweepAxes.parse(v1="400,600,800", kg="1", ke="1,3", mode="2", primary="general,expert")
    assert axes.v1 == (400, 600, 800) and axes.ke == (1.0, 3.0) and axes.primary == ("general", "expert")
    cells = axes.cells()
    assert len(cells) == axes.size == 12 and len(set(cells)) == 12
    assert cells[0] == SweepCell(400, 1.0, 1.0, 2, "general") and cells[-1] == SweepCell(800, 1.0, 3.0, 2, "expert")


@pytest.mark.parametrize("axis,text,says", [
    ("v1", "", "the axis is empty"), ("ke", " , ", "the axis is empty"), ("v1", "400,,600", "empty value"),
    ("mode", "3", "'3' is not a mode"), ("v1", "1200", "'1200' is not an integer DDPM timestep"),
    ("kg", "-1", "'-1' is not a finite number > 0"), ("kg", "abc", "'abc' is not a number"),
    ("primary", "teacher", "'teacher' is not a primary"), ("v1", "400,400", "'400' is given twice")])
def test_bad_axis_values_are_named(axis, text, says):
    with pytest.raises(ValueError, match=f"--{axis}: .*{says}"):
        SweepAxes.parse(**{axis: text})


def test_more_than_256_cells_need_confirmation():
    spec = SweepSpec("p", axes=SweepAxes.parse(v1=",".join(str(v) for v in range(0, 1000, 3))))
    with pytest.raises(ValueError, match="334 cells.*more than 256; pass --yes"):
        spec.check()
    assert spec.check(confirm_large=True) is spec


def test_grid_columns_are_the_longest_axis_rows_the_others():
    lay = grid_layout(SweepAxes.parse(v1="400,600,800", ke="1,3", primary="general,expert"))
    assert lay.column_axis == "v1" and lay.column_labels == ["v1=400", "v1=600", "v1=800"]
    assert lay.row_labels == ["ke=1, primary=general", "ke=1, primary=expert", "ke=3, primary=general",
                              "ke=3, primary=expert"]
    assert lay.cells[3][2] == SweepCell(800, 1.0, 3.0, 2, "expert")


def test_chunks_group_cells_that_can_share_and_carry_the_references_once():
    cells = SweepAxes.parse(v1="400,800", mode="1,2", primary="general,expert").cells()
    chunks = plan_chunks(cells, references=True, max_cells=64)
    assert [c.references for c in chunks] == [True, False, False, False]
    assert sorted(c.name for ch in chunks for c in ch.cells) == sorted(c.name for c in cells)
    assert all(len({(c.primary, c.mode) for c in ch.cells}) == 1 for ch in chunks)


# ---- the work ----------------------------------------------------------------------------------
def test_every_cell_equals_its_one_cell_run(tiny_pipe, tiny_dirs):
    spec = spec_for(tiny_dirs, v1="300,700", ke="1,3", mode="1,2", primary="general,expert")
    cells = spec.axes.cells()
    out = run_chunk(tiny_pipe, spec, Chunk(tuple(cells), references=True))
    for co in out.cells:
        [alone] = tiny_pipe(PROMPT, PROMPT1, cell_settings(spec, co.cell), seeds=[SEED])
        assert np.array_equal(co.images, to_uint8(alone.images["fused"])), co.cell.name
    [ref] = tiny_pipe(PROMPT, PROMPT1, FusionSettings(steps=STEPS, n_samples=2, height=16, width=16,
                                                     trajectories=("general", "expert")), seeds=[SEED])
    for r in ("general", "expert"):
        assert np.array_equal(out.references[r], to_uint8(ref.images[r]))


def test_cells_with_another_sampler_equal_their_one_cell_runs(tiny_pipe, tiny_dirs):
    spec = spec_for(tiny_dirs, v1="300,700", mode="1")
    spec.sampler = "dpmpp_2m"
    out = run_chunk(tiny_pipe, spec, Chunk(tuple(spec.axes.cells()), references=True))
    for co in out.cells:
        [alone] = tiny_pipe(PROMPT, PROMPT1, cell_settings(spec, co.cell), seeds=[SEED])
        assert alone.settings.sampler == "dpmpp_2m"
        assert np.array_equal(co.images, to_uint8(alone.images["fused"])), co.cell.name


def test_a_lora_expert_sweep_equals_its_one_cell_runs(tiny_dirs, tmp_path):
    from fusion.lora import LoraSettings
    from fusion.pipeline import FusionPipeline
    from tests import lora_files as LF
    lora = LF.save(LF.kohya_lora(rank=4, alpha=2.0, seed=3)[0], tmp_path / "expert.safetensors")
    base = str(tiny_dirs["general"])
    assert cli_at(base, base, tmp_path / "out", "--lora1", str(lora), "--lora1_scale", "0.7", "--v1", "300,700",
                  "--mode", "1") == 0
    pipe = FusionPipeline.from_paths(base, base, device="cpu", lora=LoraSettings(lora1=str(lora), lora1_scale=0.7))
    spec = spec_for(tiny_dirs, v1="300,700", mode="1")
    spec.steps = 3
    spec.n_samples = 1
    for c in spec.axes.cells():
        [alone] = pipe(PROMPT, PROMPT1, cell_settings(spec, c), seeds=[SEED])
        swept = np.asarray(Image.open(tmp_path / "out" / "cells" / f"{c.name}.png"))
        assert np.array_equal(swept, to_uint8(alone.images["fused"])[0]), c.name


def test_mode1_prefix_is_computed_once_for_every_v1(tiny_pipe, tiny_dirs):
    v1s = (200, 500, 800)
    spec = spec_for(tiny_dirs, v1=",".join(map(str, v1s)), mode="1")
    out = run_chunk(tiny_pipe, spec, Chunk(tuple(spec.axes.cells()), references=True))
    ts = ddim_timesteps(STEPS)
    snb_steps = [sum(uses_snb(t, v1, 1) for t in ts) for v1 in v1s]
    # general image: every step; each cell adds its own primary passes only after its switch
    # (at the switch step its latent is still the shared one) and the expert on its SNB steps
    assert out.unet_calls["general_unet"] == STEPS + sum(max(n - 1, 0) for n in snb_steps)
    assert out.unet_calls["expert_unet"] == STEPS + sum(snb_steps)
    one_by_one = sum(STEPS + n for n in snb_steps) + 2 * STEPS  # fused runs alone + the two references
    assert sum(out.unet_calls.values()) < one_by_one


def test_mode2_cells_differing_only_in_v1_stay_one_run_until_each_switches(tiny_pipe, tiny_dirs):
    v1s = (200, 500, 800)
    spec = spec_for(tiny_dirs, v1=",".join(map(str, v1s)), mode="2")
    out = run_chunk(tiny_pipe, spec, Chunk(tuple(spec.axes.cells())))
    # cells whose fuse decisions so far agree are in one state: one primary pass per distinct
    # history, one secondary pass per distinct history that fuses now
    flags = [[uses_snb(t, v1, 2) for t in ddim_timesteps(STEPS)] for v1 in v1s]
    general = sum(len({tuple(f[:i]) for f in flags}) for i in range(STEPS))
    expert = sum(len({tuple(f[:i]) for f in flags if f[i]}) for i in range(STEPS))
    assert (out.unet_calls["general_unet"], out.unet_calls["expert_unet"]) == (general, expert)
    assert general < len(v1s) * STEPS


def test_secondary_share_is_the_mask_mean_over_snb_steps(tiny_pipe, tiny_dirs):
    spec = spec_for(tiny_dirs, v1="500", mode="0,2")
    [off, on] = sorted(run_chunk(tiny_pipe, spec, Chunk(tuple(spec.axes.cells()))).cells, key=lambda c: c.cell.mode)
    [alone] = tiny_pipe(PROMPT, PROMPT1, replace(cell_settings(spec, on.cell), capture_saliency=True),
                        seeds=[SEED])
    expected = float(np.mean([st.mask.flatten(1).mean(1).numpy() for st in alone.saliency]))
    assert off.secondary_share == 0.0 and off.snb_steps == 0
    assert on.snb_steps == len(alone.saliency) and on.secondary_share == pytest.approx(expected, abs=1e-6)


# ---- files and resuming ------------------------------------------------------------------------
def test_results_csv_rows_and_relative_images(tiny_pipe, tiny_dirs, tmp_path):
    spec = spec_for(tiny_dirs, v1="400,800", ke="1,3")
    run_sweep(spec, tmp_path, LocalExecutor(tiny_pipe))
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert list(rows[0]) == ["v1", "kg", "ke", "mode", "primary", "seed", "image", "secondary_share", "judge",
                             "judge_prompt", "judge_cartoon"]
    assert sorted((r["v1"], r["ke"]) for r in rows) == [("400", "1"), ("400", "3"), ("800", "1"), ("800", "3")]
    for r in rows:
        img = Image.open(tmp_path / r["image"])
        assert img.size == (2 * 16, 16) and r["seed"] == str(SEED) and 0 <= float(r["secondary_share"]) <= 1
    for name in ("general.png", "expert.png", "grid.png", "sweep.json"):
        assert (tmp_path / name).is_file()


def test_resume_skips_done_cells_and_keeps_their_files(tiny_pipe, tiny_dirs, tmp_path):
    run_sweep(spec_for(tiny_dirs, v1="400,800"), tmp_path, LocalExecutor(tiny_pipe))
    before = folder_digest(tmp_path / "cells")
    wider = Recording(tiny_pipe)
    report = run_sweep(spec_for(tiny_dirs, v1="400,600,800"), tmp_path, wider)
    assert wider.ran == ["v1-600_kg-1_ke-1_mode-2_general"] and (report.ran, report.skipped) == (1, 2)
    after = folder_digest(tmp_path / "cells")
    assert all(after[k] == v for k, v in before.items())
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 3
    again = run_sweep(spec_for(tiny_dirs, v1="400,600,800"), tmp_path, NoModels())
    assert again.ran == 0


def test_a_cell_whose_image_is_missing_runs_again(tiny_pipe, tiny_dirs, tmp_path):
    spec = spec_for(tiny_dirs, v1="400,800")
    run_sweep(spec, tmp_path, LocalExecutor(tiny_pipe))
    lost = tmp_path / "cells" / "v1-800_kg-1_ke-1_mode-2_general.png"
    original = lost.read_bytes()
    lost.unlink()
    again = Recording(tiny_pipe)
    run_sweep(spec, tmp_path, again)
    assert again.ran == ["v1-800_kg-1_ke-1_mode-2_general"] and lost.read_bytes() == original


def test_another_sweeps_folder_is_refused_untouched(tiny_pipe, tiny_dirs, tmp_path):
    run_sweep(spec_for(tiny_dirs, v1="400"), tmp_path, LocalExecutor(tiny_pipe))
    before = folder_digest(tmp_path)
    other = spec_for(tiny_dirs, v1="400")
    other.prompt = "a green triangle"
    with pytest.raises(ValueError, match="holds another sweep's results: it differs in prompt"):
        run_sweep(other, tmp_path, NoModels())
    assert folder_digest(tmp_path) == before


# ---- command line ------------------------------------------------------------------------------
def cli_at(model0, model1, out, *extra):
    return main(["--model0", str(model0), "--model1", str(model1), "--out", str(out),
                 "--prompt", PROMPT, "--prompt1", PROMPT1, "--seed", str(SEED), "--ddim_steps", "3",
                 "--H", "16", "--W", "16", "--quiet", *extra])


def cli(tiny_dirs, out, *extra):
    return cli_at(tiny_dirs["general"], tiny_dirs["expert"], out, *extra)


def test_cli_as_the_issue_writes_it(tiny_dirs, tmp_path, capsys):
    assert cli(tiny_dirs, tmp_path, "--v1", "400,600,800", "--kg", "1", "--ke", "1,3", "--mode", "2") == 0
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 6
    assert "6 cell(s) run, 0 already done" in capsys.readouterr().out
    assert cli(tiny_dirs, tmp_path, "--v1", "400,600,800", "--kg", "1", "--ke", "1,3", "--mode", "2") == 0
    assert "0 cell(s) run, 6 already done" in capsys.readouterr().out


@pytest.mark.parametrize("extra,says", [
    (["--v1", ""], "--v1: the axis is empty"),
    (["--mode", "1,4"], "--mode: '4' is not a mode"),
    (["--v1", ",".join(str(v) for v in range(300)), "--ke", "1"], "300 cells.*pass --yes"),
    (["--judge", "--H", "32"], "--judge reads 64x64"),
    (["--lora1", "missing.safetensors"], "--lora1: LoRA file not found"),
])
def test_cli_bad_input_fails_before_any_model_loads(tiny_dirs, tmp_path, capsys, monkeypatch, extra, says):
    import fusion.sweep_exec as ex
    monkeypatch.setattr(ex.PipelineRecipe, "load", lambda self: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as e:
        cli(tiny_dirs, tmp_path / "out", *extra)
    assert e.value.code == 2
    assert re.search(says, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_another_sweeps_out(tiny_dirs, tmp_path, capsys, monkeypatch):
    assert cli(tiny_dirs, tmp_path, "--v1", "400") == 0
    before = folder_digest(tmp_path)
    import fusion.sweep_exec as ex
    monkeypatch.setattr(ex.PipelineRecipe, "load", lambda self: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit):
        cli(tiny_dirs, tmp_path, "--v1", "400", "--seed", "12")
    assert "differs in seed (11 there, 12 here)" in capsys.readouterr().err
    assert folder_digest(tmp_path) == before


def test_cli_bad_size_is_the_librarys_error_and_writes_nothing(tiny_dirs, tiny_pipe, tmp_path, capsys):
    # one size rule (issue 11): the loaded primary's VAE factor (2 for the tiny models), as in the library
    with pytest.raises(ValueError) as lib:
        tiny_pipe(PROMPT, PROMPT1, FusionSettings(steps=2, n_samples=1, height=15, width=16), seeds=[SEED])
    with pytest.raises(SystemExit) as e:
        cli(tiny_dirs, tmp_path / "out", "--v1", "400", "--H", "15")
    assert e.value.code == 2 and f"error: --H: {lib.value}\n" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli(tiny_dirs, tmp_path / "ok", "--v1", "400", "--H", "18") == 0  # 9 x 2: not a multiple of 8


def test_sharing_bench_runs_and_the_sweep_does_less(tmp_path):
    from bench.sweep_sharing import main as bench
    res = bench(["--models", "tiny", "--steps", "3", "--grids", "mode_1_v1_sweep", "--out", str(tmp_path / "s.json")])
    [g] = res["grids"]
    assert g["sweep_images_bit_equal_to_one_by_one"]
    assert g["unet_calls"]["sweep"] < g["unet_calls"]["one_by_one_fused"] < g["unet_calls"]["one_by_one_cli"]
    assert (tmp_path / "s.md").read_text().startswith("### sweep_sharing")


def test_cli_empty_lora_flag_is_no_lora(tiny_dirs, tmp_path):
    from fusion.sweep import build_parser, spec_from_args
    args = build_parser().parse_args(["--out", str(tmp_path / "o"), "--model0", str(tiny_dirs["general"]),
                                      "--model1", str(tiny_dirs["expert"]), "--lora0", "", "--lora1", ""])
    spec = spec_from_args(args)
    assert spec.lora0 is None and spec.lora1 is None and not (tmp_path / "o").exists()


def test_cli_use_ema_reaches_the_workers_recipe(tmp_path):
    """--use_ema (as in python -m fusion) is a sweep flag too and the workers load with it."""
    from fusion import sweep as sw

    for flags, want in (([], False), (["--use_ema"], True)):
        args = sw.build_parser().parse_args(["--out", str(tmp_path / "s"), *flags])
        assert sw.recipe_for(sw.spec_from_args(args), args).use_ema is want


def test_both_command_lines_take_the_same_model_pair_flags():
    from fusion import cli, sweep as sw

    def pair_flags(p):
        return {a.dest: a.default for a in p._actions if a.dest.startswith(("model", "lora", "config", "use_ema"))}

    assert pair_flags(cli.build_parser()) == pair_flags(sw.build_parser())
    assert set(pair_flags(cli.build_parser())) == {"model0", "model1", "lora0", "lora1", "lora0_scale", "lora1_scale",
                                                   "config", "use_ema"}
