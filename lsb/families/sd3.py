"""SD3 / SD3.5: a rectified-flow ``SD3Transformer2DModel`` under two CLIP encoders and an optional T5.

The transformer takes the timestep on the scheduler's 0-1000 scale (sigma x 1000) as the scheduler lists it, the
joint token states (CLIP-L and CLIP-G padded to T5's width, then T5) and the pooled CLIP embeddings; its output is
the velocity noise - data. Latents are ``(vae_latent - shift_factor) * scaling_factor``.
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components
from .sd import CLIP_L
from .sdxl import CLIP_G

T5_SD3 = EncoderSlot("t5xxl", "tokenizer_3", "text_encoder_3")

#: fallenshock/FlowEdit's published SD3 setting (``SD3_exp.yaml``): T = 50 levels, edit from level n_max = 33.
FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 50,
    "n_max": 33,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 3.5,
    "target_guidance_scale": 13.5,
}


def network_call(transformer, hidden_states, timestep, cond: dict):
    """The velocity for latents ``hidden_states`` (B, C, h, w) at the scheduler's ``timestep`` (sigma x 1000, passed
    as diffusers' ``StableDiffusion3Pipeline`` passes it: expanded to the batch, not cast)."""
    import torch

    timestep = torch.as_tensor(timestep, device=hidden_states.device).expand(hidden_states.shape[0])
    return transformer(
        hidden_states=hidden_states,
        timestep=timestep,
        encoder_hidden_states=cond["encoder_hidden_states"],
        pooled_projections=cond["pooled_projections"],
        return_dict=False,
    )[0]


def condition(prompt_embeds, pooled_prompt_embeds) -> dict:
    """The conditioning of one transformer call: joint token states ``(B, L, joint_attention_dim)`` and pooled
    CLIP embeddings ``(B, pooled_projection_dim)``."""
    return {"encoder_hidden_states": prompt_embeds, "pooled_projections": pooled_prompt_embeds}


def matches(index: dict) -> bool:
    """An SD3 transformer with its two CLIP encoders and VAE (T5 optional)."""
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="sd3",
    label="SD3 / SD3.5",
    base="flow",
    network="transformer",
    network_classes=("SD3Transformer2DModel",),
    pipeline_classes=(
        "StableDiffusion3Pipeline",
        "StableDiffusion3Img2ImgPipeline",
        "LatentSchrodingerBridgeSD3Pipeline",
        "FlowEditSD3Pipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer", "scheduler"),
    optional_components=("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor"),
    encoder_slots=(CLIP_L, CLIP_G, T5_SD3),
    latent_patch=1,
    default_size=1024,
    # diffusers' SD3.5 examples load bfloat16 (SD3-medium's also run in float16)
    dtypes={"cuda": "bfloat16", "mps": "float16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb_sd3.pipeline:LatentSchrodingerBridgeSD3Pipeline",
        "flowedit": "lsb_pipelines.flowedit_sd3.pipeline:FlowEditSD3Pipeline",
        "sdedit": "diffusers:StableDiffusion3Img2ImgPipeline",
    },
    method_defaults={"flowedit": FLOWEDIT_DEFAULTS},
    text_to_image="diffusers:StableDiffusion3Pipeline",
    encode_prompt="lsb.prompts.encoding_sd3:encode_prompt_sd3",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = ["FAMILY", "FLOWEDIT_DEFAULTS", "T5_SD3", "condition", "matches", "network_call"]
