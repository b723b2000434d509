"""Attention side of the training-free style-injection engine (see :mod:`styleid.injection`).

StyleID (Chung et al., "Style Injection in Diffusion: A Training-free Approach for Adapting
Large-scale Diffusion Models for Style Transfer", CVPR 2024) swaps the keys and values of
chosen decoder self-attention layers for those of the style image, mixes the queries with the
content image's (query preservation) and sharpens the attention with a temperature. This
module does that with diffusers attention processors:

* :func:`decoder_self_attention_layers` numbers the UNet's decoder (up-block) positions like
  the LDM ``output_blocks`` (0..11 for SD 1.x; the reference's default is 6..11, the last two
  resolutions) and lists the self-attention modules in each.
* :class:`FeatureStore` keeps, per (layer, timestep), only what injection needs: the input of
  the self-attention for the content and the style image (one (2, N, C) tensor). Queries,
  keys and values are recomputed from it with the layer's own projections, so the store holds
  2 tensors per layer and step instead of the reference's q, k, v of both images (6).
* :class:`InjectionProcessor` wraps the layer's original processor. What it does at a call is
  said by the call itself (an :class:`InjectionCall` passed through the UNet's
  ``cross_attention_kwargs``), never by a mutable flag on the model: without one it *is* the
  original processor (bit-identical results), with ``record`` it stores its input and then runs
  the original, with ``inject`` it computes the injected attention.
* :func:`installed` puts the processors on a UNet for the duration of a ``with`` block and
  restores the previous ones afterwards (other layers get a pass-through wrapper that accepts
  and drops the call argument, so diffusers does not warn about an unexpected keyword).
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DecoderLayer", "decoder_self_attention_layers", "default_layer_indices", "parse_layers",
    "FeatureStore", "InjectionCall", "InjectionProcessor", "PassThroughProcessor", "installed",
    "injected_attention", "estimate_store_bytes", "processor_names",
]


# ---------------------------------------------------------------------------------------------
# which layers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderLayer:
    """One decoder position (LDM ``output_blocks`` numbering) and its self-attention modules.

    index: position among the up path's resnets (SD 1.x: 0..11); block: the up block; level:
    the resolution counted from the lowest (0 = coarsest); names: the processor names of the
    self-attentions in this position (one per transformer block; empty when it has none).
    """

    index: int
    block: int
    names: tuple[str, ...]
    channels: int
    downsample: int  # latent pixels per token side at this position (SD 1.x at 512: 8, 4, 2, 1)


def decoder_self_attention_layers(unet: torch.nn.Module) -> list[DecoderLayer]:
    """Every decoder position of a diffusers ``UNet2DConditionModel``, in forward order."""
    if not hasattr(unet, "up_blocks"):
        raise ValueError("injection needs a diffusers UNet2DConditionModel (no up_blocks found)")
    n_levels = len(unet.up_blocks)
    layers, index = [], 0
    for b, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        for j, _ in enumerate(block.resnets):
            names: list[str] = []
            channels = 0
            if attentions is not None and j < len(attentions):
                tr = attentions[j]
                for k, tb in enumerate(getattr(tr, "transformer_blocks", [])):
                    attn1 = getattr(tb, "attn1", None)
                    if attn1 is not None and not attn1.is_cross_attention and not getattr(tb, "only_cross_attention", False):
                        names.append(f"up_blocks.{b}.attentions.{j}.transformer_blocks.{k}.attn1.processor")
                        channels = int(attn1.to_q.in_features)
            layers.append(DecoderLayer(index, b, tuple(names), channels, 2 ** (n_levels - 1 - b)))
            index += 1
    return layers


def default_layer_indices(unet: torch.nn.Module) -> tuple[int, ...]:
    """The reference default: every decoder self-attention of the two finest resolutions that
    have self-attention (SD 1.x: positions 6..11, i.e. ``up_blocks.2`` and ``up_blocks.3``)."""
    layers = [l for l in decoder_self_attention_layers(unet) if l.names]
    if not layers:
        raise ValueError("this UNet has no decoder self-attention layers: attention injection cannot run")
    blocks = sorted({l.block for l in layers})[-2:]
    return tuple(l.index for l in layers if l.block in blocks)


def parse_layers(spec, unet: torch.nn.Module) -> tuple[int, ...]:
    """Decoder positions from ``"default"``, ``"all"``, ``"6-11"``, ``"6,7,9-11"`` or a sequence
    of ints; a ValueError names the positions that have self-attention otherwise."""
    layers = decoder_self_attention_layers(unet)
    usable = [l.index for l in layers if l.names]
    accepted = (f"accepted: 'default', 'all', or decoder positions (LDM output-block numbering) among "
                f"{_ranges(usable)}, e.g. '{_ranges(default_layer_indices(unet))}'")
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "default")):
        return default_layer_indices(unet)
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return tuple(usable)
    from fusion.textparse import MAX_FIELD_CHARS, parse_index_ranges, quote
    top = max((l.index for l in layers), default=0)
    idx: list[int] = []
    try:
        if isinstance(spec, str):
            # bounds are checked before a range is expanded: "0-10000000" is refused at once
            idx = parse_index_ranges(spec.replace(" ", ""), "layers", 0, top)
        elif isinstance(spec, int):
            idx = [spec]
        else:
            if len(spec) > MAX_FIELD_CHARS:
                raise ValueError(f"layers: at most {MAX_FIELD_CHARS} positions, got {len(spec)}")
            idx = [int(i) for i in spec]
            if any(not float(i).is_integer() for i in spec):
                raise ValueError(f"layers: not whole numbers: {quote(str(list(spec)))}")
    except (TypeError, ValueError) as e:
        reason = str(e) if isinstance(e, ValueError) and str(e).startswith("layers:") else \
            f"layers: cannot read {quote(spec if isinstance(spec, str) else str(spec))}"
        raise ValueError(f"{reason}; {accepted}") from None
    bad = sorted({i for i in idx if i not in usable})
    if bad or not idx:
        raise ValueError(f"layers: {bad or 'none given'} have no decoder self-attention; {accepted}")
    return tuple(sorted(set(idx)))


def _ranges(ix: Sequence[int]) -> str:
    ix = sorted(ix)
    out, i = [], 0
    while i < len(ix):
        j = i
        while j + 1 < len(ix) and ix[j + 1] == ix[j] + 1:
            j += 1
        out.append(str(ix[i]) if i == j else f"{ix[i]}-{ix[j]}")
        i = j + 1
    return ",".join(out)


def processor_names(unet: torch.nn.Module, indices: Sequence[int]) -> list[str]:
    by_index = {l.index: l for l in decoder_self_attention_layers(unet)}
    return [n for i in indices for n in by_index[i].names]


def estimate_store_bytes(unet: torch.nn.Module, height: int, width: int, steps: int,
                         indices: Sequence[int], vae_scale_factor: int = 8,
                         dtype: torch.dtype = torch.float16) -> int:
    """Bytes the :class:`FeatureStore` holds after inverting one content/style pair (its peak):
    steps x layers x 2 images x tokens x channels x element size. Works on a meta-device UNet."""
    lat_h, lat_w = height // vae_scale_factor, width // vae_scale_factor
    elem = torch.empty((), dtype=dtype).element_size()
    total = 0
    for l in decoder_self_attention_layers(unet):
        if l.index in indices:
            tokens = (lat_h // l.downsample) * (lat_w // l.downsample)
            total += len(l.names) * 2 * tokens * l.channels * elem
    return total * steps


# ---------------------------------------------------------------------------------------------
# the feature store
# ---------------------------------------------------------------------------------------------
@dataclass
class FeatureStore:
    """Self-attention inputs of the content (row 0) and style (row 1) image, per (layer, t).

    Only the layers in ``names`` and the timesteps in ``timesteps`` are kept; anything else
    offered is ignored. ``take`` hands a step's features out and forgets them (sampling uses
    each once), so memory falls as sampling proceeds. ``peak_bytes`` is the most it held.
    """

    names: frozenset
    timesteps: frozenset
    data: dict = field(default_factory=dict)
    bytes: int = 0
    peak_bytes: int = 0

    def put(self, name: str, t: int, hidden_states: torch.Tensor) -> None:
        if name not in self.names or t not in self.timesteps:
            return
        if hidden_states.shape[0] != 2:
            raise RuntimeError(f"feature store: expected 2 rows (content, style) at {name}, got {hidden_states.shape[0]}")
        key = (name, int(t))
        if key in self.data:
            self.bytes -= self.data[key].numel() * self.data[key].element_size()
        h = hidden_states.detach().clone()
        self.data[key] = h
        self.bytes += h.numel() * h.element_size()
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def take(self, name: str, t: int) -> torch.Tensor:
        key = (name, int(t))
        try:
            h = self.data.pop(key)
        except KeyError:
            raise RuntimeError(f"feature store: nothing recorded for {name} at t={t}") from None
        self.bytes -= h.numel() * h.element_size()
        return h

    def clear(self) -> None:
        self.data.clear()
        self.bytes = 0


# ---------------------------------------------------------------------------------------------
# the processors
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InjectionCall:
    """What the injection processors do during one UNet call.

    mode: "record" (store the content/style rows' inputs in ``store``, then plain attention) or
        "inject" (StyleID attention for the rows being stylised).
    t: the timestep of this call (the store's key).
    store: the :class:`FeatureStore` (record; inject from recorded features).
    live: inject only; the batch's first two rows are the content and style latents at this
        step, run plainly, and their self-attention inputs are used directly (nothing stored).
    gamma: query preservation, q = gamma q_content + (1 - gamma) q_current.
    temperature: the attention logits are multiplied by it (StyleID's T).
    """

    mode: str
    t: int
    store: FeatureStore | None = None
    live: bool = False
    gamma: float = 0.75
    temperature: float = 1.5


class PassThroughProcessor:
    """The original processor, accepting (and dropping) the ``injection`` call argument."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, injection: InjectionCall | None = None, **kwargs):
        if temb is not None:
            kwargs["temb"] = temb
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, **kwargs)


class InjectionProcessor(PassThroughProcessor):
    """StyleID self-attention for one layer; the original processor when the call says nothing."""

    def __init__(self, inner, name: str):
        super().__init__(inner)
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, injection: InjectionCall | None = None, **kwargs):
        plain = super().__call__
        if injection is None:
            return plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if injection.mode == "record":
            injection.store.put(self.name, injection.t, hidden_states)
            return plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if injection.mode != "inject":
            raise ValueError(f"unknown injection mode {injection.mode!r} (accepted: record, inject)")
        if encoder_hidden_states is not None or attention_mask is not None:
            raise RuntimeError(f"{self.name}: injection supports unmasked self-attention only")
        if injection.live:
            ref = hidden_states[:2]
            ref_out = plain(attn, ref, None, None, temb[:2] if temb is not None else None, **kwargs)
            out = injected_attention(attn, hidden_states[2:], ref[0:1], ref[1:2], injection.gamma,
                                     injection.temperature, temb[2:] if temb is not None else None)
            return torch.cat([ref_out, out])
        ref = injection.store.take(self.name, injection.t)
        return injected_attention(attn, hidden_states, ref[0:1], ref[1:2], injection.gamma,
                                  injection.temperature, temb)


def _prepare(attn, h: torch.Tensor, temb):
    """What a diffusers processor does to its input before the projections; returns
    (tokens (B, N, C), restore(function back to the input layout))."""
    if attn.spatial_norm is not None:
        h = attn.spatial_norm(h, temb)
    if h.ndim == 4:
        b, c, hh, ww = h.shape
        h = h.view(b, c, hh * ww).transpose(1, 2)

        def restore(x):
            return x.transpose(-1, -2).reshape(b, c, hh, ww)
    else:
        def restore(x):
            return x
    if attn.group_norm is not None:
        h = attn.group_norm(h.transpose(1, 2)).transpose(1, 2)
    return h, restore


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)


