"""The Fusion tab's layout: the pickers, the recipe (prompts, seed, sampling, size, the fusion
selection), the run buttons, the output images and the saliency view. Handlers:
:mod:`studio.ui.fusion_events`.

The widgets start as the demo (the first example, :func:`studio.examples.demo_example`: the
benchmark's recommended settings on a blind-spot prompt), so the first Fuse click shows fusion;
its one-line caption stands under the Fuse button.
"""
from dataclasses import dataclass, fields, replace

import gradio as gr

from fusion.schedule import MODE_HELP, parse_fusion_selection
from fusion.schedulers import SAMPLER_HELP

from .. import examples as ex
from ..models import SIZE_LIMITS, missing_toy_message, toy_models_present
from .common import AppContext
from .model_picker import ModelChoices, ModelPicker, build_model_picker
from .saliency_view import SaliencyView, build_saliency_view

__all__ = ["Recipe", "FusionOutputs", "FusionTab", "build_fusion_tab", "as_offered", "start_values"]


def as_offered(ctx: AppContext, example: ex.FusionExample) -> ex.FusionExample:
    """``example`` as this app offers it: the public app clamps its steps to the step cap."""
    return replace(example, steps=min(example.steps, ctx.policy.limits.max_steps)) if ctx.public else example


def start_values(ctx: AppContext) -> ex.FusionExample:
    """The Fusion tab's start-up recipe: the demo (the first example), as offered."""
    return as_offered(ctx, ex.FUSION_EXAMPLES[0])


@dataclass
class Recipe:
    """The request's widgets besides the pickers (names as the handlers' parameters)."""

    prompt: gr.Textbox
    prompt1: gr.Textbox
    negative: gr.Textbox
    seed: gr.Number
    dice: gr.Button
    steps: gr.Slider
    sampler: gr.Dropdown
    guidance: gr.Slider
    height: gr.Slider
    width: gr.Slider
    v1: gr.Slider
    kg: gr.Slider
    ke: gr.Slider
    mode: gr.Radio
    selection: gr.Textbox
    blend: gr.Textbox
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown


@dataclass
class FusionOutputs:
    general: gr.Image
    expert: gr.Image
    fused: gr.Image
    compare: gr.ImageSlider


@dataclass
class FusionTab:
    picker: ModelPicker
    recipe: Recipe
    out: FusionOutputs
    saliency: SaliencyView

    def by_name(self) -> dict:
        """The request's widgets by name (the pickers' and the recipe's)."""
        return {**self.picker.by_name(), **{f.name: getattr(self.recipe, f.name) for f in fields(self.recipe)}}


def _sampling_rows(ctx: AppContext, recipe, geo) -> dict:
    """Seed, steps, sampler, guidance and size widgets."""
    with gr.Row():
        # no precision: Gradio would round 1.5 (and fail on NaN); the service refuses both
        seed = gr.Number(recipe.seed, label="Seed", minimum=0, elem_id="seed")
        dice = gr.Button("Randomise seed", size="sm", scale=0)
    with gr.Row():
        max_steps = ctx.policy.limits.max_steps if ctx.public else 200
        steps = gr.Slider(1, max_steps, value=recipe.steps, step=1, label="Steps", elem_id="steps")
        sampler = gr.Dropdown([(v, k) for k, v in SAMPLER_HELP.items()], value="ddim", label="Sampler",
                              elem_id="sampler")
        guidance = gr.Slider(1, 20, value=recipe.guidance, step=0.5, label="Guidance scale")
    with gr.Row():
        # broad bounds for API callers; the page narrows them to the primary's sizes on load
        max_side = ctx.rt.limits.max_side
        sizes = dict(minimum=SIZE_LIMITS[0], maximum=max_side, step=8, value=min(geo.native, max_side))
        height = gr.Slider(label="Height", elem_id="height", **sizes)
        width = gr.Slider(label="Width", elem_id="width", **sizes)
    return dict(seed=seed, dice=dice, steps=steps, sampler=sampler, guidance=guidance, height=height, width=width)


