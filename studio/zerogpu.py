"""Hugging Face ZeroGPU support: the model-running calls wrapped with ``spaces.GPU`` on a ZeroGPU
Space, the same code unwrapped everywhere else.

On ZeroGPU (the ``spaces`` package importable and ``SPACES_ZERO_GPU`` true) the app process never
owns a GPU: ``import spaces`` patches torch so that models moved to ``cuda`` at start-up are
packed, and each call of a ``spaces.GPU`` function runs in a forked worker that gets a GPU for
at most ``duration`` seconds. Arguments and results are pickled across that process boundary
(facts from the ``spaces`` 0.51.3 source: ``zero/wrappers.py``, ``zero/torch/patching.py``,
``config.py``). Hence:

* the wrapped functions take and return plain CPU objects only: a
  :class:`studio.fusion_service.FuseRequest` in, :class:`~studio.fusion_service.Preview` /
  :class:`~studio.fusion_service.FuseOutcome` (PIL images, numpy arrays) out; Gradio's request,
  progress and the session's cancel signal stay in the app process;
* a fusion is a generator on both sides, so previews stream; closing it in the app process
  (Stop, a closed tab) makes ``spaces`` stop the worker's generator, whose ``finally`` cancels
  the sampler (it yields once per step, so Stop takes effect within a step);
* models load at start-up (:meth:`GpuCalls.preload`), not inside a GPU call;
* ``torch.compile`` stays off (the app never asks :class:`fusion.pipeline.FusionPipeline` for it;
  ZeroGPU does not support it).

Elsewhere (a CPU box, a dedicated GPU, tests without the variable) nothing is wrapped and the
calls go straight to the runtime. ``spaces`` is not a dependency of the project.
"""
from __future__ import annotations

import importlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["ZeroGPUSettings", "zero_gpu_requested", "load_spaces", "GpuCalls"]

#: the values ``spaces`` itself reads as true for SPACES_ZERO_GPU (spaces/config.py ``boolean``)
_TRUE = ("1", "t", "true")


@dataclass(frozen=True)
class ZeroGPUSettings:
    """How long a GPU call asks for (ZeroGPU schedules by the requested duration, and a shorter
    request gets a GPU sooner; a call that runs past it is aborted).

    fusion: ``base_seconds + steps * images * fuse_step_seconds * megapixels / 0.25`` (0.25 MP =
    512x512, the size the per-step figure is for; an SD 1.x step of a two-model fusion is four
    UNet evaluations). Style transfer: ``base_seconds + style_seconds * megapixels / 0.25``.
    Both are clipped to ``[min_seconds, max_seconds]``.
    """

    base_seconds: float = 10.0        # worker start, moving the packed models to the GPU, decoding
    fuse_step_seconds: float = 0.5    # per step and image at 512x512 (generous for SD 1.x fp16)
    style_seconds: float = 20.0       # one style transfer at 512x512
    min_seconds: int = 15
    max_seconds: int = 120            # the usual per-call ceiling of a free ZeroGPU quota

    def _clip(self, seconds: float) -> int:
        return int(min(self.max_seconds, max(self.min_seconds, math.ceil(seconds))))

    def fuse_seconds(self, steps: int, height: int | None, width: int | None, images: int = 1) -> int:
        mp = (int(height or 512) * int(width or 512)) / 1e6
        return self._clip(self.base_seconds + max(int(steps), 1) * max(int(images), 1)
                          * self.fuse_step_seconds * mp / 0.262144)

    def style_seconds_for(self, *images) -> int:
        sizes = [getattr(im, "size", (512, 512)) for im in images if im is not None] or [(512, 512)]
        mp = max(w * h for w, h in sizes) / 1e6
        return self._clip(self.base_seconds + self.style_seconds * mp / 0.262144)


def zero_gpu_requested(environ=None) -> bool:
    """``SPACES_ZERO_GPU`` set to a value ``spaces`` reads as true."""
    env = os.environ if environ is None else environ
    return str(env.get("SPACES_ZERO_GPU", "")).strip().lower() in _TRUE


def load_spaces(environ=None):
    """The ``spaces`` module when this process runs on ZeroGPU, else None (also when the variable
    is set but ``spaces`` is not installed: the app then runs as on any machine)."""
    if not zero_gpu_requested(environ):
        return None
    try:
        return importlib.import_module("spaces")
    except ImportError:
        import logging
        logging.getLogger("studio").warning("SPACES_ZERO_GPU is set but the `spaces` package is not "
                                            "installed: running without ZeroGPU")
        return None


class GpuCalls:
    """The app's model-running calls: ``fuse(req, cancel)`` (a generator of previews then the
    outcome) and ``stylize(engine, content, style, controls)``.

    studio: the :class:`studio.runtime.Studio`; spaces: the ``spaces`` module (None: no
    wrapping); settings: the durations asked for.
    """

    def __init__(self, studio, spaces=None, settings: ZeroGPUSettings | None = None):
        self.studio, self.spaces = studio, spaces
        self.settings = settings or ZeroGPUSettings()
        self.active = spaces is not None
        if self.active:
            # wrapped once, at build time (spaces keys its workers by the function)
            self._fuse_task = spaces.GPU(self._fuse_in_worker, duration=self._fuse_duration)
            self._style_task = spaces.GPU(self._stylize_in_worker, duration=self._style_duration)

    # ---- durations (called with the same arguments as the task) ---------------------------
    def _fuse_duration(self, req, previews: bool = True) -> int:
        return self.settings.fuse_seconds(req.steps, req.height, req.width, getattr(req, "n_samples", 1))

    def _style_duration(self, engine, content, style, controls) -> int:
        return self.settings.style_seconds_for(content, style)

    # ---- what runs on the GPU (a forked worker on ZeroGPU) ------------------------------------
    def _fuse_in_worker(self, req, previews: bool = True) -> Iterator:
        cancel = threading.Event()  # set by the service's ``finally`` when spaces closes this generator
        yield from self.studio.fusion.stream(req, cancel, decode_previews=previews)

    def _stylize_in_worker(self, engine, content, style, controls):
        return self.studio.engines.stylize(engine, content, style, controls)

    # ---- what the app calls ---------------------------------------------------------------
    def fuse(self, req, cancel: threading.Event, previews: bool = True) -> Iterator:
        """Previews (none decoded with ``previews=False``: progress items only) then the outcome.
        On ZeroGPU the session's ``cancel`` is watched here (it cannot cross into the worker): when
        set, the worker's generator is closed. Held under one of the studio's admission tickets
        (public mode: "busy" past its limit)."""
        with self.studio.admission.ticket():
            if not self.active:
                yield from self.studio.fusion.stream(req, cancel, decode_previews=previews)
                return
            from fusion.sampler import Cancelled
            gen = self._fuse_task(req, previews)
            try:
                for item in gen:
                    if cancel.is_set():
                        raise Cancelled("stopped")
                    yield item
            finally:
                gen.close()

    def stylize(self, engine: str, content, style, controls: dict):
        task: Callable = self._style_task if self.active else self._stylize_in_worker
        with self.studio.admission.ticket():
            return task(engine, content, style, controls)

    def preload(self, pairs, models=()) -> None:
        """Load each (general, expert) pair and build its pipeline, and each further model, now,
        in this process: on ZeroGPU that is before ``launch`` (the models are packed for the
        workers at start-up; one first loaded inside a GPU call would be lost with its worker);
        elsewhere the app may do it in the background instead."""
        for general, expert in pairs:
            self.studio.cache.pipeline(general, expert)
        for m in models:
            self.studio.cache.get(m)
