"""LatentSchrodingerBridgePipeline: unpaired image-to-image translation with a Stable Diffusion model.

Kim, Kim & Ye, "Latent Schrödinger Bridge: Prompting Latent Diffusion for Fast Unpaired
Image-to-Image Translation" (arXiv 2411.14863). The probability-flow ODE of a Schrödinger bridge
between the source and target latent distributions is integrated from the source image; its vector
field is built from one SD UNet evaluated under the source and target prompts (one batched call per
step) after SNR matching. All the bridge math lives in :class:`lsb.LSBScheduler`.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers
custom pipeline: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.utils import BaseOutput

from lsb.families import sd
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.masks import bridge_region_blend, decode_region, is_empty, passthrough, prepare_region
from lsb.helpers.model_family import check_vp_components
from lsb.helpers.sdxl import check_sd_components, check_unet_folder
from lsb.helpers.translation import (
    as_lsb_scheduler,
    check_bridge_settings,
    check_callback_tensor_inputs,
    check_prompt_args,
    decode_latents,
    encode_images,
    initial_bridge_state,
    preprocess_images,
    prompt_pair_embeds,
    require_image,
    vae_image_processor,
)
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import resolve_translation_args


@dataclass
class LSBPipelineOutput(BaseOutput):
    """Output of :class:`LatentSchrodingerBridgePipeline`.

    Args:
        images: translated images (PIL list, numpy array or tensor per ``output_type``).
        nfe: number of batched UNet forward calls spent.
        trajectory: when ``return_trajectory=True``, one dict per step with the bridge time ``t``,
            the model ``timestep``, the state ``x_t`` and the ``source``/``target`` predictors (latents).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int
    trajectory: list[dict[str, Any]] | None = None


class LatentSchrodingerBridgePipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge.

    Components are those of a Stable Diffusion 1.x/2.x pipeline. Any SD scheduler passed in is
    converted with ``LSBScheduler.from_config``, so ``LatentSchrodingerBridgePipeline.from_pretrained``
    works on any SD checkpoint folder or repo (epsilon or v-prediction). An SDXL UNet is refused in ``__init__``
    (use :class:`lsb.LatentSchrodingerBridgeXLPipeline`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor"]
    _callback_tensor_inputs = ["latents", "source_prompt_embeds", "target_prompt_embeds"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker: bool = False,
    ):
        super().__init__()
        check_vp_components(type(self).__name__, unet, scheduler)  # a flow model (SD3 / FLUX) is refused by name
        check_sd_components(unet, text_encoder, type(self).__name__)
        scheduler = as_lsb_scheduler(scheduler)
        # The safety checker / feature extractor of SD folders are accepted and ignored: outputs are
        # translations of the user's own images, and the embedded model has none.
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
        )
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local SD3 / FLUX folder (a transformer, a flow scheduler) or SDXL folder is
        refused first, naming the pipeline for it."""
        check_unet_folder(cls.__name__, pretrained_model_name_or_path, want_sdxl=False)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        image,
        source_prompt,
        target_prompt,
        source_prompt_embeds,
        target_prompt_embeds,
        num_inference_steps,
        tau,
        t0,
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        check_prompt_args("source", source_prompt, source_prompt_embeds)
        check_prompt_args("target", target_prompt, target_prompt_embeds)
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def preprocess_images(self, image) -> torch.Tensor:
        """PIL / numpy / tensor image(s) -> float tensor in [-1, 1], checked for a VAE-compatible size."""
        return preprocess_images(image, self.image_processor, self.vae_scale_factor)

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to scaled latents (posterior mode: deterministic)."""
        return encode_images(self.vae, image, device if device is not None else execution_device(self))

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        return decode_latents(self.vae, self.image_processor, latents, output_type)

    def encode_prompt(
        self,
        source_prompt,
        target_prompt,
        device,
        batch_size: int,
        dtype,
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(source_prompt_embeds, target_prompt_embeds)`` for ``batch_size`` images on ``device`` / ``dtype``, each
        encoded as ``StableDiffusionPipeline.encode_prompt`` does (two single text prompts share one encoder call)."""
        return prompt_pair_embeds(
            self,
            source_prompt,
            source_prompt_embeds,
            target_prompt,
            target_prompt_embeds,
            batch_size,
            device,
            dtype,
            clip_skip=clip_skip,
        )

    def prepare_latents(
        self, source_latents: torch.Tensor, generator=None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The initial bridge state x_{t0} = (1 - t0) x_src + σ_{t0} z (after ``scheduler.set_timesteps``)."""
        return initial_bridge_state(self.scheduler, source_latents, generator, noise)

    # ------------------------------------------------------------------ call
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
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
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
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 8.
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain.
            num_inference_steps: NFE, the number of batched UNet calls (each call evaluates the source
                and target prompts together). With the paper's Euler solver this is NFE - 1 Euler steps
                plus one final denoise, exactly as the paper counts it. ``None``: the model folder's
                ``lsb_defaults.json`` (the embedded mini SD: 8), else the paper's 8.
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference
                (x̂_target - x̂_source); the source prompt acts as the negative prompt. ``None``: the model
                folder's ``lsb_defaults.json`` (the embedded mini SD: 3), else the paper's 11.
            tau: the paper's τ, the variance of the bridge's Brownian reference (the official code's
                ``--tau`` is sqrt(τ): its default 2.3 is τ = 5.29). ``None``: the model folder's
                ``lsb_defaults.json`` (the embedded mini SD: 0.35), else the scheduler's config (the paper's 5.29).
            t0: the bridge time the translation starts from (paper ``t_0``). ``None``: as for ``tau`` (0.02 / 0.2).
            source_prompt_embeds / target_prompt_embeds: precomputed text embeddings instead of prompts.
            generator / noise: randomness of the initial state x_{t0} = (1 - t0) x_src + σ_{t0} z.
            output_type: "pil", "np", "pt" or "latent".
            return_trajectory: also return x_t and both predictors (latents) after every step.
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step.
            mask_image: translate a region only (diffusers' convention: PIL "L" image, array or tensor, white = may
                change, black = keep, soft values mix; one mask or one per image; :mod:`lsb.helpers.masks`). The kept
                region follows the source's own bridge path and the output is pasted onto the input outside the
                mask, so those pixels are the input's. An all-black mask returns the input (nfe 0).
            mask_feather: px of the feather band inside the mask (None: 1/64 of the shorter side, at least 1).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(  # the folder's lsb_defaults.json
            self, num_inference_steps, guidance_scale, tau, t0
        )
        self.check_inputs(
            image,
            source_prompt,
            target_prompt,
            source_prompt_embeds,
            target_prompt_embeds,
            num_inference_steps,
            tau,
            t0,
            callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)  # once per call; diffusers' own lookup only when hooks are on

        # 1. images -> source latents
        pixels = self.preprocess_images(image)
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(self.image_processor, region, output_type, lambda p: self.encode_image(p, device))
            return (images, 0, None) if not return_dict else LSBPipelineOutput(images=images, nfe=0)
        batch = pixels.shape[0]
        x_src = self.encode_image(pixels, device)

        # 2. prompts -> embeddings (source, target), broadcast to the batch
        dtype = model_dtype(self.unet)
        source_prompt_embeds, target_prompt_embeds = self.encode_prompt(
            source_prompt, target_prompt, device, batch, dtype, source_prompt_embeds, target_prompt_embeds, clip_skip
        )

        # 3. bridge time grid and the initial state x_{t0}
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = self.prepare_latents(x_src, generator, noise)

        # 4. integrate the PF-ODE: one batched UNet call on [source; target] per step (embeddings concatenated once)
        cond = sd.condition(torch.cat([source_prompt_embeds, target_prompt_embeds]))

        def network(model_input, t):
            return sd.network_call(self.unet, model_input, t, cond)

        self._num_timesteps = len(self.scheduler.timesteps)
        latents, trajectory = integrate_bridge(
            self,
            latents,
            network,
            guidance_scale,
            return_trajectory=return_trajectory,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            callback_state={"source_prompt_embeds": source_prompt_embeds, "target_prompt_embeds": target_prompt_embeds},
            region_blend=bridge_region_blend(region, self.scheduler, x_src, latents),
        )

        # 5. decode (a masked call: pasted onto the input outside the mask)
        images = decode_region(self.vae, self.image_processor, latents, output_type, region)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
