"""Functions the Z-Image pipelines (LSB, FlowEdit) share: prompts as caption lists broadcast to the images, and
the image sizes the transformer's 2x2 patching takes. Every check is a ValueError before any transformer compute."""

from __future__ import annotations

from ..prompts.encoding_zimage import encode_prompt_zimage
from .flow import check_pixel_multiple, check_prompt_batch


def check_zimage_prompt(name: str, prompt) -> None:
    """A Z-Image prompt side is text: a string or a non-empty list of strings."""
    if not (
        isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))
    ):
        raise ValueError(f"{name}_prompt must be a string or a non-empty list of strings, got {prompt!r}")


def captions_for_batch(pipe, name: str, prompt, batch: int, device, max_sequence_length: int) -> list:
    """One prompt side encoded as ``ZImagePipeline`` encodes it (:func:`encode_prompt_zimage`), one caption tensor
    per image: a single prompt is repeated, a list must have 1 or ``batch`` entries."""
    check_zimage_prompt(name, prompt)
    check_prompt_batch(name, prompt, batch)
    caps = encode_prompt_zimage(pipe.text_encoder, pipe.tokenizer, prompt, device, max_sequence_length)
    return caps * batch if len(caps) == 1 else caps


def check_zimage_pixels(pixels, vae_scale_factor: int) -> None:
    """Image sides must be multiples of 2 x the VAE factor (16 px): the transformer patchifies the latent 2x2."""
    check_pixel_multiple(pixels, 2 * vae_scale_factor, "Z-Image's transformer takes the latent in 2x2 patches")


__all__ = ["captions_for_batch", "check_zimage_pixels", "check_zimage_prompt"]
