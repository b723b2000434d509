"""The Gradio UI of MccSTN Studio, one small module per tab or panel (``app.py`` assembles them).

* :mod:`studio.ui.common` - what every tab shares: the :class:`~studio.ui.common.AppContext`
  (runtime, GPU calls, public-mode policy, the shared GPU queue limit), the session key, the
  upload widget that checks files, the widget for an engine control.
* :mod:`studio.ui.model_picker` - the model and LoRA pickers, their choices, the size sliders
  that follow the primary model (``/model_geometry``) and the folder rescan (``/refresh_models``).
* :mod:`studio.ui.fusion_tab` - the Fusion tab's prompt, sampling and fusion-selection widgets.
* :mod:`studio.ui.fusion_events` - the Fusion tab's handlers (``/fuse``, ``/stop``, the
  selection sliders, ``/random_seed``) and their events.
* :mod:`studio.ui.saliency_view` - the saliency view: panels of one captured step
  (``/saliency_step``).
* :mod:`studio.ui.style_tab` - the Style transfer tab (``/stylize``, ``/engine_info``).
* :mod:`studio.ui.sweep_tab` - the Sweep tab (``/sweep``, ``/sweep_stop``, ``/sweep_cell``).

Handlers return their outputs by name (a dict keyed by the output component; a component left
out keeps its value). These modules import gradio; ``app.py`` imports them only inside
``build_app``, so importing ``app`` stays light. The work is the libraries' and ``studio``'s.
"""
