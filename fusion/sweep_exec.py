"""Running sweep cells with shared work.

The cells of a chunk (and, once per sweep, the general and expert images) are trajectories of
*one* :func:`fusion.sampler.sample_trajectories` call from one x_T, with the prompt embeddings
encoded once for all of them. The sampler computes identical UNet evaluations once (same UNet,
same latent object, same embedding objects), so

* the general image and the expert image are made once per sweep, not once per cell;
* in mode 1 every cell runs the primary alone until its switch at v1: that prefix is computed once
  for all cells of the chunk (and, with the general model primary, it *is* the general image's
  run), whatever their v1, kg and ke;
* mode-0 cells (the primary alone) are one run per primary.

Cells never change each other's numbers: every UNet call is the same computation as in a
one-cell run (no cross-cell batching unless ``batch_trajectories``), and each cell decodes alone,
so the images do not depend on how cells are grouped into chunks or spread over workers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .pipeline import FusionPipeline, FusionSettings, to_uint8
from .sampler import StepEvent, alphas_cumprod, ddim_timesteps, sample_trajectories
from .schedulers import make_solver
from .sweep_spec import SweepCell, SweepSpec

__all__ = ["Chunk", "CellOutput", "ChunkOutput", "cell_settings", "plan_chunks", "run_chunk", "PipelineRecipe",
           "LocalExecutor"]

REFERENCES = ("general", "expert")


@dataclass(frozen=True)
class Chunk:
    """Cells run together (one sampler call per sampling schedule), plus the reference images."""

    cells: tuple[SweepCell, ...]
    references: bool = False


@dataclass
class CellOutput:
    """images: (n, H, W, 3) uint8. secondary_share: fraction of latent pixels that took the
    secondary's noise, averaged over the SNB steps and the samples (0 when no step fused)."""

    cell: SweepCell
    images: np.ndarray
    secondary_share: float
    snb_steps: int


@dataclass
class ChunkOutput:
    cells: list[CellOutput]
    references: dict[str, np.ndarray] = field(default_factory=dict)
    unet_calls: dict[str, int] = field(default_factory=dict)
    shared: int = 0
    seconds: float = 0.0


def cell_settings(spec: SweepSpec, cell: SweepCell, batch_trajectories: bool = False) -> FusionSettings:
    """The one-cell request's settings (:meth:`fusion.sweep_spec.SweepSpec.cell_settings`):
    ``pipe(spec.prompt, spec.prompt1, cell_settings(...), seeds=[spec.seed])`` gives the same fused
    image as the sweep's cell."""
    return spec.cell_settings(cell, batch_trajectories)


def plan_chunks(cells: Sequence[SweepCell], references: bool, max_cells: int = 64) -> list[Chunk]:
    """Group cells that can share work (same primary and mode), largest v1 first, in chunks of at
    most ``max_cells``; the references go with the first chunk."""
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    groups: dict[tuple, list[SweepCell]] = {}
    for c in cells:
        groups.setdefault((c.primary, c.mode), []).append(c)
    chunks = []
    for group in groups.values():
        group = sorted(group, key=lambda c: -c.v1)
        chunks += [Chunk(tuple(group[i:i + max_cells])) for i in range(0, len(group), max_cells)]
    if references:
        chunks = [replace(chunks[0], references=True)] + chunks[1:] if chunks else [Chunk((), True)]
    return chunks


def _schedule(pipe: FusionPipeline, s: FusionSettings, seed: int):
    """(timesteps, alphas, x_T, scheduler config) of the request, as ``FusionPipeline.__call__``."""
    primary, _ = pipe.roles(s.primary)
    cfg = primary.scheduler_config
    solver = make_solver(s.sampler, cfg, s.steps)
    timesteps = solver.timesteps if solver is not None else ddim_timesteps(
        s.steps, int(cfg.get("num_train_timesteps", 1000)), int(cfg.get("steps_offset", 1)))
    return list(timesteps), alphas_cumprod(cfg), pipe.prepare_latents(seed, s), cfg


def _same_schedule(a, b) -> bool:
    return (a[0] == b[0] and torch.equal(a[1], b[1]) and a[2].shape == b[2].shape and torch.equal(a[2], b[2])
            and a[3] == b[3])


