"""Which execution path a request takes when the settings leave it to the library.

``batch_trajectories=None`` (the default) sends every evaluation one UNet needs at a step (all
trajectories, uncond and cond) through it as one batch wherever that measured faster. It did on
every device measured (bench/results/fusion_speed*.md): on the 2-core CPU with the toy models
(request ratio vs the naive loop 0.62 batched against 0.75 unbatched at 10 steps) and at SD 1.x
size on the CPU (0.55 against 0.73); on CUDA a larger batch fills the GPU better. Batching
changes float rounding (not the schedule): final latents differ from the unbatched path by
about 1e-6 (tested); ``batch_trajectories=False`` gives the path whose latents are bit-identical
to the naive loop's.
"""
from __future__ import annotations

__all__ = ["BATCH_BY_DEVICE", "resolve_batching"]

#: measured choice per device type; device types not listed batch as well (fewer, larger calls)
BATCH_BY_DEVICE = {"cpu": True, "cuda": True}


def resolve_batching(setting: bool | None, device_type: str) -> tuple[bool, str]:
    """(batch or not, why) for a ``batch_trajectories`` setting on ``device_type``."""
    if setting is not None:
        return bool(setting), "set"
    return BATCH_BY_DEVICE.get(device_type, True), f"auto ({device_type})"
