"""The fusion schedule: ``fusion_selection`` "v1,kg,ke" and the merge mode.

v1 is a DDPM timestep (0..1000) compared strictly as ``t > v1``:

======  ===========================  =====================
mode    t > v1 (early, noisy steps)  t <= v1 (late steps)
======  ===========================  =====================
0       primary alone                primary alone
1       primary alone                SNB
2       SNB                          primary alone
======  ===========================  =====================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .textparse import MAX_FIELD_CHARS, parse_number, quote

__all__ = ["MODES", "MODE_HELP", "FusionSelection", "parse_fusion_selection", "check_mode", "uses_snb"]

MODES = (0, 1, 2)
MODE_HELP = {
    0: "0: primary model alone at every step (no fusion; a baseline)",
    1: "1: primary alone while t > v1 (sets the composition), then SNB for t <= v1",
    2: "2: SNB while t > v1 (early, noisy steps), then the primary alone for t <= v1",
}

#: the largest kg/ke accepted: beyond it the softmax of the saliency is a hard argmax already
#: (the reference's recipes use 1..3), and 1e308 overflows to a mask that is the primary alone
MAX_SHARPNESS = 100.0


@dataclass(frozen=True)
class FusionSelection:
    """v1: DDPM timestep where the mode switches (0..1000); kg/ke: softmax sharpness of the
    primary's and the secondary's saliency (> 0). ``text`` is the string as given, used in
    the reference's output names (``seed_{seed}_{text with ',' -> '_'}``)."""

    v1: int = 600
    kg: float = 1.0
    ke: float = 1.0
    text: str = ""

    def __post_init__(self):
        if isinstance(self.v1, bool) or not float(self.v1).is_integer():
            raise ValueError(f"fusion_selection: v1 must be an integer timestep in 0..1000, got {self.v1!r}")
        if not 0 <= int(self.v1) <= 1000:
            raise ValueError(f"fusion_selection: v1 must be in 0..1000, got {self.v1}")
        for name in ("kg", "ke"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or not 0 < value <= MAX_SHARPNESS:
                raise ValueError(f"fusion_selection: {name} must be a finite number > 0 and <= {_fmt(MAX_SHARPNESS)}, "
                                 f"got {quote(getattr(self, name))}")
        object.__setattr__(self, "v1", int(self.v1))
        object.__setattr__(self, "kg", float(self.kg))
        object.__setattr__(self, "ke", float(self.ke))
        if not self.text:
            object.__setattr__(self, "text", f"{self.v1},{_fmt(self.kg)},{_fmt(self.ke)}")

    def __str__(self) -> str:
        return self.text

    @property
    def slug(self) -> str:
        """The reference's file-name form: ',' replaced by '_'."""
        return self.text.replace(",", "_")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def parse_fusion_selection(text: str | FusionSelection) -> FusionSelection:
    """Parse "v1,kg,ke" (e.g. "600,1,1"); a clear ValueError names the accepted form."""
    if isinstance(text, FusionSelection):
        return text
    accepted = (f"fusion_selection must be three comma-separated numbers 'v1,kg,ke' (v1 an integer timestep "
                f"0..1000, kg and ke in (0, {_fmt(MAX_SHARPNESS)}]), e.g. '600,1,1'")
    if not isinstance(text, str) or len(text) > MAX_FIELD_CHARS:
        what = f"{len(text)} characters" if isinstance(text, str) else type(text).__name__
        raise ValueError(f"{accepted}; got {what} ({quote(text)})")
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"{accepted}; got {quote(text)}")
    try:
        v1, kg, ke = (parse_number(p, "fusion_selection") for p in parts)
    except ValueError:
        raise ValueError(f"{accepted}; got {quote(text)}") from None
    if not v1.is_integer():
        raise ValueError(f"fusion_selection: v1 must be an integer timestep in 0..1000, got {quote(parts[0].strip())}")
    return FusionSelection(int(v1), kg, ke, text=text.replace(" ", ""))


def check_mode(mode) -> int:
    """Return ``mode`` as an int, or raise a ValueError listing the accepted modes."""
    try:
        m = int(mode)
        ok = m in MODES and float(mode) == m and not isinstance(mode, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"mode must be one of {list(MODES)} "
                         f"({'; '.join(MODE_HELP.values())}); got {mode!r}")
    return m


def uses_snb(t: int, v1: int, mode: int) -> bool:
    """Whether the fused trajectory blends both models at DDPM timestep ``t``."""
    if mode == 0:
        return False
    if mode == 1:
        return t <= v1
    if mode == 2:
        return t > v1
    check_mode(mode)
    raise AssertionError("unreachable")
