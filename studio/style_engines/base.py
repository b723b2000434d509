"""The style-engine interface the app's style tab calls, and the :class:`Control` type.

Every engine (the MccSTN network, the training-free engines of :mod:`styleid` on diffusion
models, ...) implements :class:`StyleEngine`, so the UI can list them, show their controls and
call them the same way, without knowing how they work. The libraries (:mod:`mccstn`,
:mod:`styleid`) know nothing of this: each engine module here is the adapter of one of them.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

from PIL import Image


@dataclass(frozen=True)
class Control:
    """One user-facing setting of an engine (rendered by the app as a widget).

    kind: "slider" | "checkbox" | "dropdown" | "number" | "text".
    ``minimum``/``maximum``/``step`` apply to sliders and numbers, ``choices`` to dropdowns.
    """

    name: str
    kind: str
    label: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: Sequence[Any] = field(default_factory=tuple)
    info: str = ""


class StyleEngine(abc.ABC):
    """A way to turn (content image, style image) into a stylised image."""

    #: short name shown in the UI, unique among engines
    name: str = "engine"
    #: one line saying what the engine does
    description: str = ""

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, "") when the engine can run; else (False, one line on how to make it available)."""

    @abc.abstractmethod
    def controls(self) -> list[Control]:
        """The engine's settings with their documented defaults."""

    @abc.abstractmethod
    def stylize(self, content: Image.Image, style: Image.Image, cancel: Any = None,
                **controls: Any) -> Image.Image:
        """Stylise ``content`` with the look of ``style``; unknown control names are an error.

        ``cancel``: None, an Event-like object (``is_set()``) or a callable returning True to
        stop; the project's engines check it before the work (the diffusion ones between steps too)
        and raise :class:`fusion.ddim.Cancelled`. The registry always passes it.
        """

    def defaults(self) -> dict[str, Any]:
        return {c.name: c.default for c in self.controls()}

    def check_controls(self, controls: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and reject unknown names (a clear ValueError naming them)."""
        known = self.defaults()
        unknown = sorted(set(controls) - set(known))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown control(s) {unknown}; accepted: {sorted(known)}")
        known.update(controls)
        return known
