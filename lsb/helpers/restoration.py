"""What the latent restoration pipelines share, as functions over the pipeline: registration, input checks, the
encoding of the degraded images before the sampling loop and the decoding after it.

The restoration pipelines (``BridgeRestorationPipeline``: I2SB / DDBM / DBIM bridges; the Palette-style
``ConditionalDiffusionRestorationPipeline`` baseline) work in the latent space of a Stable-Diffusion VAE: the
degraded image is VAE-encoded to x_T (= I2SB's X_1), and a UNet whose input is ``concat([x_t, x_T])``
(:mod:`lsb.helpers.concat_unet`) is conditioned on the empty prompt. Each pipeline calls, in diffusers' rhythm,
:func:`register_restoration` in ``__init__``, :func:`check_restoration_inputs` in ``check_inputs``, then
:func:`prepare_restoration`, its own sampling loop, and :func:`restoration_output`.

The other concepts of restoration live in their own modules and are re-exported here: the registry of tasks,
bridges and samplers (:mod:`lsb.helpers.restoration_tasks`), bridge specs and scheduler factories
(:mod:`lsb.helpers.bridge_schedulers`), the concatenated-input UNet (:mod:`lsb.helpers.concat_unet`) and the mask
parser (:mod:`lsb.helpers.mask_parsing`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..io.execution import execution_device
from ..io.latents import decode_pixels
from .bridge_schedulers import (
    bridge_spec,
    check_scheduler_for_bridge,
    make_bridge_scheduler,
    steps_for_nfe,
    training_scheduler,
)
from .concat_unet import bridge_denoise, check_concat_unet, empty_prompt_embeds, expand_conv_in, unet_call
from .mask_parsing import paste_known, preprocess_mask
from .restoration_tasks import (
    BRIDGES,
    I2SB_BETA_MAX,
    LATENT_SIGMA_DATA,
    OUTPUT_TYPES,
    SAMPLERS,
    TASKS,
    RestorationPipelineOutput,
    check_task,
)


def register_restoration(
    pipe,
    vae,
    text_encoder,
    tokenizer,
    unet,
    scheduler,
    task: str,
    trained_bridge: dict | None,
    check_scheduler: Callable[[object, dict], None] | None = None,
) -> None:
    """Check the components, then register them on ``pipe`` with its config (``task``, ``trained_bridge``).

    ``trained_bridge`` defaults to :func:`bridge_spec` of ``scheduler``; ``check_scheduler(scheduler,
    trained_bridge)`` is the pipeline's own check of the scheduler's kind, run before the bridge comparison."""
    from diffusers.image_processor import VaeImageProcessor

    check_task(task)
    check_concat_unet(unet, vae.config.latent_channels)
    trained_bridge = dict(trained_bridge) if trained_bridge else bridge_spec(scheduler)
    if check_scheduler is not None:
        check_scheduler(scheduler, trained_bridge)
    check_scheduler_for_bridge(scheduler, trained_bridge)
    pipe.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.register_to_config(task=task, trained_bridge=trained_bridge)
    pipe.vae_scale_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    pipe.image_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor)


def check_restoration_inputs(pipe, image, num_inference_steps, output_type) -> None:
    """ValueError for a missing image, a step count that is not a positive integer, an unknown ``output_type``, or a
    scheduler that does not sample the pipeline's trained bridge."""
    if image is None:
        raise ValueError("`image` is required: the degraded picture(s) to restore")
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    check_scheduler_for_bridge(pipe.scheduler, pipe.config.trained_bridge)


def prepare_restoration(pipe, image, mask, num_inference_steps):
    """Encode the degraded images and set the scheduler's timesteps (after the pipeline's ``check_inputs``).

    Returns ``(pixels, masks, x_T, embeds, device)``: the images in [-1, 1], the inpainting masks (or None),
    their latents, the batched empty-prompt embedding and the execution device.
    """
    from .translation import encode_images, preprocess_images

    pixels = preprocess_images(image, pipe.image_processor, pipe.vae_scale_factor)
    batch, _, height, width = pixels.shape
    masks = preprocess_mask(mask, batch, height, width) if mask is not None else None
    device = execution_device(pipe)

    x_T = encode_images(pipe.vae, pixels, device).float()
    embeds = empty_prompt_embeds(pipe.text_encoder, pipe.tokenizer, device).expand(batch, -1, -1)
    pipe.scheduler.set_timesteps(num_inference_steps, device=device)
    return pixels, masks, x_T, embeds, device


def restoration_output(pipe, x, pixels, masks, output_type, nfe: int, return_dict: bool):
    """Decode the final latents (keeping the known pixels of an inpainting input) into the pipeline output."""
    if output_type == "latent":
        images = x
    else:
        decoded = decode_pixels(pipe.vae, x).float()  # THE VAE decode (lsb.io.latents)
        decoded = paste_known(decoded.clamp(-1, 1), pixels.to(decoded.device), masks)
        images = pipe.image_processor.postprocess(decoded, output_type=output_type)
    pipe.maybe_free_model_hooks()
    if not return_dict:
        return images, nfe
    return RestorationPipelineOutput(images=images, nfe=nfe)


__all__ = [
    "BRIDGES",
    "I2SB_BETA_MAX",
    "LATENT_SIGMA_DATA",
    "OUTPUT_TYPES",
    "SAMPLERS",
    "TASKS",
    "RestorationPipelineOutput",
    "bridge_denoise",
    "bridge_spec",
    "check_concat_unet",
    "check_restoration_inputs",
    "check_scheduler_for_bridge",
    "check_task",
    "empty_prompt_embeds",
    "expand_conv_in",
    "make_bridge_scheduler",
    "paste_known",
    "prepare_restoration",
    "preprocess_mask",
    "register_restoration",
    "restoration_output",
    "steps_for_nfe",
    "training_scheduler",
    "unet_call",
]
