"""Issue 16, library level: no single input can hold the interpreter, blow up memory or send
back a giant error. Each test is one finding of the issue, bounded in time (seconds)."""
import json
import time
from pathlib import Path

import pytest
import torch

from fusion.schedule import FusionSelection, parse_fusion_selection
from fusion.textparse import MAX_FIELD_CHARS, parse_index_ranges, parse_int, parse_number, quote

ROOT = Path(__file__).resolve().parent.parent
#: an error message the user gets back: the accepted form plus a short quote of the input
SHORT_ERROR = 400


def _timed_error(fn, *args):
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as e:
        fn(*args)
    return time.perf_counter() - t0, str(e.value)


# ---------------------------------------------------------------------------------------------
# finding 1: fusion_selection parsing is linear-time and capped
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("digits", [100, 140, 20000])
def test_long_digit_runs_in_fusion_selection_are_refused_at_once(digits):
    # the probe: "1"*100 + "," three times took 5.4 s to reject (140 digits: 18 s)
    text = ("1" * digits + ",") * 3
    seconds, msg = _timed_error(parse_fusion_selection, text)
    assert seconds < 0.05, f"{len(text)} chars took {seconds:.3f} s"
    assert "fusion_selection" in msg and len(msg) < SHORT_ERROR and text not in msg


def test_fusion_selection_longer_than_the_cap_is_refused_with_its_length():
    text = "600," + "1" * MAX_FIELD_CHARS + ",1"
    _, msg = _timed_error(parse_fusion_selection, text)
    assert f"{len(text)} characters" in msg


@pytest.mark.parametrize("text, expected", [
    ("600,1,1", (600, 1.0, 1.0)), (" 850 , 1.5 , .5 ", (850, 1.5, 0.5)), ("6e2,1,3", (600, 1.0, 3.0)),
    ("+500,1.,2E0", (500, 1.0, 2.0)), ("0,100,0.05", (0, 100.0, 0.05)),
])
def test_the_usual_number_forms_still_parse(text, expected):
    sel = parse_fusion_selection(text)
    assert (sel.v1, sel.kg, sel.ke) == expected


@pytest.mark.parametrize("text", ["600,1e308,1", "600,1,1e308", "600,101,1", "600,nan,1", "600,inf,1",
                                  "nan,1,1", "600,1_0,1", "600,1e,1", "600,.,1", "600,1,1e99999"])
def test_non_finite_or_huge_sharpness_is_refused(text):
    # kg=1e308 silently gave the primary alone before
    _, msg = _timed_error(parse_fusion_selection, text)
    assert "fusion_selection" in msg


def test_selection_object_refuses_huge_sharpness_too():
    with pytest.raises(ValueError, match="kg"):
        FusionSelection(600, 1e308, 1)


@pytest.mark.parametrize("token", ["1", "-2.5", ".5", "5.", "3e2", "+1E-3", " 7 ", "0.000", "12345678901234567890"])
def test_number_grammar_agrees_with_float(token):
    assert parse_number(token, "x") == float(token)


@pytest.mark.parametrize("token", ["", "-", ".", "e3", "1e", "1e+", "0x10", "1_000", "nan", "infinity", "1 2", "١٢"])
def test_number_grammar_refuses_the_rest(token):
    with pytest.raises(ValueError, match="^x: "):
        parse_number(token, "x")


def test_whole_numbers_refuse_fractions_and_exponents():
    assert parse_int(" -12 ", "n") == -12
    for bad in ("1.0", "1e3", "", "+", "2.5"):
        with pytest.raises(ValueError, match="n: "):
            parse_int(bad, "n")


def test_quote_keeps_errors_short():
    q = quote("x" * 10 ** 6)
    assert len(q) < 80 and "1000000 characters" in q


# ---------------------------------------------------------------------------------------------
# finding 3: layer ranges are bounded before they are expanded
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd1_unet():
    from diffusers import UNet2DConditionModel
    cfg = json.loads((ROOT / "assets/configs/sd1/unet/config.json").read_text())
    with torch.device("meta"):  # the SD 1.x layout, no weights
        return UNet2DConditionModel.from_config(cfg)


def test_huge_layer_range_is_refused_at_once_with_a_short_error(sd1_unet):
    from styleid.attention import parse_layers
    # the probe: "0-10000000" expanded the whole range (167 s, +985 MB, an 89 MB error)
    seconds, msg = _timed_error(parse_layers, "0-10000000", sd1_unet)
    assert seconds < 0.5 and len(msg) < SHORT_ERROR
    assert "0-10000000" in msg and "3-11" in msg  # names the input and what is accepted


def test_layer_lists_longer_than_the_cap_are_refused(sd1_unet):
    from styleid.attention import parse_layers
    _, msg = _timed_error(parse_layers, ",".join(["6"] * 200), sd1_unet)
    assert "at most" in msg and len(msg) < SHORT_ERROR
    _, msg = _timed_error(parse_layers, list(range(10 ** 6)), sd1_unet)
    assert "at most" in msg and len(msg) < SHORT_ERROR


