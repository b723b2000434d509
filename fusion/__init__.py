"""Two-model fusion (MagicFusion's Saliency-aware Noise Blending) as a library.

    from fusion import FusionPipeline, FusionSettings
    pipe = FusionPipeline.from_paths("assets/models/toy-general", "assets/models/toy-cartoon")
    [result] = pipe("a cartoon red circle", settings=FusionSettings(steps=50, n_samples=4))
    result.pil("fused")

Modules: snb (the blending math), schedule (fusion_selection and modes), ddim (the DDIM schedule,
step and inverse step), paths (the project's folders), testing (tiny models), sampler (DDIM over
denoiser callables), loading (offline model loading), pipeline (the stages), views (saliency
heat maps), settings (one request: FusionRequest = PairChoice + prompts + seeds + FusionSettings,
validated without models), cli (the reference command line).
"""
from importlib import import_module

#: public name -> the submodule defining it; imported on first use (PEP 562), so that light
#: modules (fusion.paths, fusion.textparse, ...) can be imported without torch
_EXPORTS = {
    "DiffusionModel": "loading", "IncompatibleModelsError": "loading", "ModelLoadError": "loading",
    "load_model": "loading", "FusionPipeline": "pipeline", "FusionResult": "pipeline",
    "FusionSettings": "settings", "FusionRequest": "settings", "PairChoice": "settings",
    "SettingsError": "settings", "Cancelled": "ddim", "FusionSelection": "schedule",
    "parse_fusion_selection": "schedule", "SNBResult": "snb", "blend": "snb",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fusion' has no attribute {name!r}")
