"""Offline model loading: diffusers folders and single-file SD 1.x checkpoints.

* A diffusers folder (``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``) loads component by component, safetensors first.
* A single ``.safetensors`` or ``.ckpt`` file in the original LDM/CompVis key layout is
  converted with diffusers' converters, using component configs from a local config folder
  (default: the SD 1.x configs shipped in ``assets/configs/sd1``). ``.ckpt`` files are read
  with ``torch.load(weights_only=True)``: a pickle that would run code is refused, never
  executed.

Nothing here reaches the network. Loading never reads outside the paths it is given and the
project's own assets.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .paths import PROJECT_ROOT, SD1_CONFIG_DIR  # noqa: F401  (re-exported)
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
#: CLIP position ids: a buffer some transformers versions save, rebuilt here (either layout)
_POSITION_IDS = ("text_model.embeddings.position_ids", "embeddings.position_ids")

#: DDIM settings equal to the LDM sampler (``ldm/models/diffusion/ddim.py``): the reference's.
LDM_DDIM = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
#: SD 1.x training noise schedule (``v1-inference.yaml``): used when a model has no scheduler config.
SD1_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

__all__ = [
    "ModelLoadError", "IncompatibleModelsError", "DiffusionModel", "load_model",
    "read_state_dict", "check_fusable", "share_identical_components", "default_device",
    "default_dtype", "is_model_source",
]


class ModelLoadError(ValueError):
    """A model path that is missing, unreadable, corrupt, unsafe or not an SD 1.x-family model."""


class IncompatibleModelsError(ValueError):
    """Two models that cannot be fused (different latent space or text-conditioning width)."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """Half precision on CUDA, float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def encode_text(tokenizer, text_encoder, prompts) -> torch.Tensor:
    """CLIP text embeddings (last hidden state) of ``prompts``, padded to the tokenizer's length."""
    tok = tokenizer(list(prompts), padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt")
    return text_encoder(tok.input_ids.to(next(text_encoder.parameters()).device))[0]


@dataclass(eq=False)
class DiffusionModel:
    """One text-to-image latent diffusion model, held as its components.

    ``scheduler_config`` is the model's noise schedule; the sampler builds DDIM timesteps and
    alphas from it. ``prompt_cache`` keeps text embeddings per prompt (a request encodes each
    prompt once; repeated requests reuse them).
    """

    name: str
    source: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    prompt_cache: dict = field(default_factory=dict, repr=False)
    prompt_cache_size: int = 64

    # ---- what the fusion code needs to know about the model --------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def text_hidden_size(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def native_size(self) -> int:
        """The image size the UNet was configured for (sample_size x VAE factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    # ---- prompts ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings (last hidden state), one row per prompt, cached per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.prompt_cache]
        if missing:
            emb = encode_text(self.tokenizer, self.text_encoder, missing).to(self.dtype)
            for p, e in zip(missing, emb):
                self.prompt_cache[p] = e
            while len(self.prompt_cache) > self.prompt_cache_size:
                self.prompt_cache.pop(next(iter(self.prompt_cache)))
        return torch.stack([self.prompt_cache[p] for p in prompts])

    def to(self, device=None, dtype=None) -> "DiffusionModel":
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device=device, dtype=dtype)
        self.prompt_cache.clear()
        return self

    def component_bytes(self) -> dict[str, int]:
        return {n: sum(p.numel() * p.element_size() for p in getattr(self, n).parameters())
                for n in ("unet", "vae", "text_encoder")}


# ---------------------------------------------------------------------------------------------
# reading weights safely
# ---------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without running code.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``,
    which refuses pickles that reference arbitrary callables. A wrapping ``{"state_dict": ...}``
    is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: not a readable .safetensors file ({e})") from None
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
        except pickle.UnpicklingError as e:
            if "global" not in str(e).lower():  # not a refused callable: just not a pickle of tensors
                raise ModelLoadError(
                    f"{path}: refused to load: not a readable checkpoint of plain tensors (corrupt, or a pickle "
                    f"the safe loader cannot read); nothing in it was executed") from None
            raise ModelLoadError(
                f"{path}: refused to load. This checkpoint is a pickle that asks to run code or build "
                f"objects other than tensors, which could execute arbitrary code; it was not executed. "
                f"Convert it to .safetensors with a tool you trust, or use a diffusers folder. "
                f"(weights_only said: {str(e).splitlines()[0][:200]})") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
            raise ModelLoadError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")
    return sd


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


# ---------------------------------------------------------------------------------------------
# building models
# ---------------------------------------------------------------------------------------------
def is_model_source(path: str | os.PathLike) -> bool:
    """True for a diffusers pipeline folder or a single checkpoint file."""
    p = Path(path)
    if p.is_dir():
        return (p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file()
    return p.is_file() and p.suffix in SINGLE_FILE_SUFFIXES


def load_model(
    source: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config_dir: str | os.PathLike | None = None,
    name: str | None = None,
    use_ema: bool = False,
) -> DiffusionModel:
    """Load a model from a diffusers folder or a single ``.safetensors``/``.ckpt`` file.

    ``config_dir`` (single files only) is a diffusers-layout folder of component configs and
    the tokenizer; default: the shipped SD 1.x configs. ``use_ema`` (single files only): take
    the UNet from the file's EMA copies (``model_ema.*``) instead of ``model.diffusion_model.*``
    (default: the EMA copies are ignored). ``device`` defaults to CUDA when present, ``dtype``
    to fp16 on CUDA and fp32 elsewhere.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path not found: {path}")
    if path.is_dir():
        model = _load_folder(path, variant="fp16" if dtype == torch.float16 else None)
    elif path.suffix in SINGLE_FILE_SUFFIXES:
        model = _load_single_file(path, Path(config_dir) if config_dir else SD1_CONFIG_DIR, use_ema)
    else:
        raise ModelLoadError(
            f"{path}: not a model. Accepted: a diffusers folder (with model_index.json) or a single "
            f"checkpoint file ({', '.join(SINGLE_FILE_SUFFIXES)})")
    model.name = name or path.stem if path.is_file() else (name or path.name)
    for m in (model.unet, model.vae, model.text_encoder):
        m.eval().requires_grad_(False)
    return model.to(device, dtype)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable config ({e})") from None


def _scheduler_config(folder: Path) -> dict:
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    keep = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "trained_betas",
            "prediction_type")
    out = {k: cfg[k] for k in keep if cfg.get(k) is not None}
    for k, v in SD1_BETAS.items():
        out.setdefault(k, v)
    out.update(LDM_DDIM)
    return out


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer
    tok_dir = folder / "tokenizer"
    if not (tok_dir / "vocab.json").is_file():
        raise ModelLoadError(f"{folder}: no tokenizer/vocab.json")
    return CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)


