"""The app's in-process runtime: one per app, created without loading anything."""
from __future__ import annotations

import os
import threading
from dataclasses import replace

from .cache import ModelCache
from .config import StudioConfig
from .engines import EngineRegistry
from .fusion_service import FusionService
from .gpu import WorkSlots
from .limits import Limits


class Studio:
    """Holds the warm-model cache, the shared work slots, the fusion service, the engine
    registry and one cancel signal per browser session."""

    def __init__(self, config: StudioConfig | None = None):
        self.config = config or StudioConfig()
        self.slots = WorkSlots(self.config.concurrency)
        self.limits = Limits.from_config(self.config)
        self._cache: ModelCache | None = None
        self._fusion: FusionService | None = None
        self._engines: EngineRegistry | None = None
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        from .public import Admission, OpenPolicy, PublicPolicy
        c = self.config
        if c.public:  # public mode: offered models only, caps, a bounded number of requests held
            extra = c.space.diffusion_models() if c.space is not None else ()
            self.policy = PublicPolicy(c.models_dir, extra, c.public_limits,
                                       loras=tuple(c.space.loras.values()) if c.space is not None else ())
            self.admission = Admission(self.policy.limits.max_queue)
            lim = self.limits  # the public cap on upload pixels, if lower, is checked by studio.limits
            self.limits = replace(lim, max_upload_megapixels=min(lim.max_upload_megapixels,
                                                                 self.policy.limits.max_upload_mp))
        else:
            self.policy, self.admission = OpenPolicy(), Admission(None)

    # lazily: torch is imported on first use, not when the app module is imported
    @property
    def cache(self) -> ModelCache:
        with self._lock:
            if self._cache is None:
                c = self.config
                threads = c.threads
                if threads is None and c.torch_device().type == "cpu" and (os.cpu_count() or 1) <= 2:
                    # measured on a busy 2-core machine: 2 threads made a 50-step toy fusion 30x slower
                    threads = 1
                if threads:
                    import torch
                    torch.set_num_threads(int(threads))
                self._cache = ModelCache(budget_bytes=c.budget_bytes(), device=c.torch_device(),
                                         dtype=c.torch_dtype())
            return self._cache

    @property
    def fusion(self) -> FusionService:
        if self._fusion is None:
            self._fusion = FusionService(self.cache, self.slots, self.config.preview_every, self.policy,
                                         self.limits, preview_budget=self.config.preview_budget)
        return self._fusion

    @property
    def engines(self) -> EngineRegistry:
        if self._engines is None:
            self._engines = EngineRegistry(self.config, self.cache, self.slots)
        return self._engines

    def preload_in_background(self) -> threading.Thread:
        """Load the default pair (models.yaml's, else the toy models) and its pipeline in a
        background thread, so the first request finds them warm. Failures are only logged: the request will report them."""
        from .models import TOY_EXPERT, TOY_GENERAL, toy_models_present

        space = self.config.space
        pair = (space.general, space.expert) if space is not None and space.general else (TOY_GENERAL, TOY_EXPERT)

        def work():
            if pair == (TOY_GENERAL, TOY_EXPERT) and not toy_models_present():
                return
            try:
                with self.slots.slot():
                    self.cache.pipeline(*pair)
            except Exception as e:  # noqa: BLE001
                import logging
                logging.getLogger("studio").warning("preloading the toy models failed: %s", e)

        t = threading.Thread(target=work, name="studio-preload", daemon=True)
        t.start()
        return t

    # ---- cancel signals per session -------------------------------------------------------
    def new_cancel(self, session: str, kind: str) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            old = self._cancels.get(f"{session}/{kind}")
            if old is not None:
                old.set()  # a new request from the same session replaces the running one
            self._cancels[f"{session}/{kind}"] = ev
            if len(self._cancels) > 4096:
                for k in list(self._cancels)[:1024]:
                    self._cancels.pop(k)
        return ev

    def cancel(self, session: str, kind: str) -> bool:
        with self._lock:
            ev = self._cancels.get(f"{session}/{kind}")
        if ev is None or ev.is_set():
            return False
        ev.set()
        return True

    def describe(self) -> str:
        c = self.config
        dev = c.torch_device()
        return (f"Device: {dev}, {str(c.torch_dtype()).replace('torch.', '')}; "
                f"concurrency {c.concurrency}; models folder: {c.models_dir}. "
                + (self._cache.summary() if self._cache is not None else "no model loaded yet."))
