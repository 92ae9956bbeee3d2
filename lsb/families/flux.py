"""FLUX.1 (dev / schnell): a rectified-flow ``FluxTransformer2DModel`` under CLIP-L (pooled) and T5.

The transformer sees the VAE latent ``(B, C, h, w)`` as a sequence of 2x2 patches ("packed latents",
``(B, (h/2)(w/2), 4C)``, channel order (c, dy, dx) as diffusers' ``FluxPipeline`` packs them) with one position
id (0, row, col) per patch and zero ids for the text tokens; it takes the level sigma itself (the scheduler's
timestep / 1000), and a guidance-distilled checkpoint (dev, ``config.guidance_embeds=True``) the distilled guidance
value; schnell has no guidance embedding. Its output is the velocity noise - data, packed.
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components
from .sd import CLIP_L

T5_FLUX = EncoderSlot("t5xxl", "tokenizer_2", "text_encoder_2")

#: diffusers' FluxPipeline default for the distilled guidance of FLUX.1-dev.
DEFAULT_DISTILLED_GUIDANCE = 3.5

#: fallenshock/FlowEdit's published FLUX setting (``FLUX_exp.yaml``, FLUX.1-dev; guidance = the distilled value).
FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 28,
    "n_max": 24,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 1.5,
    "target_guidance_scale": 5.5,
}


def pack_latents(latents):
    """``(B, C, h, w)`` -> ``(B, (h/2)(w/2), 4C)`` (2x2 patches, row-major)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"packed FLUX latents need even latent sides, got {h}x{w}")
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens, latent_height: int, latent_width: int):
    """Inverse of :func:`pack_latents`: ``(B, (h/2)(w/2), 4C)`` -> ``(B, C, h, w)``."""
    b, n, c4 = tokens.shape
    if n != (latent_height // 2) * (latent_width // 2) or c4 % 4:
        raise ValueError(f"{n} tokens of {c4} features do not unpack to a {latent_height}x{latent_width} latent")
    x = tokens.reshape(b, latent_height // 2, latent_width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, latent_height, latent_width)


def latent_image_ids(latent_height: int, latent_width: int, device=None, dtype=None):
    """FLUX's ``img_ids`` for a packed latent: ``((h/2)(w/2), 3)`` rows (0, row, col) (default dtype float32)."""
    import torch

    rows = torch.arange(latent_height // 2, dtype=torch.float64)
    cols = torch.arange(latent_width // 2, dtype=torch.float64)
    grid = torch.stack(
        [
            torch.zeros(len(rows), len(cols), dtype=torch.float64),
            rows[:, None].expand(-1, len(cols)),
            cols[None, :].expand(len(rows), -1),
        ],
        dim=-1,
    )
    return grid.reshape(-1, 3).to(device=device, dtype=dtype or torch.float32)


def network_call(transformer, hidden_states, timestep, cond: dict):
    """The packed velocity for packed latents ``hidden_states`` at the scheduler's ``timestep`` (sigma x 1000): the
    transformer takes sigma, cast to the latents' dtype and divided by 1000 as diffusers' ``FluxPipeline`` does."""
    import torch

    timestep = torch.as_tensor(timestep, device=hidden_states.device).expand(hidden_states.shape[0])
    return transformer(
        hidden_states=hidden_states,
        timestep=timestep.to(hidden_states.dtype) / 1000,
        guidance=cond["guidance"],
        pooled_projections=cond["pooled_projections"],
        encoder_hidden_states=cond["encoder_hidden_states"],
        txt_ids=cond["txt_ids"],
        img_ids=cond["img_ids"],
        return_dict=False,
    )[0]


def condition(
    prompt_embeds,
    pooled_prompt_embeds,
    text_ids,
    latent_height: int,
    latent_width: int,
    guidance=None,
) -> dict:
    """The conditioning of one transformer call on ``B = len(prompt_embeds)`` packed latents of a
    ``latent_height`` x ``latent_width`` VAE latent: T5 token states, CLIP pooled embedding, the text and image
    position ids, and the distilled guidance (None for schnell; a number or one value per row)."""
    import torch

    device, dtype = prompt_embeds.device, prompt_embeds.dtype
    if guidance is not None:
        guidance = torch.as_tensor(guidance, device=device, dtype=torch.float32)
        guidance = guidance.expand(prompt_embeds.shape[0]) if guidance.ndim == 0 else guidance
    return {
        "encoder_hidden_states": prompt_embeds,
        "pooled_projections": pooled_prompt_embeds,
        "txt_ids": text_ids,
        "img_ids": latent_image_ids(latent_height, latent_width, device, dtype),
        "guidance": guidance,
    }


def matches(index: dict) -> bool:
    """A FLUX.1 transformer with CLIP-L, T5 and its VAE."""
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="flux",
    label="FLUX.1",
    base="flow",
    network="transformer",
    network_classes=("FluxTransformer2DModel",),
    pipeline_classes=(
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "LatentSchrodingerBridgeFluxPipeline",
        "FlowEditFluxPipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer", "scheduler"),
    optional_components=("image_encoder", "feature_extractor"),
    encoder_slots=(CLIP_L, T5_FLUX),
    latent_patch=2,
    default_size=1024,  # FluxPipeline's default 128 latents: the transformer config has no sample size
    dtypes={"cuda": "bfloat16", "mps": "bfloat16", "cpu": "float32"},
    float16_unstable="T5-XXL and the FLUX transformer overflow in float16; diffusers runs FLUX.1 in bfloat16",
    pipelines={
        "lsb": "lsb_pipelines.lsb_flux.pipeline:LatentSchrodingerBridgeFluxPipeline",
        "flowedit": "lsb_pipelines.flowedit_flux.pipeline:FlowEditFluxPipeline",
        "sdedit": "diffusers:FluxImg2ImgPipeline",
    },
    method_defaults={"flowedit": FLOWEDIT_DEFAULTS},
    text_to_image="diffusers:FluxPipeline",
    encode_prompt="lsb.prompts.encoding_flux:encode_prompt_flux",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = [
    "DEFAULT_DISTILLED_GUIDANCE",
    "FAMILY",
    "FLOWEDIT_DEFAULTS",
    "T5_FLUX",
    "condition",
    "latent_image_ids",
    "matches",
    "network_call",
    "pack_latents",
    "unpack_latents",
]
