"""LatentSchrodingerBridgeFlux2Pipeline: unpaired image-to-image translation with a FLUX.2 (dev or klein) model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on a rectified-flow base, as the other flow
pipelines: one batched transformer call on [source; target] per step, :class:`lsb.LSBScheduler` with
``prediction_type="flow_prediction"``, the loop :func:`lsb.helpers.bridge_loop.integrate_bridge`. FLUX.2 klein
specifics (``lsb.families.flux2``): the bridge state is the patchified latent normalised with the VAE's BatchNorm
statistics, flattened to tokens for the call with 4-D position ids; the prompt is the stacked hidden states of the
language model; dev's distilled guidance is embedded on both rows. LSB's guidance is its own ``w``: klein's CFG is
not used (both predictors are conditional).

Self-contained apart from the installed ``lsb`` package (a diffusers custom pipeline too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import flux2
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.flux2 import (
    check_flux2_pixels,
    check_processor_packages,
    distilled_guidance,
    decode_flux2_latents,
    embeds_for_batch,
    encode_flux2_latents,
    from_tokens,
    to_tokens,
)
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import (
    as_lsb_scheduler,
    check_bridge_settings,
    check_callback_tensor_inputs,
    initial_bridge_state,
    preprocess_images,
    require_image,
)
from lsb.helpers.zimage import check_zimage_prompt
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import resolve_translation_args


class LatentSchrodingerBridgeFlux2Pipeline(DiffusionPipeline):
    r"""Translate images between two domains with a Latent Schrödinger Bridge on FLUX.2 (components of diffusers'
    ``Flux2Pipeline`` (dev) or ``Flux2KleinPipeline``; the scheduler converted with ``LSBScheduler.from_config``)."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer, is_distilled: bool = False):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "Flux2Transformer2DModel")
        self.register_modules(
            scheduler=as_lsb_scheduler(scheduler),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        self.register_to_config(is_distilled=is_distilled)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        check_model_folder_family(cls.__name__, pretrained_model_name_or_path, "transformer", "Flux2Transformer2DModel")
        check_processor_packages(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        distilled_guidance_scale: float | None = None,
        tau: float | None = None,
        t0: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
        max_sequence_length: int = 512,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on FLUX.2 klein.

        Args:
            image: PIL / numpy / tensor image(s); sides multiples of 16 px.
            source_prompt / target_prompt: text (a string, or a list of 1 or B strings).
            num_inference_steps: NFE, batched transformer calls on [source; target].
            guidance_scale: the paper's ``w`` on the predictor difference (None: the folder's defaults, else 1).
            distilled_guidance_scale: FLUX.2-dev's embedded guidance on both prompts (None: Flux2Pipeline's 4.0);
                klein has no guidance embedding: a value is refused.
            tau / t0: the paper's τ and t_0. generator / noise: randomness of x_{t0} (noise shaped like the
                normalised patchified latents).
            output_type: "pil", "np", "pt" or "latent" (the VAE latents).
            max_sequence_length: text tokens (Flux2KleinPipeline: 512).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(
            self, num_inference_steps, guidance_scale, tau, t0, default_guidance_scale=1.0
        )
        require_image(image)
        check_zimage_prompt("source", source_prompt)
        check_zimage_prompt("target", target_prompt)
        check_bridge_settings(num_inference_steps, tau, t0)
        guidance_value = distilled_guidance(self, distilled_guidance_scale)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_flux2_pixels(pixels, self.vae_scale_factor)
        device, dtype, batch = execution_device(self), model_dtype(self.transformer), pixels.shape[0]

        src = embeds_for_batch(self, "source", source_prompt, batch, device, max_sequence_length)
        tgt = embeds_for_batch(self, "target", target_prompt, batch, device, max_sequence_length)
        x_src = encode_flux2_latents(self, pixels, device)
        h, w = x_src.shape[-2:]
        cond = flux2.condition(torch.cat([src, tgt]).to(dtype), h, w, guidance=guidance_value)
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = initial_bridge_state(self.scheduler, x_src, generator, noise)

        def network(model_input, t):
            tokens = flux2.network_call(self.transformer, to_tokens(model_input.to(dtype)), t, cond)
            return from_tokens(tokens, h, w)

        self._num_timesteps = len(self.scheduler.timesteps)
        latents, trajectory = integrate_bridge(
            self,
            latents,
            network,
            guidance_scale,
            return_trajectory=return_trajectory,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        images = decode_flux2_latents(self, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
