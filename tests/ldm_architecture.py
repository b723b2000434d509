"""The tensor names and shapes of an original (LDM / CompVis) Stable Diffusion 1.x single file,
written from the published module layout, independently of diffusers and transformers.

Run ``python -m tests.ldm_architecture`` to (re)write ``tests/data/sd15_single_file_keys.json``,
the complete key list of an SD 1.5 checkpoint with EMA copies (the layout of ``v1-5-pruned.ckpt``).

Where each part comes from (files of the CompVis/stable-diffusion repository; the layout is the same
in every SD 1.x release):

* ``configs/stable-diffusion/v1-inference.yaml``: the settings (UNet ``model_channels: 320``,
  ``channel_mult: [1, 2, 4, 4]``, ``num_res_blocks: 2``, ``attention_resolutions: [4, 2, 1]``,
  ``num_heads: 8``, ``transformer_depth: 1``, ``context_dim: 768``; AutoencoderKL ``embed_dim: 4``,
  ``z_channels: 4``, ``double_z: true``, ``ch: 128``, ``ch_mult: [1, 2, 4, 4]``,
  ``num_res_blocks: 2``, ``attn_resolutions: []``; ``timesteps: 1000``; the text encoder is
  ``ldm.modules.encoders.modules.FrozenCLIPEmbedder``).
* ``ldm/modules/diffusionmodules/openaimodel.py``: ``UNetModel`` (``time_embed`` Sequential
  Linear/SiLU/Linear, ``input_blocks`` / ``middle_block`` / ``output_blocks`` of
  ``TimestepEmbedSequential``, ``out`` = GroupNorm/SiLU/conv), ``ResBlock`` (``in_layers``,
  ``emb_layers``, ``out_layers``, 1x1 ``skip_connection`` when the width changes),
  ``Downsample`` (``op``, stride-2 conv) and ``Upsample`` (``conv``).
* ``ldm/modules/attention.py``: ``SpatialTransformer`` (GroupNorm ``norm``, 1x1 conv ``proj_in`` /
  ``proj_out``, ``transformer_blocks``), ``BasicTransformerBlock`` (``attn1``, ``ff``, ``attn2``,
  ``norm1..3``), ``CrossAttention`` (bias-free ``to_q/to_k/to_v``, ``to_out.0`` with bias),
  ``FeedForward`` with GEGLU (``net.0.proj`` of width 2 x 4 x dim, ``net.2``).
* ``ldm/modules/diffusionmodules/model.py``: ``Encoder`` / ``Decoder`` (``conv_in``, ``down.{i}.block.{j}``,
  ``down.{i}.downsample.conv``, ``mid.block_1`` / ``mid.attn_1`` / ``mid.block_2``, ``up.{i}.block.{j}``
  with ``num_res_blocks + 1`` blocks, ``up.{i}.upsample.conv``, ``norm_out``, ``conv_out``),
  ``ResnetBlock`` (``norm1``, ``conv1``, ``norm2``, ``conv2``, 1x1 ``nin_shortcut`` when the width
  changes; no time embedding in the autoencoder), ``AttnBlock`` (``norm`` and 1x1 convs ``q``, ``k``,
  ``v``, ``proj_out``); ``ldm/models/autoencoder.py``: ``quant_conv`` (2 z -> 2 embed_dim) and
  ``post_quant_conv`` (embed_dim -> z).
* ``ldm/models/diffusion/ddpm.py``: ``LatentDiffusion`` holds ``model.diffusion_model`` (the UNet),
  ``first_stage_model`` (the autoencoder), ``cond_stage_model`` (the text encoder), the schedule
  buffers of ``register_schedule`` (one value per timestep; ``lvlb_weights`` is not persistent) and,
  with ``use_ema``, ``model_ema = LitEma(self.model)``; ``ldm/modules/ema.py``: ``LitEma`` stores
  buffers ``decay`` (float32 scalar), ``num_updates`` (int32 scalar) and one copy of each parameter of
  ``self.model`` named with the dots removed (``diffusion_model.input_blocks.0.0.weight`` ->
  ``model_ema.diffusion_modelinput_blocks00weight``).
* ``ldm/modules/encoders/modules.py``: ``FrozenCLIPEmbedder.transformer`` is
  ``transformers.CLIPTextModel.from_pretrained("openai/clip-vit-large-patch14")``; in the
  transformers 4 releases used to train and save SD 1.x that model holds its weights under
  ``text_model.`` (``embeddings.token_embedding``, ``embeddings.position_embedding``, the persistent
  ``embeddings.position_ids`` buffer [1, max_positions] (int64), ``encoder.layers.{i}`` with
  ``self_attn.{q,k,v,out}_proj``, ``layer_norm1``, ``mlp.fc1`` / ``mlp.fc2``, ``layer_norm2``, and
  ``final_layer_norm``). Sizes from the model card config of openai/clip-vit-large-patch14
  (text_config: ``vocab_size 49408``, ``hidden_size 768``, ``intermediate_size 3072``,
  ``num_hidden_layers 12``, ``max_position_embeddings 77``).

Cross-checked against the key lists measured from real SD 1.x files published in
arenasys/stable-diffusion-webui-model-toolkit (``components/UNET-v1-SD.txt``, ``UNET-v1-EMA.txt``,
``VAE-v1-SD.txt``, ``CLIP-v1-SD.txt``): the same names and shapes, key for key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."
EMA = "model_ema."
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")
JSON_PATH = Path(__file__).resolve().parent / "data" / "sd15_single_file_keys.json"


@dataclass(frozen=True)
class UNetSettings:
    """``unet_config.params`` of v1-inference.yaml (defaults: SD 1.x)."""
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    transformer_depth: int = 1
    context_dim: int = 768


@dataclass(frozen=True)
class AutoencoderSettings:
    """``first_stage_config.params`` of v1-inference.yaml (defaults: SD 1.x)."""
    embed_dim: int = 4
    z_channels: int = 4
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2


@dataclass(frozen=True)
class TextEncoderSettings:
    """The text config of openai/clip-vit-large-patch14 (defaults: ViT-L/14)."""
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    max_position_embeddings: int = 77


Shapes = dict[str, tuple[int, ...]]


def _conv(out: dict, name: str, c_in: int, c_out: int, k: int) -> None:
    out[f"{name}.weight"] = (c_out, c_in, k, k)
    out[f"{name}.bias"] = (c_out,)


def _linear(out: dict, name: str, c_in: int, c_out: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (c_out, c_in)
    if bias:
        out[f"{name}.bias"] = (c_out,)


def _norm(out: dict, name: str, c: int) -> None:
    out[f"{name}.weight"] = (c,)
    out[f"{name}.bias"] = (c,)


def _res_block(out: dict, name: str, c_in: int, c_out: int, emb: int) -> None:
    """openaimodel.ResBlock (use_scale_shift_norm False, use_conv False)."""
    _norm(out, f"{name}.in_layers.0", c_in)
    _conv(out, f"{name}.in_layers.2", c_in, c_out, 3)
    _linear(out, f"{name}.emb_layers.1", emb, c_out)
    _norm(out, f"{name}.out_layers.0", c_out)
    _conv(out, f"{name}.out_layers.3", c_out, c_out, 3)
    if c_in != c_out:
        _conv(out, f"{name}.skip_connection", c_in, c_out, 1)


def _spatial_transformer(out: dict, name: str, c: int, context: int, depth: int) -> None:
    """attention.SpatialTransformer with n_heads * d_head == c (as UNetModel builds it)."""
    _norm(out, f"{name}.norm", c)
    _conv(out, f"{name}.proj_in", c, c, 1)
    for d in range(depth):
        b = f"{name}.transformer_blocks.{d}"
        for attn, ctx in (("attn1", c), ("attn2", context)):
            _linear(out, f"{b}.{attn}.to_q", c, c, bias=False)
            _linear(out, f"{b}.{attn}.to_k", ctx, c, bias=False)
            _linear(out, f"{b}.{attn}.to_v", ctx, c, bias=False)
            _linear(out, f"{b}.{attn}.to_out.0", c, c)
        _linear(out, f"{b}.ff.net.0.proj", c, 2 * 4 * c)  # GEGLU
        _linear(out, f"{b}.ff.net.2", 4 * c, c)
        for n in ("norm1", "norm2", "norm3"):
            _norm(out, f"{b}.{n}", c)
    _conv(out, f"{name}.proj_out", c, c, 1)


def unet_shapes(s: UNetSettings = UNetSettings(), prefix: str = UNET) -> Shapes:
    """openaimodel.UNetModel.__init__, block by block."""
    out: Shapes = {}
    mc, emb = s.model_channels, 4 * s.model_channels
    _linear(out, "time_embed.0", mc, emb)
    _linear(out, "time_embed.2", emb, emb)
    _conv(out, "input_blocks.0.0", s.in_channels, mc, 3)
    skip_chans, ch, ds, idx = [mc], mc, 1, 1
    for level, mult in enumerate(s.channel_mult):
        for _ in range(s.num_res_blocks):
            _res_block(out, f"input_blocks.{idx}.0", ch, mult * mc, emb)
            ch = mult * mc
            if ds in s.attention_resolutions:
                _spatial_transformer(out, f"input_blocks.{idx}.1", ch, s.context_dim, s.transformer_depth)
            skip_chans.append(ch)
            idx += 1
        if level != len(s.channel_mult) - 1:
            _conv(out, f"input_blocks.{idx}.0.op", ch, ch, 3)
            skip_chans.append(ch)
            idx, ds = idx + 1, ds * 2
    _res_block(out, "middle_block.0", ch, ch, emb)
    _spatial_transformer(out, "middle_block.1", ch, s.context_dim, s.transformer_depth)
    _res_block(out, "middle_block.2", ch, ch, emb)
    idx = 0
    for level, mult in reversed(list(enumerate(s.channel_mult))):
        for i in range(s.num_res_blocks + 1):
            _res_block(out, f"output_blocks.{idx}.0", ch + skip_chans.pop(), mc * mult, emb)
            ch, layer = mc * mult, 1
            if ds in s.attention_resolutions:
                _spatial_transformer(out, f"output_blocks.{idx}.1", ch, s.context_dim, s.transformer_depth)
                layer = 2
            if level and i == s.num_res_blocks:
                _conv(out, f"output_blocks.{idx}.{layer}.conv", ch, ch, 3)
                ds //= 2
            idx += 1
    _norm(out, "out.0", ch)
    _conv(out, "out.2", mc, s.out_channels, 3)
    return {prefix + k: v for k, v in out.items()}


def _vae_resnet(out: dict, name: str, c_in: int, c_out: int) -> None:
    _norm(out, f"{name}.norm1", c_in)
    _conv(out, f"{name}.conv1", c_in, c_out, 3)
    _norm(out, f"{name}.norm2", c_out)
    _conv(out, f"{name}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        _conv(out, f"{name}.nin_shortcut", c_in, c_out, 1)


def _vae_mid(out: dict, name: str, c: int) -> None:
    _vae_resnet(out, f"{name}.block_1", c, c)
    _norm(out, f"{name}.attn_1.norm", c)
    for n in ("q", "k", "v", "proj_out"):
        _conv(out, f"{name}.attn_1.{n}", c, c, 1)
    _vae_resnet(out, f"{name}.block_2", c, c)


def autoencoder_shapes(s: AutoencoderSettings = AutoencoderSettings(), prefix: str = VAE) -> Shapes:
    """autoencoder.AutoencoderKL with model.Encoder / model.Decoder (attn_resolutions empty)."""
    out: Shapes = {}
    levels = len(s.ch_mult)
    _conv(out, "encoder.conv_in", s.in_channels, s.ch, 3)
    block_in = s.ch
    for i, mult in enumerate(s.ch_mult):
        block_out = s.ch * mult
        for j in range(s.num_res_blocks):
            _vae_resnet(out, f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != levels - 1:
            _conv(out, f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    _vae_mid(out, "encoder.mid", block_in)
    _norm(out, "encoder.norm_out", block_in)
    _conv(out, "encoder.conv_out", block_in, 2 * s.z_channels, 3)  # double_z
    block_in = s.ch * s.ch_mult[-1]
    _conv(out, "decoder.conv_in", s.z_channels, block_in, 3)
    _vae_mid(out, "decoder.mid", block_in)
    for i in reversed(range(levels)):
        block_out = s.ch * s.ch_mult[i]
        for j in range(s.num_res_blocks + 1):
            _vae_resnet(out, f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != 0:
            _conv(out, f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    _norm(out, "decoder.norm_out", block_in)
    _conv(out, "decoder.conv_out", block_in, s.out_ch, 3)
    _conv(out, "quant_conv", 2 * s.z_channels, 2 * s.embed_dim, 1)
    _conv(out, "post_quant_conv", s.embed_dim, s.z_channels, 1)
    return {prefix + k: v for k, v in out.items()}


def text_encoder_shapes(s: TextEncoderSettings = TextEncoderSettings(), prefix: str = CLIP,
                        position_ids: bool = True) -> Shapes:
    """transformers-4 CLIPTextModel (the ``text_model.`` level is part of ``prefix``)."""
    out: Shapes = {}
    h = s.hidden_size
    out["embeddings.token_embedding.weight"] = (s.vocab_size, h)
    out["embeddings.position_embedding.weight"] = (s.max_position_embeddings, h)
    if position_ids:
        out["embeddings.position_ids"] = (1, s.max_position_embeddings)
    for i in range(s.num_hidden_layers):
        b = f"encoder.layers.{i}"
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(out, f"{b}.self_attn.{p}", h, h)
        _norm(out, f"{b}.layer_norm1", h)
        _linear(out, f"{b}.mlp.fc1", h, s.intermediate_size)
        _linear(out, f"{b}.mlp.fc2", s.intermediate_size, h)
        _norm(out, f"{b}.layer_norm2", h)
    _norm(out, "final_layer_norm", h)
    return {prefix + k: v for k, v in out.items()}


def ema_name(unet_key: str) -> str:
    """LitEma's buffer name for a ``model.diffusion_model.*`` parameter."""
    return EMA + unet_key[len("model."):].replace(".", "")


