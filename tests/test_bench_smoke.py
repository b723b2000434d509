"""The speed benchmarks' code paths on tiny models, 3 steps (seconds): so they cannot rot."""
import json


def test_fusion_speed_bench_runs_and_project_schedule_is_cheaper(tmp_path):
    from bench.fusion_speed import main
    out = tmp_path / "fs.json"
    res = main(["--size", "tiny", "--steps", "3", "--H", "32", "--W", "32", "--repeat", "1", "--warmup", "0",
                "--count-steps", "10", "--component-rounds", "1", "--no-memory", "--no-cold-warm",
                "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text())["args"]["steps"] == 3
    assert out.with_suffix(".md").read_text().startswith("### fusion_speed")
    rows = {(r["recipe"], r["schedule"]): r for r in res["requests"]}
    for recipe in ("600,1,1:2:general", "850,1,1:1:expert"):
        naive, proj, batch = (rows[(recipe, s)] for s in ("naive", "project", "project_batch"))
        assert naive["unet_calls"] > proj["unet_calls"] > batch["unet_calls"]  # project_batch: the defaults
        assert rows[(recipe, "project_batch_nocapture")]["unet_calls"] == batch["unet_calls"]
        eq = res["bit_equal"][f"{recipe} project"]
        assert eq["latents_bit_equal"] and eq["uint8_equal"]  # images: up to the VAE batch's rounding
        assert eq["images_max_abs_diff"] < 1e-5
    counts = {(c["recipe"], c["same_prompt"]): c for c in res["counts_50"]}
    # the reference recipes' exact UNet-call counts at 10 steps (3 images per request)
    assert (counts[("600,1,1:2:general", True)]["project"], counts[("600,1,1:2:general", True)]["naive"]) == (32, 40)
    assert counts[("850,1,1:1:expert", True)]["project"] == 37
    assert counts[("850,1,1:1:expert", False)]["project"] == 39
    assert 0 < res["snb_overhead"]["fraction_of_unet_call"] < 1


def test_gpu_check_python_part_runs_on_cpu(tmp_path):
    from bench.gpu_check import main
    res = main(["--size", "tiny", "--steps", "3", "--H", "32", "--W", "32", "--repeat", "1", "--warmup", "0",
                "--device", "cpu", "--out", str(tmp_path / "g.json")])
    assert res["unet_calls"]["plain"] == 3 and res["unet_calls"]["naive"] == 12
    assert res["unet_calls"]["project"] < res["unet_calls"]["naive"]
    assert set(res["project_over_naive"]) == {"project", "project_batch"}
    assert res["unet_calls"]["project_batch"] < res["unet_calls"]["project"]  # the defaults batch on CPU


def test_gpu_check_script_smoke_flag_prints_one_table(tmp_path):
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--smoke", str(tmp_path)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| variant | s / request | vs naive |" in r.stdout
    for row in ("| naive |", "| project_batch |", "| project_batch_nocapture |", "| dpmpp_2m_2 |", "| euler_2 |"):
        assert row in r.stdout
    res = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    assert res["unet_calls"]["dpmpp_2m_2"] == 2 * 2  # two UNets, one batched call each per step
    assert "saliency_capture_cost" in res


def test_capture_overhead_bench_measures_the_captures_own_work(tmp_path):
    from bench.capture_overhead import main
    out = tmp_path / "co.json"
    res = main(["--size", "tiny", "--steps", "4", "--H", "32", "--W", "32", "--repeat", "1", "--warmup", "0",
                "--recipes", "600,1,1:2:general", "--out", str(out)])
    [row] = res["rows"]
    assert row["captured_steps"] > 0 and out.with_suffix(".md").read_text().startswith("### capture_overhead")
    for clock in ("cpu", "wall"):
        assert row[clock]["capture_work_s"] > 0 and row[clock]["view_s"] > 0  # the probes saw the capture run
        assert 0 < row[clock]["direct_overhead"] < 1


def test_app_speed_bench_times_the_app_and_the_library(tmp_path):
    from bench.app_speed import WAYS, main
    out = tmp_path / "as.json"
    res = main(["--steps", "4", "--size", "32", "--repeat", "1", "--warmup", "0", "--out", str(out)])
    assert set(res["ways"]) == set(WAYS) and res["url_loopback"]
    assert res["ways"]["app"]["inside"]["client_download"]["calls"] > 0  # gradio_client fetched the images
    assert res["ways"]["app_urls"]["inside"]["gradio_postprocess"]["calls"] > 0
    assert "client_download" not in res["ways"]["app_urls"]["inside"]
    ins = {w: res["ways"][w]["inside"] for w in WAYS}
    # the streamed way downloads each update's images (the last one twice); /fuse the outputs once;
    # the browser way fetches each distinct final image once, on its own connection
    assert ins["app_stream"]["client_download"]["calls"] > ins["app"]["client_download"]["calls"]
    assert 0 < ins["browser"]["browser_fetch"]["calls"] <= ins["app"]["client_download"]["calls"]
    assert "client_download" not in ins["browser"]
    assert res["ways"]["pipeline"]["inside"]["decode"]["calls"] == 1  # the library's final decode only
