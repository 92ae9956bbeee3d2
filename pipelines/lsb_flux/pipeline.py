"""LatentSchrodingerBridgeFluxPipeline: unpaired image-to-image translation with a FLUX.1 model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on a rectified-flow base, as in
``LatentSchrodingerBridgeSD3Pipeline``: the bridge state x_t is matched to the flow level s = sigma_t / (1 + sigma_t),
the transformer sees (1 - s) x_t at timestep s under the source and target prompts in one batched call, and
:class:`lsb.LSBScheduler` (``prediction_type="flow_prediction"``) turns the two velocities into the predictors;
the loop is :func:`lsb.helpers.bridge_loop.integrate_bridge`. FLUX specifics, as diffusers' ``FluxPipeline``
builds them: the latent is packed into 2x2 patches (``img_ids`` = their (0, row, col) positions), the prompt is
CLIP's pooled output plus T5's token states (``txt_ids`` = zeros), and a guidance-distilled transformer
(FLUX.1-dev, ``config.guidance_embeds=True``) takes ``distilled_guidance_scale`` as its guidance input; FLUX.1-schnell
takes none. The bridge state lives in the packed layout (the bridge math is elementwise).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(flux_model, custom_pipeline=lsb.pipeline_dir("lsb_flux"),
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import flux
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.masks import bridge_region_blend, decode_region, is_empty, passthrough, prepare_region
from lsb.helpers.flow import (
    check_flow_prompt_side,
    check_vae_shift_factor,
    pair_callback_state,
    prompt_pair_for_batch,
    transformer_latents,
)
from lsb.helpers.flux import (
    check_distilled_guidance,
    check_flux_image_size,
    pack_latents,
    unpack_latents,
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
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import resolve_translation_args
from lsb.io.latents import decode_latents
from lsb.prompts.encoding_flux import encode_prompt_flux, text_position_ids
from lsb.prompts.encoding_sd3 import check_max_sequence_length


class LatentSchrodingerBridgeFluxPipeline(DiffusionPipeline):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge on FLUX.1.

    Components are those of diffusers' ``FluxPipeline`` (FLUX.1-dev or -schnell). The checkpoint's flow-matching
    scheduler is converted with ``LSBScheduler.from_config`` (its shift / dynamic shifting do not apply: LSB visits
    the levels its bridge grid dictates). A VP model, an SD3 transformer, or a folder of another family is refused
    naming the pipeline to use.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->transformer->vae"
    _optional_components = ["image_encoder", "feature_extractor"]
    _callback_tensor_inputs = [
        "latents",
        "source_prompt_embeds",
        "target_prompt_embeds",
        "source_pooled_prompt_embeds",
        "target_pooled_prompt_embeds",
    ]

    def __init__(
        self,
        scheduler,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        transformer,
        image_encoder=None,
        feature_extractor=None,
    ):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "FluxTransformer2DModel")
        check_vae_shift_factor(vae, "FLUX", "FLUX.1's VAE: 0.1159")
        scheduler = as_lsb_scheduler(scheduler)
        # image_encoder / feature_extractor (IP-adapter slots of the folder layout) are accepted and unused.
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            transformer=transformer,
            image_encoder=None,
            feature_extractor=None,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        # FluxPipeline's processor rounds sizes to 2 x the VAE factor; ours resizes nothing: sizes are checked instead
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family (a UNet, an SD3 transformer, a VP
        scheduler) is refused first, naming the pipeline for it."""
        check_model_folder_family(
            cls.__name__,
            pretrained_model_name_or_path,
            "transformer",
            "FluxTransformer2DModel",
        )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        image,
        source_prompt,
        target_prompt,
        source_prompt_2,
        target_prompt_2,
        source_prompt_embeds,
        target_prompt_embeds,
        source_pooled_prompt_embeds,
        target_pooled_prompt_embeds,
        num_inference_steps,
        tau,
        t0,
        distilled_guidance_scale,
        max_sequence_length,
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        for side, prompt, prompt_2, embeds, pooled in (
            ("source", source_prompt, source_prompt_2, source_prompt_embeds, source_pooled_prompt_embeds),
            ("target", target_prompt, target_prompt_2, target_prompt_embeds, target_pooled_prompt_embeds),
        ):
            check_flow_prompt_side(self, side, prompt, embeds, pooled, {f"{side}_prompt_2": prompt_2})
        check_distilled_guidance(self.transformer, distilled_guidance_scale)
        check_max_sequence_length(max_sequence_length, self.tokenizer_2)
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def preprocess_images(self, image) -> torch.Tensor:
        """PIL / numpy / tensor image(s) -> float tensor in [-1, 1], sides multiples of 16 (2 x the VAE factor)."""
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_flux_image_size(pixels.shape[-2], pixels.shape[-1], self.vae_scale_factor)
        return pixels

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to FLUX latents (posterior mode - shift_factor) x scaling_factor, unpacked."""
        return transformer_latents(self, image, device)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        """Unpacked latents (B, C, h, w) -> images of ``output_type``."""
        return decode_latents(self.vae, self.image_processor, latents, output_type)

    def encode_prompt(
        self,
        prompt,
        prompt_2=None,
        device=None,
        num_images_per_prompt: int = 1,
        prompt_embeds=None,
        pooled_prompt_embeds=None,
        max_sequence_length: int = 512,
    ):
        """``(prompt_embeds (B, L, D), pooled_prompt_embeds (B, P), text_ids (L, 3))`` of one prompt side, the numbers
        ``FluxPipeline.encode_prompt`` gives (``prompt_2``, T5's prompt, defaults to ``prompt``)."""
        device = device or execution_device(self)
        if prompt_embeds is not None:
            dtype = self.text_encoder.dtype if self.text_encoder is not None else self.transformer.dtype
            return (
                prompt_embeds,
                pooled_prompt_embeds,
                text_position_ids(prompt_embeds.shape[1], device, dtype),
            )
        return encode_prompt_flux(
            self.text_encoder,
            self.text_encoder_2,
            self.tokenizer,
            self.tokenizer_2,
            prompt,
            prompt_2,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
        )

    def prepare_latents(
        self,
        source_latents: torch.Tensor,
        generator=None,
        noise: torch.Tensor | None = None,
    ):
        """The initial bridge state x_{t0} = (1 - t0) x_src + sigma_{t0} z in the packed layout (after
        ``scheduler.set_timesteps``); ``noise`` may be given unpacked (B, C, h, w) or packed."""
        if noise is not None and noise.ndim == 4:
            noise = pack_latents(noise)
        return initial_bridge_state(self.scheduler, pack_latents(source_latents), generator, noise)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        source_prompt_2: str | list[str] | None = None,
        target_prompt_2: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        distilled_guidance_scale: float | None = None,
        tau: float | None = None,
        t0: float | None = None,
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        source_pooled_prompt_embeds: torch.Tensor | None = None,
        target_pooled_prompt_embeds: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
        max_sequence_length: int = 512,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on FLUX.1.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 16 (FLUX packs the 8x
                downsampled latent into 2x2 patches).
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain (CLIP's prompt).
            source_prompt_2 / target_prompt_2: the T5 prompts (default: the same prompts), as diffusers' ``prompt_2``.
            num_inference_steps: NFE, the number of batched transformer calls (each evaluates both prompts together).
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference (x̂_target - x̂_source); NOT
                FluxPipeline's ``guidance_scale`` (that is ``distilled_guidance_scale`` here). 1 is the plain bridge:
                a guidance-distilled model's predictions are already guided. ``None``: the folder's
                ``lsb_defaults.json``, else 1 (``num_inference_steps`` / ``tau`` / ``t0`` too: else 8 and the
                scheduler's config).
            distilled_guidance_scale: the guidance value a guidance-distilled transformer (FLUX.1-dev,
                ``config.guidance_embeds=True``) embeds, on both prompts; ``None``: diffusers' default 3.5. A model
                without a guidance embedding (FLUX.1-schnell) takes none: a value is refused.
            tau: the paper's τ (the official code's ``--tau`` is sqrt(τ)). ``None``: the scheduler's config.
            t0: the bridge time the translation starts from (paper ``t_0``). ``None``: the scheduler's.
            source_prompt_embeds / target_prompt_embeds: precomputed T5 embeddings (B, L, joint_attention_dim), each
                with its ``*_pooled_prompt_embeds`` (B, pooled_projection_dim) (both required, as in diffusers).
            generator / noise: randomness of the initial state x_{t0} = (1 - t0) x_src + σ_{t0} z (``noise`` unpacked
                (B, C, h, w) like the VAE latents, or packed).
            output_type: "pil", "np", "pt" or "latent" (unpacked (B, C, h, w) latents).
            return_trajectory: also return x_t and both predictors (unpacked latents) after every step.
            max_sequence_length: T5 tokens (at most 512).
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step (``latents`` packed).
            mask_image / mask_feather: translate a region only (white = may change, black = keep; soft values mix);
                pixels outside the mask are the input's. As for :class:`lsb_pipelines.lsb.pipeline.LatentSchrodingerBridgePipeline`
                (:mod:`lsb.helpers.masks`).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(  # the folder's lsb_defaults.json
            self, num_inference_steps, guidance_scale, tau, t0, default_guidance_scale=1.0
        )
        self.check_inputs(
            image=image,
            source_prompt=source_prompt,
            target_prompt=target_prompt,
            source_prompt_2=source_prompt_2,
            target_prompt_2=target_prompt_2,
            source_prompt_embeds=source_prompt_embeds,
            target_prompt_embeds=target_prompt_embeds,
            source_pooled_prompt_embeds=source_pooled_prompt_embeds,
            target_pooled_prompt_embeds=target_pooled_prompt_embeds,
            num_inference_steps=num_inference_steps,
            tau=tau,
            t0=t0,
            distilled_guidance_scale=distilled_guidance_scale,
            max_sequence_length=max_sequence_length,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)
        dtype = model_dtype(self.transformer)
        guidance_value = check_distilled_guidance(self.transformer, distilled_guidance_scale)

        # 1. images -> pixels (checked)
        pixels = self.preprocess_images(image)
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(self.image_processor, region, output_type, lambda p: self.encode_image(p, device))
            return (images, 0, None) if not return_dict else LSBPipelineOutput(images=images, nfe=0)
        batch = pixels.shape[0]

        # 2. prompts -> T5 token and CLIP pooled embeddings (source, target), broadcast to the batch
        def encode(prompt, prompt_2, embeds, pooled):
            return self.encode_prompt(prompt, prompt_2, device, 1, embeds, pooled, max_sequence_length)

        src, src_pooled, tgt, tgt_pooled, (text_ids,) = prompt_pair_for_batch(
            encode,
            (source_prompt, source_prompt_2, source_prompt_embeds, source_pooled_prompt_embeds),
            (target_prompt, target_prompt_2, target_prompt_embeds, target_pooled_prompt_embeds),
            batch,
            device,
            dtype,
        )

        # 3. source latents (packed), bridge time grid and the initial state x_{t0}
        x_src = self.encode_image(pixels, device)
        latent_height, latent_width = x_src.shape[-2:]
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = self.prepare_latents(x_src, generator, noise)

        # 4. integrate the PF-ODE: one batched transformer call on [source; target] per step
        cond = flux.condition(
            torch.cat([src, tgt]),
            torch.cat([src_pooled, tgt_pooled]),
            text_ids,
            latent_height,
            latent_width,
            guidance=guidance_value,
        )

        def network(model_input, t):
            return flux.network_call(self.transformer, model_input.to(dtype), t, cond)

        self._num_timesteps = len(self.scheduler.timesteps)
        state = pair_callback_state(src, tgt, src_pooled, tgt_pooled)
        latents, trajectory = integrate_bridge(
            self,
            latents,
            network,
            guidance_scale,
            return_trajectory=return_trajectory,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            callback_state=state,
            region_blend=bridge_region_blend(region, self.scheduler, x_src, latents, pack_latents),
        )
        if trajectory is not None:
            for entry in trajectory:
                for key in ("x_t", "source", "target"):
                    entry[key] = unpack_latents(entry[key], latent_height, latent_width)

        # 5. unpack and decode
        latents = unpack_latents(latents, latent_height, latent_width)
        images = decode_region(self.vae, self.image_processor, latents, output_type, region)  # pasted when masked
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
