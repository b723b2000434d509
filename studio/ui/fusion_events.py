"""The Fusion tab's handlers and events: ``/fuse_stream`` (the Fuse button: streamed previews,
then the images and the saliency view), ``/fuse`` (the same run for scripts: no previews, the
outputs once), ``/stop``, ``/random_seed`` and the fusion-selection sliders. Pure glue: inputs ->
:class:`studio.fusion_service.FuseRequest` -> the GPU calls -> outputs by component."""
import random

import gradio as gr

from fusion.sampler import Cancelled
from fusion.schedule import FusionSelection, parse_fusion_selection

from .. import examples as ex
from ..fusion_service import FuseRequest
from ..gpu import StudioError
from ..requests import APP
from .common import AppContext, refuse, session
from .fusion_tab import FusionTab, as_offered
from .model_picker import ModelChoices

__all__ = ["FUSE_INPUTS", "fuse_request", "FusionEvents"]

#: the widgets of ``/fuse``'s parameters, in the API's order (the API names ``negative`` and
#: ``selection`` ``negative_prompt`` and ``fusion_selection``)
FUSE_INPUTS = ("general", "expert", "general_path", "expert_path", "primary", "prompt", "prompt1", "negative",
               "seed", "steps", "guidance", "height", "width", "selection", "mode", "general_lora", "expert_lora",
               "general_lora_path", "expert_lora_path", "general_lora_scale", "expert_lora_scale", "sampler",
               "blend")


def fuse_request(v: dict) -> FuseRequest:
    """The request of ``/fuse``'s values by API name. A parameter the caller leaves out arrives
    as the widget's start-up value (Gradio fills it in), which is the demo's
    (:func:`studio.ui.fusion_tab.start_values`); a missing (None) value takes the app's default,
    the demo's too (:data:`studio.requests.APP`; but a missing seed is 0, missing steps 1, a missing
    size the model's native size, an empty blend the faithful SNB). Everything is checked by the
    service (:meth:`FusionService.check`)."""
    return FuseRequest(
        general=v["general"], expert=v["expert"], general_path_box=v["general_path"] or "",
        expert_path_box=v["expert_path"] or "", primary=v["primary"] or APP.primary, prompt=v["prompt"] or "",
        prompt1=v["prompt1"] or "", negative_prompt=v["negative_prompt"] or "",
        seed=v["seed"] if v["seed"] is not None else 0, steps=1 if v["steps"] is None else v["steps"],
        guidance=float(v["guidance"] if v["guidance"] is not None else APP.guidance),
        height=v["height"] or None, width=v["width"] or None,
        fusion_selection=APP.fusion_selection if v["fusion_selection"] is None else v["fusion_selection"],
        mode=int(v["mode"] if v["mode"] is not None else APP.mode), general_lora=v["general_lora"] or "",
        expert_lora=v["expert_lora"] or "", general_lora_path_box=v["general_lora_path"] or "",
        expert_lora_path_box=v["expert_lora_path"] or "", general_lora_scale=v["general_lora_scale"],
        expert_lora_scale=v["expert_lora_scale"], sampler=v["sampler"] or APP.sampler,
        blend=APP.blend if v["blend"] is None else v["blend"])


