"""LoRA experts: a LoRA file applied to an SD 1.x model, through diffusers' LoRA loading (peft).

Reading and checking LoRA files (diffusers/peft and kohya formats, refused kinds and families):
:mod:`fusion.lora_files`; its names are re-exported here. This module applies a checked file
to a model and switches adapters per side.

Text-encoder LoRA keys are **applied**: the LoRA side then gets its own copy of the text encoder
(the base side keeps the original), so its prompts are encoded with the adapted encoder.

Held once: when both sides are the same base model, one UNet carries the adapter(s). Each side is
a :class:`LoraModel` view naming the adapter its passes use (``None`` = adapters disabled), and
:func:`denoiser_for` gives each side its own denoiser object, which switches the UNet's adapters
with peft's enable/disable (only when the side changes, never per step when it does not). The
sampler shares and batches evaluations by denoiser identity, so the two sides never mix.
"""
from __future__ import annotations

import copy
import hashlib
import os
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from .loading import DiffusionModel, load_model
from .lora_files import (FAMILY_WIDTHS, LORA_SUFFIXES, UNSUPPORTED_KINDS, LoraError, LoraFile,  # noqa: F401
                         check_lora, read_lora)
from .sampler import UNetDenoiser
from .settings import LoraSettings

__all__ = ["LoraError", "LoraSettings", "LoraFile", "LoraModel", "read_lora", "check_lora", "apply_lora",
           "load_models", "attach_loras", "adapter_name_for", "denoiser_for", "AdapterSwitch", "LORA_SUFFIXES"]


@dataclass(eq=False)
class LoraModel(DiffusionModel):
    """A model view whose UNet passes run with peft adapter ``unet_adapter`` enabled (None: all
    adapters disabled). ``loras``: (path, scale) of what was applied."""

    unet_adapter: str | None = None
    loras: tuple = ()



