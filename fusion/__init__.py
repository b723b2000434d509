"""Two-model fusion (MagicFusion's Saliency-aware Noise Blending) as a library.

    from fusion import FusionPipeline, FusionSettings
    pipe = FusionPipeline.from_paths("assets/models/toy-general", "assets/models/toy-cartoon")
    [result] = pipe("a cartoon red circle", settings=FusionSettings(steps=50, n_samples=4))
    result.pil("fused")

Modules: snb (the blending math), schedule (fusion_selection and modes), sampler (DDIM over
denoiser callables), loading (offline model loading), pipeline (the stages), views (saliency
heat maps), cli (the reference command line).
"""
from .loading import DiffusionModel, IncompatibleModelsError, ModelLoadError, load_model
from .pipeline import FusionPipeline, FusionResult, FusionSettings
from .sampler import Cancelled
from .schedule import FusionSelection, parse_fusion_selection
from .snb import SNBResult, blend

__all__ = ["DiffusionModel", "IncompatibleModelsError", "ModelLoadError", "load_model", "FusionPipeline",
           "FusionResult", "FusionSettings", "Cancelled", "FusionSelection", "parse_fusion_selection",
           "SNBResult", "blend"]
