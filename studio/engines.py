"""The style-engine registry: every engine the style tab offers, found lazily.

Each engine is imported only when the registry is first listed; an engine whose import fails,
whose constructor fails or whose ``availability()`` says no is listed as unavailable with a
one-line reason (how to make it available), never raised. Engines implement
:class:`mccstn.engines.StyleEngine`.

Built in:

* ``expert`` - :class:`mccstn.expert_engine.ExpertEngine`, subject-keeping diffusion transfer on
  the embedded toy general model + cartoon expert (first: it measures best in
  bench/results/style_quality.md, so it is the default).
* ``mccstn`` - :class:`mccstn.mccstn_engine.MccSTNEngine` with weights from
  ``--mccstn-weights`` (default ``<models-dir>/mccstn``, else ``assets/mccstn`` when weights were exported there).
* ``injection`` - :class:`studio.injection_engine.InjectionEngine`, training-free, on the embedded toy
  general model (works out of the box). Its diffusion model comes from the app's warm model
  cache, so the fusion tab and the style tab share one copy.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .gpu import StudioError, friendly_error, is_oom

log = logging.getLogger("studio.engines")

__all__ = ["EngineEntry", "EngineRegistry", "control_param"]


def control_param(engine_key: str, control_name: str) -> str:
    """The API parameter name of an engine control in ``/stylize`` (e.g. ``mccstn_alpha``)."""
    return f"{engine_key}_{control_name}"


@dataclass
class EngineEntry:
    key: str
    label: str
    description: str = ""
    available: bool = False
    reason: str = ""
    controls: list = field(default_factory=list)     # mccstn.engines.Control
    engine: Any = None

    def status_line(self) -> str:
        if self.available:
            return f"**{self.label}** - {self.description}"
        return f"**{self.label}** is unavailable: {self.reason}"


@dataclass
class _Spec:
    key: str
    label: str
    module: str
    cls: str
    make: Callable      # (cls, registry) -> engine for listing (cheap: no weights loaded)
    for_run: Callable | None = None   # (engine, registry) -> engine to run (e.g. with a warm model)


class EngineRegistry:
    def __init__(self, config, cache, slots):
        self.config, self.cache, self.slots = config, cache, slots
        self._entries: dict[str, EngineEntry] | None = None
        self._lock = threading.Lock()
        self.specs: list[_Spec] = [
            _Spec("expert", "Subject-keeping diffusion (general + cartoon expert)", "mccstn.expert_engine",
                  "ExpertEngine", make=lambda cls, reg: cls(*reg.expert_model_paths()),
                  for_run=lambda eng, reg: type(eng)(*reg.expert_models())),
            _Spec("mccstn", "MccSTN", "mccstn.mccstn_engine", "MccSTNEngine",
                  make=lambda cls, reg: cls(reg.config.mccstn_dir(), device=str(reg.config.torch_device()))),
            _Spec("injection", "Style injection (training-free)", "studio.injection_engine", "InjectionEngine",
                  make=lambda cls, reg: cls(reg.style_model_path()),
                  for_run=lambda eng, reg: type(eng)(reg.cache.get(reg.style_model_path()))),
        ]
        for key, factory in getattr(config, "extra_engines", []) or []:
            self.specs.append(_Spec(key, key, "", "", make=lambda cls, reg, f=factory: f(reg.config, reg.cache)))

    def expert_model_paths(self):
        from .models import TOY_EXPERT, TOY_GENERAL
        return TOY_GENERAL, TOY_EXPERT

    def expert_models(self):
        """The expert engine's general and expert models from the warm cache (shared with fusion)."""
        g, e = self.expert_model_paths()
        general = self.cache.get(g)
        return general, self.cache.get(e, protect=(self.cache.key(g, None, None),))

    def style_model_path(self):
        from .models import TOY_GENERAL
        return self.config.style_model or TOY_GENERAL

    # ---- listing ----------------------------------------------------------------------------
    def _build(self, spec: _Spec) -> EngineEntry:
        entry = EngineEntry(spec.key, spec.label)
        try:
            cls = getattr(importlib.import_module(spec.module), spec.cls) if spec.module else None
        except Exception as e:  # noqa: BLE001 - an engine that cannot even import is just unavailable
            entry.reason = f"its code could not be imported ({type(e).__name__}: {str(e)[:200]})"
            return entry
        try:
            eng = spec.make(cls, self)
            entry.engine = eng
            entry.label = getattr(eng, "name", spec.label) if spec.label == spec.key else spec.label
            entry.description = getattr(eng, "card", None) or getattr(eng, "description", "") or ""
            entry.controls = list(eng.controls())
            ok, why = eng.availability()
            entry.available, entry.reason = bool(ok), ("" if ok else str(why))
        except Exception as e:  # noqa: BLE001
            entry.available = False
            entry.reason = f"it failed to start ({type(e).__name__}: {str(e)[:200]})"
        return entry

    def entries(self, refresh: bool = False) -> list[EngineEntry]:
        with self._lock:
            if self._entries is None or refresh:
                self._entries = {s.key: self._build(s) for s in self.specs}
            return list(self._entries.values())

    def get(self, key: str) -> EngineEntry:
        for e in self.entries():
            if e.key == key:
                return e
        known = ", ".join(e.key for e in self.entries())
        raise StudioError(f"unknown style engine {key!r}; available engines: {known}")

    def default_key(self) -> str | None:
        """The first available engine (MccSTN when its weights are present, else the
        out-of-the-box one)."""
        es = self.entries()
        for e in es:
            if e.available:
                return e.key
        return es[0].key if es else None

    # ---- running ----------------------------------------------------------------------------
    def stylize(self, key: str, content, style, controls: dict[str, Any], cancel=None):
        entry = self.get(key)
        if not entry.available:
            # availability may have changed (weights copied in since): look again once
            entry = {e.key: e for e in self.entries(refresh=True)}[key]
            if not entry.available:
                raise StudioError(f"{entry.label} is unavailable: {entry.reason}")
        if content is None or style is None:
            raise StudioError("Give both a content image and a style image.")
        spec = next(s for s in self.specs if s.key == key)
        known = {c.name for c in entry.controls}
        opts = {k: v for k, v in controls.items() if k in known}
        for c in entry.controls:  # numbers from sliders arrive as floats
            if c.name in opts and isinstance(c.default, int) and not isinstance(c.default, bool) \
                    and isinstance(opts[c.name], float) and opts[c.name].is_integer():
                opts[c.name] = int(opts[c.name])
        try:
            with self.slots.slot(cancel=cancel):
                eng = spec.for_run(entry.engine, self) if spec.for_run else entry.engine
                kwargs = dict(opts)
                if cancel is not None and "cancel" in inspect.signature(eng.stylize).parameters:
                    kwargs["cancel"] = cancel
                return eng.stylize(content.convert("RGB"), style.convert("RGB"), **kwargs)
        except StudioError:
            raise
        except Exception as e:  # noqa: BLE001
            from fusion.sampler import Cancelled
            if isinstance(e, Cancelled):
                raise
            if is_oom(e):
                self.cache.evict()
            if not is_oom(e):  # a load failure may make the engine unavailable: refresh its line
                with self._lock:
                    if self._entries is not None:
                        self._entries[key] = self._build(spec)
            raise StudioError(f"{entry.label}: {friendly_error(e, 'style transfer')}") from e
