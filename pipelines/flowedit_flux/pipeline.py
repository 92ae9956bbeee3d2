"""FlowEditFluxPipeline: inversion-free text-based image editing on FLUX.1 (rectified flow, packed latents).

Kulikov, Kleiner, Huberman-Spiegelglas & Michaeli, "FlowEdit: Inversion-Free Text-Based Editing Using
Pre-Trained Flow Models" (ICCV 2025). Our own implementation of the paper's update
(:mod:`lsb.bridges.flowedit`): from ``Z = X_src`` at grid step ``n_max`` of a T-step grid,

    Z_src = (1 - s_i) X_src + s_i N   (N fresh every step),   Z_tar = Z + Z_src - X_src,
    Z <- Z + (s_{i-1} - s_i) [V(Z_tar, s_i, c_tar) - V(Z_src, s_i, c_src)].

FLUX.1-dev is guidance-distilled: there is no CFG batch; each branch gets its own distilled guidance value
(``source_guidance_scale`` on the source branch, ``target_guidance_scale`` on the target branch, embedded per
row of one batched call). FLUX.1-schnell has no guidance embedding: leave both None. Defaults are the paper's
FLUX settings: T = 28, n_max = 24, guidance 1.5 / 5.5. The grid is ``FluxPipeline``'s: sigmas
``linspace(1, 1/T, T)`` with dynamic shifting from the image's token count.

Counting: every step is ONE batched transformer call on [src, tar]; ``nfe`` counts the calls (n_max x n_avg),
``forward_passes`` the latents evaluated per image (2 per step).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers
custom pipeline (``custom_pipeline=<this folder>, trust_remote_code=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from lsb.families import flux
from lsb.helpers.masks import decode_region, is_empty, layout_mask, passthrough, prepare_region
from lsb.helpers.flowedit import (
    FLUX_FLOWEDIT_DEFAULTS,
    check_flowedit_args,
    check_flowedit_inputs,
    flow_timesteps,
    flowedit_counts,
    flowedit_output,
    flowedit_prompt_for_batch,
    integrate_flowedit,
)
from lsb.helpers.flow import transformer_latents
from lsb.helpers.flux import (
    check_distilled_guidance,
    check_flux_image_size,
    pack_latents,
    unpack_latents,
)
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import check_callback_tensor_inputs, preprocess_images
from lsb.io.execution import execution_device, model_dtype
from lsb.prompts.encoding_flux import encode_prompt_flux
from lsb.prompts.encoding_sd3 import check_max_sequence_length


class FlowEditFluxPipeline(DiffusionPipeline):
    r"""FlowEdit on a FLUX.1 checkpoint: ``FlowEditFluxPipeline.from_pretrained(<flux folder or repo>)``.

    Components are those of diffusers' ``FluxPipeline``.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->transformer->vae"
    _optional_components = ["image_encoder", "feature_extractor"]
    _callback_tensor_inputs = ["latents"]

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
        # image_encoder / feature_extractor (IP-adapter slots of FluxPipeline's layout) are accepted and unused.
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
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor * 2)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family (a UNet / VP scheduler, the other
        flow transformer) is refused first, naming the pipeline for it."""
        check_model_folder_family(cls.__name__, pretrained_model_name_or_path, "transformer", "FluxTransformer2DModel")
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
        check_max_sequence_length(max_sequence_length, self.tokenizer_2)
        for k, im in enumerate(image if isinstance(image, list) else [image]):
            if hasattr(im, "size") and isinstance(im.size, tuple):  # PIL: (width, height)
                width, height = im.size
            elif getattr(im, "ndim", 0) >= 3:  # numpy (..., H, W, 3) / tensor (..., 3, H, W)
                is_np = not isinstance(im, torch.Tensor)
                height, width = (im.shape[-3], im.shape[-2]) if is_np else (im.shape[-2], im.shape[-1])
            else:
                continue  # preprocess_images names the bad type
            check_flux_image_size(height, width, self.vae_scale_factor, f"image #{k}")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def resolve_guidance(self, source_guidance_scale, target_guidance_scale):
        """The two distilled guidance values: FlowEdit's 1.5 / 5.5 for a guidance-distilled model when None,
        None for a model without a guidance embedding (schnell); a value given to schnell is a ValueError."""
        if getattr(self.transformer.config, "guidance_embeds", False):
            if source_guidance_scale is None:
                source_guidance_scale = FLUX_FLOWEDIT_DEFAULTS["source_guidance_scale"]
            if target_guidance_scale is None:
                target_guidance_scale = FLUX_FLOWEDIT_DEFAULTS["target_guidance_scale"]
        return (
            check_distilled_guidance(self.transformer, source_guidance_scale),
            check_distilled_guidance(self.transformer, target_guidance_scale),
        )

    def encode_prompt(self, prompt, device, num_images_per_prompt: int = 1, max_sequence_length: int = 512):
        """``(prompt_embeds, pooled_prompt_embeds, text_ids)`` (== FluxPipeline.encode_prompt)."""
        return encode_prompt_flux(
            self.text_encoder,
            self.text_encoder_2,
            self.tokenizer,
            self.tokenizer_2,
            prompt,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
        )

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int = FLUX_FLOWEDIT_DEFAULTS["num_inference_steps"],
        n_max: int = FLUX_FLOWEDIT_DEFAULTS["n_max"],
        n_min: int = FLUX_FLOWEDIT_DEFAULTS["n_min"],
        n_avg: int = FLUX_FLOWEDIT_DEFAULTS["n_avg"],
        source_guidance_scale: float | None = None,
        target_guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 512,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Edit ``image`` from what ``source_prompt`` describes to what ``target_prompt`` describes.

        Args:
            image: PIL image, numpy (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] / (B, 3, H, W) in
                [-1, 1], or a list; sides multiples of ``2 * vae_scale_factor`` (16 px for FLUX).
            source_prompt / target_prompt: text.
            num_inference_steps: T, the grid size (paper: 28).
            n_max: the paper's n_max, grid steps FlowEdit runs, from level ``sigmas[T - n_max]`` (paper: 24;
                0 returns the input's reconstruction).
            n_min: the paper's n_min, plain target-prompt sampling steps at the end (paper: 0).
            n_avg: the paper's n_avg, noise draws averaged per step (paper: 1).
            source_guidance_scale / target_guidance_scale: distilled guidance of the source / target branch
                (FLUX.1-dev; None: 1.5 / 5.5). Must stay None for a model without guidance embedding (schnell).
            generator: the per-step noise N (a list: one generator per image).
            output_type: "pil", "np", "pt" or "latent" (unpacked latents [B, C, h, w]).
            max_sequence_length: T5 tokens (<= 512 and the T5 tokenizer's limit).

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
        g_src, g_tar = self.resolve_guidance(source_guidance_scale, target_guidance_scale)
        edit_steps, sampling_steps = check_flowedit_args(num_inference_steps, n_max, n_min, n_avg)
        pixels = preprocess_images(image, self.image_processor, 2 * self.vae_scale_factor)
        device = execution_device(self)
        dtype = model_dtype(self.transformer)
        batch = pixels.shape[0]
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(
                self.image_processor, region, output_type, lambda p: transformer_latents(self, p, device)
            )
            return flowedit_output(images, 0, 0, return_dict)

        # 1. source latents X_src (VAE mode, (z - shift) * scale), packed into 2x2 tokens
        latents = transformer_latents(self, pixels, device)
        h, w = latents.shape[-2:]
        x_src = pack_latents(latents)

        # 2. prompts: one batched call on [src; tar] per step, each row with its own distilled guidance
        def encode(prompts):
            return self.encode_prompt(prompts, device, 1, max_sequence_length)

        src, src_pooled, text_ids = flowedit_prompt_for_batch(encode, source_prompt, batch)
        tar, tar_pooled, _ = flowedit_prompt_for_batch(encode, target_prompt, batch)
        embeds, pooled = torch.cat([src, tar]).to(dtype), torch.cat([src_pooled, tar_pooled]).to(dtype)
        text_ids = text_ids.to(dtype)
        guidance = guidance_tar = None
        if g_src is not None:
            guidance = torch.tensor([g_src] * batch + [g_tar] * batch, device=device, dtype=torch.float32)
            guidance_tar = torch.full((batch,), g_tar, device=device, dtype=torch.float32)

        # 3. FluxPipeline's grid: sigmas linspace(1, 1/T, T), dynamically shifted by the token count
        flow_timesteps(self.scheduler, num_inference_steps, device, x_src.shape[1], "flux")
        self._num_timesteps = len(edit_steps) + len(sampling_steps)

        pair_cond = flux.condition(embeds, pooled, text_ids, h, w, guidance=guidance)
        target_cond = flux.condition(tar.to(dtype), tar_pooled.to(dtype), text_ids, h, w, guidance=guidance_tar)

        def velocity_pair(z_src, z_tar, t):
            """(V_src, V_tar): one batched call on [src; tar], each row with its branch's distilled guidance."""
            return flux.network_call(self.transformer, torch.cat([z_src, z_tar]), t, pair_cond).chunk(2)

        def target_velocity(x_tar, t):
            """V_tar of the n_min sampling tail: the target row alone, with the target's distilled guidance."""
            return flux.network_call(self.transformer, x_tar, t, target_cond)

        # 4. the FlowEdit ODE from Z = X_src, then the optional n_min sampling tail
        z = integrate_flowedit(
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
            region_mask=layout_mask(region, latents, pack_latents),
        )
        out = unpack_latents(z, h, w)

        # 5. decode; counts
        images = decode_region(self.vae, self.image_processor, out, output_type, region)  # pasted when masked
        nfe, passes = flowedit_counts(len(edit_steps), len(sampling_steps), n_avg, 2, 1)
        self.maybe_free_model_hooks()
        return flowedit_output(images, nfe, passes, return_dict)
