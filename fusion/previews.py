"""When a run's step events carry a decoded preview (``FusionPipeline(..., preview_every=N)``).

A preview is the predicted x_0 of every trajectory through the VAE: about as costly as the final
decode, so a run that asks for many previews on a slow device spends a visible share of its time
on them. ``budget`` caps that share: a due preview is skipped while the decodes so far, plus one
more as long as the last, would pass ``budget`` times the run's time so far (the first due
preview always runs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["PreviewSchedule", "preview_due"]


def preview_due(index: int, total: int, every: int) -> bool:
    """Whether step ``index`` (0-based) of ``total`` gets a decoded preview at ``every`` steps:
    after steps every, 2 every, ... but not after the last step (the final decode follows)."""
    done = index + 1
    return bool(every) and done % every == 0 and done < total


def _check(every, budget) -> None:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
        raise ValueError(f"preview_every must be an integer >= 0, got {every!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not 0 < budget <= 1):
        raise ValueError(f"preview_budget must be None or a share of the run's time in (0, 1], got {budget!r}")


@dataclass
class PreviewSchedule:
    """every: a preview after every this many steps (0: none); budget: None (every due preview),
    or the most share of the run's time the preview decodes may take (see the module doc).
    ``clock``: seconds (tests give their own)."""

    every: int = 0
    budget: float | None = None
    clock: Callable[[], float] = time.perf_counter
    _start: float = field(default=0.0, init=False, repr=False)
    _spent: float = field(default=0.0, init=False, repr=False)
    _last: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self):
        _check(self.every, self.budget)
        self.start()

    def start(self) -> None:
        """A new run begins now."""
        self._start, self._spent, self._last = self.clock(), 0.0, 0.0

    def due(self, index: int, total: int) -> bool:
        if not preview_due(index, total, self.every):
            return False
        if self.budget is None:
            return True
        return self._spent + self._last <= self.budget * (self.clock() - self._start)

    def decode(self, fn: Callable, *args):
        """``fn(*args)``, its time counted against the budget."""
        t0 = self.clock()
        out = fn(*args)
        self._last = self.clock() - t0
        self._spent += self._last
        return out
