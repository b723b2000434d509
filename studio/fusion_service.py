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
from .models import geometry, resolve_lora, resolve_model

__all__ = ["FuseRequest", "Preview", "FuseOutcome", "FusionService"]


@dataclass
class FuseRequest:
    general: str
    expert: str
    prompt: str                       # the expert's prompt
    prompt1: str = ""                 # the general model's prompt ("" = same as prompt)
    negative_prompt: str = ""
    seed: int = 6854
    steps: int = 50
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    fusion_selection: str = "600,1,1"
    mode: int = 2
    primary: str = "general"
    sampler: str = "ddim"             # fusion.schedulers.SAMPLERS
    general_path_box: str = ""
    expert_path_box: str = ""
    general_lora: str = ""            # LoRA picker value / path box per side ("" = no LoRA)
    general_lora_path_box: str = ""
    general_lora_scale: float = 1.0
    expert_lora: str = ""
    expert_lora_path_box: str = ""
    expert_lora_scale: float = 1.0


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
    every ``preview_every`` steps, ``images=None`` on the others), then one :class:`FuseOutcome`.

    cache: a :class:`studio.cache.ModelCache`; slots: the shared :class:`studio.gpu.WorkSlots`;
    preview_every: decode a preview every this many steps (0: about ten per run, none for
    runs of fewer than 4 steps); limits: the :class:`studio.limits.Limits` every request is
    checked against before anything loads.
    """

    def __init__(self, cache, slots: WorkSlots, preview_every: int = 0, policy=None, limits: Limits | None = None):
        self.cache, self.slots, self.preview_every = cache, slots, preview_every
        self.policy = policy  # studio.public.OpenPolicy / PublicPolicy: which models and caps (None: open)
        self.limits = limits or Limits()

    # ---- the request ------------------------------------------------------------------------
    def _settings(self, req: FuseRequest, device_type: str):
        from fusion.pipeline import FusionSettings
        return FusionSettings(
            fusion_selection=str(req.fusion_selection).strip(), mode=int(req.mode), primary=req.primary,
            steps=int(req.steps), sampler=req.sampler or "ddim", guidance_scale=float(req.guidance),
            height=int(req.height) if req.height else None, width=int(req.width) if req.width else None,
            n_samples=1, negative_prompt=req.negative_prompt or "", capture_saliency=True,
            batch_trajectories=None)  # the library's measured choice for the device

    def _every(self, steps: int) -> int:
        if self.preview_every:
            return self.preview_every
        return 0 if steps < 4 else max(1, steps // 10)

    def stream(self, req: FuseRequest, cancel: threading.Event | None = None, with_previews: bool = True
               ) -> Iterator[Preview | FuseOutcome]:
        """Raises :class:`studio.gpu.StudioError` (a message for the user) or
        :class:`fusion.sampler.Cancelled`."""
        from fusion.pipeline import FusionSettings  # noqa: F401  (import errors surface here, not in the thread)
        from fusion.sampler import Cancelled

        # inputs first: nothing loads for a request that cannot run
        try:
            resolve = self.policy.resolve_model if self.policy is not None else resolve_model
            general = resolve(req.general, req.general_path_box, "General")
            expert = resolve(req.expert, req.expert_path_box, "Expert")
            lora = self._lora(req)
            if self.policy is not None:
                self.policy.check_fuse(req)
            from fusion.schedule import check_mode, parse_fusion_selection
            sel = parse_fusion_selection(str(req.fusion_selection).strip())
            check_mode(req.mode)
            from fusion.schedulers import check_sampler
            check_sampler(req.sampler or "ddim")
            if req.primary not in ("general", "expert"):
                raise ValueError(f"primary must be 'general' or 'expert', got {req.primary!r}")
            seed = whole_number(req.seed, "seed", 0, 2 ** 63 - 1)
            whole_number(req.steps, "steps", 1, 1000)
            geo = geometry(general if req.primary == "general" else expert)
            for label in ("height", "width"):
                self.limits.check_side(label, getattr(req, label), geo)
        except (ValueError, TypeError) as e:
            raise StudioError(str(e)) from None

        cancel = cancel or threading.Event()
        out: "queue.Queue[tuple[str, object]]" = queue.Queue()

        def work():
            try:
                with self.slots.slot(cancel=cancel):
                    out.put(("outcome", self._run(general, expert, req, seed, sel.text, cancel,
                                                  out if with_previews else None, lora)))
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

    # ---- in the worker thread ---------------------------------------------------------------
    def _lora(self, req: FuseRequest):
        """The request's LoRAs as :class:`fusion.lora.LoraSettings` (files are checked at load; in
        public mode only the offered LoRAs)."""
        from fusion.lora import LoraSettings
        resolve = getattr(self.policy, "resolve_lora", resolve_lora)
        lora = LoraSettings(resolve(req.general_lora, req.general_lora_path_box, "General"),
                            resolve(req.expert_lora, req.expert_lora_path_box, "Expert"),
                            req.general_lora_scale if req.general_lora_scale is not None else 1.0,
                            req.expert_lora_scale if req.expert_lora_scale is not None else 1.0)
        lora.side(0), lora.side(1)  # scale checks
        return lora

    def _run(self, general, expert, req: FuseRequest, seed: int, sel_text: str, cancel, previews, lora=None):
        from fusion.pipeline import to_pil

        t_load = time.perf_counter()
        loads_before = self.cache.loads
        try:
            pipe = self.cache.pipeline(general, expert, lora=lora)
        except BaseException as e:
            if is_oom(e):
                self.cache.evict()
            raise
        load_seconds = (time.perf_counter() - t_load) if self.cache.loads > loads_before else 0.0
        primary_model = pipe.roles(req.primary)[0]
        s = self._settings(req, primary_model.device.type)
        s = pipe.check_inputs(req.prompt, req.prompt1 or req.prompt, s, [seed])
        every = self._every(s.steps)

        def on_step(si, ev):  # forwards the pipeline's previews (decoded there, every ``every`` steps)
            if cancel.is_set():
                return
            imgs = None if ev.preview is None else {k: to_pil(v[:1])[0] for k, v in ev.preview.items()}
            previews.put(("preview", Preview(ev.index + 1, ev.total, imgs)))  # imgs None: progress only

        try:
            [res] = pipe(req.prompt, req.prompt1 or req.prompt, s, seeds=[seed],
                         callback=None if previews is None else on_step, cancel=cancel,
                         preview_every=every if previews is not None else 0)
        except BaseException as e:
            if is_oom(e):
                k0, k1 = self.cache.key(general), self.cache.key(expert)
                self.cache.evict(keep=(k0, k1))
            raise
        images = {k: res.pil(k)[0] for k in res.images}
        return FuseOutcome(images=images, trace=res.saliency, primary=s.primary, fusion_selection=sel_text,
                           seconds=res.seconds, load_seconds=load_seconds, calls=dict(res.stats.calls),
                           shared_components=list(pipe.shared_components))
