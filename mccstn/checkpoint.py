"""Weights on disk: the official four-file layout and a single safetensors file.

The published MccSTN (and the compatible AesUST) weights are four plain PyTorch state dicts:

=====================  =============================  ==========================================
file                   component                      official keys
=====================  =============================  ==========================================
``vgg_normalised.pth``  :class:`~mccstn.network.Encoder`   ``0.weight``, ``2.weight``, ... ``51.bias``
``decoder.pth``         :class:`~mccstn.network.Decoder`   ``1.weight`` ... ``28.bias``
``transformer.pth``     :class:`~mccstn.network.StyleFusion`  ``AesSA_4_1.a.weight`` ... ``merge_conv.bias``
``discriminator.pth``   :class:`~mccstn.network.AestheticDiscriminator`  ``models.0.0.weight`` ...
=====================  =============================  ==========================================

They are read with ``torch.load(..., weights_only=True)`` and mapped strictly: a missing, extra
or mis-shaped tensor raises :class:`CheckpointError` naming the file and the key. The same
weights can be stored as one safetensors file (``mccstn.safetensors``) whose keys are the
official keys prefixed by the file stem (``decoder.1.weight``, ``transformer.merge_conv.bias``,
...), so the two formats convert into each other losslessly.

A torchvision VGG-19 ``state_dict`` file (``features.N.weight`` keys) can initialise the encoder
for training: see :func:`torchvision_vgg19_to_encoder`.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import nn

from .network import DECODER_CONVS, ENCODER_CONVS, Widths

PathLike = Union[str, os.PathLike]

#: component name -> official file name
OFFICIAL_FILES: "OrderedDict[str, str]" = OrderedDict(
    [("encoder", "vgg_normalised.pth"), ("decoder", "decoder.pth"),
     ("fusion", "transformer.pth"), ("discriminator", "discriminator.pth")])
#: component name -> key prefix inside the safetensors file (the official file stem)
SAFETENSORS_PREFIX = {comp: fname[:-len(".pth")] for comp, fname in OFFICIAL_FILES.items()}
#: default name of the single-file checkpoint
SAFETENSORS_NAME = "mccstn.safetensors"
FORMAT_TAG = "mccstn-1"

# ImageNet statistics torchvision's VGG-19 expects its [0,1] RGB input normalised with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: our encoder conv name -> index in torchvision's ``vgg19().features``
TORCHVISION_VGG19_INDEX = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv3_4": 16, "conv4_1": 19, "conv4_2": 21, "conv4_3": 23, "conv4_4": 25,
    "conv5_1": 28, "conv5_2": 30, "conv5_3": 32, "conv5_4": 34}


class CheckpointError(ValueError):
    """A weight file is missing, unreadable or does not match the network (names file and key)."""


# ----------------------------------------------------------------------------------------------
# key maps: official key -> our key
# ----------------------------------------------------------------------------------------------
def _conv_pairs(official_prefix: str, ours_prefix: str) -> list[tuple[str, str]]:
    return [(f"{official_prefix}.{p}", f"{ours_prefix}.{p}") for p in ("weight", "bias")]


def _build_key_maps() -> dict[str, "OrderedDict[str, str]"]:
    enc = OrderedDict()
    for name, idx, *_ in ENCODER_CONVS:
        enc.update(_conv_pairs(str(idx), f"convs.{name}"))
    dec = OrderedDict()
    for i, (idx, *_) in enumerate(DECODER_CONVS):
        dec.update(_conv_pairs(str(idx), f"convs.{i}"))
    fus = OrderedDict()
    unit_names = (("a", "chan_query"), ("b", "chan_key"), ("c", "chan_value"),
                  ("d", "spat_query"), ("e", "spat_value"), ("o1", "spat_key"),
                  ("out_conv1", "chan_out"), ("out_conv2", "spat_out"))
    for level, unit in (("4_1", "unit4"), ("5_1", "unit5")):
        for off, ours in unit_names:
            fus.update(_conv_pairs(f"AesSA_{level}.{off}", f"{unit}.{ours}"))
    fus.update(_conv_pairs("merge_conv", "merge"))
    dis = OrderedDict()
    for s in range(3):
        for j, idx in enumerate((0, 2, 5, 8)):
            dis.update(_conv_pairs(f"models.{s}.{idx}", f"branches.{s}.convs.{j}"))
    for s in range(3):
        dis.update(_conv_pairs(f"score_models.{s}.0", f"heads.{s}"))
    return {"encoder": enc, "decoder": dec, "fusion": fus, "discriminator": dis}


#: component -> OrderedDict(official key -> our state-dict key), in the official file order
KEY_MAPS = _build_key_maps()


def key_map(component: str, module: nn.Module) -> "OrderedDict[str, str]":
    """:data:`KEY_MAPS` restricted to the tensors ``module`` has (an encoder built without
    conv5_2..conv5_4 has no keys ``45.*`` .. ``51.*``)."""
    own = module.state_dict()
    return OrderedDict((off, ours) for off, ours in KEY_MAPS[component].items() if ours in own)


def expected_shapes(component: str, module: nn.Module) -> "OrderedDict[str, tuple[int, ...]]":
    """Official key -> shape for ``component``, read from a module of our architecture."""
    own = module.state_dict()
    return OrderedDict((off, tuple(own[ours].shape)) for off, ours in key_map(component, module).items())


def widths_from_official(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> Widths:
    """The :class:`~mccstn.network.Widths` of official-layout state dicts (component -> dict).

    Read from the output channels of conv1_1 / conv2_1 / conv3_1 / conv4_1 / conv5_1 (official
    keys ``2``, ``9``, ``16``, ``29``, ``42``) and of the discriminator's first branch; the
    presence of ``45.weight`` says whether conv5_2..conv5_4 are there. Every other shape is then
    checked strictly when the tensors are loaded. Missing keys give the full-width defaults (the
    strict loader then names what is missing).
    """
    enc, dis = parts.get("encoder", {}), parts.get("discriminator", {})
    full = Widths()

    def out_ch(state, key, default):
        t = state.get(key)
        return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() == 4 else default

    stages = tuple(out_ch(enc, f"{i}.weight", d) for i, d in zip((2, 9, 16, 29, 42), full.stages))
    disc = tuple(out_ch(dis, f"models.0.{i}.weight", d)
                 for i, d in zip((0, 2, 5, 8), full.discriminator))
    return Widths(stages, disc, conv5_tail="45.weight" in enc or not enc)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _guess_component(keys) -> Optional[str]:
    keys = set(keys)
    best, best_hits = None, 0
    for comp, kmap in KEY_MAPS.items():
        hits = len(keys & set(kmap))
        if hits > best_hits:
            best, best_hits = comp, hits
    return best if best_hits >= max(2, len(keys) // 2) else None


def torch_load_state_dict(path: PathLike) -> "OrderedDict[str, torch.Tensor]":
    """``torch.load(path, weights_only=True)`` on CPU, checked to be a flat dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / unsafe-global errors all land here
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict with "
                              f"weights_only=True ({type(exc).__name__}: {msg})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"found {type(obj).__name__}")
    for wrapper in ("state_dict", "net", "model"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            raise CheckpointError(
                f"{path}: this looks like a training checkpoint (it holds a {wrapper!r} entry), "
                f"not a plain state dict; save the component's state_dict() on its own")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: key {bad[0]!r} holds a {type(obj[bad[0]]).__name__}, "
                              f"not a tensor")
    return OrderedDict(obj)


