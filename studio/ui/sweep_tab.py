"""The app's Sweep tab: the Fusion tab's request with v1, kg, ke, mode and primary as axes.

Cells stream into a labelled grid (axes named, each cell's secondary pixel share, optionally the
toy-world judge score as a red-to-green bar) and a gallery; clicking a cell loads its settings
into the Fusion tab and shows that cell's saliency maps here. UI only: the work is
:class:`studio.sweep_service.SweepService`'s.
"""
import inspect

import gradio as gr

from fusion.sampler import Cancelled

from ..fusion_service import FuseRequest
from ..gpu import StudioError
from ..requests import APP
from ..sweep_service import APP_MAX_CELLS, SweepRequest, SweepService
from .common import AppContext, refuse, session
from .fusion_tab import FusionTab
from .saliency_view import panels, run_state

__all__ = ["SweepTab", "SWEEP_INPUTS", "CELL_OUTPUTS"]

#: the Fusion tab components the sweep reads, in this order
SWEEP_INPUTS = ("general", "expert", "general_path", "expert_path", "prompt", "prompt1", "negative", "seed",
                "steps", "guidance", "height", "width", "sampler", "general_lora", "expert_lora",
                "general_lora_path", "expert_lora_path", "general_lora_scale", "expert_lora_scale")
#: Fusion tab values carried into the SweepRequest as they are (unless None)
_CARRIED = ("sampler", "general_lora", "expert_lora", "general_lora_scale", "expert_lora_scale")
#: the Fusion tab components a clicked cell sets
CELL_OUTPUTS = ("v1", "kg", "ke", "selection", "mode", "primary")
#: the axes, with their initial values
AXES = (("v1", "400,600,800"), ("kg", "1"), ("ke", "1,3"), ("mode", "2"), ("primary", "general"))


def _caption(cell, row) -> str:
    text = f"{cell.name.replace('_', ' ')} · secondary {row['secondary_share']:.2f}"
    return text + (f" · judge {row['judge']:.2f}" if "judge" in row else "")


def sweep_request(values, axis_values, judge_on) -> SweepRequest:
    """The request of the Fusion tab's values (:data:`SWEEP_INPUTS` order) and the axes."""
    f = dict(zip(SWEEP_INPUTS, values))
    return SweepRequest(
        general=f["general"], expert=f["expert"], general_path_box=f["general_path"] or "",
        expert_path_box=f["expert_path"] or "", prompt=f["prompt"] or "", prompt1=f["prompt1"] or "",
        negative_prompt=f["negative"] or "", seed=f["seed"] if f["seed"] is not None else 0,
        steps=f["steps"] if f["steps"] is not None else 1, guidance=float(f["guidance"] or APP.guidance),
        height=f["height"] or None, width=f["width"] or None, judge=bool(judge_on),
        general_lora_path_box=f["general_lora_path"] or "", expert_lora_path_box=f["expert_lora_path"] or "",
        **{k: f[k] for k in _CARRIED if f[k] is not None},
        **dict(zip([name for name, _ in AXES], axis_values)))


def cell_request(r: SweepRequest, cell) -> FuseRequest:
    """One cell of sweep ``r`` as a Fusion tab request (the faithful SNB, as the grid ran it)."""
    return FuseRequest(**r.picks(), prompt=r.prompt, prompt1=r.prompt1, negative_prompt=r.negative_prompt,
                       seed=r.seed, steps=r.steps, guidance=r.guidance, height=r.height, width=r.width,
                       fusion_selection=str(cell.selection), mode=cell.mode, primary=cell.primary,
                       sampler=r.sampler, blend="")


