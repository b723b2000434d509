"""App-side runtime of MccSTN Studio (no UI, no algorithm): everything ``app.py`` needs between
the Gradio widgets and the libraries.

* :mod:`studio.config` - settings from flags and environment variables.
* :mod:`studio.cache` - warm models: an LRU cache keyed by (path, device, dtype) under a memory
  budget, plus the fusion pipelines built from cached pairs.
* :mod:`studio.gpu` - one shared slot pool for GPU work (concurrency limit) and error mapping
  (out of memory, bad model file) to one-line messages.
* :mod:`studio.models` - model discovery in the models folder, the embedded toy models.
* :mod:`studio.fusion_service` - a fusion request: resolve models, run in a worker thread,
  stream previews, cancel, collect the saliency trace.
* :mod:`studio.engines` - the style-engine registry (each engine built once, on first listing;
  unavailable engines listed with their one-line reason, never a crash).
* :mod:`studio.style_engines` - the style tab's engine adapters (the StyleEngine interface, its
  Control type, one module per engine with its UI controls).
* :mod:`studio.examples` - the example recipes.

* :mod:`studio.ui` - the Gradio UI, one module per tab (the only part that imports gradio;
  ``app.py`` imports it inside ``build_app``).

Nothing else here imports torch, diffusers or gradio at import time.
"""
