"""What a sweep is: the fixed request (one prompt pair, one seed) and the axes of settings.

Any of ``v1``, ``kg``, ``ke``, ``mode`` and ``primary`` is an axis, given as a comma list
("400,600,800"); the cells are every combination (v1 slowest, primary fastest). Everything here
is checked before any model loads, and every error names the axis or field and what does not fit.
The fixed part is one :class:`fusion.settings.FusionRequest` (:meth:`SweepSpec.request`), checked
by its own rules; a cell is that request's settings with the cell's axes (:meth:`SweepSpec.cell_settings`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from .schedule import MAX_SHARPNESS, FusionSelection, check_mode
from .settings import PRIMARIES, FusionRequest, FusionSettings, LoraSettings, PairChoice
from .textparse import check_length, quote

__all__ = ["AXES", "MAX_CELLS_WITHOUT_CONFIRM", "SweepAxes", "SweepCell", "SweepSpec", "parse_axis",
           "format_number"]

#: an axis text's longest form (every v1 timestep 0..1000 is 3,892 characters) and most values
MAX_AXIS_CHARS, MAX_AXIS_VALUES = 8192, 1001
#: the axes a sweep can vary, in cell order (the first varies slowest)
AXES = ("v1", "kg", "ke", "mode", "primary")
#: a sweep with more cells than this needs an explicit confirmation (``--yes``)
MAX_CELLS_WITHOUT_CONFIRM = 256


def format_number(x: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5" (the form used in cell names, labels and the CSV)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _parse_v1(text: str):
    try:
        v = float(text)
    except ValueError:
        return None, "is not a number"
    if not v.is_integer() or not 0 <= v <= 1000:
        return None, "is not an integer DDPM timestep in 0..1000"
    return int(v), None


def _parse_sharpness(text: str):
    try:
        v = float(text)
    except ValueError:
        return None, "is not a number"
    if not math.isfinite(v) or not 0 < v <= MAX_SHARPNESS:
        return None, f"is not a finite number > 0 and <= {format_number(MAX_SHARPNESS)}"
    return v, None


def _parse_mode(text: str):
    try:
        return check_mode(text.strip()), None
    except ValueError:
        return None, "is not a mode (0, 1 or 2)"


def _parse_primary(text: str):
    t = text.strip()
    return (t, None) if t in PRIMARIES else (None, "is not a primary ('general' or 'expert')")


_PARSERS = {"v1": _parse_v1, "kg": _parse_sharpness, "ke": _parse_sharpness, "mode": _parse_mode,
            "primary": _parse_primary}


def parse_axis(name: str, text) -> tuple:
    """One axis from a comma list ("400,600,800") or a sequence; ValueError names the axis."""
    if name not in _PARSERS:
        raise ValueError(f"unknown sweep axis {name!r} (axes: {', '.join(AXES)})")
    if isinstance(text, str):
        items = [p.strip() for p in check_length(text, f"--{name}", MAX_AXIS_CHARS).split(",")]
    else:
        items = [str(p).strip()[:MAX_AXIS_CHARS] for p in itertools.islice(text, MAX_AXIS_VALUES + 1)]
    if len(items) > MAX_AXIS_VALUES:
        raise ValueError(f"--{name}: at most {MAX_AXIS_VALUES} values, got {len(items)}")
    if not any(items):
        example = {"v1": "400,600", "kg": "1", "ke": "1,3", "mode": "2", "primary": "general"}[name]
        raise ValueError(f"--{name}: the axis is empty; give at least one value (e.g. --{name} {example})")
    if not all(items):
        raise ValueError(f"--{name}: an empty value in {quote(text)} (values are separated by single commas)")
    values = []
    for item in items:
        value, why = _PARSERS[name](item)
        if why:
            raise ValueError(f"--{name}: {item!r} {why}")
        if value in values:
            raise ValueError(f"--{name}: {item!r} is given twice")
        values.append(value)
    return tuple(values)


@dataclass(frozen=True)
class SweepCell:
    """One combination of the axes."""

    v1: int
    kg: float
    ke: float
    mode: int
    primary: str

    @property
    def name(self) -> str:
        """File-name stem, e.g. ``v1-600_kg-1_ke-3_mode-2_general``."""
        return (f"v1-{self.v1}_kg-{format_number(self.kg)}_ke-{format_number(self.ke)}"
                f"_mode-{self.mode}_{self.primary}")

    @property
    def selection(self) -> FusionSelection:
        return FusionSelection(self.v1, self.kg, self.ke)

    def as_row(self) -> dict:
        return {"v1": self.v1, "kg": format_number(self.kg), "ke": format_number(self.ke), "mode": self.mode,
                "primary": self.primary}

    @classmethod
    def from_row(cls, row: dict) -> "SweepCell":
        return cls(int(row["v1"]), float(row["kg"]), float(row["ke"]), int(row["mode"]), str(row["primary"]))


@dataclass(frozen=True)
class SweepAxes:
    """The values of each axis (a single value = not varied). Defaults: the reference's
    ``--fusion_selection 600,1,1 --mode 2`` with the general model primary."""

    v1: tuple = (600,)
    kg: tuple = (1.0,)
    ke: tuple = (1.0,)
    mode: tuple = (2,)
    primary: tuple = ("general",)

    @classmethod
    def parse(cls, **texts) -> "SweepAxes":
        """From comma lists, e.g. ``SweepAxes.parse(v1="400,600", ke="1,3")``; missing axes keep
        their defaults."""
        bad = [k for k in texts if k not in AXES]
        if bad:
            raise ValueError(f"unknown sweep axis {bad[0]!r} (axes: {', '.join(AXES)})")
        return cls(**{k: parse_axis(k, v) for k, v in texts.items() if v is not None})

    def __post_init__(self):
        for name in AXES:
            object.__setattr__(self, name, parse_axis(name, getattr(self, name)))

    @property
    def varied(self) -> list[str]:
        """Axes with more than one value, in cell order."""
        return [a for a in AXES if len(getattr(self, a)) > 1]

    @property
    def size(self) -> int:
        return math.prod(len(getattr(self, a)) for a in AXES)

    def cells(self) -> list[SweepCell]:
        return [SweepCell(*combo) for combo in itertools.product(*(getattr(self, a) for a in AXES))]

    def as_text(self) -> dict[str, str]:
        return {a: ",".join(format_number(v) if a in ("kg", "ke") else str(v) for v in getattr(self, a))
                for a in AXES}


@dataclass
class SweepSpec:
    """One sweep: what every cell shares (the *fixed* part, recorded in the output folder's
    manifest) and the axes.

    prompt goes to the expert, prompt1 (default: prompt) to the general model, as in
    ``python -m fusion``. height/width None = the primary's native size. n_samples: images per
    cell (one batch from ``seed``). sampler: as ``FusionSettings.sampler``. Defaults as
    ``python -m fusion`` except n_samples (1).
    """

    prompt: str
    prompt1: str | None = None
    seed: int = 6854
    axes: SweepAxes = field(default_factory=SweepAxes)
    steps: int = 100
    sampler: str = "ddim"
    guidance_scale: float = 10.0
    height: int | None = None
    width: int | None = None
    n_samples: int = 1
    negative_prompt: str = ""
    prompt_routing: str = "role"
    own_uncond: bool = False
    model0: str = ""
    model1: str = ""
    config: str | None = None
    lora0: str | None = None
    lora1: str | None = None
    lora0_scale: float = 1.0
    lora1_scale: float = 1.0

    def __post_init__(self):
        if self.prompt1 is None:
            self.prompt1 = self.prompt

    def cell_settings(self, cell: SweepCell, batch_trajectories: bool = False) -> FusionSettings:
        """The settings of one cell (its fused image only): ``pipe(spec.prompt, spec.prompt1,
        spec.cell_settings(cell), seeds=[spec.seed])`` gives the sweep's cell image."""
        return FusionSettings(
            fusion_selection=cell.selection, mode=cell.mode, primary=cell.primary, steps=self.steps,
            sampler=self.sampler, guidance_scale=self.guidance_scale, height=self.height, width=self.width,
            n_samples=self.n_samples, negative_prompt=self.negative_prompt, prompt_routing=self.prompt_routing,
            own_uncond=self.own_uncond, trajectories=("fused",), capture_saliency=False,
            batch_trajectories=batch_trajectories)

    def request(self) -> FusionRequest:
        """The fixed part as one request (models, prompts, the seed; the first cell's settings)."""
        lora = LoraSettings(self.lora0, self.lora1, self.lora0_scale, self.lora1_scale)
        return FusionRequest(PairChoice(self.model0, self.model1, lora, config=self.config), self.prompt,
                             self.prompt1, (self.seed,), self.cell_settings(self.axes.cells()[0]))

    def check(self, confirm_large: bool = False) -> "SweepSpec":
        """Raise a ValueError naming the field for anything that cannot run (the request's rules,
        :meth:`fusion.settings.FusionRequest.validated`: no model or file is read); returns self."""
        self.request().validated()
        n = self.axes.size
        if n > MAX_CELLS_WITHOUT_CONFIRM and not confirm_large:
            raise ValueError(f"the grid has {n} cells ({' x '.join(str(len(getattr(self.axes, a))) for a in AXES)}"
                             f" over {', '.join(AXES)}), more than {MAX_CELLS_WITHOUT_CONFIRM}; pass --yes to run "
                             f"it anyway, or shorten an axis")
        return self

    def fixed(self) -> dict:
        """Everything but the axes: two sweeps with equal ``fixed()`` can share an output folder."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "axes"}
        for key in ("model0", "model1", "config", "lora0", "lora1"):
            if out[key]:
                out[key] = str(Path(out[key]).expanduser().resolve())
        for key in ("guidance_scale", "lora0_scale", "lora1_scale"):
            out[key] = float(out[key])
        return out

    def to_json(self) -> dict:
        return {"fixed": self.fixed(), "axes": self.axes.as_text()}

    def describe(self) -> str:
        return (f"{self.axes.size} cells ({', '.join(self.axes.varied) or 'no axis varied'}), seed {self.seed}, "
                f"{self.steps} steps")