def convert_official(component: str, state: Mapping[str, torch.Tensor], module: nn.Module,
                     source: str) -> "OrderedDict[str, torch.Tensor]":
    """Strictly map an official-layout state dict onto ``module``'s own keys.

    ``source`` names the file (and section) in error messages. Raises :class:`CheckpointError`
    on missing, unexpected or mis-shaped keys and on non-floating tensors.
    """
    kmap = key_map(component, module)
    shapes = expected_shapes(component, module)
    fname = OFFICIAL_FILES[component]
    missing = [k for k in kmap if k not in state]
    extra = [k for k in state if k not in kmap]
    if missing or extra:
        hint = ""
        guess = _guess_component(state.keys())
        if guess is not None and guess != component:
            hint = f"; its keys look like {OFFICIAL_FILES[guess]} — was it saved under the wrong name?"
        elif any(k.startswith("module.") for k in state):
            hint = "; keys carry a 'module.' prefix (DataParallel) — strip it before saving"
        parts = []
        if missing:
            parts.append(f"missing key {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if extra:
            parts.append(f"unexpected key {extra[0]!r}" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""))
        raise CheckpointError(f"{source}: does not match {fname}: {', '.join(parts)}{hint}")
    out = OrderedDict()
    for off, ours in kmap.items():
        t = state[off]
        if tuple(t.shape) != shapes[off]:
            raise CheckpointError(f"{source}: key {off!r} has shape {tuple(t.shape)}, "
                                  f"expected {shapes[off]} for {fname}")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: key {off!r} has dtype {t.dtype}, expected a float tensor")
        out[ours] = t.to(torch.float32).contiguous()
    return out


