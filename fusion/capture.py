"""Saliency capture for the saliency view, at a cost that does not show in a request.

The one saliency type from the sampler to the view: every SNB step's
:class:`fusion.snb.SNBResult` (what :func:`fusion.snb.blend` produced) is kept as a
:class:`SaliencyStep` (the same result, reduced to what the view shows, plus the step's index and
timestep), and a request's steps form a :class:`fusion.views.SaliencyTrace`.

During sampling only references to the maps the view shows (the primary's and the secondary's
post-softmax saliency of each SNB step) are kept, where they were computed (GPU or CPU): no copy,
no device sync per step. After the last step they are stacked and moved to the CPU in one
transfer. The SNB mask and the secondary share are derived from them when first read
(:attr:`fusion.snb.SNBResult.mask`, the rule the blend applies). The pre-softmax maps are kept
only with ``capture_saliency="full"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .snb import SNBResult
from .views import SaliencyTrace

__all__ = ["SaliencyStep", "SaliencyRecorder", "CAPTURE_LEVELS", "check_capture"]

#: accepted values of FusionSettings.capture_saliency
CAPTURE_LEVELS = (False, True, "full")


def check_capture(value):
    if value not in CAPTURE_LEVELS or (value != "full" and not isinstance(value, bool)):
        raise ValueError(f"capture_saliency must be one of {list(CAPTURE_LEVELS)} (True: what the saliency view "
                         f"shows; 'full': also the pre-softmax maps), got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class SaliencyStep(SNBResult):
    """One SNB step of the fused trajectory as captured: the blend's maps ((n, 1, h, w) each, CPU
    float32 once moved; ``eps`` None, ``raw_p``/``raw_s`` None unless "full"), ``index`` (the
    0-based denoising step) and ``t`` (its timestep). ``mask``/``secondary_share`` as in
    :class:`fusion.snb.SNBResult`."""

    index: int = field(default=0, kw_only=True)
    t: int = field(default=0, kw_only=True)

    def __repr__(self) -> str:
        return f"SaliencyStep(index={self.index}, t={self.t}, shape={tuple(self.saliency_p.shape)})"

    def __reduce__(self):
        """Pickled as numpy arrays: what crosses a process boundary (ZeroGPU's GPU worker) is plain
        CPU data, no torch tensor; unpickled, the maps are CPU tensors again (bit-equal)."""
        maps = tuple(None if x is None else x.detach().cpu().numpy()
                     for x in (self.saliency_p, self.saliency_s, self.raw_p, self.raw_s))
        return _step_from_arrays, (self.index, self.t) + maps


def _step_from_arrays(index, t, *maps) -> SaliencyStep:
    return SaliencyStep(None, *(None if a is None else torch.from_numpy(a) for a in maps), index=index, t=t)


class SaliencyRecorder:
    """Per-step callback part of one request: ``record(event)``, then :meth:`steps` once."""

    def __init__(self, level=True, trajectory: str = "fused"):
        self.level, self.trajectory = check_capture(level), trajectory
        self._kept: list[tuple[int, int, tuple[torch.Tensor, ...]]] = []

    def record(self, event) -> None:
        r = event.snb.get(self.trajectory) if self.level else None
        if r is None:
            return
        maps = (r.saliency_p, r.saliency_s) + ((r.raw_p, r.raw_s) if self.level == "full" else ())
        self._kept.append((int(event.index), int(event.t), maps))

    def steps(self, total_steps: int = 0, size: tuple[int, int] = (0, 0), primary: str = "general"
              ) -> SaliencyTrace:
        """Every captured step, moved to the CPU as float32 in one transfer, as the request's trace
        (``total_steps``, ``size`` = (W, H) of the images, ``primary``: what the view needs)."""
        trace = SaliencyTrace([], total_steps, size, primary=primary)
        if not self._kept:
            return trace
        stacked = torch.stack([torch.stack(maps) for _, _, maps in self._kept]).detach()
        stacked = stacked.to(device="cpu", dtype=torch.float32)
        self._kept, kept = [], self._kept
        trace.extend(SaliencyStep(None, *stacked[j], index=i, t=t) for j, (i, t, _) in enumerate(kept))
        return trace