class FusionEvents:
    """Handlers of the Fusion tab (bound to its components) and :meth:`wire`."""

    def __init__(self, ctx: AppContext, choices: ModelChoices, tab: FusionTab):
        self.ctx, self.choices, self.tab = ctx, choices, tab
        self.inputs = [tab.by_name()[k] for k in FUSE_INPUTS]

    # ---- /fuse and /fuse_stream ---------------------------------------------------------------
    def fuse(self, general, expert, general_path, expert_path, primary, prompt, prompt1, negative_prompt, seed,
             steps, guidance, height, width, fusion_selection, mode, general_lora="", expert_lora="",
             general_lora_path="", expert_lora_path="", general_lora_scale=1.0, expert_lora_scale=1.0,
             sampler="ddim", blend="", progress=gr.Progress(), request: gr.Request = None):
        """Run a fusion (the page's Fuse button, ``/fuse_stream``); stream previews; then the
        general, expert and fused images, the before/after pair, and the saliency view of the
        first captured SNB step."""
        values = {k: v for k, v in locals().items() if k not in ("self", "progress", "request")}
        for item in self._items(values, progress, request, previews=True):
            yield self.finished(item) if hasattr(item, "trace") else self.preview(item)

    def fuse_result(self, general, expert, general_path, expert_path, primary, prompt, prompt1, negative_prompt,
                    seed, steps, guidance, height, width, fusion_selection, mode, general_lora="", expert_lora="",
                    general_lora_path="", expert_lora_path="", general_lora_scale=1.0, expert_lora_scale=1.0,
                    sampler="ddim", blend="", progress=gr.Progress(), request: gr.Request = None):
        """The same run for programmatic clients (``/fuse``): no previews are decoded or sent, and
        the outputs come once, in the completed message (a streamed run sends its last update
        twice, and gradio_client downloads every image of every update, each on a new
        connection). The before/after pair is left empty: its two images, the primary's and the
        fused, are in the result already. Stop works the same."""
        values = {k: v for k, v in locals().items() if k not in ("self", "progress", "request")}
        return self.finished(self._outcome(values, progress, request), pair=False)

    def _outcome(self, values: dict, progress=None, request=None):
        """The run's outcome, no preview decoded."""
        outcome = None
        for outcome in self._items(values, progress or (lambda *a, **k: None), request, previews=False):
            pass
        return outcome

    def _items(self, values: dict, progress, request, previews: bool):
        """The run's decoded previews (none with ``previews=False``), then its outcome; progress
        reported at every step; this session's Stop and the service's errors as Gradio errors."""
        cancel = self.ctx.rt.new_cancel(session(request), "fuse")
        progress(0, desc="loading models / waiting for a free slot")
        try:
            for item in self.ctx.calls.fuse(fuse_request(values), cancel, previews=previews):
                if hasattr(item, "trace"):
                    yield item
                    continue
                progress((item.step, item.total), desc="sampling", unit="steps")
                if item.images is not None:
                    yield item
        except Cancelled:
            raise gr.Error("Stopped.", print_exception=False)
        except StudioError as e:
            raise refuse(e)

    def preview(self, item) -> dict:
        """One streamed step: the decoded previews, the status line, and a value for every other
        output too (the saliency view cleared, no before/after pair yet): an output a streamed
        update leaves out makes Gradio rebuild its component, at every preview."""
        o = self.tab.out
        shown = {c: item.images.get(k) for c, k in ((o.general, "general"), (o.expert, "expert"), (o.fused, "fused"))}
        status = f"Sampling: step {item.step} of {item.total} (previews: predicted final image)"
        return {**shown, o.compare: None, **self.tab.saliency.during_run(), self.tab.recipe.status: status}

    def finished(self, outcome, pair: bool = True) -> dict:
        """The run's images, the before/after pair (None with ``pair=False``), its saliency view
        and summary."""
        o, fused = self.tab.out, outcome.images["fused"]
        return {o.general: outcome.images["general"], o.expert: outcome.images["expert"], o.fused: fused,
                o.compare: (outcome.primary_image, fused) if pair else None,
                **self.tab.saliency.after_run(outcome), self.tab.recipe.status: outcome.summary()}

    def stop(self, request: gr.Request = None):
        """Cancel this session's running fusion (the sampler stops before its next step)."""
        return "Stopped." if self.ctx.rt.cancel(session(request), "fuse") else "Nothing was running."

    def example_outputs(self) -> list:
        o = self.tab.out
        return [o.general, o.expert, o.fused, o.compare, self.tab.recipe.status]

    def fuse_example(self, prompt, prompt1, selection, mode, primary, seed, steps, guidance, blend=""):
        """An example's final images (cached at start-up in public mode)."""
        c = self.choices
        values = dict(general=c.default_general, expert=c.default_expert, general_path="", expert_path="",
                      primary=primary, prompt=prompt, prompt1=prompt1, negative_prompt="", seed=seed, steps=steps,
                      guidance=guidance, height=c.geo.native, width=c.geo.native, fusion_selection=selection,
                      mode=mode, general_lora="", expert_lora="", general_lora_path="", expert_lora_path="",
                      general_lora_scale=1.0, expert_lora_scale=1.0, sampler="ddim", blend=blend)
        out = self.finished(self._outcome(values))  # the page's view: with the before/after pair
        return [out.get(k) for k in self.example_outputs()]

    # ---- seed and fusion selection ------------------------------------------------------------
    @staticmethod
    def random_seed():
        return random.randrange(0, 2 ** 31 - 1)

    def selection_from_sliders(self, v1, kg, ke):
        try:
            return str(FusionSelection(int(v1), float(kg), float(ke)))
        except ValueError as e:
            raise refuse(e)

    def sliders_from_selection(self, text):
        try:
            sel = parse_fusion_selection((text or "").strip())
        except ValueError as e:
            raise refuse(e)
        r = self.tab.recipe
        return {r.v1: sel.v1, r.kg: sel.kg, r.ke: sel.ke, r.selection: str(sel)}

    def sliders_follow_selection(self, text):
        """Quietly move the sliders to a valid string (examples, typing); ignore partial ones."""
        try:
            sel = parse_fusion_selection((text or "").strip())
        except ValueError:
            return gr.skip()
        r = self.tab.recipe
        return {r.v1: sel.v1, r.kg: sel.kg, r.ke: sel.ke}

    # ---- layout parts that need the handlers, and events --------------------------------------
    def examples(self):
        """The demo and the reference's two recipes (inside the open tab)."""
        r, shown = self.tab.recipe, [as_offered(self.ctx, e) for e in ex.FUSION_EXAMPLES]
        rows = [[e.prompt, e.prompt1, e.fusion_selection, e.mode, e.primary, e.seed, e.steps, e.guidance, e.blend]
                for e in shown]
        gr.Markdown(ex.FUSION_EXAMPLES[0].caption, elem_id="demo_caption")
        gr.Examples(examples=rows, example_labels=[e.title for e in ex.FUSION_EXAMPLES],
                    inputs=[r.prompt, r.prompt1, r.selection, r.mode, self.tab.picker.primary, r.seed, r.steps, r.guidance,
                            r.blend],
                    label="The demo and the reference's two recipes in the toy world (click one, then Fuse)",
                    **self.ctx.example_cache(lambda *a: self.fuse_example(*a), self.example_outputs()))

    def fuse_outputs(self) -> list:
        o, v = self.tab.out, self.tab.saliency
        return [o.general, o.expert, o.fused, o.compare, v.primary, v.secondary, v.mask, v.plot, v.step, v.caption,
                self.tab.recipe.status, v.state]

    def wire(self):
        r, outputs = self.tab.recipe, self.fuse_outputs()
        run = dict(**self.ctx.gpu_event(), show_progress="minimal", show_progress_on=[r.status])
        # the page streams previews (/fuse_stream); /fuse, for scripts, answers once (no trigger)
        fuse_evt = r.run.click(self.fuse, self.inputs, outputs, api_name="fuse_stream", **run)
        enter_evt = r.prompt.submit(self.fuse, self.inputs, outputs, api_name="fuse_on_enter",
                                    api_visibility="undocumented", **run)
        api_evt = gr.on([], self.fuse_result, self.inputs, outputs, api_name="fuse", **self.ctx.gpu_event())
        r.stop.click(self.stop, None, r.status, api_name="stop", cancels=[fuse_evt, enter_evt, api_evt],
                     queue=False)
        self.tab.saliency.wire()
        r.dice.click(self.random_seed, None, r.seed, api_name="random_seed", queue=False)
        quiet = dict(show_progress="hidden", queue=False)
        sliders = [r.v1, r.kg, r.ke]
        gr.on([r.v1.input, r.kg.input, r.ke.input], self.selection_from_sliders, sliders, r.selection,
              api_name="selection_from_sliders", trigger_mode="always_last", **quiet)
        r.selection.submit(self.sliders_from_selection, r.selection, sliders + [r.selection],
                           api_name="sliders_from_selection", **quiet)
        r.selection.change(self.sliders_follow_selection, r.selection, sliders, api_name="sliders_follow_selection",
                           api_visibility="undocumented", trigger_mode="always_last", **quiet)
