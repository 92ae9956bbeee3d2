"""Functions the Qwen-Image pipelines (LSB, FlowEdit) share: the 5-D VAE latents normalised with the VAE's
``latents_mean`` / ``latents_std`` (as ``QwenImageImg2ImgPipeline`` encodes and ``QwenImagePipeline`` decodes),
prompt sides broadcast to the images, and two sides joined into one batched call with a text mask."""

from __future__ import annotations

import torch

from ..io.execution import model_dtype
from ..prompts.encoding_qwenimage import encode_prompt_qwenimage
from .flow import check_pixel_multiple, check_prompt_batch
from .zimage import check_zimage_prompt


def latent_stats(vae, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE config's per-channel ``latents_mean`` and ``latents_std`` as (1, C, 1, 1, 1) tensors."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(device, dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(device, dtype)
    return mean, std


def encode_qwen_latents(pipe, pixels: torch.Tensor, device) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, C, h, w) ``(mode - mean) / std`` in the
    transformer's dtype (the frame axis of the video VAE dropped)."""
    vae = pipe.vae
    z = vae.encode(pixels.to(device=device, dtype=vae.dtype).unsqueeze(2)).latent_dist.mode()
    mean, std = latent_stats(vae, z.device, z.dtype)
    return ((z - mean) / std)[:, :, 0].to(model_dtype(pipe.transformer))


def decode_qwen_latents(pipe, latents: torch.Tensor, output_type: str = "pil"):
    """Normalised latents (B, C, h, w) -> images of ``output_type`` ("latent": the latents themselves)."""
    if output_type == "latent":
        return latents
    vae = pipe.vae
    z = latents.to(vae.dtype).unsqueeze(2)
    mean, std = latent_stats(vae, z.device, z.dtype)
    image = vae.decode(z * std + mean, return_dict=False)[0][:, :, 0]
    return pipe.image_processor.postprocess(image, output_type=output_type)


def side_for_batch(pipe, name: str, prompt, batch: int, device, max_sequence_length: int):
    """One prompt side as ``QwenImagePipeline.encode_prompt`` encodes it, ``(embeds (B, L, D), mask (B, L))`` for
    ``batch`` images (a single prompt repeated; the mask all ones when the encoder gave None)."""
    check_zimage_prompt(name, prompt)
    check_prompt_batch(name, prompt, batch)
    embeds, mask = encode_prompt_qwenimage(pipe.text_encoder, pipe.tokenizer, prompt, device, max_sequence_length)
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    if embeds.shape[0] == 1:
        embeds, mask = embeds.expand(batch, -1, -1), mask.expand(batch, -1)
    return embeds, mask


def join_sides(*sides) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sides ``(embeds, mask)`` stacked on the batch axis, zero-padded to the longest with the mask marking real
    tokens; the mask is None when every token is real (as diffusers passes it)."""
    longest = max(e.shape[1] for e, _ in sides)
    embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, longest - e.shape[1])) for e, _ in sides])
    mask = torch.cat([torch.nn.functional.pad(m, (0, longest - m.shape[1])) for _, m in sides])
    return embeds, (None if mask.all() else mask)


def check_qwen_pixels(pixels, vae_scale_factor: int) -> None:
    """Image sides must be multiples of 2 x the VAE factor (16 px): the latents are packed 2x2."""
    check_pixel_multiple(pixels, 2 * vae_scale_factor, "Qwen-Image packs the latent into 2x2 patches")


__all__ = [
    "check_qwen_pixels",
    "decode_qwen_latents",
    "encode_qwen_latents",
    "join_sides",
    "latent_stats",
    "side_for_batch",
]
