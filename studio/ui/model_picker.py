"""The model and LoRA pickers, the size sliders that follow the primary model, the folder rescan
and the runtime panel (``/model_geometry``, ``/refresh_models``, ``/runtime_status``)."""
from dataclasses import dataclass, fields

import gradio as gr

from ..limits import check_model_path
from ..models import TOY_EXPERT, TOY_GENERAL, discover, discover_loras, geometry
from .common import AppContext, refuse

__all__ = ["ModelChoices", "ModelPicker", "build_model_picker", "RuntimePanel", "build_runtime_panel",
           "wire_models"]


class ModelChoices:
    """What the pickers offer: models found in the models folder and listed in models.yaml, the
    default pair (the embedded toy models, even when missing: a request then says how to get
    them; a Space's models.yaml pair when it names one) and its geometry."""

    def __init__(self, cfg):
        self.cfg = cfg
        space = cfg.space
        self.default_general, self.default_expert = str(TOY_GENERAL), str(TOY_EXPERT)
        if space is not None and space.general is not None:
            self.default_general, self.default_expert = str(space.general), str(space.expert)
        self.geo = geometry(self.default_general)

    def models(self) -> list[tuple[str, str]]:
        found = discover(self.cfg.models_dir)
        listed = self.cfg.space.diffusion_models() if self.cfg.space else ()
        return [(c.label, c.path) for c in found] + [
            (f"{p.name} (models.yaml)", str(p)) for p in listed if not any(c.path == str(p) for c in found)]

    def initial_models(self) -> list[tuple[str, str]]:
        """:meth:`models`, with the default pair first when it is missing (labelled so)."""
        pairs = self.models()
        if not any(v == self.default_general for _, v in pairs):
            pairs = [(f"{TOY_GENERAL.name} (embedded toy general, missing)", self.default_general),
                     (f"{TOY_EXPERT.name} (embedded toy cartoon expert, missing)", self.default_expert)] + pairs
        return pairs

    def loras(self) -> list[tuple[str, str]]:
        found = [(c.label, c.path) for c in discover_loras(self.cfg.models_dir)]
        listed = [(f"{k} (models.yaml)", str(p)) for k, p in (self.cfg.space.loras.items() if self.cfg.space else ())
                  if str(p) not in {v for _, v in found}]
        return [("(no LoRA)", "")] + found + listed


