"""SD 1.x / 2.x: a VP ``UNet2DConditionModel`` (epsilon or v prediction) under one CLIP text encoder."""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components, index_entry_class

CLIP_L = EncoderSlot("clip_l", "tokenizer", "text_encoder")


def network_call(unet, sample, timestep, cond: dict):
    """The UNet's output for ``sample`` at the scheduler's ``timestep`` (0-999) under ``cond`` (:func:`condition`)."""
    return unet(sample, timestep, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False)[0]


def condition(prompt_embeds) -> dict:
    """The conditioning of one UNet call: the CLIP token states ``(B, 77, D)``."""
    return {"encoder_hidden_states": prompt_embeds}


def matches(index: dict) -> bool:
    """A UNet model with its CLIP text encoder and VAE, and no second text encoder."""
    return has_components(index, FAMILY) and index_entry_class(index, "text_encoder_2") is None


FAMILY = ModelFamily(
    name="sd",
    label="SD 1.x/2.x",
    base="vp",
    network="unet",
    network_classes=("UNet2DConditionModel",),
    pipeline_classes=(
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "LatentSchrodingerBridgePipeline",
        "DDIBPipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "unet", "scheduler"),
    optional_components=("safety_checker", "feature_extractor", "image_encoder"),
    encoder_slots=(CLIP_L,),
    latent_patch=1,
    default_size=512,
    dtypes={"cuda": "float16", "mps": "float16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb.pipeline:LatentSchrodingerBridgePipeline",
        "sdedit": "diffusers:StableDiffusionImg2ImgPipeline",
        "ddib": "lsb_pipelines.ddib.pipeline:DDIBPipeline",
    },
    text_to_image="diffusers:StableDiffusionPipeline",
    text_to_image_kwargs={"safety_checker": None, "requires_safety_checker": False},
    encode_prompt="lsb.prompts.encoding:encode_text",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = ["CLIP_L", "FAMILY", "condition", "matches", "network_call"]
