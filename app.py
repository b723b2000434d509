"""MccSTN Studio: the Gradio app (``python app.py``; also the Hugging Face Space entry point).

A thin UI layer: it builds the tabs and wires events to the libraries (``fusion``, ``mccstn``)
through the app runtime in ``studio/``. Importing this module does no heavy work; models load
on the first request and stay warm.

Stable API names (scriptable with gradio_client): ``/fuse``, ``/stop``, ``/saliency_step``,
``/random_seed``, ``/selection_from_sliders``, ``/sliders_from_selection``, ``/model_geometry``,
``/refresh_models``, ``/stylize``, ``/engine_info``, ``/runtime_status``.
"""
from __future__ import annotations

import random
import sys

from studio.config import OUTPUTS_DIR, StudioConfig, build_parser, config_from_args  # light imports only

TITLE = "MccSTN Studio"
CSS = """
#status {min-height: 2.6em}
.fit img {width: 100% !important; height: 100% !important; object-fit: contain}
"""


def _gr():
    import gradio as gr
    return gr


# ---------------------------------------------------------------------------------------------
# fusion tab handlers (pure glue: inputs -> studio/fusion -> outputs)
# ---------------------------------------------------------------------------------------------
def _session(request) -> str:
    return getattr(request, "session_hash", None) or "default"


def _with_request(gr, fn):
    """Make Gradio pass its ``gr.Request`` to ``fn``'s ``request`` parameter. Gradio finds that
    parameter by resolving the type hints (``typing.get_type_hints``); under ``from __future__
    import annotations`` the hint is the text "gr.Request" with ``gr`` a local of build_app, which
    resolves to nothing, so no request came and every browser shared the "default" session
    (one user's Stop cancelled another's run). The hints become the class itself."""
    import inspect
    if "request" not in inspect.signature(fn).parameters:
        raise TypeError(f"{fn.__name__} has no 'request' parameter")
    fn.__annotations__ = {"request": gr.Request}
    return fn


def _panels(state, k):
    """Saliency panels of captured step ``k`` from the state kept after a run."""
    if not state or not len(state["trace"]):
        msg = ("No SNB step in this run (mode 0, or a schedule where SNB never runs): "
               "the fused image is the primary's.") if state else "Run a fusion to see its saliency maps."
        return None, None, None, (state["trace"].plot() if state else None), msg
    trace = state["trace"]
    k = int(max(0, min(int(k or 0), len(trace) - 1)))
    hp, hs, m = trace.panels(k, image=state["fused"])
    return hp, hs, m, trace.plot(k), trace.describe(k)


