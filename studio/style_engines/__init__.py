"""The style tab's engines: one adapter module per engine, each putting a library's plain
functions behind :class:`studio.style_engines.base.StyleEngine` with its UI controls.

* :mod:`studio.style_engines.base` - the :class:`StyleEngine` interface (``availability``,
  ``controls``, ``stylize(content, style, cancel=None, **controls)``) and the :class:`Control` type.
* :mod:`studio.style_engines.expert` - :class:`ExpertEngine` (:func:`styleid.expert.expert_transfer`).
* :mod:`studio.style_engines.mccstn` - :class:`MccSTNEngine` (the :class:`mccstn.MccSTN` network).
* :mod:`studio.style_engines.injection` - :class:`InjectionEngine` (:func:`styleid.injection.style_transfer`).
* :mod:`studio.style_engines.inputs` - real-photo input for all of them (any mode to RGB, downscaling).

:mod:`studio.engines` is the registry that builds them once per app. Importing this package,
``base``, ``mccstn`` or ``inputs`` imports neither torch nor gradio; ``expert`` and ``injection``
import their library (torch) when imported.
"""
