"""Functions the FLUX.2 pipelines (LSB, FlowEdit) share: VAE latents patchified 2x2 and normalised with the VAE's
BatchNorm statistics (as ``Flux2Pipeline`` / ``Flux2KleinPipeline`` encode and decode them), tokens <-> patchified
latents, the prompt side for a batch, the guidance checks (dev's distilled value, klein's CFG) and dev's processor
dependency."""

from __future__ import annotations

import torch

from ..io.execution import model_dtype
import importlib.util
from pathlib import Path

from ..families import read_model_index
from ..prompts.encoding_flux2 import encode_prompt_flux2
from .flow import check_pixel_multiple, check_prompt_batch
from .zimage import check_zimage_prompt


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, 4C, h/2, w/2), channel order (c, dy, dx)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(latents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b, c4, h, w = latents.shape
    return latents.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


def to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h w, C), row-major."""
    b, c, h, w = latents.shape
    return latents.reshape(b, c, h * w).permute(0, 2, 1)


def from_tokens(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_tokens`."""
    b, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def bn_stats(vae, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's BatchNorm running mean and sqrt(var + eps) as (1, 4C, 1, 1)."""
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(device, dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(device, dtype)
    return mean, std


def encode_flux2_latents(pipe, pixels: torch.Tensor, device) -> torch.Tensor:
    """Images in [-1, 1] -> normalised patchified latents (B, 4C, h/2, w/2) in the transformer's dtype."""
    z = patchify(pipe.vae.encode(pixels.to(device=device, dtype=pipe.vae.dtype)).latent_dist.mode())
    mean, std = bn_stats(pipe.vae, z.device, z.dtype)
    return ((z - mean) / std).to(model_dtype(pipe.transformer))


def decode_flux2_latents(pipe, latents: torch.Tensor, output_type: str = "pil"):
    """Normalised patchified latents -> images of ``output_type`` ("latent": the VAE latents, unpatchified)."""
    mean, std = bn_stats(pipe.vae, latents.device, latents.dtype)
    z = unpatchify(latents * std + mean)
    if output_type == "latent":
        return z
    image = pipe.vae.decode(z.to(pipe.vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type=output_type)


def embeds_for_batch(pipe, name: str, prompt, batch: int, device, max_sequence_length: int) -> torch.Tensor:
    """One prompt side as ``Flux2Pipeline`` / ``Flux2KleinPipeline.encode_prompt`` encode it, repeated to ``batch``
    images."""
    check_zimage_prompt(name, prompt)
    check_prompt_batch(name, prompt, batch)
    embeds = encode_prompt_flux2(pipe.text_encoder, pipe.tokenizer, prompt, device, max_sequence_length)
    return embeds.expand(batch, -1, -1) if embeds.shape[0] == 1 else embeds


def check_flux2_guidance(pipe, *scales) -> None:
    """A distilled klein (``is_distilled``) takes no CFG: a scale given to it is refused with one line."""
    given = [s for s in scales if s is not None]
    if getattr(pipe.config, "is_distilled", False) and given:
        raise ValueError(
            "this FLUX.2 klein model is distilled (is_distilled=True in model_index.json) and ignores guidance: "
            "leave the guidance scales unset"
        )


def is_guidance_distilled(pipe) -> bool:
    """FLUX.2-dev: the transformer embeds a distilled guidance value (no CFG)."""
    return bool(getattr(pipe.transformer.config, "guidance_embeds", False))


def distilled_guidance(pipe, value):
    """dev's guidance value (None: Flux2Pipeline's 4.0); klein has none: a value given is refused with one line."""
    from ..families.flux2 import DEFAULT_DISTILLED_GUIDANCE

    if not is_guidance_distilled(pipe):
        if value is not None:
            raise ValueError(
                "distilled_guidance_scale given for a FLUX.2 klein transformer, which has no guidance embedding: "
                "leave it unset"
            )
        return None
    return DEFAULT_DISTILLED_GUIDANCE if value is None else float(value)


#: what FLUX.2-dev's tokenizer (a processor) needs besides transformers
PROCESSOR_PACKAGES = {"PixtralProcessor": "torchvision"}


def check_processor_packages(model) -> None:
    """A local FLUX.2 folder whose tokenizer is a processor needing a missing package (FLUX.2-dev's
    ``PixtralProcessor``: torchvision) is one line naming the package, before any weights load."""
    if model is None or not (Path(str(model)) / "model_index.json").is_file():
        return
    entry = read_model_index(model).get("tokenizer")
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    package = PROCESSOR_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(f"{model}: its tokenizer ({name}) needs the {package} package: pip install {package}")


def check_flux2_pixels(pixels, vae_scale_factor: int) -> None:
    check_pixel_multiple(pixels, 2 * vae_scale_factor, "FLUX.2 patchifies the latent 2x2")


__all__ = [
    "bn_stats",
    "check_flux2_guidance",
    "check_flux2_pixels",
    "check_processor_packages",
    "distilled_guidance",
    "is_guidance_distilled",
    "decode_flux2_latents",
    "embeds_for_batch",
    "encode_flux2_latents",
    "from_tokens",
    "patchify",
    "to_tokens",
    "unpatchify",
]
