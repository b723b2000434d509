"""LoRA experts: a LoRA file applied to an SD 1.x model, through diffusers' LoRA loading (peft).

Accepted files (``.safetensors``; other suffixes via ``torch.load(weights_only=True)``):

* diffusers/peft LoRA files (``save_lora_weights``): ``unet.<module>.lora_A.weight`` /
  ``lora_B.weight`` (and the older ``unet.<module>.lora.down.weight`` spelling), optional
  ``text_encoder.*`` keys;
* kohya-ss / A1111 files: ``lora_unet_<module_with_underscores>.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha``, optional ``lora_te_*`` text-encoder keys.

Refused before anything is injected, each with one error naming the file and what does not fit:
LoRA kinds diffusers cannot convert (LoHa ``hada_*``, LoKr ``lokr_*``, OFT, DoRA ``dora_scale``,
which diffusers would silently drop), files for another family (a second text encoder or
SGM block names: SDXL; a cross-attention/text width that is not the model's: SD 2.x is 1024,
SDXL 2048), and target layers the model does not have (or whose shapes differ).

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

from .loading import DiffusionModel, ModelLoadError, load_model, read_state_dict
from .sampler import UNetDenoiser

__all__ = ["LoraError", "LoraSettings", "LoraFile", "LoraModel", "read_lora", "check_lora", "apply_lora",
           "load_models", "attach_loras", "adapter_name_for", "denoiser_for", "AdapterSwitch", "LORA_SUFFIXES"]

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
#: cross-attention (text) widths of the latent-diffusion families, for error messages
FAMILY_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 1280: "SDXL (second text encoder)"}
#: key fragments of adapter kinds diffusers' LoRA loading cannot convert for SD 1.x
UNSUPPORTED_KINDS = (("hada_", "LoHa (LyCORIS Hadamard product)"), ("lokr_", "LoKr (LyCORIS Kronecker product)"),
                     ("oft_", "OFT"), ("dora_scale", "DoRA (diffusers would drop its magnitude vectors)"),
                     ("lora_mid", "LoCon with CP decomposition (lora_mid)"))


class LoraError(ModelLoadError):
    """A LoRA file that is unreadable, of a kind or family that does not fit, or aimed at missing layers."""


@dataclass
class LoraSettings:
    """LoRAs applied at load time.

    lora0 / lora1: path of a LoRA file applied to model0 (general) / model1 (expert); None = none.
    lora0_scale / lora1_scale: the LoRA's strength (1.0 = as trained; 0 = off).
    """

    lora0: str | None = None
    lora1: str | None = None
    lora0_scale: float = 1.0
    lora1_scale: float = 1.0

    def side(self, i: int) -> tuple[str | None, float]:
        path, scale = (self.lora0, self.lora0_scale) if i == 0 else (self.lora1, self.lora1_scale)
        label = f"lora{i}_scale"
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be a number, got {scale!r}") from None
        if not torch.isfinite(torch.tensor(scale)):
            raise ValueError(f"{label} must be finite, got {scale!r}")
        return (str(path) if path not in (None, "") else None), scale

    @property
    def any(self) -> bool:
        return bool(self.lora0 or self.lora1)


@dataclass
class LoraFile:
    """A LoRA file in diffusers' naming: ``unet`` / ``text_encoder`` state dicts (peft keys,
    ``<module>.lora_A.weight``), kohya ``network_alphas`` (or None) and the original format."""

    path: Path
    unet: dict
    text_encoder: dict
    network_alphas: dict | None
    kind: str
    metadata: dict | None = None  # the LoraConfig diffusers stores in a file's header (rank, alpha, ...)

    def state_dict(self) -> dict:
        """All keys with their component prefix, for diffusers' ``load_lora_into_*``."""
        out = {f"unet.{k}": v for k, v in self.unet.items()}
        out.update({f"text_encoder.{k}": v for k, v in self.text_encoder.items()})
        return out


@dataclass(eq=False)
class LoraModel(DiffusionModel):
    """A model view whose UNet passes run with peft adapter ``unet_adapter`` enabled (None: all
    adapters disabled). ``loras``: (path, scale) of what was applied."""

    unet_adapter: str | None = None
    loras: tuple = ()


