"""LatentSchrodingerBridgeSD3Pipeline: unpaired image-to-image translation with a Stable Diffusion 3 / 3.5 model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on a rectified-flow base. The bridge
x_t = (1 - t) x_0 + t x_1 + sigma_t z (sigma_t^2 = tau t (1 - t)) is matched to the flow level s with
s / (1 - s) = sigma_t; the transformer sees (1 - s) x_t at timestep 1000 s under the source and the target
prompt (one batched call per step) and its two velocities give the source / target / noise predictors
(:class:`lsb.LSBScheduler` with ``prediction_type="flow_prediction"``, built from the checkpoint's
``FlowMatchEulerDiscreteScheduler`` config). The loop is :func:`lsb.helpers.bridge_loop.integrate_bridge`, the
one of every LSB pipeline; SD3's conditioning is built as diffusers' ``StableDiffusion3Pipeline`` builds it
(two CLIP encoders' penultimate states + T5, pooled CLIP projections; ``text_encoder_3=None`` pads with zeros).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(sd3_model, custom_pipeline=lsb.pipeline_dir("lsb_sd3"),
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import sd3
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.masks import bridge_region_blend, decode_region, is_empty, passthrough, prepare_region
from lsb.helpers.flow import (
    check_flow_prompt_side,
    check_pixel_multiple,
    check_vae_shift_factor,
    pair_callback_state,
    prompt_pair_for_batch,
    transformer_latents,
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
from lsb.prompts.encoding_sd3 import check_max_sequence_length, encode_prompt_sd3


class LatentSchrodingerBridgeSD3Pipeline(DiffusionPipeline):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge on SD3 / SD3.5.

    Components are those of diffusers' ``StableDiffusion3Pipeline``; the T5 encoder (``text_encoder_3`` /
    ``tokenizer_3``) is optional (a folder saved without it loads as it is). The checkpoint's flow-matching
    scheduler is converted with ``LSBScheduler.from_config``. A VP model (a UNet, or a beta-schedule scheduler),
    a FLUX transformer, or a folder of another family is refused naming the pipeline to use.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->text_encoder_3->transformer->vae"
    _optional_components = [
        "text_encoder_3",
        "tokenizer_3",
        "image_encoder",
        "feature_extractor",
    ]
    _callback_tensor_inputs = [
        "latents",
        "source_prompt_embeds",
        "target_prompt_embeds",
        "source_pooled_prompt_embeds",
        "target_pooled_prompt_embeds",
    ]

    def __init__(
        self,
        transformer,
        scheduler,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        text_encoder_3=None,
        tokenizer_3=None,
        image_encoder=None,
        feature_extractor=None,
    ):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "SD3Transformer2DModel")
        if (text_encoder_3 is None) != (tokenizer_3 is None):
            raise ValueError(
                "text_encoder_3 (T5) and tokenizer_3 go together: give both or neither "
                f"(got text_encoder_3={type(text_encoder_3).__name__}, "
                f"tokenizer_3={type(tokenizer_3).__name__})"
            )
        check_vae_shift_factor(vae, "SD3", "SD3's VAE: 0.0609")
        scheduler = as_lsb_scheduler(scheduler)
        # image_encoder / feature_extractor (the IP-adapter slots of SD3.5 folders) are accepted and unused.
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3,
            tokenizer_3=tokenizer_3,
            image_encoder=None,
            feature_extractor=None,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.patch_size = transformer.config.patch_size if transformer is not None else 2

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family (a UNet, a FLUX transformer, a VP
        scheduler) is refused first, naming the pipeline for it."""
        check_model_folder_family(
            cls.__name__,
            pretrained_model_name_or_path,
            "transformer",
            "SD3Transformer2DModel",
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
        source_prompt_3,
        target_prompt_3,
        source_prompt_embeds,
        target_prompt_embeds,
        source_pooled_prompt_embeds,
        target_pooled_prompt_embeds,
        num_inference_steps,
        tau,
        t0,
        max_sequence_length,
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        for side, prompt, prompt_2, prompt_3, embeds, pooled in (
            (
                "source",
                source_prompt,
                source_prompt_2,
                source_prompt_3,
                source_prompt_embeds,
                source_pooled_prompt_embeds,
            ),
            (
                "target",
                target_prompt,
                target_prompt_2,
                target_prompt_3,
                target_prompt_embeds,
                target_pooled_prompt_embeds,
            ),
        ):
            extra_prompts = {f"{side}_prompt_2": prompt_2, f"{side}_prompt_3": prompt_3}
            check_flow_prompt_side(self, side, prompt, embeds, pooled, extra_prompts)
            if prompt_3 is not None and self.text_encoder_3 is None:
                raise ValueError(
                    f"`{side}_prompt_3` is the T5 prompt, but this pipeline has no T5 encoder "
                    "(text_encoder_3=None): load text_encoder_3 / tokenizer_3 or leave it out"
                )
        check_max_sequence_length(max_sequence_length, self.tokenizer_3)
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def preprocess_images(self, image) -> torch.Tensor:
        """PIL / numpy / tensor image(s) -> float tensor in [-1, 1], sides multiples of VAE factor x patch size."""
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        multiple = self.vae_scale_factor * self.patch_size
        check_pixel_multiple(
            pixels,
            multiple,
            f"the VAE's {self.vae_scale_factor}x downsampling times the "
            f"transformer's {self.patch_size}x{self.patch_size} patches",
        )
        tokens = max(pixels.shape[-2:]) // multiple
        limit = self.transformer.config.pos_embed_max_size
        if limit is not None and tokens > limit:
            raise ValueError(
                f"image side {max(pixels.shape[-2:])} px is {tokens} patches, beyond this transformer's "
                f"position table (pos_embed_max_size={limit}, i.e. {limit * multiple} px)"
            )
        return pixels

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to SD3 latents (posterior mode - shift_factor) x scaling_factor."""
        return transformer_latents(self, image, device)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        return decode_latents(self.vae, self.image_processor, latents, output_type)

    def encode_prompt(
        self,
        prompt,
        prompt_2=None,
        prompt_3=None,
        device=None,
        num_images_per_prompt: int = 1,
        prompt_embeds=None,
        pooled_prompt_embeds=None,
        clip_skip: int | None = None,
        max_sequence_length: int = 256,
    ):
        """``(prompt_embeds (B, 77 + max_sequence_length, D), pooled_prompt_embeds (B, P))`` of one prompt side, the
        numbers ``StableDiffusion3Pipeline.encode_prompt`` gives (``prompt_2`` / ``prompt_3`` default to ``prompt``;
        given embeddings are returned as they are)."""
        if prompt_embeds is not None:
            return prompt_embeds, pooled_prompt_embeds
        return encode_prompt_sd3(
            self.text_encoder,
            self.text_encoder_2,
            self.text_encoder_3,
            self.tokenizer,
            self.tokenizer_2,
            self.tokenizer_3,
            prompt,
            prompt_2,
            prompt_3,
            device=device or execution_device(self),
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
            clip_skip=clip_skip,
            joint_attention_dim=self.transformer.config.joint_attention_dim,
        )

    def prepare_latents(
        self,
        source_latents: torch.Tensor,
        generator=None,
        noise: torch.Tensor | None = None,
    ):
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
        source_prompt_3: str | list[str] | None = None,
        target_prompt_3: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
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
        clip_skip: int | None = None,
        max_sequence_length: int = 256,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on SD3 / SD3.5.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 16 (VAE factor 8 x the
                transformer's 2x2 patches).
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain.
            source_prompt_2 / target_prompt_2, source_prompt_3 / target_prompt_3: the prompts for the second CLIP
                encoder and for T5 (default: the same prompts), as diffusers' ``prompt_2`` / ``prompt_3``.
            num_inference_steps: NFE, the number of batched transformer calls (each evaluates both prompts together).
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference (x̂_target - x̂_source); the
                source prompt acts as the negative prompt. ``None``: the folder's ``lsb_defaults.json``, else 7
                (SD3's own CFG default). ``num_inference_steps`` / ``tau`` / ``t0`` also come from that file when
                ``None`` (without it: 8 and the scheduler's config).
            tau: the paper's τ (the official code's ``--tau`` is sqrt(τ)). ``None``: the scheduler's config.
            t0: the bridge time the translation starts from (paper ``t_0``). ``None``: the scheduler's.
            source_prompt_embeds / target_prompt_embeds: precomputed (B, 77 + L, joint_attention_dim) embeddings, each
                with its ``*_pooled_prompt_embeds`` (B, pooled_projection_dim) (both required, as in diffusers).
            generator / noise: randomness of the initial state x_{t0} = (1 - t0) x_src + σ_{t0} z.
            output_type: "pil", "np", "pt" or "latent".
            return_trajectory: also return x_t and both predictors (latents) after every step.
            clip_skip: CLIP layers skipped from the penultimate one (diffusers' ``clip_skip``).
            max_sequence_length: T5 tokens (at most 512, diffusers' limit).
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step.
            mask_image / mask_feather: translate a region only (white = may change, black = keep; soft values mix);
                pixels outside the mask are the input's. As for :class:`lsb_pipelines.lsb.pipeline.LatentSchrodingerBridgePipeline`
                (:mod:`lsb.helpers.masks`).
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(  # the folder's lsb_defaults.json
            self, num_inference_steps, guidance_scale, tau, t0, default_guidance_scale=7.0
        )
        self.check_inputs(
            image=image,
            source_prompt=source_prompt,
            target_prompt=target_prompt,
            source_prompt_2=source_prompt_2,
            target_prompt_2=target_prompt_2,
            source_prompt_3=source_prompt_3,
            target_prompt_3=target_prompt_3,
            source_prompt_embeds=source_prompt_embeds,
            target_prompt_embeds=target_prompt_embeds,
            source_pooled_prompt_embeds=source_pooled_prompt_embeds,
            target_pooled_prompt_embeds=target_pooled_prompt_embeds,
            num_inference_steps=num_inference_steps,
            tau=tau,
            t0=t0,
            max_sequence_length=max_sequence_length,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)
        dtype = model_dtype(self.transformer)

        # 1. images -> pixels (checked)
        pixels = self.preprocess_images(image)
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(self.image_processor, region, output_type, lambda p: self.encode_image(p, device))
            return (images, 0, None) if not return_dict else LSBPipelineOutput(images=images, nfe=0)
        batch = pixels.shape[0]

        # 2. prompts -> token and pooled embeddings (source, target), broadcast to the batch
        def encode(prompt, prompt_2, prompt_3, embeds, pooled):
            return self.encode_prompt(
                prompt,
                prompt_2,
                prompt_3,
                device,
                1,
                embeds,
                pooled,
                clip_skip,
                max_sequence_length,
            )

        src, src_pooled, tgt, tgt_pooled, _ = prompt_pair_for_batch(
            encode,
            (source_prompt, source_prompt_2, source_prompt_3, source_prompt_embeds, source_pooled_prompt_embeds),
            (target_prompt, target_prompt_2, target_prompt_3, target_prompt_embeds, target_pooled_prompt_embeds),
            batch,
            device,
            dtype,
        )

        # 3. source latents, bridge time grid and the initial state x_{t0}
        x_src = self.encode_image(pixels, device)
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = self.prepare_latents(x_src, generator, noise)

        # 4. integrate the PF-ODE: one batched transformer call on [source; target] per step
        cond = sd3.condition(torch.cat([src, tgt]), torch.cat([src_pooled, tgt_pooled]))

        def network(model_input, t):
            return sd3.network_call(self.transformer, model_input.to(dtype), t, cond)

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
            region_blend=bridge_region_blend(region, self.scheduler, x_src, latents),
        )

        # 5. decode
        images = decode_region(self.vae, self.image_processor, latents, output_type, region)  # pasted when masked
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
