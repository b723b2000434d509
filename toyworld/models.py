"""Architectures and configs of the toy-world models (all stock diffusers / transformers classes).

The pipelines are ordinary ``StableDiffusionPipeline`` folders: CLIP BPE tokenizer (the real one,
``assets/configs/sd1/tokenizer``, with ``model_max_length`` cut to 16), a 2-layer ``CLIPTextModel`` of
width 64, a ``UNet2DConditionModel`` of ~4 M parameters on 16x16x4 latents and a small
``AutoencoderKL`` (downsampling factor 4).

The UNet uses diffusers' standard ``addition_embed_type="text"`` option: an attention-pooled summary of
``encoder_hidden_states`` is added to the time embedding (a ``TextTimeEmbedding``, as in DeepFloyd IF).
The toyworld probe found that feeding a pooled text embedding into the time embedding is what lets a
tiny UNet pick up colour in minutes; this option does it from ``encoder_hidden_states`` alone, so a
plain ``unet(x, t, encoder_hidden_states=emb)`` call (what every SD sampler does) is all it needs.
"""
from __future__ import annotations

import os

from fusion.loading import encode_text  # noqa: F401  (the toy world encodes prompts as fusion does)
from fusion.paths import PROJECT_ROOT as REPO  # noqa: F401  (old name)
from fusion.paths import SD1_TOKENIZER, TOY_MODELS_DIR  # noqa: F401
from fusion.paths import TOY_EXPERT as DEFAULT_CARTOON  # noqa: F401
from fusion.paths import TOY_GENERAL as DEFAULT_GENERAL  # noqa: F401
from fusion.paths import TOY_JUDGE as JUDGE_PATH  # noqa: F401
MAX_TOKENS = 16

# Same betas as the LDM / SD 1.x sampler used by the fusion engine.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
)

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=4,
    norm_num_groups=16,
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=64,
)


def make_tokenizer():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(SD1_TOKENIZER), local_files_only=True)
    tok.model_max_length = MAX_TOKENS
    return tok


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)




def offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
