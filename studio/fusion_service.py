"""One fusion request from the app: resolve the models, run the library in a worker thread,
stream previews, honour a cancel signal, and hand back images and the saliency trace.

All the work is :class:`fusion.pipeline.FusionPipeline`'s; this module only moves things
between threads and turns failures into one-line messages.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from .gpu import StudioError, WorkSlots, friendly_error, is_oom
from .limits import Limits, whole_number
from .models import geometry
from .requests import APP, ModelPick

__all__ = ["FuseRequest", "Preview", "FuseOutcome", "FusionService"]


@dataclass
class FuseRequest(ModelPick):
    """One Fusion tab request as the UI and the API send it (not yet checked): the pickers'
    values (:class:`studio.requests.ModelPick`: ``general``, ``expert``, path boxes, LoRAs),
    the prompts and the settings under the app's names, with the app's defaults
    (:data:`studio.requests.APP`: the demo's recipe, blend options included; pass ``blend=""`` for
    the faithful SNB). :meth:`FusionService.check` makes it the library's
    :class:`fusion.settings.FusionRequest`."""

    prompt: str                       # the expert's prompt
    prompt1: str = ""                 # the general model's prompt ("" = same as prompt)
    negative_prompt: str = ""
    seed: int = APP.seed
    steps: int = APP.steps
    guidance: float = APP.guidance
    height: int | None = None
    width: int | None = None
    fusion_selection: str = APP.fusion_selection
    mode: int = APP.mode
    primary: str = APP.primary
    sampler: str = APP.sampler        # fusion.schedulers.SAMPLERS
    blend: str = APP.blend            # options beyond the paper as JSON (fusion.blend_options); "" = none

    def settings(self, steps: int, height: int | None, width: int | None):
        """The library's settings of this request (``steps``, sizes: already whole numbers)."""
        from fusion.blend_options import parse_blend_text
        from fusion.settings import FusionSettings
        return FusionSettings(blend=parse_blend_text(self.blend),
            fusion_selection=str(self.fusion_selection).strip(), mode=self.mode, primary=self.primary, steps=steps,
            sampler=self.sampler or "ddim", guidance_scale=self.guidance, height=height, width=width,
            n_samples=APP.n_samples, negative_prompt=self.negative_prompt or "", capture_saliency=True,
            batch_trajectories=None)  # the library's measured choice for the device


@dataclass
class Preview:
    step: int                 # steps done (1..total)
    total: int
    images: dict | None       # trajectory -> PIL image (predicted x_0 at this step); None: progress only


@dataclass
class FuseOutcome:
    images: dict              # "general", "expert", "fused" -> PIL image
    trace: object             # fusion.views.SaliencyTrace of the run (CPU; pickled as numpy; the view shows sample 0)
    primary: str
    fusion_selection: str
    seconds: float            # sampling + decoding
    load_seconds: float       # model loading of this request (0 when warm)
    calls: dict = field(default_factory=dict)
    shared_components: list = field(default_factory=list)

    @property
    def primary_image(self):
        return self.images[self.primary]

    def summary(self) -> str:
        load = f"models loaded in {self.load_seconds:.1f} s; " if self.load_seconds > 0.05 else "warm models; "
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items()))
        shared = f"; shared: {', '.join(self.shared_components)}" if self.shared_components else ""
        return (f"Done in {self.seconds:.2f} s ({load}UNet calls: {calls}{shared}). "
                f"fusion_selection {self.fusion_selection}, primary: {self.primary}.")