def _selection_group(recipe) -> dict:
    """The v1/kg/ke sliders, the merge mode and the fusion_selection text they make."""
    sel = parse_fusion_selection(recipe.fusion_selection)
    with gr.Group():
        with gr.Row():
            v1 = gr.Slider(0, 1000, value=sel.v1, step=1, label="v1 (fusion step, DDPM t)", elem_id="v1")
            kg = gr.Slider(0.05, 10, value=sel.kg, step=0.05, label="kg (primary sharpness)")
            ke = gr.Slider(0.05, 10, value=sel.ke, step=0.05, label="ke (secondary sharpness)")
        mode = gr.Radio([(MODE_HELP[m], m) for m in (0, 1, 2)], value=recipe.mode, label="Merge mode",
                        elem_id="mode")
        selection = gr.Textbox(recipe.fusion_selection, label="fusion_selection (v1,kg,ke)",
                               info="made by the sliders; paste one and press Enter", max_lines=1,
                               elem_id="fusion_selection")
    blend = gr.Textbox(recipe.blend, label="Options beyond the paper (JSON; empty = faithful SNB)", max_lines=1,
                       info='fusion/blend_options.py, e.g. {"general_window":[500,400],"recolor":true}',
                       elem_id="blend")
    return dict(v1=v1, kg=kg, ke=ke, mode=mode, selection=selection, blend=blend)


def _recipe(ctx: AppContext, geo, recipe: ex.FusionExample) -> Recipe:
    prompt = gr.Textbox(recipe.prompt, label="Prompt (expert)", lines=1, elem_id="prompt")
    prompt1 = gr.Textbox(recipe.prompt1, label="Prompt1 (general)", lines=1, elem_id="prompt1")
    negative = gr.Textbox("", label="Negative prompt", lines=1)
    sampling = _sampling_rows(ctx, recipe, geo)
    selection = _selection_group(recipe)
    with gr.Row():
        run = gr.Button("Fuse", variant="primary", elem_id="fuse_button")
        stop = gr.Button("Stop", variant="stop", elem_id="stop_button")
    gr.Markdown(f"Starts as the demo: {recipe.caption}", elem_id="start_caption")
    status = gr.Markdown("", elem_id="status", label="Status")
    return Recipe(prompt=prompt, prompt1=prompt1, negative=negative, **sampling, **selection, run=run, stop=stop,
                  status=status)


def _outputs() -> tuple[FusionOutputs, SaliencyView]:
    with gr.Row():
        img_kw = dict(format="png", type="pil", interactive=False, buttons=["download", "fullscreen"], height=220,
                      elem_classes=["fit"])
        images = [gr.Image(label=label, elem_id=elem_id, **img_kw) for label, elem_id in
                  (("General alone", "out_general"), ("Expert alone", "out_expert"), ("Fused", "out_fused"))]
    compare = gr.ImageSlider(label="Before/after: primary alone vs fused", format="png", type="pil",
                             interactive=False, buttons=["download", "fullscreen"], max_height=360, elem_id="compare")
    return FusionOutputs(*images, compare), build_saliency_view(img_kw)


def build_fusion_tab(ctx: AppContext, choices: ModelChoices) -> FusionTab:
    """The tab's widgets, inside the open tab (events: :class:`studio.ui.fusion_events.FusionEvents`)."""
    gr.Markdown(f"⚠️ {missing_toy_message()}", visible=not toy_models_present(), elem_id="toy_missing")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            start = start_values(ctx)
            picker = build_model_picker(choices, ctx.public, primary=start.primary)
            recipe = _recipe(ctx, choices.geo, start)
        with gr.Column(scale=3, min_width=420):
            out, saliency = _outputs()
    return FusionTab(picker, recipe, out, saliency)
