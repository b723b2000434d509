"""The Style transfer tab: content and style uploads, the engine picker with each engine's
controls, ``/stylize`` and ``/engine_info``. The work is the engine registry's
(:mod:`studio.engines`) through the GPU calls."""
import gradio as gr

from .. import examples as ex
from ..engines import control_param
from ..gpu import StudioError
from ..limits import open_upload
from .common import AppContext, control_widget, image_upload, refuse

__all__ = ["StyleTab"]


class StyleTab:
    """Builds the tab inside the open Blocks; :meth:`wire` adds its events."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.entries = ctx.rt.engines.entries()
        self.default_engine = ctx.rt.engines.default_key()
        with gr.Tab("Style transfer", id="style"):
            self._layout()

    def _layout(self):
        with gr.Row():
            # uploads arrive as file paths; studio.limits checks the header before decoding
            self.content = image_upload(label="Content", sources=["upload", "clipboard"], elem_id="content", height=300)
            self.style = image_upload(label="Style", sources=["upload", "clipboard"], elem_id="style", height=300)
            self.stylized = gr.Image(label="Stylised", format="png", type="pil", interactive=False,
                                     buttons=["download", "fullscreen"], elem_id="stylized", height=300,
                                     elem_classes=["fit"])
        self.engine = gr.Radio([(e.label + ("" if e.available else " (unavailable)"), e.key) for e in self.entries],
                               value=self.default_engine, label="Engine", elem_id="engine")
        self.engine_line = gr.Markdown(next((e.status_line() for e in self.entries if e.key == self.default_engine),
                                            ""), elem_id="engine_status")
        self.controls: dict[str, object] = {}  # "<engine>_<control>" -> widget
        self.groups = {}
        for e in self.entries:
            with gr.Group(visible=e.key == self.default_engine) as grp:
                for c in e.controls:
                    self.controls[control_param(e.key, c.name)] = control_widget(c)
            self.groups[e.key] = grp
        self.run = gr.Button("Stylise", variant="primary", elem_id="stylize_button")
        self.status = gr.Markdown("", label="Status", elem_id="style_status")
        pairs = ex.style_examples()
        if pairs:
            gr.Examples(examples=[list(p) for p in pairs], inputs=[self.content, self.style],
                        label="Examples (toy-world renders from assets/examples)", elem_id="style_examples",
                        **self.ctx.example_cache(self.stylize_example, [self.stylized, self.status]))

    # ---- handlers -------------------------------------------------------------------------------
    def engine_info(self, engine):
        """The engine's one-line status and which control group to show."""
        try:
            line = self.ctx.rt.engines.get(engine).status_line() if engine else "No style engine is installed."
        except StudioError as e:
            line = str(e)
        return {self.engine_line: line, **{g: gr.update(visible=k == engine) for k, g in self.groups.items()}}

    def stylize(self, content, style, engine, **controls):
        """Stylise ``content`` with ``style``; engine controls are named ``<engine>_<control>``
        (e.g. ``mccstn_alpha``, ``injection_steps``)."""
        if not engine:
            raise gr.Error("No style engine is available.", print_exception=False)
        prefix = f"{engine}_"
        opts = {k[len(prefix):]: v for k, v in controls.items() if k.startswith(prefix)}
        rt = self.ctx.rt
        try:
            self.ctx.policy.check_style(engine, opts)
            content = open_upload(content, "Content", rt.limits)  # header checked, then decoded
            style = open_upload(style, "Style", rt.limits)
            notes = []
            if content is not None and style is not None:
                from studio.style_engines.inputs import downscale
                (content, n1), (style, n2) = downscale(content, what="content"), downscale(style, what="style")
                notes = [n for n in (n1, n2) if n]
            out = self.ctx.calls.stylize(engine, content, style, opts)
        except (StudioError, ValueError) as e:
            raise refuse(e)
        note = f" Note: {'; '.join(notes)}." if notes else ""
        return {self.stylized: out, self.status: f"Done ({rt.engines.get(engine).label}, {out.width}x{out.height}).{note}"}

    def stylize_example(self, content, style):
        """An example pair with the default engine at its (public-mode clamped) default controls."""
        engine, prefix = self.default_engine, f"{self.default_engine}_"
        defaults = {k[len(prefix):]: w.value for k, w in self.controls.items() if k.startswith(prefix)}
        out = self.stylize(content, style, engine,
                           **{prefix + k: v for k, v in self.ctx.policy.clamp_style(defaults).items()})
        return [out[self.stylized], out[self.status]]

    def wire(self):
        self.engine.change(self.engine_info, self.engine, [self.engine_line, *self.groups.values()],
                           api_name="engine_info", queue=False)
        self.run.click(self.stylize, [self.content, self.style, self.engine], [self.stylized, self.status],
                       api_name="stylize", inputs_kwargs=self.controls, **self.ctx.gpu_event())
