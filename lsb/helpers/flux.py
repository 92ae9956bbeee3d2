"""FLUX.1's latent layout and conditioning checks, shared by the FLUX pipelines (LSB, FlowEdit).

FLUX's transformer sees the VAE latent [B, C, h, w] as a sequence of 2x2 patches ("packed latents",
[B, (h/2)(w/2), 4C], channel order (c, dy, dx) as in diffusers' ``FluxPipeline``) with one position id
(0, row, col) per patch; the image side must therefore be a multiple of 2 x the VAE factor (16 px).
Guidance-distilled checkpoints (FLUX.1-dev, ``transformer.config.guidance_embeds=True``) also take the
distilled guidance value; FLUX.1-schnell has no guidance embedding and takes none.
"""

from __future__ import annotations

import math

from ..families.flux import DEFAULT_DISTILLED_GUIDANCE, latent_image_ids, pack_latents, unpack_latents


def check_flux_image_size(height: int, width: int, vae_scale_factor: int, what: str = "image") -> None:
    """ValueError unless both sides are multiples of 2 x ``vae_scale_factor`` (16 px for FLUX's VAE)."""
    step = 2 * vae_scale_factor
    if height % step or width % step:
        raise ValueError(
            f"{what} size {width}x{height} is not a multiple of {step} px: FLUX packs the "
            f"{vae_scale_factor}x-downsampled latent into 2x2 patches; resize or crop it first"
        )


def check_distilled_guidance(transformer, distilled_guidance_scale: float | None) -> float | None:
    """The guidance value to embed, or None for a model without a guidance embedding (FLUX.1-schnell).

    A value given to a model with ``config.guidance_embeds=False`` is a ValueError (it would be ignored, or
    crash inside the transformer); a guidance-distilled model given ``None`` gets diffusers' default 3.5.
    """
    has_embedding = bool(getattr(transformer.config, "guidance_embeds", False))
    if distilled_guidance_scale is None:
        return DEFAULT_DISTILLED_GUIDANCE if has_embedding else None
    if not has_embedding:
        raise ValueError(
            f"distilled_guidance_scale={distilled_guidance_scale!r} given, but this FLUX transformer "
            "has no guidance embedding (config.guidance_embeds=False, e.g. FLUX.1-schnell): "
            "leave it None"
        )
    value = float(distilled_guidance_scale)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"distilled_guidance_scale must be a finite number >= 0, got {distilled_guidance_scale!r}")
    return value


__all__ = [
    "DEFAULT_DISTILLED_GUIDANCE",
    "check_distilled_guidance",
    "check_flux_image_size",
    "latent_image_ids",
    "pack_latents",
    "unpack_latents",
]