# ---------------------------------------------------------------------------------------------
# applying
# ---------------------------------------------------------------------------------------------
def _tuner_layers(module: torch.nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def _set_scale(module: torch.nn.Module, adapter: str, scale: float) -> None:
    for layer in _tuner_layers(module):
        if hasattr(layer, "set_scale"):
            layer.set_scale(adapter, scale)


def view(model: DiffusionModel, **changes) -> LoraModel:
    """A LoraModel holding ``model``'s component objects (nothing copied), with ``changes``."""
    values = {f.name: getattr(model, f.name) for f in fields(LoraModel) if hasattr(model, f.name)}
    return LoraModel(**{**values, **changes})


def adapter_name_for(path: str | os.PathLike, scale: float) -> str:
    """A peft adapter name that stands for this file (path, size, mtime) at this scale: a UNet that
    already carries it (a warm model in the app) reuses it instead of injecting it again."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    h = hashlib.blake2b(f"{p}|{st.st_size}|{st.st_mtime_ns}|{float(scale)!r}".encode(), digest_size=6)
    return f"lora_{h.hexdigest()}"


def apply_lora(model: DiffusionModel, path: "str | os.PathLike | LoraFile", scale: float = 1.0,
               adapter_name: str | None = None) -> LoraModel:
    """Inject the LoRA at ``path`` (or an already read :class:`LoraFile`) into ``model.unet`` as a
    peft adapter (in place: other views of this UNet keep running without it) and return the view
    that runs with it. The adapter is
    named by :func:`adapter_name_for` unless ``adapter_name`` is given; a UNet that already has
    the derived adapter reuses it. Text-encoder keys go into a copy of the text encoder owned by
    the returned view."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as Loader

    lora = path if isinstance(path, LoraFile) else read_lora(path)
    check_lora(lora, model)
    present = getattr(model.unet, "peft_config", None) or {}
    reuse = adapter_name is None and adapter_name_for(lora.path, scale) in present
    adapter_name = adapter_name or adapter_name_for(lora.path, scale)
    if adapter_name in present and not reuse:
        raise LoraError(f"{lora.path}: adapter name {adapter_name!r} is already in use on this UNet")
    sd, alphas = lora.state_dict(), lora.network_alphas
    switch = AdapterSwitch.of(model.unet)
    try:
        if lora.unet and not reuse:
            Loader.load_lora_into_unet({k: v for k, v in sd.items() if k.startswith("unet.")},
                                       _alphas(alphas, "unet."), model.unet, adapter_name=adapter_name,
                                       metadata=_part_meta(lora.metadata, "unet"))
            _set_scale(model.unet, adapter_name, scale)
        te = model.text_encoder
        if lora.text_encoder:
            te = copy.deepcopy(model.text_encoder)
            Loader.load_lora_into_text_encoder({k: v for k, v in sd.items() if k.startswith("text_encoder.")},
                                               _alphas(alphas, "text_encoder."), te, adapter_name=adapter_name,
                                               metadata=_part_meta(lora.metadata, "text_encoder"))
            _set_scale(te, adapter_name, scale)
            te.requires_grad_(False)
    except (ValueError, KeyError, RuntimeError) as e:
        if not reuse and adapter_name in (getattr(model.unet, "peft_config", None) or {}):
            model.unet.delete_adapters(adapter_name)
        raise LoraError(f"{lora.path}: diffusers could not apply this LoRA ({str(e).strip()[:300]})") from None
    try:
        if not reuse:
            _check_injected(lora.path, "UNet", lora.unet, model.unet, adapter_name)
        if lora.text_encoder:
            _check_injected(lora.path, "text encoder", lora.text_encoder, te, adapter_name)
    except LoraError:
        if lora.unet and not reuse:
            model.unet.delete_adapters(adapter_name)
        raise
    model.unet.requires_grad_(False)
    switch.forget()
    changes = dict(unet_adapter=adapter_name if lora.unet else getattr(model, "unet_adapter", None),
                   loras=tuple(getattr(model, "loras", ())) + ((str(lora.path), float(scale)),),
                   name=f"{model.name}+{lora.path.stem}")
    if te is not model.text_encoder:
        changes.update(text_encoder=te, prompt_cache={})
    return view(model, **changes)


def _check_injected(path: Path, label: str, part: dict, module: torch.nn.Module, adapter: str) -> None:
    """Every LoRA matrix of the file must now sit in the model, equal to the file's (peft warns
    and carries on when it drops some)."""
    if label == "text encoder" and not hasattr(module, "text_model"):
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    params = dict(module.named_parameters())
    lost = []
    for k, v in part.items():
        tag = "lora_A" if ".lora_A." in k else "lora_B"
        name = k.replace(f".{tag}.weight", f".{tag}.{adapter}.weight")
        p = params.get(name)
        if p is None or p.shape != v.shape or not torch.equal(p.detach().cpu(), v.to(p.dtype)):
            lost.append(k)
    if lost:
        raise LoraError(f"{path}: {len(lost)} {label} LoRA tensor(s) did not load into the model, e.g. {lost[:3]}")


def _part_meta(meta: dict | None, prefix: str) -> dict | None:
    """The header config of one component (keys ``unet.<field>``), or None when the file has none."""
    if not meta:
        return None
    return {k: v for k, v in meta.items() if k.startswith(f"{prefix}.")} or None


def _alphas(alphas: dict | None, prefix: str) -> dict | None:
    if not alphas:
        return None
    picked = {k: v for k, v in alphas.items() if k.startswith(prefix)}
    return picked or None


def load_models(model0: str | os.PathLike, model1: str | os.PathLike, lora: LoraSettings | None = None,
                loader: Callable | None = None, **load_kwargs) -> tuple[DiffusionModel, DiffusionModel]:
    """Load both sides, reading a base model once when both paths name it, and apply the LoRAs.

    Returns (general, expert), both :class:`LoraModel` views when any LoRA is given (the side
    without one runs with adapters disabled). With one base path the two views share one UNet, VAE and text
    encoder (the text encoder is copied only for a LoRA with text-encoder keys). Every LoRA file is
    read and checked against its model before anything is injected."""
    lora, loader = lora or LoraSettings(), loader or load_model
    (p0, s0), (p1, s1) = lora.side(0), lora.side(1)
    files = {p: read_lora(p) for p in (p0, p1) if p is not None}  # a bad file fails before the (slow) loads
    base0 = loader(model0, **load_kwargs)
    same = _same_source(model0, model1)
    base1 = base0 if same else loader(model1, **load_kwargs)
    if p0 is None and p1 is None:
        return base0, (view(base1) if same else base1)
    return attach_loras(base0, base1, lora, files)


def attach_loras(base0: DiffusionModel, base1: DiffusionModel, lora: LoraSettings,
                 files: dict | None = None) -> tuple[LoraModel, LoraModel]:
    """The (general, expert) views of two loaded models with ``lora`` applied; both LoRA files are
    checked against their models before either is injected. ``files``: path -> :class:`LoraFile`
    already read (each file is read once)."""
    (p0, s0), (p1, s1) = lora.side(0), lora.side(1)
    files = dict(files or {})
    for p, base in ((p0, base0), (p1, base1)):
        if p is not None:
            files.setdefault(p, read_lora(p))
            check_lora(files[p], base)
    m0 = apply_lora(base0, files[p0], s0) if p0 else view(base0, unet_adapter=None, loras=())
    m1 = apply_lora(base1, files[p1], s1) if p1 else view(base1, unet_adapter=None, loras=())
    return m0, m1


def _same_source(a, b) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


# ---------------------------------------------------------------------------------------------
# running: one UNet, the adapter switched per side
# ---------------------------------------------------------------------------------------------
class AdapterSwitch:
    """Which adapter a UNet's peft layers run with; changes them only when asked for another.

    One switch per UNet (:meth:`of`). It keeps the list of the UNet's peft tuner layers and calls
    their own ``enable_adapters`` / ``set_adapter`` (peft's layer API): diffusers' model-level
    ``enable_adapters``/``disable_adapters`` walk every module and re-check the peft version on
    each call, which cost ~40% of a toy UNet pass per switch. ``switches`` counts real changes.
    """

    _by_unet: "weakref.WeakKeyDictionary[torch.nn.Module, AdapterSwitch]" = weakref.WeakKeyDictionary()
    _UNKNOWN = object()

    def __init__(self, unet: torch.nn.Module):
        self.unet = weakref.ref(unet)
        self.active = self._UNKNOWN
        self.layers: list | None = None
        self.switches = 0

    @classmethod
    def of(cls, unet: torch.nn.Module) -> "AdapterSwitch":
        s = cls._by_unet.get(unet)
        if s is None:
            s = cls._by_unet[unet] = cls(unet)
        return s

    def forget(self) -> None:
        """The layers changed outside the switch (an adapter was added): set them on the next call."""
        self.active = self._UNKNOWN
        self.layers = None

    def activate(self, adapter: str | None) -> None:
        if adapter == self.active:
            return
        if self.layers is None:
            self.layers = _tuner_layers(self.unet())
        for layer in self.layers:
            if adapter is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(adapter, inference_mode=True)  # frozen: this is inference only
        self.active = adapter
        self.switches += 1


class AdapterDenoiser(UNetDenoiser):
    """A UNetDenoiser for one side of a shared, adapter-carrying UNet: sets that side's adapter
    (None = disabled) before each pass."""

    def __init__(self, unet, alphas, prediction_type="epsilon", name="unet", adapter: str | None = None):
        super().__init__(unet, alphas, prediction_type, name)
        self.adapter = adapter
        self.switch = AdapterSwitch.of(unet)

    def __call__(self, x, t, context):
        self.switch.activate(self.adapter)
        return super().__call__(x, t, context)


def denoiser_for(model: DiffusionModel, alphas: torch.Tensor, name: str) -> UNetDenoiser:
    """The denoiser of ``model``'s side: an :class:`AdapterDenoiser` when its UNet carries peft
    adapters (``model.unet_adapter`` picks the one to run, None = none), else a plain one."""
    adapter = getattr(model, "unet_adapter", None)
    if getattr(model.unet, "peft_config", None):
        return AdapterDenoiser(model.unet, alphas, model.prediction_type, name, adapter)
    if adapter is not None:
        raise ValueError(f"{model.name}: names adapter {adapter!r} but its UNet carries no adapters")
    return UNetDenoiser(model.unet, alphas, model.prediction_type, name)


def adapter_key(model: DiffusionModel) -> tuple[int, str | None]:
    """What makes two sides' UNet passes the same computation: the UNet object and its adapter."""
    return id(model.unet), getattr(model, "unet_adapter", None)
