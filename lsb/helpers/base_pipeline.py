"""The plain text-to-image pipeline of a model (what prompt optimization trains on) and its native image size.

:func:`load_base_pipeline` picks diffusers' own class for the model's family and loads it through
:func:`lsb.helpers.loading.load_pipeline`; :func:`model_resolution` reads the side a loaded pipeline's denoiser was
built for.
"""

from __future__ import annotations

import torch

from .loading import absent_components, detect_model_family, load_pipeline


def load_base_pipeline(model, device: torch.device, dtype: torch.dtype):
    """The text-to-image pipeline of ``model`` (None: the embedded mini SD; a folder or a Hub id): diffusers' own class
    for the model's family (``ModelFamily.text_to_image``: StableDiffusionPipeline without a safety checker,
    StableDiffusionXLPipeline without the watermarker, StableDiffusion3Pipeline, FluxPipeline), loaded with
    :func:`lsb.helpers.loading.load_pipeline` (an SD3 folder saved without T5:
    :func:`~lsb.helpers.loading.absent_components`)."""
    from ..families import FAMILIES
    from ..families.record import resolve

    family = FAMILIES[detect_model_family(None if model is None else str(model))]
    kwargs = {**absent_components(model), **family.text_to_image_kwargs}
    return load_pipeline(
        resolve(family.text_to_image), None if model is None else str(model), device=device, dtype=dtype, **kwargs
    )


def model_resolution(pipe) -> int:
    """Image side the pipeline's denoiser was built for (:func:`lsb.families.native_resolution`: ``sample_size`` x
    the VAE factor, FLUX.1's default 1024 px)."""
    from ..families import native_resolution

    return native_resolution(pipe)


__all__ = ["load_base_pipeline", "model_resolution"]
