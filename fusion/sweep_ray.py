"""Sweep cells as Ray tasks (optional: ``pip install -r requirements-ray.txt``).

Each Ray worker is an actor that loads the model pair once and runs chunks of cells with
:func:`fusion.sweep_exec.run_chunk`, the same code as a local run, so a cell's image does not depend
on where it ran. The driver writes every file (the cluster needs no access to ``--out``).

* ``address="local"``: start a local cluster (all CPUs/GPUs of this machine), shut down at the end.
* any other address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``): connect to that cluster.
  Workers load the models from the *same paths* as the driver and import this project from its
  folder: on a multi-node cluster put both on a shared file system (or at the same path on every
  node).
* A Ray session the caller already started (``ray.init(...)``) is used as it is.

Workers: one per GPU when the cluster has GPUs (each takes ``gpus_per_worker``, default 1), else
one per CPU; never more than there are chunks.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

from .loading import PROJECT_ROOT
from .sweep_exec import Chunk, PipelineRecipe
from .sweep_spec import SweepSpec

__all__ = ["RayExecutor", "RAY_MISSING"]

RAY_MISSING = ("--ray needs Ray, which is not installed: pip install -r requirements-ray.txt "
               "(or run without --ray)")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


class _Worker:
    """One model pair, loaded once, reused for every chunk this worker gets."""

    def __init__(self, recipe: PipelineRecipe, threads: int, batch_trajectories: bool):
        import torch

        if recipe.threads is None:
            torch.set_num_threads(max(1, threads))
        self.recipe, self.batch_trajectories = recipe, batch_trajectories
        self.pipe = recipe.load()
        self.chunks = 0

    def run(self, spec: SweepSpec, chunk: Chunk):
        from .sweep_exec import run_chunk

        self.chunks += 1
        return run_chunk(self.pipe, spec, chunk, batch_trajectories=self.batch_trajectories)

    def loaded(self) -> dict:
        return {"pid": os.getpid(), "pipeline": id(self.pipe), "chunks": self.chunks}


class RayExecutor:
    """Runs sweep chunks on Ray actors (see the module doc)."""

    def __init__(self, recipe: PipelineRecipe, address: str = "local", workers: int | None = None,
                 gpus_per_worker: float | None = None, batch_trajectories: bool = False,
                 progress: Callable[[int, int], None] | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"--ray_workers must be >= 1, got {workers}")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise ValueError(f"--ray_gpus_per_worker must be >= 0, got {gpus_per_worker}")
        self.ray = _import_ray()  # a clear error before anything starts
        self.recipe, self.address, self.workers = recipe, address, workers
        self.gpus_per_worker, self.batch_trajectories, self.progress = gpus_per_worker, batch_trajectories, progress
        self._started = False
        self.actors: list = []

    # ---- cluster ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}
        if self.address == "local":
            ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=self.address, runtime_env=env, log_to_driver=False)
        self._started = True

    def _resources(self) -> tuple[int, float, int]:
        """(workers the cluster can hold, GPUs per worker, CPUs per worker)."""
        res = self.ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), int(res.get("CPU", 1))
        per_gpu = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        if per_gpu > 0:
            slots = int(gpus // per_gpu) if gpus >= per_gpu else 0
            if slots == 0:
                raise ValueError(f"--ray: each worker asks for {per_gpu:g} GPU(s) but the cluster has {gpus:g}")
            return slots, per_gpu, max(1, cpus // slots)
        return max(1, cpus), 0.0, 1

    def chunk_size(self, n_cells: int) -> int:
        """Cells per chunk: enough chunks to keep every worker busy (fewer cells per chunk share less)."""
        self._connect()
        slots = self.workers or self._resources()[0]
        return max(1, math.ceil(n_cells / max(1, slots)))

    # ---- work ------------------------------------------------------------------------------------
    def map(self, spec: SweepSpec, chunks: Sequence[Chunk], cancel=None):
        if not chunks:
            return
        self._connect()
        ray = self.ray
        slots, per_gpu, cpus = self._resources()
        n = min(len(chunks), self.workers or slots)
        actor = ray.remote(num_cpus=cpus if per_gpu else 1, num_gpus=per_gpu)(_Worker)
        self.actors = [actor.remote(self.recipe, cpus, self.batch_trajectories) for _ in range(n)]
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        for k, out in enumerate(pool.map_unordered(lambda a, ch: a.run.remote(spec, ch), list(chunks))):
            if self.progress is not None:
                self.progress(k + 1, len(chunks))
            yield out

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - the actor may already be gone with its cluster
                pass
        self.actors = []
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False
