"""The plain text-to-image pipeline of a model (what prompt optimization trains on) and its native image size.

:func:`load_base_pipeline` picks diffusers' own class for the model's family and loads it through
:func:`lsb.helpers.loading.load_pipeline`; :func:`model_resolution` reads the side a loaded pipeline's denoiser was
built for.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .loading import absent_components, detect_model_family, load_pipeline


def load_base_pipeline(model, device: torch.device, dtype: torch.dtype):
    """The text-to-image pipeline of ``model``: None (the embedded mini SD), a folder or a Hub id.

    A local folder whose ``model_index.json`` is an SDXL model loads as ``StableDiffusionXLPipeline`` (no
    watermarker); one naming ``StableDiffusion3Pipeline`` / ``FluxPipeline`` loads with that class (SD3 saved without
    T5: :func:`~lsb.helpers.loading.absent_components`). Everything else loads as ``StableDiffusionPipeline``
    without a safety checker."""
    from diffusers import StableDiffusionPipeline

    index = Path(str(model)) / "model_index.json" if model is not None else None
    if index is not None and index.is_file():
        name = str(json.loads(index.read_text()).get("_class_name", ""))
        if detect_model_family(str(model)) == "sdxl":
            from diffusers import StableDiffusionXLPipeline

            return load_pipeline(
                StableDiffusionXLPipeline, str(model), device=device, dtype=dtype, add_watermarker=False
            )
        if name.startswith(("StableDiffusion3", "Flux")):
            from diffusers import FluxPipeline, StableDiffusion3Pipeline

            cls = StableDiffusion3Pipeline if name.startswith("StableDiffusion3") else FluxPipeline
            return load_pipeline(cls, str(model), device=device, dtype=dtype, **absent_components(model))
    return load_pipeline(
        StableDiffusionPipeline,
        None if model is None else str(model),
        device=device,
        dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )


def model_resolution(pipe) -> int:
    """Image side the pipeline's denoiser was built for: ``sample_size * vae_scale_factor`` of the UNet or the SD3
    transformer; FLUX's transformer has no sample size: FluxPipeline's default 128 latents (1024 px)."""
    factor = getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    net = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    size = getattr(net.config, "sample_size", None) or 128
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) * int(factor)


__all__ = ["load_base_pipeline", "model_resolution"]
