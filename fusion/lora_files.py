"""LoRA files: reading one and converting it to diffusers' naming, and checking it against a model.

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

Applying a checked file to a model (peft adapters, one UNet held for two sides): :mod:`fusion.lora`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .loading import DiffusionModel, ModelLoadError, read_state_dict

__all__ = ["LoraError", "LoraFile", "read_lora", "check_lora", "LORA_SUFFIXES", "FAMILY_WIDTHS",
           "UNSUPPORTED_KINDS"]

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
