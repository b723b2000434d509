"""The app's Sweep tab: the Fusion tab's request with v1, kg, ke, mode and primary as axes.

Cells stream into a labelled grid (axes named, each cell's secondary pixel share, optionally the
toy-world judge score as a red-to-green bar) and a gallery; clicking a cell loads its settings
into the Fusion tab and shows that cell's saliency maps here. UI only: the work is
:class:`studio.sweep_service.SweepService`'s.
"""
from __future__ import annotations

from .gpu import StudioError
from .sweep_service import APP_MAX_CELLS, SweepRequest, SweepService

__all__ = ["add_sweep_tab", "SWEEP_INPUTS"]

#: the Fusion tab components the sweep reads, in this order
SWEEP_INPUTS = ("general", "expert", "general_path", "expert_path", "prompt", "prompt1", "negative", "seed",
                "steps", "guidance", "height", "width", "sampler", "general_lora", "expert_lora",
                "general_lora_path", "expert_lora_path", "general_lora_scale", "expert_lora_scale")
#: SweepRequest / FuseRequest fields carried over as they are
_CARRIED = ("sampler", "general_lora", "expert_lora", "general_lora_scale", "expert_lora_scale")
#: the Fusion tab components a clicked cell sets
CELL_OUTPUTS = ("v1", "kg", "ke", "selection", "mode", "primary")


def _caption(cell, row) -> str:
    text = f"{cell.name.replace('_', ' ')} · secondary {row['secondary_share']:.2f}"
    return text + (f" · judge {row['judge']:.2f}" if "judge" in row else "")


