"""One saliency type from the sampler to the view, and previews as an option of the step events.

The independent path in these tests is the step callback: it sees the blend's own results
(``ev.snb``) and the predicted x_0 of every step, and the tests rebuild from those what the view
and the previews must show."""
import pickle

import numpy as np
import pytest
import torch

from fusion.pipeline import FusionPipeline, FusionSettings
from fusion.views import SaliencyTrace, heatmap, mask_overlay

FAST = dict(steps=10, n_samples=2, height=16, width=16, fusion_selection="600,1,1", mode=2)


def _run(pipe, **kw):
    seen = []
    [r] = pipe("a red circle", "a blue square", FusionSettings(**{**FAST, **kw.pop("settings", {})}), seeds=[4],
               callback=lambda si, ev: seen.append(ev), **kw)
    return r, seen


def test_the_view_shows_the_maps_the_blend_used(tiny_pipe):
    r, seen = _run(tiny_pipe)
    used = [ev.snb["fused"] for ev in seen if "fused" in ev.snb]
    trace = r.saliency
    assert isinstance(trace, SaliencyTrace) and len(trace) == len(used) > 0
    assert trace.total_steps == FAST["steps"] and trace.size == (16, 16) and trace.primary == "general"
    fused = r.pil("fused")[0]
    for k, res in enumerate(used):
        p, s = res.saliency_p[0, 0].numpy(), res.saliency_s[0, 0].numpy()
        lo, hi = float(min(p.min(), s.min())), float(max(p.max(), s.max()))
        take_s = (s > p).astype(np.float64)  # the spec's rule, written here again
        want = (heatmap(p, (16, 16), lo, hi), heatmap(s, (16, 16), lo, hi), mask_overlay(fused, take_s))
        got = trace.panels(k, image=fused)
        for a, b in zip(got, want):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert trace.secondary_share[k] == pytest.approx(take_s.mean(), abs=1e-7)
        assert trace[k].t == seen[trace[k].index].t


def test_trace_is_derived_lazily_and_copies_nothing(tiny_pipe):
    r, _ = _run(tiny_pipe)
    trace = r.saliency
    assert not {"saliency_p", "saliency_s", "mask", "secondary_share"} & set(vars(trace))  # nothing derived yet
    view = SaliencyTrace.from_steps(trace, trace.total_steps, (32, 32), sample=1)
    assert all(a is b for a, b in zip(view, trace))  # the same step records
    assert view.saliency_p.shape == (len(trace), *trace[0].saliency_p.shape[-2:]) and view.saliency_p.dtype == np.float32
    assert np.array_equal(view.mask[0], trace[0].mask[1, 0].numpy())
    assert "mask" in vars(view) and "mask" not in vars(trace)


def test_trace_survives_pickling_as_zerogpu_does(tiny_pipe):
    r, _ = _run(tiny_pipe, settings=dict(capture_saliency="full"))
    back = pickle.loads(pickle.dumps(r.saliency))
    assert isinstance(back, SaliencyTrace) and len(back) == len(r.saliency)
    assert (back.total_steps, back.size, back.primary) == (r.saliency.total_steps, r.saliency.size, "general")
    for a, b in zip(back.panels(1), r.saliency.panels(1)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert torch.equal(back[0].raw_s, r.saliency[0].raw_s) and back.describe(0) == r.saliency.describe(0)


def test_previews_are_an_option_of_the_step_events(tiny_pipe):
    plain = tiny_pipe("a red circle", "a blue square", FusionSettings(**FAST), seeds=[4])[0]
    r, seen = _run(tiny_pipe, preview_every=3)
    assert [ev.index for ev in seen if ev.preview is not None] == [2, 5, 8]  # none after the last step
    s = tiny_pipe.check_inputs("a red circle", "a blue square", FusionSettings(**FAST), [4])
    for ev in seen:
        if ev.preview is not None:
            want = tiny_pipe.decode(dict(ev.pred_x0), s)
            assert set(ev.preview) == {"general", "expert", "fused"}
            assert all(torch.equal(ev.preview[k], want[k]) for k in want)
    for name in plain.images:  # previews change no output bit
        assert torch.equal(r.images[name], plain.images[name])
    _, none = _run(tiny_pipe)
    assert all(ev.preview is None for ev in none)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="preview_every"):
            _run(tiny_pipe, preview_every=bad)


