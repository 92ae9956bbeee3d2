"""LatentSchrodingerBridgeXLPipeline: unpaired image-to-image translation with a Stable Diffusion XL model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on SDXL: the bridge, its scheduler
(:class:`lsb.LSBScheduler`, SNR matching onto SDXL's VP schedule, epsilon or v-prediction) and the sampling loop
(:func:`lsb.helpers.bridge_loop.integrate_bridge`) are those of the SD pipeline; only the conditioning differs.
SDXL's UNet is conditioned on the concatenated penultimate hidden states of two CLIP text encoders, the pooled
embedding of the second one and the micro-conditioning ``add_time_ids = original_size + crops_coords_top_left +
target_size``, passed as ``added_cond_kwargs`` exactly as diffusers' ``StableDiffusionXLPipeline`` builds them.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(sdxl_model, custom_pipeline=lsb.pipeline_dir("lsb_xl"),
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import sdxl
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.masks import bridge_region_blend, decode_region, is_empty, passthrough, prepare_region
from lsb.helpers.model_family import check_vp_components
from lsb.helpers.sdxl import (
    vae_upcast,
    SDXL_OPTIONAL_COMPONENTS,
    check_sdxl_components,
    check_sdxl_prompt_args,
    check_unet_folder,
    concat_conditioning,
    decode_latents_upcast,
    encode_images_upcast,
    image_time_ids,
    sdxl_prompt_embeds,
    unet_conditioning,
)
from lsb.helpers.translation import (
    as_lsb_scheduler,
    check_bridge_settings,
    check_callback_tensor_inputs,
    initial_bridge_state,
    preprocess_images,
    require_image,
    vae_image_processor,
)
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import resolve_translation_args


class LatentSchrodingerBridgeXLPipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge on SDXL.

    Components are those of an SDXL base pipeline (``StableDiffusionXLPipeline``). Any SDXL scheduler is converted
    with ``LSBScheduler.from_config``, so ``from_pretrained`` works on any SDXL base folder or repo (epsilon or
    v-prediction). An SD 1.x/2.x folder (no ``text_encoder_2``) or a UNet without SDXL's ``text_time`` conditioning
    is refused in ``__init__`` naming the problem.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    _optional_components = list(SDXL_OPTIONAL_COMPONENTS)
    _callback_tensor_inputs = [
        "latents",
        "source_prompt_embeds",
        "target_prompt_embeds",
        "source_pooled_prompt_embeds",
        "target_pooled_prompt_embeds",
        "add_time_ids",
    ]

    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ):
        super().__init__()
        check_vp_components(type(self).__name__, unet, scheduler)  # a flow model (SD3 / FLUX) is refused by name
        check_sdxl_components(unet, text_encoder, text_encoder_2, tokenizer, tokenizer_2, type(self).__name__)
        scheduler = as_lsb_scheduler(scheduler)
        # image_encoder / feature_extractor (IP-adapter) and the watermarker of SDXL folders are accepted and unused:
        # outputs are translations of the user's own images.
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=None,
            feature_extractor=None,
        )
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another family (SD 1.x/2.x, SD3 / FLUX) is refused first,
        naming the pipeline for it."""
        check_unet_folder(cls.__name__, pretrained_model_name_or_path, want_sdxl=True)
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
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        check_sdxl_prompt_args(
            "source", source_prompt, source_prompt_2, source_prompt_embeds, source_pooled_prompt_embeds
        )
        check_sdxl_prompt_args(
            "target", target_prompt, target_prompt_2, target_prompt_embeds, target_pooled_prompt_embeds
        )
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def preprocess_images(self, image) -> torch.Tensor:
        """PIL / numpy / tensor image(s) -> float tensor in [-1, 1], checked for a size the VAE takes."""
        return preprocess_images(image, self.image_processor, self.vae_scale_factor)

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to scaled latents (posterior mode), upcasting an fp16 ``force_upcast`` VAE."""
        device = device if device is not None else execution_device(self)
        return encode_images_upcast(self.vae, image, device, model_dtype(self.unet))

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        return decode_latents_upcast(self.vae, self.image_processor, latents, output_type)

    def encode_prompt(
        self,
        source_prompt,
        target_prompt,
        device,
        batch_size: int,
        dtype,
        source_prompt_2=None,
        target_prompt_2=None,
        source_prompt_embeds=None,
        target_prompt_embeds=None,
        source_pooled_prompt_embeds=None,
        target_pooled_prompt_embeds=None,
        clip_skip=None,
    ):
        """``(source_embeds, target_embeds, source_pooled, target_pooled)`` for ``batch_size`` images, as
        ``StableDiffusionXLPipeline.encode_prompt`` computes a prompt's (``prompt_2`` defaults to the prompt)."""
        src, src_pooled = sdxl_prompt_embeds(
            self,
            source_prompt,
            source_prompt_2,
            source_prompt_embeds,
            source_pooled_prompt_embeds,
            batch_size,
            device,
            dtype,
            "source",
            clip_skip,
        )
        tgt, tgt_pooled = sdxl_prompt_embeds(
            self,
            target_prompt,
            target_prompt_2,
            target_prompt_embeds,
            target_pooled_prompt_embeds,
            batch_size,
            device,
            dtype,
            "target",
            clip_skip,
        )
        return src, tgt, src_pooled, tgt_pooled

    def prepare_latents(self, source_latents: torch.Tensor, generator=None, noise: torch.Tensor | None = None):
        """The initial bridge state x_{t0} = (1 - t0) x_src + sigma_{t0} z (after ``scheduler.set_timesteps``)."""
        return initial_bridge_state(self.scheduler, source_latents, generator, noise)

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
        tau: float | None = None,
        t0: float | None = None,
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        source_pooled_prompt_embeds: torch.Tensor | None = None,
        target_pooled_prompt_embeds: torch.Tensor | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on SDXL.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 8 (the VAE's factor).
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain.
            source_prompt_2 / target_prompt_2: the prompts for ``tokenizer_2`` / ``text_encoder_2`` (default: the
                same prompts), as diffusers' ``prompt_2``.
            num_inference_steps: NFE, the number of batched UNet calls (each evaluates both prompts together).
                ``None``: the model folder's ``lsb_defaults.json``, else the paper's 8.
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference (x̂_target - x̂_source).
                ``None``: the folder's ``lsb_defaults.json``, else the paper's 11.
            tau: the paper's τ (the official code's ``--tau`` is sqrt(τ)). ``None``: the folder's
                ``lsb_defaults.json``, else the scheduler's config (the paper's 5.29).
            t0: the bridge time the translation starts from (paper ``t_0``). ``None``: as for ``tau`` (0.2).
            source_prompt_embeds / target_prompt_embeds: precomputed (B, 77, D1 + D2) token embeddings, each with its
                ``*_pooled_prompt_embeds`` (B, P) (both required, as in diffusers).
            original_size / crops_coords_top_left / target_size: SDXL's micro-conditioning ``(height, width)`` /
                ``(top, left)``; default the input image's size and ``(0, 0)``, as diffusers' SDXL img2img does.
            generator / noise / output_type / return_trajectory / callback_on_step_end: as for
                :class:`lsb_pipelines.lsb.pipeline.LatentSchrodingerBridgePipeline`.
            mask_image / mask_feather: translate a region only (white = may change, black = keep; soft values mix);
                pixels outside the mask are the input's. As for :class:`lsb_pipelines.lsb.pipeline.LatentSchrodingerBridgePipeline`
                (:mod:`lsb.helpers.masks`).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(  # the folder's lsb_defaults.json
            self, num_inference_steps, guidance_scale, tau, t0
        )
        self.check_inputs(
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
            callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)
        dtype = model_dtype(self.unet)

        # 1. images -> pixels (checked) and the micro-conditioning of their size
        pixels = self.preprocess_images(image)
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(self.image_processor, region, output_type, lambda p: self.encode_image(p, device))
            return (images, 0, None) if not return_dict else LSBPipelineOutput(images=images, nfe=0)
        batch = pixels.shape[0]
        add_time_ids = image_time_ids(self, pixels, original_size, crops_coords_top_left, target_size, dtype)

        # 2. prompts -> token and pooled embeddings (source, target), broadcast to the batch
        src, tgt, src_pooled, tgt_pooled = self.encode_prompt(
            source_prompt,
            target_prompt,
            device,
            batch,
            dtype,
            source_prompt_2,
            target_prompt_2,
            source_prompt_embeds,
            target_prompt_embeds,
            source_pooled_prompt_embeds,
            target_pooled_prompt_embeds,
            clip_skip,
        )

        # 3. source latents, bridge time grid and the initial state x_{t0}
        x_src = self.encode_image(pixels, device)
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = self.prepare_latents(x_src, generator, noise)

        # 4. integrate the PF-ODE: one batched UNet call on [source; target] per step
        cond = concat_conditioning(
            unet_conditioning(src, src_pooled, add_time_ids), unet_conditioning(tgt, tgt_pooled, add_time_ids)
        )

        def network(model_input, t):
            return sdxl.network_call(self.unet, model_input, t, cond)

        self._num_timesteps = len(self.scheduler.timesteps)
        state = {
            "source_prompt_embeds": src,
            "target_prompt_embeds": tgt,
            "source_pooled_prompt_embeds": src_pooled,
            "target_pooled_prompt_embeds": tgt_pooled,
            "add_time_ids": add_time_ids,
        }
        latents, trajectory = integrate_bridge(
            self,
            latents,
            network,
            guidance_scale,
            return_trajectory=return_trajectory,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            callback_state=state,
            region_blend=bridge_region_blend(region, self.scheduler, x_src, latents),
        )

        # 5. decode
        with vae_upcast(self.vae):  # an fp16 force_upcast VAE decodes in fp32
            images = decode_region(self.vae, self.image_processor, latents, output_type, region)  # pasted when masked
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