def add_sweep_tab(gr, rt, fusion: dict, session, with_request, panels, gpu_limit: int):
    """Build the tab inside the open Blocks. ``fusion``: the Fusion tab's components by name
    (:data:`SWEEP_INPUTS` and :data:`CELL_OUTPUTS`); ``session(request)``: the session key;
    ``with_request``: app.py's helper that hands handlers their gr.Request; ``panels(state, k)``:
    the saliency panels of a run."""
    services: list[SweepService] = []  # made on first use (the model cache imports torch)

    def service() -> SweepService:
        if not services:
            services.append(SweepService(rt.cache, rt.slots, rt.limits, policy=rt.policy, admission=rt.admission))
        return services[0]

    with gr.Tab("Sweep", id="sweep"):
        gr.Markdown(f"A grid of fusion settings for the Fusion tab's models, prompts, seed, steps and size: "
                    f"each axis is a comma list (at most {APP_MAX_CELLS} cells). The general and expert runs "
                    f"are shared by all cells, and so is a mode-1 cell's primary-alone start.")
        with gr.Row():
            axes = [gr.Textbox(v, label=f"{name} axis", max_lines=1, elem_id=f"sweep_{name}")
                    for name, v in (("v1", "400,600,800"), ("kg", "1"), ("ke", "1,3"), ("mode", "2"),
                                    ("primary", "general"))]
        with gr.Row():
            judge = gr.Checkbox(False, label="Judge score per cell (toy world, 64x64)", elem_id="sweep_judge")
            run = gr.Button("Run sweep", variant="primary", elem_id="sweep_button")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="sweep_stop")
        status = gr.Markdown("", elem_id="sweep_status")
        grid = gr.Image(label="Grid (columns: the longest axis; caption: secondary pixel share)", type="pil",
                        format="png", interactive=False, elem_id="sweep_grid", buttons=["download", "fullscreen"])
        gallery = gr.Gallery(label="Cells: click one to load its settings and its saliency maps", columns=6,
                             height=260, allow_preview=False, elem_id="sweep_cells")
        with gr.Row():
            kw = dict(type="pil", format="png", interactive=False, height=200)
            sal_p = gr.Image(label="Primary saliency", elem_id="sweep_sal_primary", **kw)
            sal_s = gr.Image(label="Secondary saliency", elem_id="sweep_sal_secondary", **kw)
            sal_m = gr.Image(label="Mask (from secondary)", elem_id="sweep_sal_mask", **kw)
        cell_caption = gr.Markdown("", elem_id="sweep_cell_caption")
        state = gr.State(None, time_to_live=3600)

    def request_from(values, axis_values, judge_on) -> SweepRequest:
        f = dict(zip(SWEEP_INPUTS, values))
        return SweepRequest(
            general=f["general"], expert=f["expert"], general_path_box=f["general_path"] or "",
            expert_path_box=f["expert_path"] or "", prompt=f["prompt"] or "", prompt1=f["prompt1"] or "",
            negative_prompt=f["negative"] or "", seed=f["seed"] if f["seed"] is not None else 0,
            steps=f["steps"] if f["steps"] is not None else 1, guidance=float(f["guidance"] or 7.5),
            height=f["height"] or None, width=f["width"] or None, judge=bool(judge_on),
            general_lora_path_box=f["general_lora_path"] or "", expert_lora_path_box=f["expert_lora_path"] or "",
            **{k: f[k] for k in _CARRIED if f[k] is not None},
            **dict(zip(("v1", "kg", "ke", "mode", "primary"), axis_values)))

    def sweep(*values, request: gr.Request = None):
        """Run the grid; stream (grid, cells gallery, status, state) after every chunk."""
        from fusion.sampler import Cancelled
        n = len(SWEEP_INPUTS)
        req = request_from(values[:n], values[n:n + 5], values[n + 5])
        cancel = rt.new_cancel(session(request), "sweep")
        title = f"{req.prompt!r} / {req.prompt1 or req.prompt!r}, seed {req.seed}, {req.steps} steps"
        try:
            for up in service().stream(req, cancel):
                cells = [c for c in up.axes.cells() if c in up.images]
                gallery_items = [(up.images[c][0], _caption(c, up.rows[c])) for c in cells]
                msg = f"{up.done} of {up.total} cells done ({up.unet_calls} UNet calls so far)."
                yield up.grid(title), gallery_items, msg, {"cells": cells, "request": req}
        except Cancelled:
            raise gr.Error("Stopped.", print_exception=False)
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False)

    def stop(request: gr.Request = None):
        return "Stopped." if rt.cancel(session(request), "sweep") else "Nothing was running."

    def load_cell(st, evt: gr.SelectData):
        """A clicked cell: its settings into the Fusion tab, its saliency maps here."""
        from studio.fusion_service import FuseRequest
        if not st or evt is None or not 0 <= int(evt.index) < len(st["cells"]):
            raise gr.Error("Run a sweep, then click one of its cells.", print_exception=False)
        cell, r = st["cells"][int(evt.index)], st["request"]
        fr = FuseRequest(general=r.general, expert=r.expert, general_path_box=r.general_path_box,
                         expert_path_box=r.expert_path_box, prompt=r.prompt, prompt1=r.prompt1,
                         negative_prompt=r.negative_prompt, seed=r.seed, steps=r.steps, guidance=r.guidance,
                         height=r.height, width=r.width, fusion_selection=str(cell.selection), mode=cell.mode,
                         primary=cell.primary, general_lora_path_box=r.general_lora_path_box,
                         expert_lora_path_box=r.expert_lora_path_box, **{k: getattr(r, k) for k in _CARRIED})
        try:
            out = rt.fusion.run(fr)
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False)
        hp, hs, m, _, text = panels({"trace": out.trace, "fused": out.images["fused"]}, 0)
        return (cell.v1, cell.kg, cell.ke, str(cell.selection), cell.mode, cell.primary, hp, hs, m,
                f"**{cell.name}**: {text}")

    inputs = [fusion[k] for k in SWEEP_INPUTS] + axes + [judge]
    sweep, stop = with_request(gr, _positional(sweep, len(inputs))), with_request(gr, stop)
    load_cell.__annotations__ = {"evt": gr.SelectData}  # resolved here (postponed annotations)
    evt = run.click(sweep, inputs, [grid, gallery, status, state], api_name="sweep", concurrency_id="gpu",
                    concurrency_limit=gpu_limit, show_progress="minimal", show_progress_on=[status])
    stop_btn.click(stop, None, status, api_name="sweep_stop", cancels=[evt], queue=False)
    gallery.select(load_cell, state, [fusion[k] for k in CELL_OUTPUTS] + [sal_p, sal_s, sal_m, cell_caption],
                   api_name="sweep_cell", concurrency_id="gpu", concurrency_limit=gpu_limit)


def _positional(gen_fn, n: int):
    """``gen_fn(*values, request=None)`` as a generator function of ``n`` named positional
    parameters and then ``request``: Gradio hands its gr.Request only to a positional parameter
    (it stops looking at ``*values``), so without this every sweep ran as session "default" and
    one user's sweep cancelled another's (found by tests/test_load.py)."""
    import inspect

    def handler(*args):
        yield from gen_fn(*args[:n], request=args[n] if len(args) > n else None)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(
        [inspect.Parameter(f"param_{i}", kind) for i in range(n)]  # the API names as before
        + [inspect.Parameter("request", kind, default=None)])
    handler.__name__ = handler.__qualname__ = getattr(gen_fn, "__name__", "sweep")
    handler.__doc__ = gen_fn.__doc__
    return handler