def test_the_service_forwards_the_pipelines_previews(tiny_dirs, monkeypatch):
    from studio.cache import ModelCache
    from studio.fusion_service import FuseRequest, FusionService, Preview
    from studio.gpu import WorkSlots
    decodes = []
    original = FusionPipeline.decode

    def counting(self, latents, s):
        decodes.append(sorted(latents))
        return original(self, latents, s)
    monkeypatch.setattr(FusionPipeline, "decode", counting)
    svc = FusionService(ModelCache(device="cpu", dtype=torch.float32), WorkSlots(1), preview_every=3)
    req = FuseRequest(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle",
                      steps=8, height=16, width=16)
    items = list(svc.stream(req))
    previews = [i for i in items if isinstance(i, Preview) and i.images]
    assert [p.step for p in previews] == [3, 6] and len(decodes) == 3  # two previews and the final decode
    out = items[-1]
    assert out.trace.size == (16, 16) and out.trace.total_steps == 8 and len(out.trace) > 0
    decodes.clear()
    again = svc.run(req)
    assert len(decodes) == 1  # no previews asked for: only the final decode
    assert all(np.array_equal(np.asarray(again.images[k]), np.asarray(out.images[k])) for k in out.images)


def test_a_pickled_trace_holds_no_torch_tensor(tiny_pipe):
    import io

    class NoTensors(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.Tensor):
                raise TypeError("a torch tensor in the pickle")
            return NotImplemented
    r, _ = _run(tiny_pipe)
    buf = io.BytesIO()
    NoTensors(buf).dump(r.saliency)
    back = pickle.loads(buf.getvalue())
    assert all(torch.equal(a.saliency_p, b.saliency_p) and torch.equal(a.mask, b.mask) for a, b in zip(back, r.saliency))


def test_preview_budget_skips_due_previews_past_its_share_of_the_run():
    from fusion.previews import PreviewSchedule
    now = [0.0]
    sched = PreviewSchedule(every=1, budget=0.1, clock=lambda: now[0])
    taken = []
    for i in range(20):
        now[0] += 1.0  # one second per step
        if sched.due(i, 20):
            taken.append(i)
            sched.decode(lambda: now.__setitem__(0, now[0] + 0.5))  # a decode costs half a step
    # never more than the budget (plus the first preview), and no preview after the last step
    assert taken[0] == 0 and 19 not in taken
    assert 0.5 * (len(taken) - 1) <= 0.1 * now[0]
    assert 2 <= len(taken) < 19  # some due previews were skipped, not all
    assert PreviewSchedule(every=1, budget=None).due(3, 20) and not PreviewSchedule(every=0).due(3, 20)
    with pytest.raises(ValueError, match="preview_budget"):
        PreviewSchedule(every=1, budget=0)


def test_the_apps_automatic_previews_keep_to_the_budget(tiny_dirs):
    from studio.cache import ModelCache
    from studio.fusion_service import FuseRequest, FusionService, Preview
    from studio.gpu import WorkSlots
    req = FuseRequest(general=str(tiny_dirs["general"]), expert=str(tiny_dirs["expert"]), prompt="a red circle",
                      steps=40, height=16, width=16)
    cache = ModelCache(device="cpu", dtype=torch.float32)

    def decoded(**kw):
        svc = FusionService(cache, WorkSlots(1), **kw)
        return sum(isinstance(i, Preview) and i.images is not None for i in svc.stream(req))
    assert decoded() == 9  # about ten per run: after steps 4, 8, ..., 36
    assert decoded(preview_budget=1e-6) == 1  # the first due preview, then none fit in the budget
    assert decoded(preview_every=4, preview_budget=1e-6) == 9  # an explicit preview_every is kept
