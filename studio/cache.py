"""Warm models: an LRU cache keyed by (model path, device, dtype) under a memory budget.

Models load once and stay in memory; when a new model pushes the total over the budget the
least recently used models are dropped (never the ones the current request needs). Memory is
counted per distinct parameter tensor, so components shared between models (the fusion
pipeline makes a fine-tuned expert reuse the general model's identical VAE and text encoder)
count once. Fusion pipelines built from cached pairs are cached as well and dropped together
with their models.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("studio.cache")

__all__ = ["ModelCache", "CacheKey", "model_bytes"]


@dataclass(frozen=True)
class CacheKey:
    path: str
    device: str
    dtype: str

    def __str__(self) -> str:
        return f"{Path(self.path).name} ({self.device}, {self.dtype.replace('torch.', '')})"


def _modules(model) -> list:
    return [getattr(model, n) for n in ("unet", "vae", "text_encoder") if getattr(model, n, None) is not None]


def model_bytes(models) -> int:
    """Bytes of the distinct parameters and buffers of ``models`` (shared tensors count once)."""
    seen: set[int] = set()
    total = 0
    for m in models:
        for mod in _modules(m):
            for t in list(mod.parameters()) + list(mod.buffers()):
                try:
                    ptr = t.untyped_storage().data_ptr()
                except (RuntimeError, NotImplementedError):
                    ptr = id(t)
                key = ptr or id(t)
                if key in seen:
                    continue
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def _lora_key(lora) -> tuple:
    """What makes two LoRA choices the same: the files (path, size, mtime) and scales; () for none."""
    if lora is None or not lora.any:
        return ()
    out = []
    for i in (0, 1):
        path, scale = lora.side(i)
        if path is None:
            out.append(None)
            continue
        p = Path(path).expanduser().resolve()
        st = p.stat() if p.exists() else None
        out.append((str(p), st.st_size if st else -1, st.st_mtime_ns if st else -1, scale))
    return tuple(out)


def _read_loras(lora) -> dict:
    from fusion.lora import read_lora
    return {p: read_lora(p) for p in (lora.side(0)[0], lora.side(1)[0]) if p is not None}


class ModelCache:
    """``get(path)`` returns a loaded :class:`fusion.loading.DiffusionModel`, loading it at most once.

    budget_bytes: total model memory to keep (None: unbounded). device/dtype: defaults for
    ``get``. loader: ``loader(path, device=..., dtype=...)`` (default: ``fusion.loading.load_model``).
    """

    def __init__(self, budget_bytes: int | None = None, device=None, dtype=None,
                 loader: Callable | None = None):
        self.budget_bytes = budget_bytes
        self.device, self.dtype = device, dtype
        self._loader = loader
        self._models: "OrderedDict[CacheKey, object]" = OrderedDict()
        self._pipes: "OrderedDict[tuple[CacheKey, CacheKey], object]" = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[CacheKey, threading.Lock] = {}
        self.loads = self.hits = self.evictions = 0
        self.load_seconds: dict[CacheKey, float] = {}

    # ---- keys -------------------------------------------------------------------------------
    def key(self, source, device=None, dtype=None) -> CacheKey:
        import torch
        from fusion.loading import default_device, default_dtype
        dev = torch.device(device if device is not None else (self.device or default_device()))
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        dt = dtype or self.dtype or default_dtype(dev)
        return CacheKey(str(Path(source).expanduser().resolve()), str(dev), str(dt))

    # ---- models -----------------------------------------------------------------------------
    def get(self, source, device=None, dtype=None, protect: tuple = ()):
        """The model at ``source`` (loaded now if not warm). ``protect``: keys never evicted by
        this load (e.g. the other model of the pair being fused)."""
        k = self.key(source, device, dtype)
        with self._lock:
            if k in self._models:
                self._models.move_to_end(k)
                self.hits += 1
                return self._models[k]
            load_lock = self._loading.setdefault(k, threading.Lock())
        with load_lock:  # one load per key; other keys load in parallel
            with self._lock:
                if k in self._models:
                    self._models.move_to_end(k)
                    self.hits += 1
                    return self._models[k]
            loader = self._loader
            if loader is None:
                from fusion.loading import load_model as loader
            import torch
            t0 = time.perf_counter()
            model = loader(k.path, device=torch.device(k.device), dtype=getattr(torch, k.dtype.split(".")[-1]))
            with self._lock:
                self._models[k] = model
                self.loads += 1
                self.load_seconds[k] = time.perf_counter() - t0
                self._loading.pop(k, None)
                self._enforce_budget(keep=(k, *protect))
            return model

    def pipeline(self, general, expert, device=None, dtype=None, lora=None):
        """A :class:`fusion.pipeline.FusionPipeline` of two cached models (built once per pair and
        LoRA choice). ``lora``: a :class:`fusion.lora.LoraSettings`; the adapters go onto the cached
        UNets (a base model named twice is one UNet) and stay there for later requests."""
        from fusion.pipeline import FusionPipeline
        k0 = self.key(general, device, dtype)
        k1 = self.key(expert, device, dtype)
        lk = _lora_key(lora)
        files = _read_loras(lora) if lk else {}  # a bad LoRA fails before any model loads
        m0 = self.get(general, device, dtype, protect=(k1,))
        m1 = self.get(expert, device, dtype, protect=(k0,))
        with self._lock:
            pk = (k0, k1, lk) if lk else (k0, k1)
            pipe = self._pipes.get(pk)
            if pipe is not None and getattr(pipe, "base_models", (pipe.model0, pipe.model1)) == (m0, m1):
                self._pipes.move_to_end(pk)
                return pipe
        if lk:
            from fusion.lora import attach_loras
            pipe = FusionPipeline(*attach_loras(m0, m1, lora, files))
        else:
            pipe = FusionPipeline(m0, m1)  # checks the pair; shares identical components
        pipe.base_models = (m0, m1)
        with self._lock:
            self._pipes[pk] = pipe
            while len(self._pipes) > 8:
                self._pipes.popitem(last=False)
            # sharing components may have freed memory, or the pair may now exceed the budget
            self._enforce_budget(keep=(k0, k1))
        return pipe

    # ---- memory -----------------------------------------------------------------------------
    def bytes_used(self) -> int:
        with self._lock:
            return model_bytes(list(self._models.values()))

    def _enforce_budget(self, keep: tuple = ()) -> None:
        if self.budget_bytes is None:
            return
        while self.bytes_used() > self.budget_bytes:
            victim = next((k for k in self._models if k not in keep), None)
            if victim is None:
                log.warning("models in use need %.2f GB, over the %.2f GB budget",
                            self.bytes_used() / 2 ** 30, self.budget_bytes / 2 ** 30)
                return
            self._drop(victim)
        self._release()

    def _drop(self, k: CacheKey) -> None:
        self._models.pop(k, None)
        for pk in [pk for pk in self._pipes if k in pk]:
            self._pipes.pop(pk)
        self.evictions += 1
        log.info("evicted %s", k)

    @staticmethod
    def _release() -> None:
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass

    def evict(self, source=None, device=None, dtype=None, keep: tuple = ()) -> int:
        """Drop one model (``source``), or every model not in ``keep``; returns how many."""
        with self._lock:
            if source is not None:
                k = self.key(source, device, dtype)
                victims = [k] if k in self._models else []
            else:
                victims = [k for k in self._models if k not in keep]
            for k in victims:
                self._drop(k)
        self._release()
        return len(victims)

    def clear(self) -> None:
        self.evict()

    def __contains__(self, source) -> bool:
        return self.key(source) in self._models

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._models)

    def summary(self) -> str:
        with self._lock:
            names = ", ".join(str(k) for k in self._models) or "none"
            budget = "unbounded" if self.budget_bytes is None else f"{self.budget_bytes / 2 ** 30:.1f} GB"
            return (f"warm models: {names}; {self.bytes_used() / 2 ** 20:.0f} MB of {budget}; "
                    f"{self.loads} loads, {self.hits} hits, {self.evictions} evictions")
