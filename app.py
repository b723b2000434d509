"""MccSTN Studio: the Gradio app (``python app.py``; also the Hugging Face Space entry point).

A thin UI layer: ``build_app`` assembles the tabs of :mod:`studio.ui` (one module per tab or
panel, each with its handlers), which call the libraries (``fusion``, ``mccstn``) through the app
runtime in ``studio/``. Importing this module does no heavy work; models load
on the first request and stay warm.

Stable API names (scriptable with gradio_client): ``/fuse``, ``/stop``, ``/saliency_step``,
``/random_seed``, ``/selection_from_sliders``, ``/sliders_from_selection``, ``/model_geometry``,
``/refresh_models``, ``/stylize``, ``/engine_info``, ``/runtime_status``.
"""
from __future__ import annotations

import sys

from studio.config import OUTPUTS_DIR, StudioConfig, build_parser, config_from_args  # light imports only

TITLE = "MccSTN Studio"
CSS = """
#status {min-height: 2.6em}
.fit img {width: 100% !important; height: 100% !important; object-fit: contain}
"""


def build_app(config: StudioConfig | None = None, studio=None):
    """The Blocks app, assembled from the tabs in :mod:`studio.ui`. ``studio``: an existing
    :class:`studio.runtime.Studio` (tests share one)."""
    import gradio as gr

    from studio.runtime import Studio
    from studio.ui.common import AppContext
    from studio.ui.fusion_events import FusionEvents
    from studio.ui.fusion_tab import build_fusion_tab
    from studio.ui.model_picker import ModelChoices, build_runtime_panel, wire_models
    from studio.ui.style_tab import StyleTab
    from studio.ui.file_cache import install as install_file_cache
    from studio.zerogpu import GpuCalls, load_spaces

    install_file_cache()  # outputs shared by two users are never truncated while served
    rt = studio or Studio(config)
    calls = GpuCalls(rt, load_spaces())  # wrapped with spaces.GPU on a ZeroGPU Space only
    ctx = AppContext.create(rt, calls)
    choices = ModelChoices(rt.config)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nFuse two text-to-image diffusion models with Saliency-aware Noise Blending "
                    "(MagicFusion) and inspect where each model wins; transfer styles between images.")
        with gr.Tab("Fusion", id="fusion"):
            fusion = build_fusion_tab(ctx, choices)
            fusion_events = FusionEvents(ctx, choices, fusion)
            fusion_events.examples()
        tabs = [fusion_events]
        if not calls.active:  # ZeroGPU: no sweeps (not wrapped for a GPU worker); public: cells capped
            from studio.ui.sweep_tab import SweepTab
            tabs.append(SweepTab(ctx, fusion))
        tabs.append(StyleTab(ctx))
        runtime = build_runtime_panel()
        # events, every one with a stable api_name
        for tab in tabs:
            tab.wire()
        wire_models(demo, ctx, choices, fusion.picker, (fusion.recipe.height, fusion.recipe.width), runtime)
    demo.studio = rt
    demo.gpu_calls = calls
    return demo


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