def single_file_shapes(unet: UNetSettings = UNetSettings(), vae: AutoencoderSettings = AutoencoderSettings(),
                       text: TextEncoderSettings = TextEncoderSettings(), ema: bool = True,
                       timesteps: int = 1000, position_ids: bool = True) -> Shapes:
    """Every tensor of a LatentDiffusion state dict, as the CompVis code saves it."""
    out: Shapes = {k: (timesteps,) for k in SCHEDULE_BUFFERS}
    u = unet_shapes(unet)
    out.update(u)
    if ema:
        out[EMA + "decay"] = ()
        out[EMA + "num_updates"] = ()
        out.update({ema_name(k): v for k, v in u.items()})
    out.update(autoencoder_shapes(vae))
    out.update(text_encoder_shapes(text, position_ids=position_ids))
    return out


def integer_keys(shapes: Shapes) -> dict[str, str]:
    """The tensors stored as integers (everything else is floating point)."""
    return {k: ("int32" if k == EMA + "num_updates" else "int64") for k in shapes
            if k == EMA + "num_updates" or k.endswith("position_ids")}


def write_json(path: Path = JSON_PATH) -> Path:
    shapes = single_file_shapes()
    head = {
        "description": "complete key list (name -> shape) of an SD 1.5 single file with EMA copies "
                       "(v1-5-pruned.ckpt layout), written by tests/ldm_architecture.py from the "
                       "CompVis module layout; see that file for the sources",
        "integer_tensors": integer_keys(shapes),
    }
    lines = [f"{json.dumps(k)}: {json.dumps(list(v))}" for k, v in sorted(shapes.items())]
    text = json.dumps(head, indent=1)[:-2] + ',\n "keys": {\n' + ",\n".join(lines) + "\n}}\n"
    path.write_text(text)
    return path


def read_json(path: Path = JSON_PATH) -> Shapes:
    return {k: tuple(v) for k, v in json.loads(path.read_text())["keys"].items()}


if __name__ == "__main__":
    p = write_json()
    print(f"wrote {len(read_json(p))} keys to {p}")