def build_app(config: StudioConfig | None = None, studio=None):
    """The Blocks app. ``studio``: an existing :class:`studio.runtime.Studio` (tests share one)."""
    gr = _gr()
    from fusion.schedule import MODE_HELP, FusionSelection, parse_fusion_selection
    from fusion.schedulers import SAMPLER_HELP
    from studio import examples as ex
    from studio.engines import control_param
    from studio.fusion_service import FuseRequest
    from studio.gpu import StudioError
    from studio.models import (SIZE_LIMITS, TOY_EXPERT, TOY_GENERAL, discover, discover_loras, geometry,
                               missing_toy_message, toy_models_present)
    from studio.limits import check_model_path, open_upload
    from studio.runtime import Studio
    from studio.zerogpu import GpuCalls, load_spaces

    rt = studio or Studio(config)
    cfg = rt.config
    calls = GpuCalls(rt, load_spaces())  # wrapped with spaces.GPU on a ZeroGPU Space only
    policy = rt.policy  # public mode: offered models only, caps (admission: in GpuCalls)
    public = policy.public

    def model_choices():
        return [(c.label, c.path) for c in discover(cfg.models_dir)] + [
            (f"{p.name} (models.yaml)", str(p)) for p in (cfg.space.diffusion_models() if cfg.space else ())
            if not any(c.path == str(p) for c in discover(cfg.models_dir))]

    choices = discover(cfg.models_dir)
    choice_pairs = model_choices()
    # the embedded toy models are the defaults even when missing: a request then says how to get them
    default_general, default_expert = str(TOY_GENERAL), str(TOY_EXPERT)
    if cfg.space is not None and cfg.space.general is not None:
        default_general, default_expert = str(cfg.space.general), str(cfg.space.expert)
    if not any(v == default_general for _, v in choice_pairs):
        choice_pairs = [(f"{TOY_GENERAL.name} (embedded toy general, missing)", default_general),
                        (f"{TOY_EXPERT.name} (embedded toy cartoon expert, missing)", default_expert)] + choice_pairs
    geo = geometry(default_general)
    upload = _image_upload(gr)

    def lora_pairs():
        found = [(c.label, c.path) for c in discover_loras(cfg.models_dir)]
        listed = [(f"{k} (models.yaml)", str(p)) for k, p in (cfg.space.loras.items() if cfg.space else ())
                  if str(p) not in {v for _, v in found}]
        return [("(no LoRA)", "")] + found + listed
    mode_choices = [(MODE_HELP[m], m) for m in (0, 1, 2)]
    recipe = ex.FUSION_EXAMPLES[0]

    # ---- handlers ---------------------------------------------------------------------------
    def fuse(general, expert, general_path, expert_path, primary, prompt, prompt1, negative_prompt, seed,
             steps, guidance, height, width, fusion_selection, mode, general_lora="", expert_lora="",
             general_lora_path="", expert_lora_path="", general_lora_scale=1.0, expert_lora_scale=1.0,
             sampler="ddim",
             progress=gr.Progress(), request: gr.Request = None):
        """Run a fusion; stream previews; return general, expert and fused images, the
        before/after pair, and the saliency view of the first captured SNB step."""
        from fusion.sampler import Cancelled
        req = FuseRequest(general=general, expert=expert, general_path_box=general_path or "",
                          expert_path_box=expert_path or "", primary=primary or "general", prompt=prompt or "",
                          prompt1=prompt1 or "", negative_prompt=negative_prompt or "",
                          seed=seed if seed is not None else 0, steps=1 if steps is None else steps,
                          guidance=float(guidance if guidance is not None else 7.5),
                          height=height or None, width=width or None,  # checked by the service (studio.limits)
                          fusion_selection=fusion_selection or "", mode=int(mode if mode is not None else 2),
                          general_lora=general_lora or "", expert_lora=expert_lora or "",
                          general_lora_path_box=general_lora_path or "", expert_lora_path_box=expert_lora_path or "",
                          general_lora_scale=general_lora_scale, expert_lora_scale=expert_lora_scale,
                          sampler=sampler or "ddim")
        cancel = rt.new_cancel(_session(request), "fuse")
        skip = gr.skip()
        progress(0, desc="loading models / waiting for a free slot")
        try:
            for item in calls.fuse(req, cancel):
                if hasattr(item, "trace"):
                    state = {"trace": item.trace, "fused": item.images["fused"]}
                    hp, hs, m, plot, caption = _panels(state, 0)
                    n = len(item.trace)
                    step_update = gr.update(minimum=0, maximum=max(n - 1, 1), value=0, step=1,
                                            interactive=n > 1,
                                            label=f"Captured SNB step ({n} captured; drag to scrub)" if n else
                                            "Captured SNB step (none in this run)")
                    yield (item.images["general"], item.images["expert"], item.images["fused"],
                           (item.primary_image, item.images["fused"]), hp, hs, m, plot, step_update,
                           caption, item.summary(), state)
                else:
                    progress((item.step, item.total), desc="sampling", unit="steps")
                    if item.images is None:
                        continue
                    yield (item.images.get("general", skip), item.images.get("expert", skip),
                           item.images.get("fused", skip), skip, skip, skip, skip, skip, skip, skip,
                           f"Sampling: step {item.step} of {item.total} (previews: predicted final image)", skip)
        except Cancelled:
            raise gr.Error("Stopped.", print_exception=False)
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False)

    def stop(request: gr.Request = None):
        """Cancel this session's running fusion (the sampler stops before its next step)."""
        stopped = rt.cancel(_session(request), "fuse")
        return "Stopped." if stopped else "Nothing was running."

    fuse, stop = _with_request(gr, fuse), _with_request(gr, stop)

    def saliency_step(step, state):
        """Show captured step ``step`` of the last run (no model runs)."""
        return _panels(state, step)

    def random_seed():
        return random.randrange(0, 2 ** 31 - 1)

    def selection_from_sliders(v1, kg, ke):
        try:
            return str(FusionSelection(int(v1), float(kg), float(ke)))
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False)

    def sliders_from_selection(text):
        try:
            sel = parse_fusion_selection((text or "").strip())
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False)
        return sel.v1, sel.kg, sel.ke, str(sel)

    def sliders_follow_selection(text):
        """Quietly move the sliders to a valid string (examples, typing); ignore partial ones."""
        try:
            sel = parse_fusion_selection((text or "").strip())
        except ValueError:
            return gr.skip(), gr.skip(), gr.skip()
        return sel.v1, sel.kg, sel.ke

    def model_geometry(general, expert, general_path, expert_path, primary):
        """Size sliders for the primary model's supported sizes."""
        p = ((expert_path or "").strip() or expert) if primary == "expert" else ((general_path or "").strip() or general)
        try:
            # public: nothing read from paths it does not offer; else the path is checked first
            g = geometry((check_model_path(p, primary or "primary") if p else p) if policy.offers(p)
                         else default_general)
        except (ValueError, OSError) as e:
            raise gr.Error(str(e) if isinstance(e, ValueError) else "cannot read that model path",
                           print_exception=False)
        lo, hi, value = rt.limits.size_range(g)  # a model's config cannot raise the app's limit
        return (gr.update(minimum=lo, maximum=hi, step=g.step, value=value),
                gr.update(minimum=lo, maximum=hi, step=g.step, value=value))

    def refresh_models(general, expert, general_lora, expert_lora):
        cs = model_choices()
        ls = lora_pairs()
        return (gr.update(choices=cs, value=general), gr.update(choices=cs, value=expert),
                gr.update(choices=ls, value=general_lora), gr.update(choices=ls, value=expert_lora), rt.describe())

    def fuse_example(prompt, prompt1, selection, mode, primary, seed, steps, guidance):
        """An example's final images (cached at start-up in public mode)."""
        last = None
        for last in fuse(default_general, default_expert, "", "", primary, prompt, prompt1, "", seed, steps,
                         guidance, geo.native, geo.native, selection, mode):
            pass
        return (*last[:4], last[10])

    def example_cache(fn, outputs) -> dict:
        """Public mode: examples run once at start-up (lazily, at first click, on ZeroGPU, where no
        GPU is held at start-up) and their results are served from Gradio's cache."""
        if not (public and policy.limits.cache_examples):
            return {}
        return dict(fn=fn, outputs=outputs, cache_examples=True, cache_mode="lazy" if calls.active else "eager")

    # public mode: every held request gets a handler (the work slots still run cfg.concurrency at
    # once), so one past max_queue is told "busy" at once instead of waiting in Gradio's queue
    gpu_limit = cfg.concurrency if not public else max(cfg.concurrency, policy.limits.max_queue + 2)

    # ---- layout -----------------------------------------------------------------------------
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nFuse two text-to-image diffusion models with Saliency-aware Noise Blending "
                    "(MagicFusion) and inspect where each model wins; transfer styles between images.")
        with gr.Tab("Fusion", id="fusion"):
            gr.Markdown(f"⚠️ {missing_toy_message()}", visible=not toy_models_present(), elem_id="toy_missing")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    with gr.Group():
                        with gr.Row():
                            general = gr.Dropdown(choice_pairs, value=default_general, label="General model",
                                                  allow_custom_value=True, elem_id="general_model")
                            expert = gr.Dropdown(choice_pairs, value=default_expert, label="Expert model",
                                                 allow_custom_value=True, elem_id="expert_model")
                        with gr.Row(visible=not public):  # public mode: no path boxes
                            general_path = gr.Textbox("", label="…or general model path", placeholder="folder or .safetensors/.ckpt",
                                                      max_lines=1, elem_id="general_path")
                            expert_path = gr.Textbox("", label="…or expert model path", placeholder="folder or .safetensors/.ckpt",
                                                     max_lines=1, elem_id="expert_path")
                        with gr.Accordion("LoRA (optional): from models/loras/ or a path", open=False):
                            with gr.Row():
                                general_lora = gr.Dropdown(lora_pairs(), value="", label="General LoRA",
                                                           allow_custom_value=True, elem_id="general_lora")
                                expert_lora = gr.Dropdown(lora_pairs(), value="", label="Expert LoRA",
                                                          allow_custom_value=True, elem_id="expert_lora")
                            with gr.Row(visible=not public):  # public mode: no path boxes
                                general_lora_path = gr.Textbox("", label="…or general LoRA path", max_lines=1,
                                                               placeholder=".safetensors", elem_id="general_lora_path")
                                expert_lora_path = gr.Textbox("", label="…or expert LoRA path", max_lines=1,
                                                              placeholder=".safetensors", elem_id="expert_lora_path")
                            with gr.Row():
                                general_lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="General LoRA scale")
                                expert_lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Expert LoRA scale")
                        with gr.Row():
                            primary = gr.Radio([("General model", "general"), ("Expert model", "expert")],
                                               value="general", label="Primary model",
                                               info="its text encoder, schedule and VAE drive the fused run")
                            refresh = gr.Button("Rescan models folder", size="sm", scale=0)
                    prompt = gr.Textbox(recipe.prompt, label="Prompt (expert)", lines=1, elem_id="prompt")
                    prompt1 = gr.Textbox(recipe.prompt1, label="Prompt1 (general)", lines=1, elem_id="prompt1")
                    negative = gr.Textbox("", label="Negative prompt", lines=1)
                    with gr.Row():
                        # no precision: Gradio would round 1.5 (and fail on NaN); the service refuses both
                        seed = gr.Number(recipe.seed, label="Seed", minimum=0, elem_id="seed")
                        dice = gr.Button("Randomise seed", size="sm", scale=0)
                    with gr.Row():
                        steps = gr.Slider(1, policy.limits.max_steps if public else 200, value=recipe.steps, step=1, label="Steps", elem_id="steps")
                        sampler = gr.Dropdown([(v, k) for k, v in SAMPLER_HELP.items()], value="ddim", label="Sampler",
                                              elem_id="sampler")
                        guidance = gr.Slider(1, 20, value=recipe.guidance, step=0.5, label="Guidance scale")
                    with gr.Row():
                        # broad bounds for API callers; the page narrows them to the primary's sizes on load
                        sizes = dict(minimum=SIZE_LIMITS[0], maximum=rt.limits.max_side, step=8,
                                     value=min(geo.native, rt.limits.max_side))
                        height = gr.Slider(label="Height", elem_id="height", **sizes)
                        width = gr.Slider(label="Width", elem_id="width", **sizes)
                    with gr.Group():
                        with gr.Row():
                            v1 = gr.Slider(0, 1000, value=600, step=1, label="v1 (fusion step, DDPM t)",
                                           elem_id="v1")
                            kg = gr.Slider(0.05, 10, value=1, step=0.05, label="kg (primary sharpness)")
                            ke = gr.Slider(0.05, 10, value=1, step=0.05, label="ke (secondary sharpness)")
                        mode = gr.Radio(mode_choices, value=recipe.mode, label="Merge mode", elem_id="mode")
                        selection = gr.Textbox(recipe.fusion_selection, label="fusion_selection (v1,kg,ke)",
                                               info="made by the sliders; paste one and press Enter",
                                               max_lines=1, elem_id="fusion_selection")
                    with gr.Row():
                        run = gr.Button("Fuse", variant="primary", elem_id="fuse_button")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop_button")
                    status = gr.Markdown("", elem_id="status", label="Status")
                with gr.Column(scale=3, min_width=420):
                    with gr.Row():
                        img_kw = dict(format="png", type="pil", interactive=False, buttons=["download", "fullscreen"],
                                      height=220, elem_classes=["fit"])
                        out_general = gr.Image(label="General alone", elem_id="out_general", **img_kw)
                        out_expert = gr.Image(label="Expert alone", elem_id="out_expert", **img_kw)
                        out_fused = gr.Image(label="Fused", elem_id="out_fused", **img_kw)
                    compare = gr.ImageSlider(label="Before/after: primary alone vs fused", format="png", type="pil",
                                             interactive=False, buttons=["download", "fullscreen"], max_height=360,
                                             elem_id="compare")
                    gr.Markdown("**Saliency view** - primary and secondary saliency (one colour scale per "
                                "step: red = salient) and the mask (tinted = latent pixels taken from the "
                                "secondary), at each captured SNB step.")
                    with gr.Row(elem_classes=["sal-row"]):
                        sal_p = gr.Image(label="Primary saliency", elem_id="sal_primary", **img_kw)
                        sal_s = gr.Image(label="Secondary saliency", elem_id="sal_secondary", **img_kw)
                        sal_m = gr.Image(label="Mask (from secondary)", elem_id="sal_mask", **img_kw)
                    step = gr.Slider(0, 1, value=0, step=1, label="Captured SNB step", interactive=False,
                                     elem_id="sal_step")
                    step_caption = gr.Markdown("Run a fusion to see its saliency maps.", elem_id="sal_caption",
                                               label="Saliency step")
                    share_plot = gr.Image(label="Share of pixels from the secondary over the steps",
                                          elem_id="share_plot", **{**img_kw, "height": 170, "elem_classes": []})
            trace_state = gr.State(None, time_to_live=3600)  # the last run's maps, per browser session
            gr.Examples(
                examples=[[e.prompt, e.prompt1, e.fusion_selection, e.mode, e.primary, e.seed,
                           min(e.steps, policy.limits.max_steps) if public else e.steps, e.guidance]
                          for e in ex.FUSION_EXAMPLES],
                example_labels=[e.title for e in ex.FUSION_EXAMPLES],
                inputs=[prompt, prompt1, selection, mode, primary, seed, steps, guidance],
                label="The reference's two recipes in the toy world (click one, then Fuse)",
                **example_cache(lambda *a: fuse_example(*a), [out_general, out_expert, out_fused, compare, status]))

        if not calls.active:  # ZeroGPU: no sweeps (not wrapped for a GPU worker); public: cells capped
            from studio.sweep_panel import add_sweep_tab
            add_sweep_tab(gr, rt, dict(general=general, expert=expert, general_path=general_path, expert_path=expert_path,
                                       prompt=prompt, prompt1=prompt1, negative=negative, seed=seed, steps=steps,
                                       guidance=guidance, height=height, width=width, v1=v1, kg=kg, ke=ke,
                                       selection=selection, mode=mode, primary=primary, sampler=sampler,
                                       general_lora=general_lora, expert_lora=expert_lora,
                                       general_lora_path=general_lora_path, expert_lora_path=expert_lora_path,
                                       general_lora_scale=general_lora_scale, expert_lora_scale=expert_lora_scale),
                          _session, _with_request, _panels, gpu_limit)

        with gr.Tab("Style transfer", id="style"):
            entries = rt.engines.entries()
            default_engine = rt.engines.default_key()
            with gr.Row():
                # uploads arrive as file paths; studio.limits checks the header before decoding
                content = upload(label="Content", sources=["upload", "clipboard"], elem_id="content", height=300)
                style_img = upload(label="Style", sources=["upload", "clipboard"], elem_id="style", height=300)
                stylized = gr.Image(label="Stylised", format="png", type="pil", interactive=False,
                                    buttons=["download", "fullscreen"], elem_id="stylized", height=300,
                                    elem_classes=["fit"])
            engine = gr.Radio([(e.label + ("" if e.available else " (unavailable)"), e.key) for e in entries],
                              value=default_engine, label="Engine", elem_id="engine")
            engine_line = gr.Markdown(next((e.status_line() for e in entries if e.key == default_engine), ""),
                                      elem_id="engine_status")
            control_inputs: dict[str, object] = {}
            groups = {}
            for e in entries:
                with gr.Group(visible=e.key == default_engine) as grp:
                    for c in e.controls:
                        control_inputs[control_param(e.key, c.name)] = _control_widget(gr, c)
                groups[e.key] = grp
            style_run = gr.Button("Stylise", variant="primary", elem_id="stylize_button")
            style_status = gr.Markdown("", label="Status", elem_id="style_status")
            pairs = ex.style_examples()
            if pairs:
                gr.Examples(examples=[list(p) for p in pairs], inputs=[content, style_img],
                            label="Examples (toy-world renders from assets/examples)", elem_id="style_examples",
                            **example_cache(lambda c, s: stylize(c, s, default_engine, **{
                                f"{default_engine}_{k}": v for k, v in policy.clamp_style({
                                    k[len(default_engine) + 1:]: w.value for k, w in control_inputs.items()
                                    if k.startswith(f"{default_engine}_")}).items()}),
                                [stylized, style_status]))

        with gr.Accordion("Runtime", open=False):
            runtime_md = gr.Markdown("")
            runtime_btn = gr.Button("Show warm models", size="sm")

        # ---- events (every one with a stable api_name) --------------------------------------
        fuse_inputs = [general, expert, general_path, expert_path, primary, prompt, prompt1, negative, seed,
                       steps, guidance, height, width, selection, mode, general_lora, expert_lora,
                       general_lora_path, expert_lora_path, general_lora_scale, expert_lora_scale, sampler]
        fuse_outputs = [out_general, out_expert, out_fused, compare, sal_p, sal_s, sal_m, share_plot, step,
                        step_caption, status, trace_state]
        fuse_evt = run.click(fuse, fuse_inputs, fuse_outputs, api_name="fuse", concurrency_id="gpu",
                             concurrency_limit=gpu_limit, show_progress="minimal",
                             show_progress_on=[status])
        prompt.submit(fuse, fuse_inputs, fuse_outputs, api_name="fuse_on_enter", api_visibility="undocumented",
                      concurrency_id="gpu", concurrency_limit=gpu_limit, show_progress="minimal",
                      show_progress_on=[status])
        stop_btn.click(stop, None, status, api_name="stop", cancels=[fuse_evt], queue=False)
        step.input(saliency_step, [step, trace_state], [sal_p, sal_s, sal_m, share_plot, step_caption],
                   api_name="saliency_step", trigger_mode="always_last", show_progress="hidden")
        dice.click(random_seed, None, seed, api_name="random_seed", queue=False)
        gr.on([v1.input, kg.input, ke.input], selection_from_sliders, [v1, kg, ke], selection,
              api_name="selection_from_sliders", trigger_mode="always_last", show_progress="hidden", queue=False)
        selection.submit(sliders_from_selection, selection, [v1, kg, ke, selection],
                         api_name="sliders_from_selection", show_progress="hidden", queue=False)
        selection.change(sliders_follow_selection, selection, [v1, kg, ke], api_name="sliders_follow_selection",
                         api_visibility="undocumented", show_progress="hidden", queue=False,
                         trigger_mode="always_last")
        geo_inputs = [general, expert, general_path, expert_path, primary]
        gr.on([general.change, expert.change, primary.change, general_path.blur, expert_path.blur], model_geometry,
              geo_inputs, [height, width], api_name="model_geometry", show_progress="hidden", queue=False)
        demo.load(model_geometry, geo_inputs, [height, width], api_name="initial_geometry",
                  api_visibility="undocumented", show_progress="hidden", queue=False)
        refresh.click(refresh_models, [general, expert, general_lora, expert_lora],
                      [general, expert, general_lora, expert_lora, runtime_md], api_name="refresh_models")
        runtime_btn.click(lambda: rt.describe(), None, runtime_md, api_name="runtime_status", queue=False)

        # ---- style tab events ------------------------------------------------------------------
        keys = [e.key for e in entries]

        def engine_info(engine):
            """The engine's one-line status and which control group to show."""
            try:
                line = rt.engines.get(engine).status_line() if engine else "No style engine is installed."
            except StudioError as e:
                line = str(e)
            return (line, *[gr.update(visible=k == engine) for k in keys])

        def stylize(content, style, engine, **controls):
            """Stylise ``content`` with ``style``; engine controls are named ``<engine>_<control>``
            (e.g. ``mccstn_alpha``, ``injection_steps``)."""
            if not engine:
                raise gr.Error("No style engine is available.", print_exception=False)
            prefix = f"{engine}_"
            opts = {k[len(prefix):]: v for k, v in controls.items() if k.startswith(prefix)}
            try:
                policy.check_style(engine, opts)
                content = open_upload(content, "Content", rt.limits)  # header checked, then decoded
                style = open_upload(style, "Style", rt.limits)
                notes = []
                if content is not None and style is not None:
                    from mccstn.images import downscale
                    (content, n1), (style, n2) = downscale(content, what="content"), downscale(style, what="style")
                    notes = [n for n in (n1, n2) if n]
                out = calls.stylize(engine, content, style, opts)
            except (StudioError, ValueError) as e:
                raise gr.Error(str(e), print_exception=False)
            note = f" Note: {'; '.join(notes)}." if notes else ""
            return out, f"Done ({rt.engines.get(engine).label}, {out.width}x{out.height}).{note}"

        engine.change(engine_info, engine, [engine_line, *[groups[k] for k in keys]], api_name="engine_info",
                      queue=False)
        style_run.click(stylize, [content, style_img, engine], [stylized, style_status], api_name="stylize",
                        inputs_kwargs=control_inputs, concurrency_id="gpu", concurrency_limit=gpu_limit)
    demo.studio = rt
    demo.gpu_calls = calls
    return demo


