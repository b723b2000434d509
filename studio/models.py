"""Which models the pickers offer: the embedded toy models, then whatever the models folder holds.

Discovery only looks at file names and small JSON configs (no weights are read), so it is
cheap enough to run on every refresh.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fusion.paths import PROJECT_ROOT, SD1_CONFIG_DIR, TOY_EXPERT, TOY_GENERAL, TOY_LORA
from fusion.paths import TOY_MODELS_DIR as TOY_DIR

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
#: sub-folders of the models folder that hold other things than diffusion models
NOT_DIFFUSION = ("mccstn", "loras")
#: the LoRA picker's folder, under the models folder; and the embedded toy LoRA
LORA_SUBDIR = "loras"
#: (TOY_LORA: the embedded toy LoRA, from fusion.paths)

__all__ = ["ModelChoice", "discover", "discover_loras", "resolve_lora", "resolve_model", "geometry", "Geometry",
           "toy_models_present",
           "TOY_GENERAL", "TOY_EXPERT", "missing_toy_message"]


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: str
    kind: str  # "toy" | "folder" | "file"


def _is_diffusers_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file())


def toy_models_present() -> bool:
    return _is_diffusers_folder(TOY_GENERAL) and _is_diffusers_folder(TOY_EXPERT)


def missing_toy_message() -> str:
    return (f"The embedded toy models are missing ({TOY_GENERAL.relative_to(PROJECT_ROOT)}, "
            f"{TOY_EXPERT.relative_to(PROJECT_ROOT)}). Train them with `python -m toyworld.train --stage all` "
            f"(about 2 h on a CPU), or put SD 1.x models in the models folder and pick them above.")


def discover(models_dir: Path | str | None) -> list[ModelChoice]:
    """Toy models first (when present), then diffusers folders (up to two levels deep) and
    .safetensors/.ckpt files in ``models_dir``, sorted by name."""
    out: list[ModelChoice] = []
    for p, what in ((TOY_GENERAL, "toy general"), (TOY_EXPERT, "toy cartoon expert")):
        if _is_diffusers_folder(p):
            out.append(ModelChoice(f"{p.name} ({what}, embedded)", str(p), "toy"))
    if models_dir is None:
        return out
    root = Path(models_dir).expanduser()
    if not root.is_dir():
        return out
    found: list[ModelChoice] = []

    def scan(folder: Path, depth: int):
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or (depth == 0 and e.name in NOT_DIFFUSION):
                continue
            if _is_diffusers_folder(e):
                found.append(ModelChoice(str(e.relative_to(root)), str(e), "folder"))
            elif e.is_file() and e.suffix in CHECKPOINT_SUFFIXES:
                found.append(ModelChoice(str(e.relative_to(root)), str(e), "file"))
            elif e.is_dir() and depth < 1:
                scan(e, depth + 1)

    scan(root, 0)
    toy = {c.path for c in out}
    return out + [c for c in found if str(Path(c.path).resolve()) not in {str(Path(t).resolve()) for t in toy}]


def resolve_model(choice: str | None, path_box: str | None, role: str) -> Path:
    """The model to use: the path box when filled, else the picker's value. A ValueError with a
    one-line reason when neither names a model."""
    text = (path_box or "").strip() or (choice or "").strip()
    if not text:
        raise ValueError(f"{role} model: pick one, or type a path "
                         f"(a diffusers folder or a .safetensors/.ckpt file)")
    from .limits import check_model_path
    p = Path(check_model_path(text, role)).expanduser()
    if not p.exists():
        hint = ""
        if p.resolve() in (TOY_GENERAL.resolve(), TOY_EXPERT.resolve()):
            hint = " " + missing_toy_message()
        raise ValueError(f"{role} model not found: {p}.{hint}")
    if not (_is_diffusers_folder(p) or (p.is_file() and p.suffix in CHECKPOINT_SUFFIXES + (".pt", ".pth", ".bin"))):
        raise ValueError(f"{role} model: {p} is not a model (expected a diffusers folder with model_index.json, "
                         f"or a .safetensors/.ckpt file)")
    return p


@dataclass(frozen=True)
class Geometry:
    """Image sizes a model supports: ``native`` (its training size) and a slider range in
    multiples of ``step`` (VAE factor x UNet downsampling)."""

    native: int
    step: int
    minimum: int
    maximum: int


#: the embedded toy models: 16x16 latents, VAE factor 4, three UNet levels
TOY_GEOMETRY = Geometry(native=64, step=16, minimum=32, maximum=128)
#: what the size sliders accept from API callers (the UI narrows it to the primary model's range)
SIZE_LIMITS = (8, 2048)


def _json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def geometry(path: Path | str | None) -> Geometry:
    """From the model's unet/vae configs (single files: the shipped SD 1.x configs)."""
    p = Path(path) if path else None
    if p is not None and not p.exists() and p.resolve() in (TOY_GENERAL.resolve(), TOY_EXPERT.resolve()):
        return TOY_GEOMETRY  # not trained yet: the toy models' known layout
    cfg_root = p if (p is not None and p.is_dir()) else SD1_CONFIG_DIR
    unet = _json(cfg_root / "unet" / "config.json")
    vae = _json(cfg_root / "vae" / "config.json")
    vae_factor = 2 ** (len(vae.get("block_out_channels", (1, 2, 3, 4))) - 1)
    sample = int(unet.get("sample_size", 64))
    if isinstance(unet.get("sample_size"), (list, tuple)):
        sample = int(unet["sample_size"][0])
    downs = len(unet.get("down_block_types", ("a", "b", "c", "d")))
    step = vae_factor * 2 ** max(downs - 1, 0)
    native = sample * vae_factor
    minimum = max(step, (native // 2) // step * step)
    maximum = max(native, native * 2 // step * step)
    return Geometry(native=native, step=step, minimum=minimum, maximum=maximum)


def discover_loras(models_dir: Path | str | None) -> list[ModelChoice]:
    """The embedded toy LoRA (when present), then the LoRA files in ``models_dir/loras/`` (and its
    sub-folders, one level), sorted by name. File names only: nothing is read."""
    out = [ModelChoice(f"{TOY_LORA.parent.name} (toy cartoon LoRA for toy-general, embedded)", str(TOY_LORA), "toy")
           ] if TOY_LORA.is_file() else []
    if models_dir is None:
        return out
    root = Path(models_dir).expanduser() / LORA_SUBDIR
    if not root.is_dir():
        return out
    files = sorted(p for pat in ("*.safetensors", "*/*.safetensors") for p in root.glob(pat)
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    return out + [ModelChoice(str(p.relative_to(root)), str(p), "file") for p in files]


def resolve_lora(choice: str | None, path_box: str | None, role: str) -> Path | None:
    """The LoRA file for one side: the path box when filled, else the picker's value, else None
    (no LoRA). A ValueError naming the side when the file is missing."""
    text = (path_box or "").strip() or (choice or "").strip()
    if not text:
        return None
    p = Path(text).expanduser()
    if p.is_dir() and (p / "pytorch_lora_weights.safetensors").is_file():
        p = p / "pytorch_lora_weights.safetensors"
    if not p.is_file():
        raise ValueError(f"{role} LoRA not found: {p} (a .safetensors LoRA file)")
    return p
