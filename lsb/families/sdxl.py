"""SDXL: a VP ``UNet2DConditionModel`` with text-time conditioning under two CLIP text encoders.

The UNet takes the concatenated token states of both encoders, and ``added_cond_kwargs`` with CLIP-G's pooled
embedding (``text_embeds``) and six time ids per image (original size, crop corner, target size).
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components
from .sd import CLIP_L

CLIP_G = EncoderSlot("clip_g", "tokenizer_2", "text_encoder_2")


def network_call(unet, sample, timestep, cond: dict):
    """The UNet's output for ``sample`` at ``timestep`` under one SDXL conditioning dict (:func:`condition`)."""
    return unet(
        sample,
        timestep,
        encoder_hidden_states=cond["encoder_hidden_states"],
        added_cond_kwargs=cond["added_cond_kwargs"],
        return_dict=False,
    )[0]


def condition(prompt_embeds, pooled_prompt_embeds, time_ids) -> dict:
    """The conditioning of one UNet call: token states ``(B, 77, D_l + D_g)``, pooled ``(B, P)``, time ids ``(B, 6)``."""
    return {
        "encoder_hidden_states": prompt_embeds,
        "added_cond_kwargs": {"text_embeds": pooled_prompt_embeds, "time_ids": time_ids},
    }


def matches(index: dict) -> bool:
    """A UNet model with both CLIP text encoders and a VAE (an SDXL refiner, without CLIP-L, is not a translator)."""
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="sdxl",
    label="SDXL",
    base="vp",
    network="unet",
    network_classes=("UNet2DConditionModel",),
    pipeline_classes=(
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
        "LatentSchrodingerBridgeXLPipeline",
        "DDIBXLPipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "unet", "scheduler"),
    optional_components=("image_encoder", "feature_extractor"),
    encoder_slots=(CLIP_L, CLIP_G),
    latent_patch=1,
    default_size=1024,
    dtypes={"cuda": "float16", "mps": "float16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb_xl.pipeline:LatentSchrodingerBridgeXLPipeline",
        "sdedit": "diffusers:StableDiffusionXLImg2ImgPipeline",
        "ddib": "lsb_pipelines.ddib_xl.pipeline:DDIBXLPipeline",
    },
    text_to_image="diffusers:StableDiffusionXLPipeline",
    text_to_image_kwargs={"add_watermarker": False},
    encode_prompt="lsb.prompts.encoding_sdxl:encode_prompt_sdxl",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = ["CLIP_G", "FAMILY", "condition", "matches", "network_call"]