def _image_upload(gr):
    """A ``gr.Image`` input that hands the handler the uploaded file's path (Gradio reads only
    its header; :func:`studio.limits.open_upload` checks the size before decoding) and says
    clearly when a file is not an image. (The check wraps the instance's ``preprocess``: a
    subclass would make Gradio write an ``app.pyi`` stub next to this file.)"""
    from PIL import Image

    def make(**kw):
        img = gr.Image(type="filepath", image_mode=None, **kw)
        plain = img.preprocess

        def preprocess(payload):
            try:
                return plain(payload)
            except Image.DecompressionBombError:
                raise gr.Error(f"{img.label}: the image has too many pixels", print_exception=False) from None
            except (OSError, ValueError, SyntaxError):  # PIL cannot identify it
                raise gr.Error(f"{img.label}: not an image file (use PNG, JPEG or WebP)",
                               print_exception=False) from None

        img.preprocess = preprocess
        return img

    return make


def _control_widget(gr, c):
    """A Gradio widget for one :class:`mccstn.engines.Control`."""
    kw = dict(label=c.label, info=c.info or None)
    if c.kind == "slider":
        return gr.Slider(c.minimum if c.minimum is not None else 0, c.maximum if c.maximum is not None else 1,
                         value=c.default, step=c.step, **kw)
    if c.kind == "checkbox":
        return gr.Checkbox(value=bool(c.default), **kw)
    if c.kind == "dropdown":
        return gr.Dropdown(list(c.choices), value=c.default, **kw)
    if c.kind == "number":
        is_int = isinstance(c.default, int) and not isinstance(c.default, bool)
        return gr.Number(value=c.default, minimum=c.minimum, maximum=c.maximum, step=c.step,
                         precision=0 if is_int else None, **kw)
    return gr.Textbox(value="" if c.default is None else str(c.default), max_lines=1, **kw)