def test_layer_ranges_still_parse(sd1_unet):
    from styleid.attention import parse_layers
    assert parse_layers("6-8, 11", sd1_unet) == (6, 7, 8, 11)
    assert parse_index_ranges("1,3-4,4", "f", 0, 5) == [1, 3, 4]
    with pytest.raises(ValueError, match="backwards"):
        parse_index_ranges("4-3", "f", 0, 5)


# ---------------------------------------------------------------------------------------------
# seeds lists
# ---------------------------------------------------------------------------------------------
def test_cli_refuses_a_huge_seed_list_before_building_it(tiny_dirs, tmp_path, capsys):
    from fusion.cli import MAX_SEEDS, main
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(["--model0", str(tiny_dirs["general"]), "--model1", str(tiny_dirs["expert"]), "--outdir",
              str(tmp_path), "--prompt", "a", "--seed", "1", "2", "--n_iter", str(10 ** 8), "--quiet"])
    assert e.value.code == 2 and time.perf_counter() - t0 < 2
    err = capsys.readouterr().err
    assert f"at most {MAX_SEEDS} seeds" in err and len(err) < SHORT_ERROR
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# finding 5 (Stop): honoured within one UNet call, and before decoding
# ---------------------------------------------------------------------------------------------
FAST_FUSION = dict(steps=6, n_samples=1, height=16, width=16, mode=2, fusion_selection="0,1,1")


def test_stop_during_a_unet_call_starts_no_other_unet_call(tiny_pipe):
    import threading

    from fusion.pipeline import FusionSettings
    from fusion.sampler import Cancelled
    stop, calls = threading.Event(), {"all": 0, "after_stop": 0}

    def pre(module, args):
        calls["all"] += 1
        calls["after_stop"] += stop.is_set()

    def post(module, args, out):
        if calls["all"] == 5:  # during step 2 (each step needs two or more UNet calls)
            stop.set()

    unets = {id(m.unet): m.unet for m in (tiny_pipe.model0, tiny_pipe.model1)}.values()
    hooks = [h for u in unets for h in (u.register_forward_pre_hook(pre), u.register_forward_hook(post))]
    try:
        with pytest.raises(Cancelled):
            tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST_FUSION), seeds=[1], cancel=stop)
    finally:
        for h in hooks:
            h.remove()
    assert calls["all"] == 5 and calls["after_stop"] == 0


def test_stop_in_the_last_step_skips_the_decode(tiny_pipe, monkeypatch):
    import threading

    from fusion.pipeline import FusionSettings
    from fusion.sampler import Cancelled
    stop, decoded = threading.Event(), []
    for m in (tiny_pipe.model0, tiny_pipe.model1):
        monkeypatch.setattr(m.vae, "decode", lambda *a, **k: decoded.append(1))

    def on_step(si, ev):
        if ev.index == ev.total - 1:
            stop.set()

    with pytest.raises(Cancelled):
        tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST_FUSION), seeds=[1], callback=on_step,
                  cancel=stop)
    assert decoded == []


def test_sweep_axes_are_capped_and_quote_briefly():
    from fusion.sweep_spec import parse_axis
    text = ",".join(str(v) for v in range(10 ** 5))  # 488,889 characters
    seconds, msg = _timed_error(parse_axis, "v1", text)
    assert seconds < 0.05 and "at most" in msg and len(msg) < SHORT_ERROR
    _, msg = _timed_error(parse_axis, "kg", range(10 ** 9))
    assert "at most" in msg
    _, msg = _timed_error(parse_axis, "kg", "1,1e308")
    assert "1e308" in msg
    assert parse_axis("ke", "1, 3") == (1.0, 3.0)


# ---------------------------------------------------------------------------------------------
# finding 6 (memory): freed work memory goes back to the OS when the last work slot ends
# ---------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_memory_freed_by_a_job_is_handed_back_when_its_slot_ends():
    import threading

    from studio.gpu import WorkSlots
    slots, survivors = WorkSlots(1), []

    def job():  # what a request does to glibc's heap: large temporaries between small survivors
        with slots.slot():
            big = torch.ones(4 * 2 ** 20)  # 16 MB freed: glibc raises its mmap threshold above 1 MB
            del big
            temporaries = []
            for _ in range(300):
                temporaries.append(torch.ones(256 * 1024))  # 1 MB each, from this thread's arena
                survivors.append(torch.ones(16))
            del temporaries

    base = _rss_mb()
    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    deadline = time.perf_counter() + 5  # the memory is handed back shortly after the slot ends
    while _rss_mb() - base > 60 and time.perf_counter() < deadline:
        time.sleep(0.05)
    grown = _rss_mb() - base
    survivors.clear()
    assert grown < 60, f"{grown:.0f} MB of the job's 300 MB of freed temporaries still resident"