def load_official_component(module: nn.Module, component: str, path: PathLike) -> None:
    """Load one official ``.pth`` file into ``module`` (strict; see :func:`convert_official`)."""
    state = torch_load_state_dict(path)
    _load_into(module, convert_official(component, state, module, str(path)))


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict ``load_state_dict``; a module built on the meta device takes the tensors as they
    are (``assign=True``: no random init, no copy)."""
    meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict(state, strict=True, assign=meta)


def to_official(component: str, module: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """``module``'s weights as an official-layout state dict (CPU, float32, contiguous)."""
    own = module.state_dict()
    return OrderedDict((off, own[ours].detach().to("cpu", torch.float32).contiguous().clone())
                       for off, ours in key_map(component, module).items())


# ----------------------------------------------------------------------------------------------
# folders
# ----------------------------------------------------------------------------------------------
def find_weights(folder: PathLike) -> tuple[Optional[str], str]:
    """What a folder (or file) holds: ``("safetensors", path)``, ``("pth", folder)`` or
    ``(None, reason)`` with a one-line reason saying which files to put where."""
    p = Path(folder)
    if p.is_file():
        if p.suffix == ".safetensors":
            return "safetensors", str(p)
        return None, f"{p} is a file; pass the folder holding the four .pth files or a .safetensors file"
    if not p.is_dir():
        return None, (f"weights folder {p} does not exist; put {', '.join(OFFICIAL_FILES.values())} "
                      f"(or {SAFETENSORS_NAME}) there")
    st = p / SAFETENSORS_NAME
    if st.is_file():
        return "safetensors", str(st)
    present = [f for f in OFFICIAL_FILES.values() if (p / f).is_file()]
    if len(present) == len(OFFICIAL_FILES):
        return "pth", str(p)
    others = sorted(x.name for x in p.glob("*.safetensors"))
    if len(others) == 1 and not present:
        return "safetensors", str(p / others[0])
    missing = [f for f in OFFICIAL_FILES.values() if f not in present]
    return None, (f"MccSTN weights not found in {p}: missing {', '.join(missing)} "
                  f"(put the four files vgg_normalised.pth, decoder.pth, transformer.pth, "
                  f"discriminator.pth or one {SAFETENSORS_NAME} there)")


def read_folder(folder: PathLike) -> tuple[str, dict[str, "OrderedDict[str, torch.Tensor]"]]:
    """Read a folder (four .pth files) or a .safetensors file into official-layout state dicts.

    Returns (the path that was read, component -> state dict). A ``mccstn.safetensors`` in the
    folder is preferred over the .pth files (safer format). Raises :class:`CheckpointError` if
    nothing usable is there.
    """
    kind, where = find_weights(folder)
    if kind is None:
        raise CheckpointError(where)
    if kind == "safetensors":
        return where, read_safetensors(where)
    return where, {comp: torch_load_state_dict(Path(where) / fname) for comp, fname in OFFICIAL_FILES.items()}


def load_parts(modules: Mapping[str, nn.Module], parts: Mapping[str, Mapping[str, torch.Tensor]],
               where: str) -> None:
    """Strictly load official-layout state dicts (from :func:`read_folder`) into the modules."""
    def source(comp):
        if where.endswith(".safetensors"):
            return f"{where} [{SAFETENSORS_PREFIX[comp]}.*]"
        return str(Path(where) / OFFICIAL_FILES[comp])

    converted = {comp: convert_official(comp, parts[comp], modules[comp], source(comp))
                 for comp in OFFICIAL_FILES}
    for comp, sd in converted.items():
        _load_into(modules[comp], sd)


def load_folder(modules: Mapping[str, nn.Module], folder: PathLike) -> str:
    """Load all four components from a folder (four .pth files) or a .safetensors file into
    modules of matching widths. Returns the path that was read (see :func:`read_folder`)."""
    where, parts = read_folder(folder)
    load_parts(modules, parts, where)
    return where


def save_official(modules: Mapping[str, nn.Module], folder: PathLike, overwrite: bool = False) -> list[str]:
    """Write the four official ``.pth`` files (plain state dicts) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / fname for fname in OFFICIAL_FILES.values()]
    if not overwrite:
        clash = [str(p) for p in paths if p.exists()]
        if clash:
            raise FileExistsError(f"refusing to overwrite {clash[0]} (pass overwrite=True)")
    for (comp, fname), path in zip(OFFICIAL_FILES.items(), paths):
        tmp = path.with_suffix(".pth.tmp")
        torch.save(to_official(comp, modules[comp]), str(tmp))
        os.replace(tmp, path)
    return [str(p) for p in paths]


# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------
def save_safetensors(modules: Mapping[str, nn.Module], path: PathLike, overwrite: bool = False,
                     metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write all four components into one safetensors file (official keys, stem-prefixed)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite {path} (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for comp in OFFICIAL_FILES:
        for off, t in to_official(comp, modules[comp]).items():
            tensors[f"{SAFETENSORS_PREFIX[comp]}.{off}"] = t
    meta = {"format": FORMAT_TAG}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return str(path)


def read_safetensors(path: PathLike) -> dict[str, "OrderedDict[str, torch.Tensor]"]:
    """Split a MccSTN safetensors file into official-layout state dicts per component."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        flat = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({exc})") from exc
    parts: dict[str, OrderedDict] = {comp: OrderedDict() for comp in OFFICIAL_FILES}
    by_prefix = {pre: comp for comp, pre in SAFETENSORS_PREFIX.items()}
    for key, t in flat.items():
        pre, _, rest = key.partition(".")
        if pre not in by_prefix or not rest:
            raise CheckpointError(f"{path}: unexpected key {key!r} (keys must start with one of "
                                  f"{sorted(by_prefix)} followed by the official key)")
        parts[by_prefix[pre]][rest] = t
    return parts


