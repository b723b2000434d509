"""Fast by default: the library picks batching on this CPU and says so; the batched path's
difference from the unbatched one is float rounding, bounded here; saliency capture keeps
references during sampling and moves the maps once."""
import pytest
import torch

from fusion.capture import SaliencyRecorder
from fusion.pipeline import FusionSettings
from fusion.sampler import StepEvent
from fusion.snb import blend

FAST = dict(steps=12, n_samples=2, height=16, width=16)


def run(pipe, prompt="a red circle", prompt1="a blue square", **kw):
    final = {}
    r = pipe(prompt, prompt1, FusionSettings(**{**FAST, **kw}), seeds=[5],
             callback=lambda si, ev: final.update(ev.latents) if ev.index == ev.total - 1 else None)[0]
    return r, final


def test_defaults_batch_trajectories_on_cpu_and_the_stats_say_so(tiny_pipe):
    assert FusionSettings().batch_trajectories is None
    r, _ = run(tiny_pipe)
    assert r.stats.choices["batch_trajectories"] is True
    assert r.stats.choices["batch_reason"] == "auto (cpu)"
    assert r.stats.choices["sampler"] == "ddim"
    assert r.stats.total_calls == 2 * FAST["steps"]  # one call per UNet per step
    off, _ = run(tiny_pipe, batch_trajectories=False)
    assert off.stats.choices == dict(r.stats.choices, batch_trajectories=False, batch_reason="set")


@pytest.mark.parametrize("recipe", [dict(fusion_selection="600,1,1", mode=2),
                                    dict(fusion_selection="850,1,1", mode=1, primary="expert"),
                                    dict(fusion_selection="500,1,3", mode=2, primary="expert", sampler="dpmpp_2m")])
def test_batched_default_differs_from_unbatched_by_rounding_only(tiny_pipe, recipe):
    default, lat_d = run(tiny_pipe, **recipe)
    unbatched, lat_u = run(tiny_pipe, batch_trajectories=False, **recipe)
    assert set(lat_d) == {"general", "expert", "fused"}
    # measured on this CPU: max |difference| of the final latents 1e-6 or less
    for name in lat_d:
        assert float((lat_d[name] - lat_u[name]).abs().max()) <= 1e-5, name
        assert float((default.images[name] - unbatched.images[name]).abs().max()) <= 1e-5, name
    assert [s.t for s in default.saliency] == [s.t for s in unbatched.saliency]


def test_captured_maps_are_the_ones_snb_used(tiny_pipe):
    used = []
    r = tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST, fusion_selection="600,1,1", mode=2),
                  seeds=[5], callback=lambda si, ev: used.append(ev.snb["fused"]) if "fused" in ev.snb else None)[0]
    assert len(r.saliency) == len(used) > 0
    for step, res in zip(r.saliency, used):
        assert step.saliency_p.device.type == "cpu" and step.saliency_p.dtype == torch.float32
        assert torch.equal(step.saliency_p, res.saliency_p) and torch.equal(step.saliency_s, res.saliency_s)
        assert torch.equal(step.mask, res.mask)  # derived lazily: the blend's own rule
        assert step.raw_p is None  # not shown by the view: not kept unless "full"
    full = tiny_pipe("a red circle", "a blue square",
                     FusionSettings(**FAST, fusion_selection="600,1,1", mode=2, capture_saliency="full"), seeds=[5])[0]
    assert torch.equal(full.saliency[0].raw_s, used[0].raw_s)


def _event(i, g):
    pc, pu, sc, su = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(4))
    return StepEvent(index=i, total=3, t=900 - 100 * i, latents={}, pred_x0={},
                     snb={"fused": blend(pc, pu, sc, su, 7.5, 1.0, 1.0)})


def test_recorder_keeps_references_until_the_end_then_moves_once():
    g = torch.Generator().manual_seed(0)
    events = [_event(i, g) for i in range(3)]
    rec = SaliencyRecorder(True)
    for ev in events:
        rec.record(ev)
    kept = [maps for _, _, maps in rec._kept]
    assert all(m[0] is ev.snb["fused"].saliency_p and m[1] is ev.snb["fused"].saliency_s
               for m, ev in zip(kept, events))  # no copy per step
    steps = rec.steps()
    assert [s.t for s in steps] == [900, 800, 700]
    base = steps[0].saliency_p.untyped_storage().data_ptr()
    assert all(s.saliency_s.untyped_storage().data_ptr() == base for s in steps)  # one stacked transfer


def test_capture_off_keeps_nothing_and_bad_values_are_refused(tiny_pipe):
    r, _ = run(tiny_pipe, capture_saliency=False)
    assert r.saliency == []
    with pytest.raises(ValueError, match="capture_saliency must be one of"):
        run(tiny_pipe, capture_saliency="some")
