"""Architecture of the embedded mini Stable Diffusion.

The same component classes as SD 1.x (AutoencoderKL, UNet2DConditionModel, CLIPTextModel,
CLIPTokenizer, an SD scheduler), scaled down for 64 x 64 images of the shapes world: latents are
8 x 8 x 4 (SD's factor 8 and 4 channels). Builders take overrides so experiments can change a size
without editing this file.
"""

from __future__ import annotations

import copy

from ..data.shapes import caption_vocabulary
from .word_tokenizer import TEMPLATE_WORDS, build_word_tokenizer

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[16, 32, 64, 64],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
    scaling_factor=1.0,  # set from the trained encoder's latent std at export
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[64, 128, 128],
    layers_per_block=1,
    attention_head_dim=8,
    cross_attention_dim=128,
    norm_num_groups=32,
)

TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=24,
    hidden_act="quick_gelu",
    projection_dim=128,
)

# The scheduler Stable Diffusion 1.x ships (shared/configs/sd15/scheduler.json).
SCHEDULER_CONFIG = dict(
    _class_name="PNDMScheduler",
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
    trained_betas=None,
    clip_sample=False,
    prediction_type="epsilon",
)


def merged_config(base: dict, overrides: dict | None) -> dict:
    """A deep copy of the config ``base`` with ``overrides`` applied (the builders' ``**overrides``)."""
    cfg = copy.deepcopy(base)
    cfg.update(overrides or {})
    return cfg


def clip_token_ids(tokenizer) -> dict:
    """The entries a CLIP text config takes from its tokenizer: ``vocab_size`` and the bos / eos / pad ids."""
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tokenizer(max_length: int | None = None):
    return build_word_tokenizer(
        caption_vocabulary() + list(TEMPLATE_WORDS),
        model_max_length=max_length or TEXT_CONFIG["max_position_embeddings"],
    )


def build_vae(**overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**merged_config(VAE_CONFIG, overrides))


def build_unet(**overrides):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**merged_config(UNET_CONFIG, overrides))


def build_text_encoder(tokenizer, **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = merged_config(TEXT_CONFIG, overrides)
    cfg.update(clip_token_ids(tokenizer))
    return CLIPTextModel(CLIPTextConfig(**cfg))


def build_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(SCHEDULER_CONFIG)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