def launch(demo, cfg: StudioConfig, **kw):
    """Queue and launch with the app's theme; serves files from the project's outputs/assets only.
    Public mode: a shorter queue (past it Gradio answers "queue is full") and an upload size cap."""
    lim = demo.studio.policy.limits
    demo.queue(max_size=64 if lim is None else 2 * lim.max_queue + 4, default_concurrency_limit=8)
    if lim is not None:
        kw.setdefault("max_file_size", int(lim.max_upload_mb * 2 ** 20))
    OUTPUTS_DIR.mkdir(exist_ok=True)
    kw.setdefault("state_session_capacity", 256)  # saliency traces kept for at most this many sessions
    return demo.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share, css=CSS,
                       footer_links=["api", "gradio"], **kw)


def main(argv: list[str] | None = None) -> int:
    from studio.space_config import SpaceConfigError, configure
    cfg = config_from_args(argv)
    try:
        configure(cfg)  # models.yaml, read once now (Hub entries fetched here)
    except SpaceConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_app(cfg)
    if demo.gpu_calls.active:  # ZeroGPU: models load before launch, in this process (then packed)
        from studio.models import TOY_EXPERT, TOY_GENERAL, toy_models_present
        pair = (cfg.space.general, cfg.space.expert) if cfg.space and cfg.space.general else (TOY_GENERAL, TOY_EXPERT)
        if cfg.space and cfg.space.general or toy_models_present():
            demo.gpu_calls.preload([pair], models=cfg.space.models if cfg.space else ())
    elif cfg.preload:
        demo.studio.preload_in_background()
    launch(demo, cfg)
    return 0


__all__ = ["build_app", "launch", "main", "build_parser"]

if __name__ == "__main__":
    sys.exit(main())
