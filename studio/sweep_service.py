"""A sweep from the app: the fusion request of the Fusion tab with some settings as axes.

All the work is :mod:`fusion.sweep_exec`'s (shared work across cells); this module checks the
request before anything loads, holds a work slot, and streams the grid as chunks of cells finish.
Nothing is written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .gpu import StudioError, WorkSlots
from .limits import Limits, whole_number
from .models import geometry
from .requests import APP, ModelPick

__all__ = ["SweepRequest", "SweepUpdate", "SweepService", "APP_MAX_CELLS"]

#: the app's largest grid (the command line takes more with --yes)
APP_MAX_CELLS = 64


@dataclass
class SweepRequest(ModelPick):
    """A Sweep tab request: the Fusion tab's pickers (:class:`studio.requests.ModelPick`) and
    request, with v1, kg, ke, mode and primary as comma-list axes (app defaults:
    :data:`studio.requests.APP`; the axes' initial values are the tab's)."""

    prompt: str
    prompt1: str = ""
    negative_prompt: str = ""
    seed: int = APP.seed
    steps: int = APP.sweep_steps
    guidance: float = APP.guidance
    height: int | None = None
    width: int | None = None
    v1: str = "400,600,800"
    kg: str = "1"
    ke: str = "1,3"
    mode: str = "2"
    primary: str = "general"
    judge: bool = False               # toy world: the judge's joint rate per cell
    sampler: str = APP.sampler


@dataclass
class SweepUpdate:
    """After each chunk: every finished cell's (n, H, W, 3) uint8 images and results row."""

    axes: object                       # fusion.sweep_spec.SweepAxes
    images: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    done: int = 0
    total: int = 0
    unet_calls: int = 0

    def grid(self, title: str = ""):
        from fusion.sweep_grid import render_grid
        return render_grid(self.axes, self.images, self.rows, title=title)


class SweepService:
    """``stream(request, cancel)`` yields a :class:`SweepUpdate` per finished chunk of cells."""

    def __init__(self, cache, slots: WorkSlots, limits: Limits | None = None, max_cells: int = APP_MAX_CELLS,
                 chunk_cells: int = 4, policy=None, admission=None):
        self.cache, self.slots, self.limits = cache, slots, limits or Limits()
        self.max_cells, self.chunk_cells = max_cells, chunk_cells
        # public mode (studio.public): offered models only, its caps; a sweep holds one admission ticket
        self.policy, self.admission = policy, admission

    def check(self, req: SweepRequest):
        """(general path, expert path, SweepSpec, LoraSettings) or a StudioError; nothing loads.
        The app's own part (models through the policy, the cell cap, JSON numbers, the size
        limit) is checked here; the rest is the spec's request (:meth:`fusion.sweep_spec.SweepSpec.check`)."""
        from fusion.sweep_spec import SweepAxes, SweepSpec
        try:
            models = req.pair(self.policy)
            axes = SweepAxes.parse(v1=req.v1 or "", kg=req.kg or "", ke=req.ke or "", mode=req.mode or "",
                                   primary=req.primary or "")
            if axes.size > self.max_cells:
                raise ValueError(f"the grid has {axes.size} cells; the app runs at most {self.max_cells} "
                                 f"(shorten an axis, or use python -m fusion.sweep)")
            seed = whole_number(req.seed, "seed")
            steps = whole_number(req.steps, "steps")
            if self.policy is not None:
                self.policy.check_sweep(axes.size)
                self.policy.check_fuse(req)
            sizes = {}
            for p in axes.primary:
                geo = geometry(models.model0 if p == "general" else models.model1)
                sizes = {label: self.limits.check_side(label, getattr(req, label), geo)
                         for label in ("height", "width")}
            lora = models.lora
            spec = SweepSpec(req.prompt or "", req.prompt1 or req.prompt or "", seed=seed, axes=axes, steps=steps,
                             guidance_scale=float(req.guidance), height=sizes.get("height"),
                             width=sizes.get("width"), negative_prompt=req.negative_prompt or "",
                             model0=models.model0, model1=models.model1, sampler=req.sampler or "ddim",
                             lora0=lora.lora0, lora1=lora.lora1, lora0_scale=lora.side(0)[1],
                             lora1_scale=lora.side(1)[1])
            spec.check(confirm_large=True)
        except (ValueError, TypeError) as e:
            raise StudioError(str(e)) from None
        return models.model0, models.model1, spec, lora

    def stream(self, req: SweepRequest, cancel=None) -> Iterator[SweepUpdate]:
        from fusion.sweep_exec import plan_chunks, run_chunk

        general, expert, spec, lora = self.check(req)
        scorer = None
        if req.judge:
            from fusion.sweep_judge import CellJudge
            try:
                scorer = CellJudge(spec.prompt)
            except ValueError as e:
                raise StudioError(str(e)) from None
        update = SweepUpdate(spec.axes, total=spec.axes.size)
        import contextlib
        with self.admission.ticket() if self.admission is not None else contextlib.nullcontext(), \
                self.slots.slot(cancel=cancel):
            pipe = self.cache.pipeline(general, expert, lora=lora if lora.any else None)
            for chunk in plan_chunks(spec.axes.cells(), references=False, max_cells=self.chunk_cells):
                out = run_chunk(pipe, spec, chunk, cancel=cancel,
                                batch_trajectories=pipe.model0.device.type == "cuda")
                for co in out.cells:
                    update.images[co.cell] = co.images
                    update.rows[co.cell] = {"secondary_share": co.secondary_share}
                    if scorer is not None:
                        try:
                            update.rows[co.cell].update(scorer.score(co.images))
                        except ValueError as e:
                            raise StudioError(str(e)) from None
                update.done += len(out.cells)
                update.unet_calls += sum(out.unet_calls.values())
                yield update
