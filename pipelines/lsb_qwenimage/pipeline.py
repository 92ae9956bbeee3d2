"""LatentSchrodingerBridgeQwenImagePipeline: unpaired image-to-image translation with a Qwen-Image model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on a rectified-flow base, as the SD3 / FLUX /
Z-Image pipelines: the transformer sees the scaled bridge state at flow level s under the source and target prompts
in one batched call, :class:`lsb.LSBScheduler` (``prediction_type="flow_prediction"``) turns the two velocities into
the predictors, the loop is :func:`lsb.helpers.bridge_loop.integrate_bridge`. Qwen-Image specifics
(``lsb.families.qwenimage``): latents normalised with the VAE's ``latents_mean`` / ``latents_std`` and packed 2x2 for
the call (``img_shapes`` for RoPE), the two prompt sides zero-padded to one length with ``encoder_hidden_states_mask``.
LSB's guidance is its own ``w`` on the predictor difference: Qwen-Image's true CFG is not used (both predictors are
conditional).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline (``custom_pipeline=lsb.pipeline_dir("lsb_qwenimage"), trust_remote_code=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import qwenimage
from lsb.families.flux import pack_latents, unpack_latents
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.qwenimage import (
    check_qwen_pixels,
    decode_qwen_latents,
    encode_qwen_latents,
    join_sides,
    side_for_batch,
)
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


class LatentSchrodingerBridgeQwenImagePipeline(DiffusionPipeline):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge on Qwen-Image.

    Components are those of diffusers' ``QwenImagePipeline``; the scheduler is converted with
    ``LSBScheduler.from_config``.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "QwenImageTransformer2DModel")
        self.register_modules(
            scheduler=as_lsb_scheduler(scheduler),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        self.vae_scale_factor = 2 ** len(self.vae.temperal_downsample) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family is refused first."""
        check_model_folder_family(
            cls.__name__, pretrained_model_name_or_path, "transformer", "QwenImageTransformer2DModel"
        )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
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
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on Qwen-Image.

        Args:
            image: PIL / numpy / tensor image(s); sides multiples of 16 px (2x2 packing of the 8x latent).
            source_prompt / target_prompt: text (a string, or a list of 1 or B strings).
            num_inference_steps: NFE, batched transformer calls on [source; target].
            guidance_scale: the paper's ``w`` on the predictor difference (None: the folder's defaults, else 1).
            tau / t0: the paper's τ and t_0. generator / noise: randomness of x_{t0} (noise shaped like the latents).
            output_type: "pil", "np", "pt" or "latent" (normalised (B, C, h, w) latents).
            max_sequence_length: text tokens after the template (QwenImagePipeline: 512, at most 1024).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(
            self, num_inference_steps, guidance_scale, tau, t0, default_guidance_scale=1.0
        )
        require_image(image)
        check_zimage_prompt("source", source_prompt)
        check_zimage_prompt("target", target_prompt)
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_qwen_pixels(pixels, self.vae_scale_factor)
        device, dtype, batch = execution_device(self), model_dtype(self.transformer), pixels.shape[0]

        src = side_for_batch(self, "source", source_prompt, batch, device, max_sequence_length)
        tgt = side_for_batch(self, "target", target_prompt, batch, device, max_sequence_length)
        embeds, mask = join_sides(src, tgt)

        x_src = encode_qwen_latents(self, pixels, device)
        h, w = x_src.shape[-2:]
        cond = qwenimage.condition(embeds.to(dtype), mask, h, w)
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = initial_bridge_state(self.scheduler, x_src, generator, noise)

        def network(model_input, t):
            packed = pack_latents(model_input.to(dtype))
            return unpack_latents(qwenimage.network_call(self.transformer, packed, t, cond), h, w)

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
        images = decode_qwen_latents(self, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