class FusionService:
    """``stream(request, cancel)`` yields :class:`Preview` objects (one per step; decoded images
    every ``preview_every`` steps, ``images=None`` on the others; ``decode_previews=False``: none
    decoded, progress only), then one :class:`FuseOutcome`.

    cache: a :class:`studio.cache.ModelCache`; slots: the shared :class:`studio.gpu.WorkSlots`;
    preview_every: decode a preview every this many steps (0: about ten per run, none for
    runs of fewer than 4 steps, and with ``preview_budget`` (a share of the run's time, see
    :mod:`fusion.previews`) no more than fit in it); limits: the :class:`studio.limits.Limits`
    every request is checked against before anything loads.
    """

    def __init__(self, cache, slots: WorkSlots, preview_every: int = 0, policy=None, limits: Limits | None = None,
                 preview_budget: float | None = None):
        self.cache, self.slots, self.preview_every = cache, slots, preview_every
        self.preview_budget = preview_budget  # with the automatic previews only (preview_every 0)
        self.policy = policy  # studio.public.OpenPolicy / PublicPolicy: which models and caps (None: open)
        self.limits = limits or Limits()

    # ---- the request ------------------------------------------------------------------------
    def check(self, req: FuseRequest):
        """``req`` as the library's validated :class:`fusion.settings.FusionRequest`, or a
        :class:`studio.gpu.StudioError`; nothing loads. The app's own part: models through the
        policy, JSON numbers as whole numbers, the app's size limit; the rest is the request's."""
        from fusion.settings import FusionRequest
        try:
            models = req.pair(self.policy)
            if self.policy is not None:
                self.policy.check_fuse(req)
            seed = whole_number(req.seed, "seed")
            steps = whole_number(req.steps, "steps")
            geo = geometry(models.model0 if req.primary == "general" else models.model1)
            h, w = (self.limits.check_side(label, getattr(req, label), geo) for label in ("height", "width"))
            return FusionRequest(models, req.prompt, req.prompt1 or req.prompt, (seed,),
                                 req.settings(steps, h, w)).validated()
        except (ValueError, TypeError) as e:
            raise StudioError(str(e)) from None

    def _every(self, steps: int) -> int:
        if self.preview_every:
            return self.preview_every
        return 0 if steps < 4 else max(1, steps // 10)

    def stream(self, req: FuseRequest, cancel: threading.Event | None = None, with_previews: bool = True,
               decode_previews: bool = True) -> Iterator[Preview | FuseOutcome]:
        """Raises :class:`studio.gpu.StudioError` (a message for the user) or
        :class:`fusion.sampler.Cancelled`. ``with_previews=False``: the outcome alone (no item per
        step); ``decode_previews=False``: an item per step, none with images (no preview decodes)."""
        from fusion.pipeline import FusionSettings  # noqa: F401  (import errors surface here, not in the thread)
        from fusion.sampler import Cancelled

        request = self.check(req)  # inputs first: nothing loads for a request that cannot run
        cancel = cancel or threading.Event()
        out: "queue.Queue[tuple[str, object]]" = queue.Queue()

        def work():
            try:
                with self.slots.slot(cancel=cancel):
                    out.put(("outcome", self._run(request, cancel, out if with_previews else None,
                                                  decode_previews)))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
                out.put(("error", e))

        worker = threading.Thread(target=work, name="studio-fusion", daemon=True)
        worker.start()
        finished = False
        try:
            while True:
                try:
                    kind, item = out.get(timeout=0.25)
                except queue.Empty:
                    if not worker.is_alive() and out.empty():
                        raise StudioError("the fusion worker stopped without a result")
                    continue
                if kind == "preview":
                    yield item
                elif kind == "outcome":
                    finished = True
                    yield item
                    return
                else:
                    finished = True
                    if isinstance(item, Cancelled):
                        raise item
                    if isinstance(item, StudioError):
                        raise item
                    raise StudioError(friendly_error(item, "fusion")) from item
        finally:
            if not finished:  # the consumer went away (Stop, closed tab): stop the worker too
                cancel.set()

    def run(self, req: FuseRequest, cancel: threading.Event | None = None) -> FuseOutcome:
        """The same without previews: the final :class:`FuseOutcome`."""
        result = None
        for item in self.stream(req, cancel, with_previews=False):
            result = item
        return result

    def _lora(self, req: FuseRequest):
        """The request's LoRAs as :class:`fusion.settings.LoraSettings` (as :meth:`check` resolves them)."""
        return req.pair(self.policy).lora

    # ---- in the worker thread ---------------------------------------------------------------
    def _run(self, req, cancel, previews, decode_previews: bool = True):
        """Run the checked :class:`fusion.settings.FusionRequest` ``req``; the model-dependent
        rules are the pipeline's ``check_inputs``."""
        from fusion.pipeline import to_pil

        general, expert, lora = req.models.model0, req.models.model1, req.models.lora
        seed, sel_text = req.seeds[0], str(req.settings.fusion_selection)
        t_load = time.perf_counter()
        loads_before = self.cache.loads
        try:
            pipe = self.cache.pipeline(general, expert, lora=lora)
        except BaseException as e:
            if is_oom(e):
                self.cache.evict()
            raise
        load_seconds = (time.perf_counter() - t_load) if self.cache.loads > loads_before else 0.0
        s = pipe.check_inputs(req.prompt, req.prompt1, req.settings, req.seeds)
        every = self._every(s.steps) if decode_previews else 0

        def on_step(si, ev):  # forwards the pipeline's previews (decoded there, every ``every`` steps)
            if cancel.is_set():
                return
            imgs = None if ev.preview is None else {k: to_pil(v[:1])[0] for k, v in ev.preview.items()}
            previews.put(("preview", Preview(ev.index + 1, ev.total, imgs)))  # imgs None: progress only

        try:
            [res] = pipe(req.prompt, req.prompt1 or req.prompt, s, seeds=[seed],
                         callback=None if previews is None else on_step, cancel=cancel,
                         preview_every=every if previews is not None else 0,
                         preview_budget=None if self.preview_every else self.preview_budget)
        except BaseException as e:
            if is_oom(e):
                k0, k1 = self.cache.key(general), self.cache.key(expert)
                self.cache.evict(keep=(k0, k1))
            raise
        images = {k: res.pil(k)[0] for k in res.images}
        return FuseOutcome(images=images, trace=res.saliency, primary=s.primary, fusion_selection=sel_text,
                           seconds=res.seconds, load_seconds=load_seconds, calls=dict(res.stats.calls),
                           shared_components=list(pipe.shared_components))
