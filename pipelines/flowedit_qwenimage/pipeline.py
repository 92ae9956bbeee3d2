"""FlowEditQwenImagePipeline: inversion-free text-based image editing on Qwen-Image (rectified flow).

Kulikov et al., "FlowEdit" (ICCV 2025), our implementation of the paper's update (:mod:`lsb.bridges.flowedit`) as
in the SD3 / FLUX / Z-Image pipelines. Qwen-Image's guidance is QwenImagePipeline's true CFG against the empty
prompt, rescaled per token to the conditional norm (``lsb.families.qwenimage.true_cfg``), per branch when its scale
is > 1 (``source_guidance_scale`` / ``target_guidance_scale`` are diffusers' ``true_cfg_scale``); then a step is one
batched call on [src, src-uncond, tar, tar-uncond] (4 forward passes per image), else on [src, tar] (2). The grid is
QwenImagePipeline's: sigmas ``linspace(1, 1/T, T)``, dynamically (exponentially) shifted by the token count.
FlowEdit has no published Qwen-Image setting: the defaults are FLUX.1's grid (T = 28, n_max = 24) with true CFG
1.5 / 4.0 (``lsb.families.qwenimage.FLOWEDIT_DEFAULTS``).

This file is self-contained apart from the installed ``lsb`` package (a diffusers custom pipeline too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from lsb.families import qwenimage
from lsb.families.flux import pack_latents, unpack_latents
from lsb.helpers.flowedit import (
    check_flowedit_args,
    check_flowedit_inputs,
    flow_timesteps,
    flowedit_counts,
    flowedit_output,
    integrate_flowedit,
)
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.qwenimage import (
    check_qwen_pixels,
    decode_qwen_latents,
    encode_qwen_latents,
    join_sides,
    side_for_batch,
)
from lsb.helpers.translation import check_callback_tensor_inputs, preprocess_images
from lsb.io.execution import execution_device, model_dtype

DEFAULTS = qwenimage.FLOWEDIT_DEFAULTS


class FlowEditQwenImagePipeline(DiffusionPipeline):
    r"""FlowEdit on a Qwen-Image checkpoint; components are those of diffusers' ``QwenImagePipeline``."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "QwenImageTransformer2DModel")
        self.register_modules(
            scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
        )
        self.vae_scale_factor = 2 ** len(self.vae.temperal_downsample)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
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
        num_inference_steps: int = DEFAULTS["num_inference_steps"],
        n_max: int = DEFAULTS["n_max"],
        n_min: int = DEFAULTS["n_min"],
        n_avg: int = DEFAULTS["n_avg"],
        source_guidance_scale: float | None = None,
        target_guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 512,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Edit ``image`` from what ``source_prompt`` describes to what ``target_prompt`` describes.

        Args:
            image: PIL / numpy / tensor image(s); sides multiples of 16 px.
            source_prompt / target_prompt: text.
            num_inference_steps / n_max / n_min / n_avg: FlowEdit's T, n_max, n_min, n_avg (default 28 / 24 / 0 / 1).
            source_guidance_scale / target_guidance_scale: true CFG scale of each branch (> 1: CFG against "";
                None: 1.5 / 4.0).
            generator: the per-step noise N. output_type: "pil", "np", "pt" or "latent".
            max_sequence_length: text tokens after the template (at most 1024).

        Returns:
            ``FlowEditPipelineOutput`` (``images``, ``nfe``, ``forward_passes``), or a tuple of those.
        """
        s_src = DEFAULTS["source_guidance_scale"] if source_guidance_scale is None else source_guidance_scale
        s_tar = DEFAULTS["target_guidance_scale"] if target_guidance_scale is None else target_guidance_scale
        check_flowedit_inputs(image, source_prompt, target_prompt)
        edit_steps, sampling_steps = check_flowedit_args(num_inference_steps, n_max, n_min, n_avg, s_src, s_tar)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_qwen_pixels(pixels, self.vae_scale_factor)
        device, dtype, batch = execution_device(self), model_dtype(self.transformer), pixels.shape[0]

        x_src = encode_qwen_latents(self, pixels, device)
        h, w = x_src.shape[-2:]
        src = side_for_batch(self, "source", source_prompt, batch, device, max_sequence_length)
        tar = side_for_batch(self, "target", target_prompt, batch, device, max_sequence_length)
        use_cfg = s_src > 1 or s_tar > 1
        empty = side_for_batch(self, "negative", "", batch, device, max_sequence_length) if use_cfg else None

        def cond_of(*sides):
            embeds, mask = join_sides(*sides)
            return qwenimage.condition(embeds.to(dtype), mask, h, w)

        pair_cond = cond_of(src, empty, tar, empty) if use_cfg else cond_of(src, tar)
        target_cond = cond_of(tar, empty) if s_tar > 1 else cond_of(tar)

        flow_timesteps(self.scheduler, num_inference_steps, device, (h // 2) * (w // 2), "qwenimage")
        self._num_timesteps = len(edit_steps) + len(sampling_steps)

        def call(rows, t, cond):
            return unpack_latents(qwenimage.network_call(self.transformer, pack_latents(rows), t, cond), h, w)

        def guided(pos, neg, scale):
            return pos if scale <= 1 else qwenimage.true_cfg(pos, neg, scale)

        def velocity_pair(z_src, z_tar, t):
            if not use_cfg:
                return call(torch.cat([z_src, z_tar]), t, pair_cond).chunk(2)
            v_src, v_src_u, v_tar, v_tar_u = call(torch.cat([z_src, z_src, z_tar, z_tar]), t, pair_cond).chunk(4)
            return guided(v_src, v_src_u, s_src), guided(v_tar, v_tar_u, s_tar)

        def target_velocity(x_tar, t):
            if s_tar <= 1:
                return call(x_tar, t, target_cond)
            v, v_u = call(torch.cat([x_tar, x_tar]), t, target_cond).chunk(2)
            return guided(v, v_u, s_tar)

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
        )
        images = decode_qwen_latents(self, z, output_type)
        nfe, passes = flowedit_counts(
            len(edit_steps), len(sampling_steps), n_avg, 4 if use_cfg else 2, 2 if s_tar > 1 else 1
        )
        self.maybe_free_model_hooks()
        return flowedit_output(images, nfe, passes, return_dict)