@torch.no_grad()
def run_chunk(pipe: FusionPipeline, spec: SweepSpec, chunk: Chunk, cancel=None,
              progress: Callable[[int, int], None] | None = None,
              batch_trajectories: bool = False) -> ChunkOutput:
    """Run one chunk; ``progress(done_steps, total_steps)`` after every sampler step."""
    t0 = time.perf_counter()
    prompt, prompt1 = spec.prompt, spec.prompt1
    settings = {c: pipe.check_inputs(prompt, prompt1, cell_settings(spec, c, batch_trajectories), [spec.seed])
                for c in chunk.cells}
    ref_primary = chunk.cells[0].primary if chunk.cells else "general"
    ref_s = pipe.check_inputs(prompt, prompt1, replace(
        cell_settings(spec, SweepCell(600, 1.0, 1.0, 0, ref_primary), batch_trajectories),
        trajectories=REFERENCES), [spec.seed])

    # one sampler call per distinct schedule (normally one); the references join the first
    runs: list[tuple[tuple, list]] = []
    members = ([("refs", ref_s)] if chunk.references else []) + [(c, settings[c]) for c in chunk.cells]
    for who, s in members:
        sched = _schedule(pipe, s, spec.seed)
        for known, group in runs:
            if _same_schedule(known, sched):
                group.append((who, s))
                break
        else:
            runs.append((sched, [(who, s)]))

    memo: dict = {}
    out = ChunkOutput(cells=[])
    latents: dict = {}
    share_sum: dict[str, torch.Tensor] = {}
    share_steps: dict[str, int] = {}
    total = sum(len(sched[0]) for sched, _ in runs)
    done = 0
    for (timesteps, alphas, x_T, cfg), group in runs:
        trajectories = []
        for who, s in group:
            if who == "refs":
                trajectories += pipe.encode(prompt, prompt1, s, memo)
            else:
                [tr] = pipe.encode(prompt, prompt1, s, memo)
                trajectories.append(replace(tr, name=who.name))

        def on_step(ev: StepEvent):
            nonlocal done
            for name, r in ev.snb.items():
                m = r.secondary_share.detach().cpu()
                share_sum[name] = share_sum.get(name, 0) + m
                share_steps[name] = share_steps.get(name, 0) + 1
            done += 1
            if progress is not None:
                progress(done, total)

        lat, stats = sample_trajectories(trajectories, x_T, timesteps, alphas, spec.guidance_scale,
                                         callback=on_step, cancel=cancel, share=True,
                                         batch_trajectories=batch_trajectories,
                                         solver=make_solver(spec.sampler, cfg, spec.steps))
        latents.update(lat)
        for k, v in stats.calls.items():
            out.unet_calls[k] = out.unet_calls.get(k, 0) + v
        out.shared += stats.shared

    if chunk.references:
        images = pipe.decode({r: latents[r] for r in REFERENCES}, ref_s)
        out.references = {r: to_uint8(images[r]) for r in REFERENCES}
    decoded: dict[tuple, np.ndarray] = {}  # identical latents (e.g. mode-0 cells) decode once
    for c in chunk.cells:
        z = latents[c.name]
        key = (id(z), c.primary)
        if key not in decoded:
            decoded[key] = to_uint8(pipe.decode({"fused": z}, settings[c])["fused"])
        steps = share_steps.get(c.name, 0)
        share = float(share_sum[c.name].mean()) / steps if steps else 0.0
        out.cells.append(CellOutput(c, decoded[key], share, steps))
    out.seconds = time.perf_counter() - t0
    return out


@dataclass(frozen=True)
class PipelineRecipe:
    """How to load the model pair (picklable: Ray workers load their own copy from it).

    lora: a :class:`fusion.lora.LoraSettings` (LoRAs applied at load time) or None.
    device None = cuda when available, else cpu; precision "auto" = fp16 on CUDA, fp32 on CPU;
    threads None = torch's default, except 1 on machines with <= 2 CPUs (as ``python -m fusion``).
    """

    model0: str
    model1: str
    config: str | None = None
    device: str | None = None
    precision: str = "auto"
    threads: int | None = None
    lora: object = None  # fusion.lora.LoraSettings or None
    use_ema: bool = False  # single-file checkpoints: the UNet from the EMA copies (as python -m fusion --use_ema)

    def load(self) -> FusionPipeline:
        import os

        from .loading import default_device, default_dtype

        if self.threads is not None or (os.cpu_count() or 1) <= 2:
            torch.set_num_threads(max(1, self.threads or 1))
        device = torch.device(self.device) if self.device else default_device()
        dtype = {"auto": default_dtype(device), "fp32": torch.float32, "fp16": torch.float16,
                 "bf16": torch.bfloat16}[self.precision]
        return FusionPipeline.from_paths(self.model0, self.model1, device=device, dtype=dtype,
                                         config_dir=self.config, lora=self.lora,
                                         use_ema=self.use_ema)


class LocalExecutor:
    """Runs chunks in this process; the pipeline is loaded on the first chunk (so a sweep with
    nothing left to do, or refused input, never loads a model)."""

    max_cells = 64

    def __init__(self, pipe: FusionPipeline | None = None, recipe: PipelineRecipe | None = None,
                 batch_trajectories: bool = False, progress: Callable[[int, int], None] | None = None):
        if pipe is None and recipe is None:
            raise ValueError("LocalExecutor needs a pipeline or a recipe to load one")
        self._pipe, self.recipe = pipe, recipe
        self.batch_trajectories, self.progress = batch_trajectories, progress

    @property
    def pipe(self) -> FusionPipeline:
        if self._pipe is None:
            self._pipe = self.recipe.load()
        return self._pipe

    def map(self, spec: SweepSpec, chunks: Sequence[Chunk], cancel=None):
        for chunk in chunks:
            yield run_chunk(self.pipe, spec, chunk, cancel=cancel, progress=self.progress,
                            batch_trajectories=self.batch_trajectories)