def _weights_file(sub: Path, stems: tuple[str, ...], variant: str | None = None) -> Path:
    """The component's weights: ``<stem>.<variant>.safetensors`` (diffusers' variant naming) when
    asked for and present, else the default ``<stem>.safetensors`` / ``.bin``."""
    for stem in stems:
        if variant and (sub / f"{stem}.{variant}.safetensors").is_file():
            return sub / f"{stem}.{variant}.safetensors"
    for stem in stems:
        for ext in (".safetensors", ".bin"):
            p = sub / f"{stem}{ext}"
            if p.is_file():
                return p
    raise ModelLoadError(f"{sub}: no weights file ({' or '.join(s + '.safetensors' for s in stems)})")


def _build(cls, config: dict, state_dict: dict, where: str, ignore: tuple[str, ...] = (),
           fit_keys: Callable[[dict, set], dict] | None = None) -> torch.nn.Module:
    """Instantiate ``cls`` on the meta device and assign ``state_dict`` strictly.
    ``fit_keys(state_dict, expected_names)``: renames the file's keys to the module's own layout
    first (e.g. the two CLIPTextModel layouts)."""
    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            module = cls.from_config(config)
        else:
            module = cls(config)
    expected = module.state_dict()
    if fit_keys is not None:
        state_dict = fit_keys(state_dict, set(expected))
    state_dict = {k: v for k, v in state_dict.items() if k not in ignore}
    missing = [k for k in expected if k not in state_dict and k not in ignore]
    unexpected = [k for k in state_dict if k not in expected]
    bad_shape = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:3]}")
        if bad_shape:
            parts.append(f"shape mismatch, e.g. {bad_shape[:2]}")
        raise ModelLoadError(f"{where}: weights do not fit the {cls.__name__} config: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=False, assign=True)
    # buffers not stored in checkpoints (e.g. CLIP position ids) are rebuilt on the CPU
    for mod_name, mod in module.named_modules():
        for buf_name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                full = f"{mod_name}.{buf_name}" if mod_name else buf_name
                if full.endswith("position_ids"):
                    mod.register_buffer(buf_name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(),
                                        persistent=False)
                else:
                    raise ModelLoadError(f"{where}: buffer {full} has no value in the checkpoint")
    return module


def _load_component(folder: Path, sub: str, cls, stems: tuple[str, ...], variant: str | None = None) -> torch.nn.Module:
    from safetensors.torch import load_file
    cfg_path = folder / sub / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{folder}: missing {sub}/config.json")
    config = _read_json(cfg_path)
    wpath = _weights_file(folder / sub, stems, variant)
    if wpath.suffix == ".safetensors":
        try:
            sd = load_file(str(wpath))
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise ModelLoadError(f"{wpath}: not a readable .safetensors file ({e})") from None
    else:
        sd = read_state_dict(wpath)
    if sub == "text_encoder":
        from transformers import CLIPTextConfig
        config = CLIPTextConfig(**{k: v for k, v in config.items() if not k.startswith("_")})
        from fusion.single_file import fit_text_encoder_keys
        sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
        return _build(cls, config, sd, str(wpath), ignore=_POSITION_IDS, fit_keys=fit_text_encoder_keys)
    return _build(cls, config, sd, str(wpath))


def _load_folder(folder: Path, variant: str | None = None) -> DiffusionModel:
    """``variant="fp16"``: read the half-precision files where the folder has them (half the
    bytes when the model is to run in fp16 anyway; by diffusers' convention they hold the same
    weights rounded to fp16)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise ModelLoadError(
                f"{folder}: not a diffusers Stable Diffusion folder (missing {sub}/); expected "
                f"model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/")
    unet = _load_component(folder, "unet", UNet2DConditionModel, ("diffusion_pytorch_model",), variant)
    vae = _load_component(folder, "vae", AutoencoderKL, ("diffusion_pytorch_model",), variant)
    text_encoder = _load_component(folder, "text_encoder", CLIPTextModel, ("model", "pytorch_model"), variant)
    return DiffusionModel(name=folder.name, source=str(folder), unet=unet, vae=vae,
                          text_encoder=text_encoder, tokenizer=_load_tokenizer(folder),
                          scheduler_config=_scheduler_config(folder))


def _load_single_file(path: Path, config_dir: Path, use_ema: bool = False) -> DiffusionModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from fusion.single_file import convert_ldm_state_dict, fit_text_encoder_keys

    if not config_dir.is_dir():
        raise ModelLoadError(f"config folder not found: {config_dir}")
    sd = read_state_dict(path)
    unet_cfg, unet_sd, vae_cfg, vae_sd, te_cfg, te_sd = convert_ldm_state_dict(sd, config_dir, str(path), use_ema)
    del sd
    unet = _build(UNet2DConditionModel, unet_cfg, unet_sd, f"{path} (UNet, config {config_dir}/unet)")
    vae = _build(AutoencoderKL, vae_cfg, vae_sd, f"{path} (VAE, config {config_dir}/vae)")
    text_encoder = _build(CLIPTextModel, te_cfg, te_sd, f"{path} (text encoder)", ignore=_POSITION_IDS,
                          fit_keys=fit_text_encoder_keys)
    return DiffusionModel(name=path.stem, source=str(path), unet=unet, vae=vae, text_encoder=text_encoder,
                          tokenizer=_load_tokenizer(config_dir), scheduler_config=_scheduler_config(config_dir))


# ---------------------------------------------------------------------------------------------
# two models together
# ---------------------------------------------------------------------------------------------
def check_fusable(model0: DiffusionModel, model1: DiffusionModel) -> None:
    """Raise IncompatibleModelsError listing every property that differs and matters."""
    problems = []

    def cmp(label, a, b):
        if a != b:
            problems.append(f"{label}: {model0.name} has {a}, {model1.name} has {b}")

    cmp("latent channels (UNet in_channels)", model0.latent_channels, model1.latent_channels)
    cmp("UNet out_channels", model0.unet.config.out_channels, model1.unet.config.out_channels)
    cmp("cross-attention width (text embedding size)", model0.cross_attention_dim, model1.cross_attention_dim)
    cmp("VAE downsampling factor", model0.vae_scale_factor, model1.vae_scale_factor)
    cmp("VAE latent channels", model0.vae.config.latent_channels, model1.vae.config.latent_channels)
    for m in (model0, model1):
        if m.text_hidden_size != m.cross_attention_dim:
            problems.append(f"{m.name}: text encoder width {m.text_hidden_size} does not match its UNet's "
                            f"cross-attention width {m.cross_attention_dim}")
    if problems:
        raise IncompatibleModelsError(
            "these two models cannot be fused (they are not of one family):\n  - " + "\n  - ".join(problems))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def share_identical_components(model0: DiffusionModel, model1: DiffusionModel,
                               names: tuple[str, ...] = ("vae", "text_encoder", "unet")) -> list[str]:
    """Make ``model1`` use ``model0``'s component objects where the weights are bit-identical
    (typically the VAE and text encoder of a fine-tuned model); returns the names shared."""
    shared = []
    for n in names:
        a, b = getattr(model0, n), getattr(model1, n)
        if a is b or _same_weights(a, b):
            setattr(model1, n, a)
            shared.append(n)
    if "text_encoder" in shared and _tokenizers_equal(model0.tokenizer, model1.tokenizer):
        model1.tokenizer = model0.tokenizer
        model1.prompt_cache = model0.prompt_cache
    return shared


def _tokenizers_equal(t0, t1) -> bool:
    return (t0 is t1) or (t0.get_vocab() == t1.get_vocab() and t0.model_max_length == t1.model_max_length)


def fingerprint(module: torch.nn.Module) -> str:
    """A content hash of a module's tensors (names, shapes, dtypes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(str((tuple(v.shape), str(v.dtype))).encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
