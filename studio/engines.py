"""The style-engine registry: every engine the style tab offers, each built once per app.

Each engine's adapter module (:mod:`studio.style_engines`) is imported with a plain import when
the registry is first listed; an engine whose import fails (an optional dependency missing),
whose constructor fails or whose ``availability()`` says no is listed as unavailable with a
one-line reason (how to make it available), never raised. An engine is built once and kept:
listing again (``refresh``) asks the same object for its availability; one whose construction
failed is tried again then. Engines implement :class:`studio.style_engines.base.StyleEngine`;
``stylize`` always gets ``cancel``.

Built in, in the order the style benchmark ranks them (bench/results/style_quality.md, 48 bench
pairs, each engine's default arm; the first available one is the tab's default):

* ``expert`` - :class:`studio.style_engines.expert.ExpertEngine`, subject-keeping diffusion
  transfer on the embedded toy general model + cartoon expert, with the silhouette lock: cartoon
  rate 1.000, shape+size kept 1.000, silhouette IoU 0.839, colour kept 1.000 (preserve colour on),
  1.76 s per 64 px image under load (0.6 s on the dev runs).
* ``mccstn`` - :class:`studio.style_engines.mccstn.MccSTNEngine` with weights from
  ``--mccstn-weights`` (default ``<models-dir>/mccstn``, else the shipped toy-world weights in
  ``assets/mccstn``): with preserve colour in its "subject" mode cartoon 0.729, shape+size 0.812,
  colour kept 0.979, 0.32 s per 256 px image under load.
* ``injection`` - :class:`studio.style_engines.injection.InjectionEngine`, StyleID's defaults,
  training-free, on the embedded toy general model (works out of the box; the baseline): cartoon
  0.667, shape+size 0.500, colour kept 0.292.

The diffusion engines take their models from the app's warm model cache (:mod:`studio.cache`) on
every run, so the fusion tab and the style tab share one copy and nothing is loaded twice.
"""
from __future__ import annotations

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
    controls: list = field(default_factory=list)     # studio.style_engines.base.Control
    engine: Any = None

    def status_line(self) -> str:
        if self.available:
            return f"**{self.label}** - {self.description}"
        return f"**{self.label}** is unavailable: {self.reason}"


@dataclass
class _Spec:
    key: str
    label: str
    make: Callable      # (registry) -> engine, built once (cheap: no weights loaded); may raise ImportError


def _expert(reg: "EngineRegistry"):
    from .style_engines.expert import ExpertEngine
    return ExpertEngine(*reg.expert_model_paths(), load_pair=reg.expert_models if reg.cache is not None else None)


def _mccstn(reg: "EngineRegistry"):
    from .style_engines.mccstn import MccSTNEngine
    return MccSTNEngine(reg.config.mccstn_dir(), device=str(reg.config.torch_device()))


def _injection(reg: "EngineRegistry"):
    from .style_engines.injection import InjectionEngine
    loader = (lambda path: reg.cache.get(path)) if reg.cache is not None else None
    return InjectionEngine(reg.style_model_path(), loader=loader)


class EngineRegistry:
    def __init__(self, config, cache, slots):
        self.config, self.cache, self.slots = config, cache, slots
        self._entries: dict[str, EngineEntry] | None = None
        self._lock = threading.Lock()
        self.specs: list[_Spec] = [
            _Spec("expert", "Subject-keeping diffusion (general + cartoon expert)", _expert),
            _Spec("mccstn", "MccSTN", _mccstn),
            _Spec("injection", "Style injection (training-free)", _injection),
        ]
        for key, factory in getattr(config, "extra_engines", []) or []:
            self.specs.append(_Spec(key, key, lambda reg, f=factory: f(reg.config, reg.cache)))

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
    def _build(self, spec: _Spec, engine: Any = None) -> EngineEntry:
        """The entry of ``spec``: ``engine`` (already built) asked again, else the engine built now."""
        entry = EngineEntry(spec.key, spec.label)
        if engine is None:
            try:
                engine = spec.make(self)
            except ImportError as e:  # an engine that cannot even import is just unavailable
                entry.reason = f"its code could not be imported ({type(e).__name__}: {str(e)[:200]})"
                return entry
            except Exception as e:  # noqa: BLE001
                entry.reason = f"it failed to start ({type(e).__name__}: {str(e)[:200]})"
                return entry
        try:
            entry.engine = engine
            entry.label = getattr(engine, "name", spec.label) if spec.label == spec.key else spec.label
            entry.description = getattr(engine, "card", None) or getattr(engine, "description", "") or ""
            entry.controls = list(engine.controls())
            ok, why = engine.availability()
            entry.available, entry.reason = bool(ok), ("" if ok else str(why))
        except Exception as e:  # noqa: BLE001
            entry.available = False
            entry.reason = f"it failed to start ({type(e).__name__}: {str(e)[:200]})"
        return entry

    def entries(self, refresh: bool = False) -> list[EngineEntry]:
        """Every engine's entry; ``refresh`` asks the (kept) engines for their availability again."""
        with self._lock:
            if self._entries is None or refresh:
                old = self._entries or {}
                self._entries = {s.key: self._build(s, old[s.key].engine if s.key in old else None)
                                 for s in self.specs}
            return list(self._entries.values())

    def get(self, key: str) -> EngineEntry:
        for e in self.entries():
            if e.key == key:
                return e
        known = ", ".join(e.key for e in self.entries())
        raise StudioError(f"unknown style engine {key!r}; available engines: {known}")

    def default_key(self) -> str | None:
        """The first available engine (the registry lists them best first, see the module docstring)."""
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
        known = {c.name for c in entry.controls}
        opts = {k: v for k, v in controls.items() if k in known}
        for c in entry.controls:  # numbers from sliders arrive as floats
            if c.name in opts and isinstance(c.default, int) and not isinstance(c.default, bool) \
                    and isinstance(opts[c.name], float) and opts[c.name].is_integer():
                opts[c.name] = int(opts[c.name])
        try:
            with self.slots.slot(cancel=cancel):
                return entry.engine.stylize(content.convert("RGB"), style.convert("RGB"), cancel=cancel, **opts)
        except StudioError:
            raise
        except Exception as e:  # noqa: BLE001
            from fusion.ddim import Cancelled
            if isinstance(e, Cancelled):
                raise
            if is_oom(e):
                self.cache.evict()
            else:  # a load failure may make the engine unavailable: refresh its line
                spec = next(s for s in self.specs if s.key == key)
                with self._lock:
                    if self._entries is not None:
                        self._entries[key] = self._build(spec, entry.engine)
            raise StudioError(f"{entry.label}: {friendly_error(e, 'style transfer')}") from e