# ---------------------------------------------------------------------------------------------
# reading and checking
# ---------------------------------------------------------------------------------------------
def read_lora(path: str | os.PathLike) -> LoraFile:
    """Read a LoRA file and convert it to diffusers' naming, refusing what cannot fit SD 1.x."""
    path = Path(path).expanduser()
    if path.is_dir():
        cand = path / "pytorch_lora_weights.safetensors"
        if not cand.is_file():
            raise LoraError(f"{path}: a folder without pytorch_lora_weights.safetensors; give the LoRA file")
        path = cand
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    if path.suffix not in LORA_SUFFIXES:
        raise LoraError(f"{path}: not a LoRA file (accepted: {', '.join(LORA_SUFFIXES)})")
    try:
        raw = read_state_dict(path)
    except ModelLoadError as e:
        raise LoraError(str(e)) from None
    if not raw:
        raise LoraError(f"{path}: no tensors in the file")
    _refuse_kinds(path, raw)
    _refuse_families(path, raw)
    kohya = all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in raw)
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    try:
        sd, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(raw))
    except (ValueError, KeyError, RuntimeError) as e:
        raise LoraError(f"{path}: diffusers could not convert this LoRA ({str(e).strip()[:300]})") from None
    if not any(k.startswith(("unet.", "text_encoder.")) for k in sd):
        sd = {f"unet.{k}": v for k, v in sd.items()}  # attention-processor files name UNet modules only
    stray = [k for k in sd if not k.startswith(("unet.", "text_encoder.")) or "lora" not in k]
    if stray:
        raise LoraError(f"{path}: {len(stray)} key(s) that are not SD 1.x UNet/text-encoder LoRA weights, "
                        f"e.g. {stray[:3]}")
    lora = LoraFile(path=path, unet=_unet_peft(sd), text_encoder=_te_peft(sd), network_alphas=alphas or None,
                    kind="kohya" if kohya else "diffusers", metadata=None if alphas else _header_config(path))
    odd = [k for part in (lora.unet, lora.text_encoder) for k in part if ".lora_A." not in k and ".lora_B." not in k]
    if odd:
        raise LoraError(f"{path}: {len(odd)} tensor(s) in a layout diffusers would silently drop, e.g. {odd[:3]}")
    return lora


def _header_config(path: Path) -> dict | None:
    """The adapter configs diffusers' ``save_lora_weights`` writes into a .safetensors header
    (``lora_adapter_metadata``: per component, the LoraConfig with its alpha): without them a
    file's alpha would be taken equal to its rank."""
    if path.suffix != ".safetensors":
        return None
    import json
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        raw = (f.metadata() or {}).get(LORA_ADAPTER_METADATA_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise LoraError(f"{path}: unreadable {LORA_ADAPTER_METADATA_KEY} in the file header") from None


def _refuse_kinds(path: Path, raw: dict) -> None:
    for frag, kind in UNSUPPORTED_KINDS:
        hits = [k for k in raw if frag in k]
        if hits:
            raise LoraError(f"{path}: a {kind} file (keys like {hits[0]!r}); only plain LoRA "
                            f"(lora_down/lora_up or lora_A/lora_B) can be applied")


def _width_of(raw: dict) -> int | None:
    """The text (context) width a LoRA was trained for: the input size of a cross-attention k/v."""
    for k, v in raw.items():
        n = k.replace(".", "_")
        if ("attn2_to_k" in n or "attn2_to_v" in n) and ("lora_down" in n or "lora_A" in n or "down_weight" in n):
            return int(v.shape[1])
    return None


def _refuse_families(path: Path, raw: dict) -> None:
    te2 = [k for k in raw if k.startswith(("text_encoder_2.", "lora_te2_"))]
    if te2:
        raise LoraError(f"{path}: has LoRA weights for a second text encoder (e.g. {te2[0]!r}): an SDXL LoRA, "
                        f"not SD 1.x (one CLIP ViT-L text encoder)")
    sgm = [k for k in raw if k.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_",
                                           "lora_unet_output_blocks_"))]
    if sgm:
        w = _width_of(raw)
        fam = f" with {w}-dim cross-attention ({FAMILY_WIDTHS.get(w, 'not SD 1.x')})" if w else ""
        raise LoraError(f"{path}: kohya keys in SGM/LDM block naming (e.g. {sgm[0]!r}){fam}: the SDXL "
                        f"naming; SD 1.x kohya LoRAs name diffusers blocks (lora_unet_down_blocks_...)")


