"""Saliency capture for the saliency view, at a cost that does not show in a request.

During sampling only references to the maps the view shows (the primary's and the secondary's
post-softmax saliency of each SNB step) are kept, where they were computed (GPU or CPU): no copy,
no device sync per step. After the last step they are stacked and moved to the CPU in one
transfer. The SNB mask is derived from them when first asked for (it is ``saliency_s >
saliency_p``, the rule :func:`fusion.snb.blend` applies), the secondary share from the mask.
The pre-softmax maps are kept only with ``capture_saliency="full"``.
"""
from __future__ import annotations

import torch

__all__ = ["SaliencyStep", "SaliencyRecorder", "CAPTURE_LEVELS", "check_capture"]

#: accepted values of FusionSettings.capture_saliency
CAPTURE_LEVELS = (False, True, "full")


def check_capture(value):
    if value not in CAPTURE_LEVELS or (value != "full" and not isinstance(value, bool)):
        raise ValueError(f"capture_saliency must be one of {list(CAPTURE_LEVELS)} (True: what the saliency view "
                         f"shows; 'full': also the pre-softmax maps), got {value!r}")
    return value


class SaliencyStep:
    """The maps of one SNB step of the fused trajectory (CPU float32, (n, 1, h, w) each).

    ``mask`` (1 where the secondary's noise was taken) is derived from the two saliency maps
    unless given; ``raw_p``/``raw_s`` (before the softmax) are None unless captured ("full").
    """

    __slots__ = ("index", "t", "saliency_p", "saliency_s", "raw_p", "raw_s", "_mask")

    def __init__(self, index: int, t: int, mask: torch.Tensor | None = None, saliency_p: torch.Tensor | None = None,
                 saliency_s: torch.Tensor | None = None, raw_p: torch.Tensor | None = None,
                 raw_s: torch.Tensor | None = None):
        if saliency_p is None or saliency_s is None:
            raise ValueError("SaliencyStep needs saliency_p and saliency_s")
        self.index, self.t = int(index), int(t)
        self.saliency_p, self.saliency_s, self.raw_p, self.raw_s = saliency_p, saliency_s, raw_p, raw_s
        self._mask = mask

    @property
    def mask(self) -> torch.Tensor:
        if self._mask is None:
            self._mask = (self.saliency_s > self.saliency_p).to(self.saliency_p.dtype)
        return self._mask

    @property
    def secondary_share(self) -> torch.Tensor:
        return self.mask.flatten(1).mean(dim=1)

    def __repr__(self) -> str:
        return f"SaliencyStep(index={self.index}, t={self.t}, shape={tuple(self.saliency_p.shape)})"


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

    def steps(self) -> list[SaliencyStep]:
        """Every captured step, moved to the CPU as float32 in one transfer."""
        if not self._kept:
            return []
        stacked = torch.stack([torch.stack(maps) for _, _, maps in self._kept]).detach()
        stacked = stacked.to(device="cpu", dtype=torch.float32)
        self._kept, kept = [], self._kept
        return [SaliencyStep(i, t, None, *stacked[j]) for j, (i, t, _) in enumerate(kept)]