@dataclass
class ModelPicker:
    """The pickers' components (names as the handlers' parameters)."""

    general: gr.Dropdown
    expert: gr.Dropdown
    general_path: gr.Textbox
    expert_path: gr.Textbox
    general_lora: gr.Dropdown
    expert_lora: gr.Dropdown
    general_lora_path: gr.Textbox
    expert_lora_path: gr.Textbox
    general_lora_scale: gr.Slider
    expert_lora_scale: gr.Slider
    primary: gr.Radio
    refresh: gr.Button

    def by_name(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _pair(make, names: tuple[str, str], **kw) -> list:
    """The general and the expert widget of one kind, side by side."""
    return [make(label=label, elem_id=elem_id, **kw) for label, elem_id in names]


def build_model_picker(choices: ModelChoices, public: bool, primary: str = "general") -> ModelPicker:
    """The pickers, inside the open column (public mode: no path boxes); ``primary``: the primary
    radio's start-up value."""
    pairs, loras = choices.initial_models(), choices.loras()
    with gr.Group():
        with gr.Row():
            general = gr.Dropdown(pairs, value=choices.default_general, label="General model",
                                  allow_custom_value=True, elem_id="general_model")
            expert = gr.Dropdown(pairs, value=choices.default_expert, label="Expert model",
                                 allow_custom_value=True, elem_id="expert_model")
        with gr.Row(visible=not public):
            paths = _pair(gr.Textbox, (("…or general model path", "general_path"),
                                       ("…or expert model path", "expert_path")),
                          value="", placeholder="folder or .safetensors/.ckpt", max_lines=1)
        with gr.Accordion("LoRA (optional): from models/loras/ or a path", open=False):
            with gr.Row():
                lora = _pair(gr.Dropdown, (("General LoRA", "general_lora"), ("Expert LoRA", "expert_lora")),
                             choices=loras, value="", allow_custom_value=True)
            with gr.Row(visible=not public):
                lora_paths = _pair(gr.Textbox, (("…or general LoRA path", "general_lora_path"),
                                                ("…or expert LoRA path", "expert_lora_path")),
                                   value="", max_lines=1, placeholder=".safetensors")
            with gr.Row():
                scales = [gr.Slider(0, 2, value=1.0, step=0.05, label=f"{side} LoRA scale")
                          for side in ("General", "Expert")]
        with gr.Row():
            primary = gr.Radio([("General model", "general"), ("Expert model", "expert")], value=primary,
                               label="Primary model", info="its text encoder, schedule and VAE drive the fused run")
            refresh = gr.Button("Rescan models folder", size="sm", scale=0)
    return ModelPicker(general, expert, *paths, *lora, *lora_paths, *scales, primary, refresh)


@dataclass
class RuntimePanel:
    text: gr.Markdown
    button: gr.Button


def build_runtime_panel() -> RuntimePanel:
    with gr.Accordion("Runtime", open=False):
        return RuntimePanel(gr.Markdown(""), gr.Button("Show warm models", size="sm"))


class ModelHandlers:
    def __init__(self, ctx: AppContext, choices: ModelChoices, picker: ModelPicker, sizes, runtime: RuntimePanel):
        self.ctx, self.choices, self.picker, self.sizes, self.runtime = ctx, choices, picker, sizes, runtime

    def model_geometry(self, general, expert, general_path, expert_path, primary):
        """Size sliders for the primary model's supported sizes."""
        p = ((expert_path or "").strip() or expert) if primary == "expert" else ((general_path or "").strip() or general)
        try:
            # public: nothing read from paths it does not offer; else the path is checked first
            g = geometry((check_model_path(p, primary or "primary") if p else p) if self.ctx.policy.offers(p)
                         else self.choices.default_general)
        except (ValueError, OSError) as e:
            raise refuse(e if isinstance(e, ValueError) else ValueError("cannot read that model path")) from None
        lo, hi, value = self.ctx.rt.limits.size_range(g)  # a model's config cannot raise the app's limit
        return {s: gr.update(minimum=lo, maximum=hi, step=g.step, value=value) for s in self.sizes}

    def refresh_models(self, general, expert, general_lora, expert_lora):
        models, loras = self.choices.models(), self.choices.loras()
        p = self.picker
        return {p.general: gr.update(choices=models, value=general), p.expert: gr.update(choices=models, value=expert),
                p.general_lora: gr.update(choices=loras, value=general_lora),
                p.expert_lora: gr.update(choices=loras, value=expert_lora), self.runtime.text: self.ctx.rt.describe()}

    def runtime_status(self):
        return self.ctx.rt.describe()


def wire_models(demo, ctx: AppContext, choices: ModelChoices, picker: ModelPicker, sizes, runtime: RuntimePanel):
    """Events of the pickers (``sizes``: the height and width sliders) and the runtime panel."""
    h, p = ModelHandlers(ctx, choices, picker, sizes, runtime), picker
    geo_inputs = [p.general, p.expert, p.general_path, p.expert_path, p.primary]
    gr.on([p.general.change, p.expert.change, p.primary.change, p.general_path.blur, p.expert_path.blur],
          h.model_geometry, geo_inputs, list(sizes), api_name="model_geometry", show_progress="hidden", queue=False)
    demo.load(h.model_geometry, geo_inputs, list(sizes), api_name="initial_geometry",
              api_visibility="undocumented", show_progress="hidden", queue=False)
    lists = [p.general, p.expert, p.general_lora, p.expert_lora]
    p.refresh.click(h.refresh_models, lists, lists + [runtime.text], api_name="refresh_models")
    runtime.button.click(h.runtime_status, None, runtime.text, api_name="runtime_status", queue=False)
