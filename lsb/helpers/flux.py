"""FLUX.1's latent layout and conditioning checks, shared by the FLUX pipelines (LSB, FlowEdit).

FLUX's transformer sees the VAE latent [B, C, h, w] as a sequence of 2x2 patches ("packed latents",
[B, (h/2)(w/2), 4C], channel order (c, dy, dx) as in diffusers' ``FluxPipeline``) with one position id
(0, row, col) per patch; the image side must therefore be a multiple of 2 x the VAE factor (16 px).
Guidance-distilled checkpoints (FLUX.1-dev, ``transformer.config.guidance_embeds=True``) also take the
distilled guidance value; FLUX.1-schnell has no guidance embedding and takes none.
"""

from __future__ import annotations

import math

import torch

#: diffusers' FluxPipeline default for the distilled guidance of FLUX.1-dev.
DEFAULT_DISTILLED_GUIDANCE = 3.5


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C] (2x2 patches, row-major)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"packed FLUX latents need even latent sides, got {h}x{w}")
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: [B, (h/2)(w/2), 4C] -> [B, C, h, w]."""
    b, n, c4 = tokens.shape
    if n != (latent_height // 2) * (latent_width // 2) or c4 % 4:
        raise ValueError(f"{n} tokens of {c4} features do not unpack to a {latent_height}x{latent_width} latent")
    x = tokens.reshape(b, latent_height // 2, latent_width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, latent_height, latent_width)


def latent_image_ids(latent_height: int, latent_width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """FLUX's ``img_ids`` for a packed latent: [(h/2)(w/2), 3] rows (0, row, col)."""
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
    return grid.reshape(-1, 3).to(device=device, dtype=dtype)


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
