"""FlowEditSD3Pipeline: inversion-free text-based image editing on Stable Diffusion 3 / 3.5 (rectified flow).

Kulikov, Kleiner, Huberman-Spiegelglas & Michaeli, "FlowEdit: Inversion-Free Text-Based Editing Using
Pre-Trained Flow Models" (ICCV 2025). Our own implementation of the paper's update
(:mod:`lsb.bridges.flowedit`): from ``Z = X_src`` at grid step ``n_max`` of a T-step grid,

    Z_src = (1 - s_i) X_src + s_i N   (N fresh every step),   Z_tar = Z + Z_src - X_src,
    Z <- Z + (s_{i-1} - s_i) [V(Z_tar, s_i, c_tar) - V(Z_src, s_i, c_src)],

with classifier-free guidance on both branches (source CFG ``source_guidance_scale`` on the source branch,
target CFG ``target_guidance_scale`` on the target branch, ``negative_prompt`` "" as the unconditional text).
Defaults are the paper's SD3 settings: T = 50, n_max = 33, CFG 3.5 / 13.5.

Counting: every step is ONE batched transformer call on [src-uncond, src-cond, tar-uncond, tar-cond]; the
output's ``nfe`` counts those calls (n_max x n_avg), ``forward_passes`` the latents evaluated per image
(4 per step with CFG, 2 when both scales are 1 and no unconditional branch is needed).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers
custom pipeline (``custom_pipeline=<this folder>, trust_remote_code=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from lsb.bridges.flowedit import guided_velocity
from lsb.families import sd3
from lsb.helpers.masks import decode_region, is_empty, layout_mask, passthrough, prepare_region
from lsb.helpers.flowedit import (
    SD3_FLOWEDIT_DEFAULTS,
    check_flowedit_args,
    check_flowedit_inputs,
    flow_timesteps,
    flowedit_counts,
    flowedit_output,
    flowedit_prompt_for_batch,
    integrate_flowedit,
)
from lsb.helpers.flow import transformer_latents
from lsb.helpers.loading import absent_components
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import check_callback_tensor_inputs, preprocess_images
from lsb.io.execution import execution_device, model_dtype
from lsb.prompts.encoding_sd3 import check_max_sequence_length, encode_prompt_sd3


class FlowEditSD3Pipeline(DiffusionPipeline):
    r"""FlowEdit on an SD3 / SD3.5 checkpoint: ``FlowEditSD3Pipeline.from_pretrained(<sd3 folder or repo>)``.

    Components are those of diffusers' ``StableDiffusion3Pipeline`` (T5, ``text_encoder_3``, optional).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->text_encoder_3->transformer->vae"
    _optional_components = ["text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor"]
    _callback_tensor_inputs = ["latents"]

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
        # image_encoder / feature_extractor (SD3.5 IP-adapter slots of the folder layout) are accepted and unused.
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
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.patch_size = self.transformer.config.patch_size

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family (a UNet / VP scheduler, the other
        flow transformer) is refused first, naming the pipeline for it."""
        check_model_folder_family(cls.__name__, pretrained_model_name_or_path, "transformer", "SD3Transformer2DModel")
        # a folder saved without T5 loads without being told (diffusers alone refuses it)
        kwargs = {**absent_components(pretrained_model_name_or_path), **kwargs}
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        image,
        source_prompt,
        target_prompt,
        num_inference_steps,
        n_max,
        n_min,
        n_avg,
        source_guidance_scale,
        target_guidance_scale,
        max_sequence_length,
        callback_on_step_end_tensor_inputs,
    ):
        check_flowedit_inputs(image, source_prompt, target_prompt)
        check_flowedit_args(num_inference_steps, n_max, n_min, n_avg, source_guidance_scale, target_guidance_scale)
        if self.text_encoder_3 is not None:
            check_max_sequence_length(max_sequence_length, self.tokenizer_3)
        else:
            check_max_sequence_length(max_sequence_length)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt: int = 1,
        max_sequence_length: int = 256,
        clip_skip: int | None = None,
    ):
        """One side's SD3 embeddings ``(prompt_embeds, pooled_prompt_embeds)`` (== StableDiffusion3Pipeline)."""
        return encode_prompt_sd3(
            self.text_encoder,
            self.text_encoder_2,
            self.text_encoder_3,
            self.tokenizer,
            self.tokenizer_2,
            self.tokenizer_3,
            prompt,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
            clip_skip=clip_skip,
            joint_attention_dim=self.transformer.config.joint_attention_dim,
        )

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] = "",
        num_inference_steps: int = SD3_FLOWEDIT_DEFAULTS["num_inference_steps"],
        n_max: int = SD3_FLOWEDIT_DEFAULTS["n_max"],
        n_min: int = SD3_FLOWEDIT_DEFAULTS["n_min"],
        n_avg: int = SD3_FLOWEDIT_DEFAULTS["n_avg"],
        source_guidance_scale: float = SD3_FLOWEDIT_DEFAULTS["source_guidance_scale"],
        target_guidance_scale: float = SD3_FLOWEDIT_DEFAULTS["target_guidance_scale"],
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 256,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Edit ``image`` from what ``source_prompt`` describes to what ``target_prompt`` describes.

        Args:
            image: PIL image, numpy (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] / (B, 3, H, W) in
                [-1, 1], or a list; sides multiples of ``vae_scale_factor * patch_size`` (16 px for SD3).
            source_prompt / target_prompt: text (or learned ``<token>``s loaded into the tokenizers).
            negative_prompt: the unconditional text of both CFG branches (the paper's "").
            num_inference_steps: T, the grid size (paper: 50). The grid is the scheduler's (shift 3.0 for SD3).
            n_max: the paper's n_max, the number of grid steps FlowEdit runs (it starts at level
                ``sigmas[T - n_max]``; 0 returns the input's reconstruction; paper: 33).
            n_min: the paper's n_min: the last n_min steps are plain sampling under the target prompt (paper: 0).
            n_avg: the paper's n_avg, noise draws averaged per step (each one batched call; paper: 1).
            source_guidance_scale / target_guidance_scale: CFG on the source / target branch (paper: 3.5 / 13.5).
            generator: the per-step noise N (a list: one generator per image).
            output_type: "pil", "np", "pt" or "latent".
            max_sequence_length: T5 tokens (<= T5's limit).
            callback_on_step_end: ``fn(pipe, step, timestep, {"latents": Z})`` after each step.

            mask_image / mask_feather: edit a region only (white = may change, black = keep; soft values mix): the kept
                region stays X_src along the trajectory and the output is pasted onto the input outside the mask
                (:mod:`lsb.helpers.masks`); an all-black mask returns the input (nfe 0).
        Returns:
            :class:`FlowEditPipelineOutput` (``images``, ``nfe``, ``forward_passes``), or a tuple of those.
        """
        self.check_inputs(
            image=image,
            source_prompt=source_prompt,
            target_prompt=target_prompt,
            num_inference_steps=num_inference_steps,
            n_max=n_max,
            n_min=n_min,
            n_avg=n_avg,
            source_guidance_scale=source_guidance_scale,
            target_guidance_scale=target_guidance_scale,
            max_sequence_length=max_sequence_length,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        edit_steps, sampling_steps = check_flowedit_args(num_inference_steps, n_max, n_min, n_avg)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor * self.patch_size)
        device = execution_device(self)
        dtype = model_dtype(self.transformer)
        batch = pixels.shape[0]
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(
                self.image_processor, region, output_type, lambda p: transformer_latents(self, p, device)
            )
            return flowedit_output(images, 0, 0, return_dict)

        # 1. source latents X_src (VAE mode, (z - shift) * scale)
        x_src = transformer_latents(self, pixels, device)

        # 2. prompts: [src-uncond, src-cond, tar-uncond, tar-cond] (uncond dropped when no CFG is needed)
        do_cfg = not (source_guidance_scale == 1.0 and target_guidance_scale == 1.0)

        def encode(prompts):
            return self.encode_prompt(prompts, device, 1, max_sequence_length, clip_skip)

        src, src_pooled = flowedit_prompt_for_batch(encode, source_prompt, batch)
        tar, tar_pooled = flowedit_prompt_for_batch(encode, target_prompt, batch)
        if do_cfg:
            neg, neg_pooled = flowedit_prompt_for_batch(encode, negative_prompt, batch)
            embeds = torch.cat([neg, src, neg, tar]).to(dtype)
            pooled = torch.cat([neg_pooled, src_pooled, neg_pooled, tar_pooled]).to(dtype)
            sample_embeds, sample_pooled = (
                torch.cat([neg, tar]).to(dtype),
                torch.cat([neg_pooled, tar_pooled]).to(dtype),
            )
        else:
            embeds, pooled = torch.cat([src, tar]).to(dtype), torch.cat([src_pooled, tar_pooled]).to(dtype)
            sample_embeds, sample_pooled = tar.to(dtype), tar_pooled.to(dtype)

        # 3. the scheduler's grid (the model's shift), sigmas [T + 1] ending in 0
        seq_len = (x_src.shape[-2] // self.patch_size) * (x_src.shape[-1] // self.patch_size)
        flow_timesteps(self.scheduler, num_inference_steps, device, seq_len, "sd3")
        self._num_timesteps = len(edit_steps) + len(sampling_steps)

        def velocity(latents, t, enc, pool):
            return sd3.network_call(self.transformer, latents, t, sd3.condition(enc, pool))

        def velocity_pair(z_src, z_tar, t):
            """(V_src, V_tar): one batched call on [src-uncond, src-cond, tar-uncond, tar-cond], CFG per branch."""
            if do_cfg:
                su, sc, tu, tc = velocity(torch.cat([z_src, z_src, z_tar, z_tar]), t, embeds, pooled).chunk(4)
                return guided_velocity(su, sc, source_guidance_scale), guided_velocity(tu, tc, target_guidance_scale)
            return velocity(torch.cat([z_src, z_tar]), t, embeds, pooled).chunk(2)

        def target_velocity(x_tar, t):
            """V_tar of the n_min sampling tail: [tar-uncond, tar-cond] in one call with CFG, else tar-cond alone."""
            v = velocity(torch.cat([x_tar] * (2 if do_cfg else 1)), t, sample_embeds, sample_pooled)
            return guided_velocity(*v.chunk(2), target_guidance_scale) if do_cfg else v

        # 4. the FlowEdit ODE from Z = X_src, then the optional n_min sampling tail
        out_latents = integrate_flowedit(
            self,
            x_src,
            edit_steps,
            sampling_steps,
            n_avg,
            velocity_pair,
            target_velocity,
            device=device,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            region_mask=layout_mask(region, x_src),
        )

        # 5. decode (pasted onto the input when masked); counts
        images = decode_region(self.vae, self.image_processor, out_latents, output_type, region)
        nfe, passes = flowedit_counts(
            len(edit_steps), len(sampling_steps), n_avg, 4 if do_cfg else 2, 2 if do_cfg else 1
        )
        self.maybe_free_model_hooks()
        return flowedit_output(images, nfe, passes, return_dict)
