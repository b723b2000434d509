"""The saliency view: the primary's and the secondary's saliency, the SNB mask and the share plot
of one captured SNB step of the last run (``/saliency_step``: no model runs)."""
from dataclasses import dataclass

import gradio as gr

__all__ = ["Panels", "panels", "SaliencyView", "build_saliency_view", "NO_RUN"]

NO_RUN = "Run a fusion to see its saliency maps."
SAMPLING = "Sampling: the saliency maps of this run appear when it ends."
NO_SNB = "No SNB step in this run (mode 0, or a schedule where SNB never runs): the fused image is the primary's."


@dataclass
class Panels:
    """The pictures and caption of one captured step (None where there is nothing to show)."""

    primary: object = None
    secondary: object = None
    mask: object = None
    plot: object = None
    caption: str = NO_RUN


def run_state(outcome) -> dict:
    """What the session keeps of a run for scrubbing: its trace and its fused image."""
    return {"trace": outcome.trace, "fused": outcome.images["fused"]}


def panels(state, k) -> Panels:
    """Panels of captured step ``k`` (clamped to the run's steps) from :func:`run_state`."""
    if not state:
        return Panels()
    trace = state["trace"]
    if not len(trace):
        return Panels(plot=trace.plot(), caption=NO_SNB)
    k = int(max(0, min(int(k or 0), len(trace) - 1)))
    hp, hs, m = trace.panels(k, image=state["fused"])
    return Panels(hp, hs, m, trace.plot(k), trace.describe(k))


def step_slider_update(n: int):
    """The step slider for a run with ``n`` captured steps."""
    return gr.update(minimum=0, maximum=max(n - 1, 1), value=0, step=1, interactive=n > 1,
                     label=f"Captured SNB step ({n} captured; drag to scrub)" if n else
                     "Captured SNB step (none in this run)")


@dataclass
class SaliencyView:
    """The view's components; ``state`` keeps the last run's maps per browser session."""

    primary: gr.Image
    secondary: gr.Image
    mask: gr.Image
    step: gr.Slider
    caption: gr.Markdown
    plot: gr.Image
    state: gr.State

    def show(self, p: Panels) -> dict:
        """``p`` by component."""
        return {self.primary: p.primary, self.secondary: p.secondary, self.mask: p.mask, self.plot: p.plot,
                self.caption: p.caption}

    def after_run(self, outcome) -> dict:
        """Everything the view shows after a run: its first captured step, the slider, the state."""
        state = run_state(outcome)
        return {**self.show(panels(state, 0)), self.step: step_slider_update(len(outcome.trace)), self.state: state}

    def during_run(self) -> dict:
        """What the view shows while a run streams previews: nothing of the previous run (its maps
        no longer match the images), given as plain values: Gradio rebuilds a component for
        every output a streamed update skips, which cost more than the preview itself."""
        return {**self.show(Panels(caption=SAMPLING)), self.step: 0, self.state: None}

    def saliency_step(self, step, state):
        """Show captured step ``step`` of the last run (no model runs)."""
        return self.show(panels(state, step))

    def wire(self):
        self.step.input(self.saliency_step, [self.step, self.state],
                        [self.primary, self.secondary, self.mask, self.plot, self.caption],
                        api_name="saliency_step", trigger_mode="always_last", show_progress="hidden")


def build_saliency_view(img_kw: dict) -> SaliencyView:
    """The view's widgets, inside the open column (``img_kw``: the output images' settings)."""
    gr.Markdown("**Saliency view** - primary and secondary saliency (one colour scale per step: red = salient) "
                "and the mask (tinted = latent pixels taken from the secondary), at each captured SNB step.")
    with gr.Row(elem_classes=["sal-row"]):
        sal_p = gr.Image(label="Primary saliency", elem_id="sal_primary", **img_kw)
        sal_s = gr.Image(label="Secondary saliency", elem_id="sal_secondary", **img_kw)
        sal_m = gr.Image(label="Mask (from secondary)", elem_id="sal_mask", **img_kw)
    step = gr.Slider(0, 1, value=0, step=1, label="Captured SNB step", interactive=False, elem_id="sal_step")
    caption = gr.Markdown(NO_RUN, elem_id="sal_caption", label="Saliency step")
    plot = gr.Image(label="Share of pixels from the secondary over the steps", elem_id="share_plot",
                    **{**img_kw, "height": 170, "elem_classes": []})
    state = gr.State(None, time_to_live=3600)
    return SaliencyView(sal_p, sal_s, sal_m, step, caption, plot, state)
