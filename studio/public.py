"""Public mode (``python app.py --public``; on by itself on a Hugging Face Space, where ``SPACE_ID``
is set): what an anonymous visitor may ask of the app.

* Models: only the embedded toy models, the models folder's models and those listed in
  ``models.yaml``. Any other name - a missing path, an existing file that is not a model, a
  real model elsewhere on the disk - gets one and the same message (:data:`MODEL_REFUSED`), so the
  answers say nothing about the server's files. The path boxes are hidden.
* Caps (:class:`PublicLimits`) on steps, samples, sweep cells and style-transfer work; sizes and
  upload pixels come from :mod:`studio.limits` (the same rules as everywhere) and upload bytes from
  Gradio's ``max_file_size``.
* Admission (:class:`Admission`): at most ``max_queue`` model requests held (running or waiting
  for the GPU); one more gets "busy, try again" at once instead of an unbounded wait.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .gpu import StudioError

__all__ = ["PublicLimits", "PublicPolicy", "OpenPolicy", "Admission", "MODEL_REFUSED", "LORA_REFUSED", "BUSY",
           "public_requested"]

#: the only answer to a model name the public app does not offer ({role}: General / Expert)
MODEL_REFUSED = "{role} model: not one of the models this app offers; pick one from the list."
LORA_REFUSED = "{role} LoRA: not one of the LoRAs this app offers; pick one from the list."
BUSY = ("The app is busy: {held} requests are running or waiting, the most it holds. "
        "Please try again in a minute.")


@dataclass(frozen=True)
class PublicLimits:
    """Caps of the public app (override any in models.yaml's ``public:`` mapping)."""

    max_steps: int = 50              # fusion steps
    max_samples: int = 1             # images per fusion request
    max_sweep_cells: int = 16        # cells of one sweep request (v1 x kg x ke x mode x primary)
    max_style_steps: int = 50        # DDIM steps of the training-free style engine
    max_queue: int = 8               # model requests held at once (running + waiting)
    max_upload_mb: float = 10.0      # bytes of one uploaded file (Gradio refuses larger ones)
    max_upload_mp: float = 4.2       # decoded pixels of one uploaded image (about 2048 x 2048)
    cache_examples: bool = True      # run the examples once at start-up and serve the results

    @classmethod
    def from_mapping(cls, values: dict | None, where: str = "public") -> "PublicLimits":
        """From models.yaml's ``public:`` mapping; unknown keys and wrong types are named."""
        base = cls()
        if not values:
            return base
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown cap(s) {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(known)}")
        out = {}
        for k, v in values.items():
            want = type(getattr(base, k))
            ok = isinstance(v, bool) if want is bool else (isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok or (want is not bool and not v > 0) or (want is int and float(v) != int(v)):
                raise ValueError(f"{where}.{k}: expected a positive {want.__name__}, got {v!r}")
            out[k] = want(v)
        return replace(base, **out)


def public_requested(flag: bool, environ=None) -> bool:
    """--public, or running on a Hugging Face Space (which sets SPACE_ID)."""
    env = os.environ if environ is None else environ
    return bool(flag) or bool(str(env.get("SPACE_ID", "")).strip())


def _norm(p) -> str:
    return os.path.normcase(os.path.abspath(os.path.expanduser(str(p))))


class OpenPolicy:
    """The local app: any path the operator types (the library's own checks and messages)."""

    public = False
    limits = None

    def resolve_model(self, choice, path_box, role):
        from .models import resolve_model
        return resolve_model(choice, path_box, role)

    def offers(self, path) -> bool:
        return True

    def resolve_lora(self, choice, path_box, role):
        from .models import resolve_lora
        return resolve_lora(choice, path_box, role)

    def check_fuse(self, req) -> None:
        return None

    def check_style(self, engine: str, controls: dict) -> None:
        return None

    def check_sweep(self, cells: int) -> None:
        return None

    def clamp_style(self, controls: dict) -> dict:
        return dict(controls)


class PublicPolicy(OpenPolicy):
    """models_dir: the models folder (rescanned on each check, as the picker is); extra: models
    listed in models.yaml; limits: the caps."""

    public = True

    def __init__(self, models_dir, extra=(), limits: PublicLimits | None = None, loras=()):
        self.models_dir, self.extra = models_dir, tuple(Path(p) for p in extra)
        self.loras = tuple(Path(p) for p in loras)
        self.limits = limits or PublicLimits()

    def offered(self) -> list[Path]:
        from .models import TOY_EXPERT, TOY_GENERAL, discover
        out = [Path(c.path) for c in discover(self.models_dir)]
        return out + [p for p in (TOY_GENERAL, TOY_EXPERT, *self.extra) if p not in out]

    def offers(self, path) -> bool:
        if not path or len(str(path)) > 1024:
            return False
        return _norm(path) in {_norm(p) for p in self.offered()}

    def resolve_model(self, choice, path_box, role):
        # the text is compared with the offered list only: nothing about it is looked up on disk
        text = (path_box or "").strip() or (choice or "").strip()
        if not self.offers(text):
            raise ValueError(MODEL_REFUSED.format(role=role))
        return super().resolve_model(text, "", role)  # an offered model that is missing says how to get it

    def offered_loras(self) -> list[Path]:
        from . import models
        found = [Path(c.path) for c in models.discover_loras(self.models_dir)] if hasattr(models, "discover_loras") else []
        return found + [p for p in self.loras if p not in found]

    def resolve_lora(self, choice, path_box, role):
        text = (path_box or "").strip() or (choice or "").strip()
        if not text:
            return None
        offered = {_norm(p) for p in self.offered_loras()}
        offered |= {_norm(p.parent) for p in self.offered_loras() if p.name == "pytorch_lora_weights.safetensors"}
        if len(text) > 1024 or _norm(text) not in offered:
            raise ValueError(LORA_REFUSED.format(role=role))
        return super().resolve_lora(text, "", role)

    def check_fuse(self, req) -> None:
        lim = self.limits
        steps = getattr(req, "steps", 1)
        if isinstance(steps, (int, float)) and steps > lim.max_steps:
            raise ValueError(f"steps: at most {lim.max_steps} on this public app (asked {steps:g})")
        n = getattr(req, "n_samples", 1) or 1
        if n > lim.max_samples:
            raise ValueError(f"samples: at most {lim.max_samples} per request on this public app (asked {n})")

    def check_style(self, engine: str, controls: dict) -> None:
        steps = controls.get("steps")
        if isinstance(steps, (int, float)) and steps > self.limits.max_style_steps:
            raise ValueError(f"{engine} steps: at most {self.limits.max_style_steps} on this public app "
                             f"(asked {steps:g})")

    def clamp_style(self, controls: dict) -> dict:
        """Controls brought within the caps (for the examples run at start-up)."""
        out = dict(controls)
        if isinstance(out.get("steps"), (int, float)):
            out["steps"] = min(out["steps"], self.limits.max_style_steps)
        return out

    def check_sweep(self, cells: int) -> None:
        if cells > self.limits.max_sweep_cells:
            raise ValueError(f"sweep: at most {self.limits.max_sweep_cells} cells per request on this public "
                             f"app (asked {cells})")


class Admission:
    """Counts model requests held by the app; ``ticket()`` refuses one past ``max_held`` with
    :data:`BUSY` (None: no limit). ``peak``: the most held at once since start."""

    def __init__(self, max_held: int | None = None):
        self.max_held = max_held
        self.held = self.peak = self.refused = 0
        self._lock = threading.Lock()

    def ticket(self):
        adm = self

        class _Ticket:
            def __enter__(self):
                with adm._lock:
                    if adm.max_held is not None and adm.held >= adm.max_held:
                        adm.refused += 1
                        raise StudioError(BUSY.format(held=adm.held))
                    adm.held += 1
                    adm.peak = max(adm.peak, adm.held)
                return self

            def __exit__(self, *exc):
                with adm._lock:
                    adm.held -= 1
                return False

        return _Ticket()