def _unet_peft(sd: dict) -> dict:
    """Every key to peft naming, one by one: diffusers' trainers save with
    ``convert_state_dict_to_diffusers``, which renames attention keys to ``.lora.down`` but leaves
    ResNet/conv keys as ``.lora_A``; diffusers' loader looks at the first key only and would drop
    the other half."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    part = {k[len("unet."):]: v for k, v in sd.items() if k.startswith("unet.")}
    return convert_unet_state_dict_to_peft(part) if part else {}


def _te_peft(sd: dict) -> dict:
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    part = {k[len("text_encoder."):]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    return convert_state_dict_to_peft(convert_state_dict_to_diffusers(part)) if part else {}


def _targets(part: dict) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in part.items():
        for tag in ("lora_A", "lora_B"):
            if f".{tag}." in k:
                out.setdefault(k.split(f".{tag}.")[0], {})[tag] = v
    return out


def _base_module(modules: dict, name: str) -> torch.nn.Module:
    from peft.tuners.tuners_utils import BaseTunerLayer
    m = modules[name]
    return m.get_base_layer() if isinstance(m, BaseTunerLayer) else m  # a UNet already carrying an adapter


def _check_part(path: Path, label: str, part: dict, module: torch.nn.Module, context_width: int | None) -> None:
    modules = dict(module.named_modules())
    if label == "text encoder" and not hasattr(module, "text_model"):
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    targets = _targets(part)
    missing = [n for n in targets if n not in modules]
    if missing:
        raise LoraError(f"{path}: {len(missing)} of its {len(targets)} {label} target layer(s) do not exist in "
                        f"this model, e.g. {missing[:3]}")
    if context_width:  # the family first: a cross-attention k/v reads the text width it was trained for
        for name, ab in targets.items():
            m = _base_module(modules, name)
            a = ab.get("lora_A")
            if name.endswith(("attn2.to_k", "attn2.to_v")) and a is not None and a.ndim == 2 \
                    and isinstance(m, torch.nn.Linear) and a.shape[1] != m.in_features:
                w = int(a.shape[1])
                raise LoraError(f"{path}: made for {w}-dim cross-attention ({FAMILY_WIDTHS.get(w, 'another family')}); "
                                f"this model's is {m.in_features} (SD 1.x: 768), at {name}")
    for name, ab in targets.items():
        m = _base_module(modules, name)
        if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            raise LoraError(f"{path}: {label} target {name} is a {type(m).__name__}, not a Linear/Conv2d layer")
        conv = isinstance(m, torch.nn.Conv2d)
        fan_in, fan_out = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
        a, b = ab.get("lora_A"), ab.get("lora_B")
        if a is None or b is None:
            raise LoraError(f"{path}: {label} target {name} has only one of its two LoRA matrices")
        if a.ndim != (4 if conv else 2):
            raise LoraError(f"{path}: {label} target {name} is a {type(m).__name__} here, the LoRA's matrix for it "
                            f"has {a.ndim} dims (a LoRA for another model or family, e.g. SD 2.x's linear proj_in)")
        if a.shape[1] != fan_in or b.shape[0] != fan_out:
            raise LoraError(f"{path}: {label} target {name} takes {fan_in} -> {fan_out}, the LoRA has "
                            f"{a.shape[1]} -> {b.shape[0]} (a LoRA for another model or family)")


def check_lora(lora: LoraFile, model: DiffusionModel) -> None:
    """Raise LoraError unless every target layer exists in ``model`` with the LoRA's shapes."""
    if not lora.unet and not lora.text_encoder:
        raise LoraError(f"{lora.path}: no UNet or text-encoder LoRA weights")
    _check_part(lora.path, "UNet", lora.unet, model.unet, model.cross_attention_dim)
    if lora.text_encoder:
        _check_part(lora.path, "text encoder", lora.text_encoder, model.text_encoder, None)


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

