"""What every tab of the app shares (gradio imported here; see :mod:`studio.ui`)."""
from dataclasses import dataclass

import gradio as gr
from PIL import Image

__all__ = ["AppContext", "session", "refuse", "image_upload", "control_widget"]


@dataclass
class AppContext:
    """The app runtime as the tabs see it.

    ``rt``: the :class:`studio.runtime.Studio`; ``calls``: its :class:`studio.zerogpu.GpuCalls`
    (wrapped with ``spaces.GPU`` on a ZeroGPU Space only); ``gpu_limit``: how many requests
    the shared "gpu" event queue hands to handlers at once (the work slots still run
    ``config.concurrency`` at a time).
    """

    rt: object
    calls: object
    gpu_limit: int

    @classmethod
    def create(cls, rt, calls) -> "AppContext":
        cfg, policy = rt.config, rt.policy
        # public mode: every held request gets a handler, so one past max_queue is told "busy" at
        # once instead of waiting in Gradio's queue
        limit = cfg.concurrency if not policy.public else max(cfg.concurrency, policy.limits.max_queue + 2)
        return cls(rt=rt, calls=calls, gpu_limit=limit)

    @property
    def cfg(self):
        return self.rt.config

    @property
    def policy(self):
        return self.rt.policy

    @property
    def public(self) -> bool:
        return self.rt.policy.public

    def gpu_event(self) -> dict:
        """Keyword arguments of an event that runs on the GPU (one shared queue)."""
        return dict(concurrency_id="gpu", concurrency_limit=self.gpu_limit)

    def example_cache(self, fn, outputs) -> dict:
        """Public mode: examples run once at start-up (lazily, at first click, on ZeroGPU, where no
        GPU is held at start-up) and their results are served from Gradio's cache."""
        if not (self.public and self.policy.limits.cache_examples):
            return {}
        return dict(fn=fn, outputs=outputs, cache_examples=True, cache_mode="lazy" if self.calls.active else "eager")


def session(request) -> str:
    """The browser session's key (``"default"`` without a request, e.g. a direct call)."""
    return getattr(request, "session_hash", None) or "default"


def refuse(error: Exception):
    """A user-facing error as Gradio shows it (one line, no traceback in the log)."""
    return gr.Error(str(error), print_exception=False)


def image_upload(**kw) -> gr.Image:
    """A ``gr.Image`` input that hands the handler the uploaded file's path (Gradio reads only
    its header; :func:`studio.limits.open_upload` checks the size before decoding) and says
    clearly when a file is not an image. (The check wraps the instance's ``preprocess``: a
    subclass would make Gradio write a ``.pyi`` stub next to its module.)"""
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


def control_widget(c):
    """A Gradio widget for one engine control (:class:`studio.style_engines.base.Control`)."""
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

