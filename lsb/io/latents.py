"""THE VAE encode / decode of the project: images in [-1, 1] <-> the latents a diffusion / flow model sees.

Every model family stores its latents as ``(vae_latent - shift_factor) * scaling_factor``: SD 1.x/2.x/XL have
no shift (``shift_factor`` absent or None -> 0), SD3 / SD3.5 (0.0609) and FLUX.1 (0.1159) have one, as their
diffusers pipelines apply it. Encoding uses the posterior mode (deterministic). A zero shift is not applied at
all, so SD latents are bit-for-bit ``mode * scaling_factor``.
"""

from __future__ import annotations

import torch

from .execution import model_dtype


def latent_shift(vae) -> float:
    """``vae.config.shift_factor``, 0 when the VAE has none (SD 1.x/2.x/XL)."""
    shift = getattr(vae.config, "shift_factor", None)
    return 0.0 if shift is None else float(shift)


def vae_to_model_latents(vae, vae_latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents (posterior mode or sample) -> model latents ``(z - shift_factor) * scaling_factor``."""
    shift = latent_shift(vae)
    if shift:
        vae_latents = vae_latents - shift
    return vae_latents * vae.config.scaling_factor


def model_to_vae_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Model latents -> raw VAE latents ``z / scaling_factor + shift_factor``, in the VAE's dtype."""
    vae_latents = latents.to(model_dtype(vae)) / vae.config.scaling_factor
    shift = latent_shift(vae)
    return vae_latents + shift if shift else vae_latents


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, device=None) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> model latents ``(mode - shift_factor) * scaling_factor``.

    ``pixels`` go to ``device`` (default: where they are) in the VAE's dtype; the latents come back in that
    dtype. NaN/inf latents raise FloatingPointError.
    """
    pixels = pixels.to(device=device if device is not None else pixels.device, dtype=model_dtype(vae))
    latents = vae_to_model_latents(vae, vae.encode(pixels).latent_dist.mode())
    if not torch.isfinite(latents).all():
        raise FloatingPointError("the VAE produced NaN/inf latents for the input image(s)")
    return latents


@torch.no_grad()
def decode_pixels(vae, latents: torch.Tensor) -> torch.Tensor:
    """Model latents -> decoded images as a tensor (B, 3, H, W), nominally in [-1, 1] (not clamped)."""
    return vae.decode(model_to_vae_latents(vae, latents)).sample


@torch.no_grad()
def decode_latents(vae, image_processor, latents: torch.Tensor, output_type: str = "pil"):
    """Model latents -> images of ``output_type`` ("pil", "np", "pt"); "latent" returns them unchanged."""
    if output_type == "latent":
        return latents
    return image_processor.postprocess(decode_pixels(vae, latents), output_type=output_type)


__all__ = [
    "latent_shift",
    "vae_to_model_latents",
    "model_to_vae_latents",
    "encode_latents",
    "decode_pixels",
    "decode_latents",
]
