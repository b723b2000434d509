"""Studio settings: command-line flags with environment-variable defaults.

=====================  ==========================  ===============================================
flag                   environment variable        default
=====================  ==========================  ===============================================
--host                 STUDIO_HOST (GRADIO_SERVER_NAME)   127.0.0.1
--port                 STUDIO_PORT (GRADIO_SERVER_PORT)   7860
--models-dir           STUDIO_MODELS_DIR           ./models
--device               STUDIO_DEVICE               cuda when available, else cpu
--precision            STUDIO_PRECISION            auto (fp16 on CUDA, fp32 on CPU)
--memory-budget-gb     STUDIO_MEMORY_BUDGET_GB     60 % of the GPU's memory / 40 % of RAM
--concurrency          STUDIO_CONCURRENCY          1 (GPU jobs at once)
--mccstn-weights       MCCSTN_WEIGHTS              <models-dir>/mccstn, else the shipped assets/mccstn
--threads              STUDIO_THREADS              1 on machines with <= 2 CPUs, else torch's default
--no-preload           (none)                      the default toy models load right after start
--share                (none)                      off
--public               SPACE_ID (set on a Space)   off: public mode (studio/public.py)
--models-config        STUDIO_MODELS_CONFIG        ./models.yaml in public mode, else none
--max-size-factor      STUDIO_MAX_SIZE_FACTOR      2 (image side at most 2x the primary's native size)
--max-side             STUDIO_MAX_SIDE             1024 (image side in pixels, whatever the model)
--max-upload-mp        STUDIO_MAX_UPLOAD_MP        16.8 (decoded megapixels per uploaded image)
=====================  ==========================  ===============================================
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from fusion.paths import ASSETS_DIR, PROJECT_ROOT
from fusion.paths import MCCSTN_WEIGHTS_DIR as SHIPPED_MCCSTN_DIR  # shipped MccSTN weights (toy world)

DEFAULT_MODELS_DIR = PROJECT_ROOT / "models"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"


def _env(*names: str, default=None):
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return v
    return default


@dataclass
class StudioConfig:
    host: str = "127.0.0.1"
    port: int | None = 7860
    models_dir: Path = DEFAULT_MODELS_DIR
    device: str | None = None            # None: cuda when available, else cpu
    precision: str = "auto"              # auto | fp32 | fp16 | bf16
    memory_budget_gb: float | None = None
    concurrency: int = 1
    mccstn_weights: Path | None = None
    style_model: Path | None = None      # diffusion model of the injection engine (default: toy general)
    share: bool = False
    preview_every: int = 0               # 0: about 10 previews per run, within preview_budget
    preview_budget: float = 0.05         # automatic previews take at most this share of a run's time
    threads: int | None = None           # torch CPU threads (None: torch's default)
    preload: bool = False                # load the default models in the background at start
    max_size_factor: float = 2.0         # studio.limits.Limits: image side <= this x native size
    max_side: int = 1024                 # ... and <= this many pixels
    max_upload_megapixels: float = 16.8  # decoded pixels per uploaded image
    extra_engines: list = field(default_factory=list)  # (key, factory) pairs, e.g. for tests
    public: bool = False                 # public mode: offered models only, caps (studio/public.py)
    public_limits: object = None         # studio.public.PublicLimits (None: its defaults)
    models_config: Path | None = None    # models.yaml (studio/space_config.py)
    space: object = None                 # its resolved studio.space_config.SpaceModels (set at start-up)

    # ---- derived ----------------------------------------------------------------------------
    def torch_device(self):
        import torch
        from fusion.loading import default_device
        return torch.device(self.device) if self.device else default_device()

    def torch_dtype(self):
        import torch
        from fusion.loading import default_dtype
        if self.precision == "auto":
            return default_dtype(self.torch_device())
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    def budget_bytes(self) -> int:
        if self.memory_budget_gb is not None:
            return int(float(self.memory_budget_gb) * 2 ** 30)
        dev = self.torch_device()
        if dev.type == "cuda":
            import torch
            total = torch.cuda.get_device_properties(dev).total_memory
            return int(0.6 * total)
        return int(0.4 * _ram_bytes())

    def mccstn_dir(self) -> Path:
        """``--mccstn-weights``; else ``<models-dir>/mccstn`` when it holds weights; else the
        toy-world weights shipped in assets/mccstn (a fresh install has them); else
        ``<models-dir>/mccstn`` (so the "unavailable" message names the folder to fill)."""
        if self.mccstn_weights:
            return Path(self.mccstn_weights)
        user = Path(self.models_dir) / "mccstn"
        from mccstn.checkpoint import find_weights
        if find_weights(user)[0] is None and find_weights(SHIPPED_MCCSTN_DIR)[0] is not None:
            return SHIPPED_MCCSTN_DIR
        return user


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2 ** 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python app.py",
        description="MccSTN Studio: fuse two diffusion models (MagicFusion SNB) with a saliency explorer, "
                    "and transfer styles. Opens a Gradio app in the browser.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=_env("STUDIO_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),
                   help="interface to listen on (0.0.0.0 for every interface); env STUDIO_HOST")
    p.add_argument("--port", type=int, default=int(_env("STUDIO_PORT", "GRADIO_SERVER_PORT", default=7860)),
                   help="port (0: pick a free one); env STUDIO_PORT")
    p.add_argument("--models-dir", type=Path, default=Path(_env("STUDIO_MODELS_DIR", default=DEFAULT_MODELS_DIR)),
                   help="folder scanned for models (diffusers folders, .safetensors, .ckpt) and MccSTN "
                        "weights (<dir>/mccstn); env STUDIO_MODELS_DIR")
    p.add_argument("--device", default=_env("STUDIO_DEVICE"),
                   help="torch device, e.g. cuda, cuda:1, cpu (default: cuda when available); env STUDIO_DEVICE")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"),
                   default=_env("STUDIO_PRECISION", default="auto"),
                   help="weights dtype: auto = fp16 on CUDA, fp32 on CPU; env STUDIO_PRECISION")
    p.add_argument("--memory-budget-gb", type=float, default=_env("STUDIO_MEMORY_BUDGET_GB"),
                   help="memory for warm models; the least recently used are evicted beyond it "
                        "(default: 60%% of GPU memory, or 40%% of RAM on CPU); env STUDIO_MEMORY_BUDGET_GB")
    p.add_argument("--concurrency", type=int, default=int(_env("STUDIO_CONCURRENCY", default=1)),
                   help="model jobs (fusion, style transfer) run at once; more wait in one shared queue; "
                        "env STUDIO_CONCURRENCY")
    p.add_argument("--mccstn-weights", type=Path, default=_env("MCCSTN_WEIGHTS"),
                   help="folder with the MccSTN weights (default: <models-dir>/mccstn when it holds weights, "
                        "else the shipped toy-world weights in assets/mccstn); env MCCSTN_WEIGHTS")
    p.add_argument("--threads", type=int, default=_env("STUDIO_THREADS"),
                   help="torch CPU threads for model work (on a busy machine 1 can be much faster); "
                        "env STUDIO_THREADS (default: 1 on machines with <= 2 CPUs, else torch's choice)")
    p.add_argument("--no-preload", action="store_true",
                   help="do not load the default toy models in the background right after start")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (needs network)")
    p.add_argument("--public", action="store_true",
                   help="public mode: models only from the models folder, the shipped ones and models.yaml "
                        "(no path boxes), caps on steps/samples/uploads, a bounded queue; on by itself when "
                        "SPACE_ID is set (a Hugging Face Space)")
    p.add_argument("--models-config", type=Path, default=_env("STUDIO_MODELS_CONFIG"),
                   help="models.yaml naming the default pair, more models, LoRAs and MccSTN weights "
                        "(default: ./models.yaml in public mode); env STUDIO_MODELS_CONFIG")
    p.add_argument("--max-size-factor", type=float, default=float(_env("STUDIO_MAX_SIZE_FACTOR", default=2.0)),
                   help="largest image side as a multiple of the primary model's native size; env "
                        "STUDIO_MAX_SIZE_FACTOR")
    p.add_argument("--max-side", type=int, default=int(_env("STUDIO_MAX_SIDE", default=1024)),
                   help="largest image side in pixels, whatever the model; env STUDIO_MAX_SIDE")
    p.add_argument("--max-upload-mp", type=float, default=float(_env("STUDIO_MAX_UPLOAD_MP", default=16.8)),
                   help="largest uploaded image in decoded megapixels (checked from the file header before "
                        "decoding); env STUDIO_MAX_UPLOAD_MP")
    return p


def config_from_args(argv: list[str] | None = None) -> StudioConfig:
    a = build_parser().parse_args(argv)
    if a.concurrency < 1:
        build_parser().error(f"--concurrency must be >= 1, got {a.concurrency}")
    for flag in ("max_size_factor", "max_side", "max_upload_mp"):
        v = getattr(a, flag)
        if not v > 0 or v == float("inf"):
            build_parser().error(f"--{flag.replace('_', '-')} must be a finite number > 0, got {v}")
    return StudioConfig(host=a.host, port=a.port or None, models_dir=Path(a.models_dir), device=a.device,
                        precision=a.precision,
                        memory_budget_gb=None if a.memory_budget_gb is None else float(a.memory_budget_gb),
                        concurrency=a.concurrency, mccstn_weights=a.mccstn_weights, share=a.share,
                        threads=int(a.threads) if a.threads else None, preload=not a.no_preload,
                        max_size_factor=a.max_size_factor, max_side=a.max_side,
                        max_upload_megapixels=a.max_upload_mp, **_public_settings(a))


def _public_settings(a) -> dict:
    """public / models_config from the flags (the file itself is read at start-up, see app.main)."""
    from .public import public_requested
    public = public_requested(a.public)
    cfg_path = a.models_config
    if cfg_path is None and public and (PROJECT_ROOT / "models.yaml").is_file():
        cfg_path = PROJECT_ROOT / "models.yaml"
    return {"public": public, "models_config": Path(cfg_path) if cfg_path else None}
