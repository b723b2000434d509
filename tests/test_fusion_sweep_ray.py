"""Sweeps on Ray (issue 13, item 4): the same cells as a local run, one model pair per worker."""
import csv
import sys

import numpy as np
import pytest
from PIL import Image

from fusion.sweep import SweepAxes, SweepSpec, main, run_sweep
from fusion.sweep_exec import LocalExecutor, PipelineRecipe


def two_cells(tiny_dirs):
    # two cells of different modes: two chunks, so one worker must serve both
    return SweepSpec("a red circle", "a blue square", seed=3, steps=4, n_samples=2, height=16, width=16,
                     axes=SweepAxes.parse(v1="500", mode="1,2"), model0=str(tiny_dirs["general"]),
                     model1=str(tiny_dirs["expert"]))


def test_ray_gives_the_local_cells_with_one_model_pair_per_worker(tiny_dirs, tiny_pipe, tmp_path):
    ray = pytest.importorskip("ray")
    from fusion.sweep_ray import RayExecutor

    spec = two_cells(tiny_dirs)
    run_sweep(spec, tmp_path / "local", LocalExecutor(tiny_pipe))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ex = RayExecutor(PipelineRecipe(spec.model0, spec.model1, device="cpu", threads=1))
        report = run_sweep(spec, tmp_path / "ray", ex)
        workers = [ray.get(a.loaded.remote()) for a in ex.actors]
        ex.close()
    finally:
        ray.shutdown()
    assert report.ran == 2
    assert len(workers) == 1 and workers[0]["chunks"] == 2  # one worker, its pipeline reused
    local = list(csv.DictReader((tmp_path / "local" / "results.csv").open()))
    remote = list(csv.DictReader((tmp_path / "ray" / "results.csv").open()))
    assert local == remote and len(local) == 2
    for name in [r["image"] for r in local] + ["general.png", "expert.png"]:
        a = np.asarray(Image.open(tmp_path / "local" / name))
        b = np.asarray(Image.open(tmp_path / "ray" / name))
        assert np.array_equal(a, b), name


def test_missing_ray_is_a_clear_error_before_any_model_loads(tiny_dirs, tmp_path, capsys, monkeypatch):
    import fusion.sweep_exec as ex
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" fails as if not installed
    monkeypatch.setattr(ex.PipelineRecipe, "load", lambda self: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as e:
        main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["expert"]), "--out",
              str(tmp_path / "out"), "--ray", "local", "--quiet"])
    assert e.value.code == 2
    assert "--ray needs Ray, which is not installed: pip install -r requirements-ray.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