def injected_attention(attn, hidden_states: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
                       gamma: float, temperature: float, temb=None) -> torch.Tensor:
    """StyleID self-attention for the rows of ``hidden_states`` (B rows):

    softmax(T * q k_s^T / sqrt(d)) v_s with q = gamma q_c + (1 - gamma) q_x, where q_x is the
    current row's query, q_c the content's and k_s, v_s the style's (each from the layer's own
    projections of the recorded inputs ``content``/``style``, one row each).
    """
    residual = hidden_states
    b = hidden_states.shape[0]
    x, restore = _prepare(attn, hidden_states, temb)
    c, _ = _prepare(attn, content.to(x.dtype), temb[:1] if temb is not None else None)
    s, _ = _prepare(attn, style.to(x.dtype), temb[:1] if temb is not None else None)

    def query(h):
        q = _heads(attn, attn.to_q(h))
        return attn.norm_q(q) if attn.norm_q is not None else q

    q_c = query(c)
    if gamma == 1.0:
        q = q_c.expand(b, *q_c.shape[1:])
    elif gamma == 0.0:
        q = query(x)
    else:
        q = gamma * q_c + (1.0 - gamma) * query(x)
    k = _heads(attn, attn.to_k(s))
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    v = _heads(attn, attn.to_v(s))
    k, v = k.expand(b, *k.shape[1:]), v.expand(b, *v.shape[1:])
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, scale=attn.scale * temperature)
    out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1]).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    out = restore(out)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


# ---------------------------------------------------------------------------------------------
# installing
# ---------------------------------------------------------------------------------------------
_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(unet) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(unet), threading.RLock())


@contextlib.contextmanager
def installed(unet: torch.nn.Module, names: Sequence[str]) -> Iterator[dict]:
    """Within the block the UNet has :class:`InjectionProcessor` on ``names`` and pass-through
    wrappers elsewhere; the previous processors come back afterwards, also on errors. One
    installation per UNet at a time (a lock per UNet); calls without an ``injection`` argument
    compute exactly what they computed before, so other users of the model are unaffected."""
    with _lock_for(unet):
        before = dict(unet.attn_processors)
        missing = [n for n in names if n not in before]
        if missing:
            raise ValueError(f"no attention processor named {missing[:3]} on this UNet")
        wanted = set(names)
        procs = {n: (InjectionProcessor(p, n) if n in wanted else PassThroughProcessor(p))
                 for n, p in before.items()}
        unet.set_attn_processor(dict(procs))  # diffusers empties the dict it is given
        try:
            yield procs
        finally:
            unet.set_attn_processor(dict(before))