def load_safetensors(modules: Mapping[str, nn.Module], path: PathLike) -> None:
    """Strictly load a MccSTN safetensors file into the four component modules."""
    load_parts(modules, read_safetensors(path), str(path))


# ----------------------------------------------------------------------------------------------
# encoder initialisation for training
# ----------------------------------------------------------------------------------------------
def torchvision_vgg19_to_encoder(state: Mapping[str, torch.Tensor], encoder: nn.Module,
                                 source: str = "torchvision VGG-19") -> "OrderedDict[str, torch.Tensor]":
    """Map a torchvision ``vgg19`` state dict onto our encoder's keys.

    ``features.N.{weight,bias}`` go to the 16 3x3 convs (RGB order kept). The ImageNet input
    normalisation ``(x - mean) / std`` that torchvision's weights expect is *folded into the
    1x1 colour conv*: weight = diag(1/std), bias = -mean/std. The result is therefore a
    drop-in ``vgg_normalised.pth`` for the inference network (saving it writes that file).
    Two differences from the real normalised VGG remain and are expected: the encoder pads
    by reflection where torchvision pads with zeros, and the activations are not rescaled to
    unit mean (loss magnitudes differ; weights still train). ``classifier.*`` keys are ignored;
    batch-norm variants (``vgg19_bn``) are rejected.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.endswith("running_mean") for k in state):
        raise CheckpointError(f"{source}: this is a batch-norm VGG (vgg19_bn); use plain vgg19 weights")
    own = encoder.state_dict()
    out = OrderedDict()
    used = set()
    for name, _, cin, cout, k in ENCODER_CONVS:
        if name == "color":
            std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
            out["convs.color.weight"] = torch.diag(1.0 / std).view(3, 3, 1, 1)
            out["convs.color.bias"] = -mean / std
            continue
        idx = TORCHVISION_VGG19_INDEX[name]
        for p in ("weight", "bias"):
            key = f"features.{idx}.{p}"
            if key not in state:
                raise CheckpointError(f"{source}: missing key {key!r} (not a torchvision vgg19 state dict?)")
            t = state[key]
            want = tuple(own[f"convs.{name}.{p}"].shape)
            if tuple(t.shape) != want:
                raise CheckpointError(f"{source}: key {key!r} has shape {tuple(t.shape)}, expected {want}")
            out[f"convs.{name}.{p}"] = t.detach().to(torch.float32).clone()
            used.add(key)
    extra = [k for k in state if k not in used and not k.startswith("classifier.")]
    if extra:
        raise CheckpointError(f"{source}: unexpected key {extra[0]!r} for a torchvision vgg19 state dict")
    return out


def encoder_init_widths(path: PathLike) -> Widths:
    """The network widths a training run on the encoder file ``path`` gets: the encoder's own
    (read from ``vgg_normalised.pth`` keys; a torchvision VGG-19 is full width), the fusion and
    decoder following it, the discriminator scaled like relu4_1 (full: 64, 128, 256, 512)."""
    state = torch_load_state_dict(path)
    if any(k.startswith("features.") or k.startswith("module.features.") for k in state):
        return Widths()
    w = widths_from_official({"encoder": state})
    c = w.stages[3]
    disc = (max(1, c // 8), max(1, c // 4), max(1, c // 2), c)
    return Widths(w.stages, disc, w.conv5_tail)


def load_encoder_init(encoder: nn.Module, path: PathLike) -> str:
    """Initialise ``encoder`` from a ``vgg_normalised.pth`` or a torchvision VGG-19 state dict.

    Returns ``"vgg_normalised"`` or ``"torchvision"`` (which layout was found). Nothing is
    downloaded: ``path`` must be a local file.
    """
    state = torch_load_state_dict(path)
    if any(k.startswith("features.") or k.startswith("module.features.") for k in state):
        encoder.load_state_dict(torchvision_vgg19_to_encoder(state, encoder, str(path)), strict=True)
        return "torchvision"
    encoder.load_state_dict(convert_official("encoder", state, encoder, str(path)), strict=True)
    return "vgg_normalised"