class SweepTab:
    """Builds the tab inside the open Blocks; :meth:`wire` adds its events."""

    def __init__(self, ctx: AppContext, fusion: FusionTab):
        self.ctx, self.fusion = ctx, fusion
        self._service: SweepService | None = None  # made on first use (the model cache imports torch)
        with gr.Tab("Sweep", id="sweep"):
            self._layout()

    def _layout(self):
        gr.Markdown(f"A grid of fusion settings for the Fusion tab's models, prompts, seed, steps and size: "
                    f"each axis is a comma list (at most {APP_MAX_CELLS} cells). The general and expert runs "
                    f"are shared by all cells, and so is a mode-1 cell's primary-alone start.")
        with gr.Row():
            self.axes = [gr.Textbox(v, label=f"{name} axis", max_lines=1, elem_id=f"sweep_{name}")
                         for name, v in AXES]
        with gr.Row():
            self.judge = gr.Checkbox(False, label="Judge score per cell (toy world, 64x64)", elem_id="sweep_judge")
            self.run = gr.Button("Run sweep", variant="primary", elem_id="sweep_button")
            self.stop_btn = gr.Button("Stop", variant="stop", elem_id="sweep_stop")
        self.status = gr.Markdown("", elem_id="sweep_status")
        self.grid = gr.Image(label="Grid (columns: the longest axis; caption: secondary pixel share)", type="pil",
                             format="png", interactive=False, elem_id="sweep_grid", buttons=["download", "fullscreen"])
        self.gallery = gr.Gallery(label="Cells: click one to load its settings and its saliency maps", columns=6,
                                  height=260, allow_preview=False, elem_id="sweep_cells")
        with gr.Row():
            kw = dict(type="pil", format="png", interactive=False, height=200)
            self.sal_p = gr.Image(label="Primary saliency", elem_id="sweep_sal_primary", **kw)
            self.sal_s = gr.Image(label="Secondary saliency", elem_id="sweep_sal_secondary", **kw)
            self.sal_m = gr.Image(label="Mask (from secondary)", elem_id="sweep_sal_mask", **kw)
        self.cell_caption = gr.Markdown("", elem_id="sweep_cell_caption")
        self.state = gr.State(None, time_to_live=3600)

    def service(self) -> SweepService:
        if self._service is None:
            rt = self.ctx.rt
            self._service = SweepService(rt.cache, rt.slots, rt.limits, policy=rt.policy, admission=rt.admission)
        return self._service

    # ---- handlers -------------------------------------------------------------------------------
    def sweep(self, *values, request=None):
        """Run the grid; stream (grid, cells gallery, status, state) after every chunk."""
        n = len(SWEEP_INPUTS)
        req = sweep_request(values[:n], values[n:n + len(AXES)], values[n + len(AXES)])
        cancel = self.ctx.rt.new_cancel(session(request), "sweep")
        title = f"{req.prompt!r} / {req.prompt1 or req.prompt!r}, seed {req.seed}, {req.steps} steps"
        try:
            for up in self.service().stream(req, cancel):
                cells = [c for c in up.axes.cells() if c in up.images]
                yield {self.grid: up.grid(title), self.gallery: [(up.images[c][0], _caption(c, up.rows[c])) for c in cells],
                       self.status: f"{up.done} of {up.total} cells done ({up.unet_calls} UNet calls so far).",
                       self.state: {"cells": cells, "request": req}}
        except Cancelled:
            raise gr.Error("Stopped.", print_exception=False)
        except StudioError as e:
            raise refuse(e)

    def stop(self, request: gr.Request = None):
        return "Stopped." if self.ctx.rt.cancel(session(request), "sweep") else "Nothing was running."

    def load_cell(self, st, evt: gr.SelectData):
        """A clicked cell: its settings into the Fusion tab, its saliency maps here."""
        if not st or evt is None or not 0 <= int(evt.index) < len(st["cells"]):
            raise gr.Error("Run a sweep, then click one of its cells.", print_exception=False)
        cell = st["cells"][int(evt.index)]
        try:
            out = self.ctx.rt.fusion.run(cell_request(st["request"], cell))
        except StudioError as e:
            raise refuse(e)
        p, f = panels(run_state(out), 0), self.fusion.by_name()
        settings = dict(v1=cell.v1, kg=cell.kg, ke=cell.ke, selection=str(cell.selection), mode=cell.mode,
                        primary=cell.primary)
        return {**{f[k]: v for k, v in settings.items()}, self.sal_p: p.primary, self.sal_s: p.secondary,
                self.sal_m: p.mask, self.cell_caption: f"**{cell.name}**: {p.caption}"}

    def wire(self):
        f = self.fusion.by_name()
        inputs = [f[k] for k in SWEEP_INPUTS] + self.axes + [self.judge]
        gpu = self.ctx.gpu_event()
        evt = self.run.click(_positional(self.sweep, len(inputs)), inputs, [self.grid, self.gallery, self.status,
                             self.state], api_name="sweep", show_progress="minimal", show_progress_on=[self.status],
                             **gpu)
        self.stop_btn.click(self.stop, None, self.status, api_name="sweep_stop", cancels=[evt], queue=False)
        self.gallery.select(self.load_cell, self.state,
                            [f[k] for k in CELL_OUTPUTS] + [self.sal_p, self.sal_s, self.sal_m, self.cell_caption],
                            api_name="sweep_cell", **gpu)


def _positional(gen_fn, n: int):
    """``gen_fn(*values, request=None)`` as a generator function of ``n`` named positional
    parameters and then ``request``: Gradio hands its gr.Request only to a positional parameter
    (it stops looking at ``*values``), so without this every sweep ran as session "default" and
    one user's sweep cancelled another's (found by tests/test_load.py)."""

    def handler(*args):
        yield from gen_fn(*args[:n], request=args[n] if len(args) > n else None)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(
        [inspect.Parameter(f"param_{i}", kind) for i in range(n)]  # the API names as before
        + [inspect.Parameter("request", kind, default=None)])
    handler.__name__ = handler.__qualname__ = getattr(gen_fn, "__name__", "sweep")
    handler.__doc__ = gen_fn.__doc__
    handler.__annotations__ = {"request": gr.Request}
    return handler
