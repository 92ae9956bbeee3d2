"""FlowEditZImagePipeline: inversion-free text-based image editing on Z-Image (rectified flow).

Kulikov, Kleiner, Huberman-Spiegelglas & Michaeli, "FlowEdit: Inversion-Free Text-Based Editing Using
Pre-Trained Flow Models" (ICCV 2025). Our own implementation of the paper's update
(:mod:`lsb.bridges.flowedit`): from ``Z = X_src`` at grid step ``n_max`` of a T-step grid,

    Z_src = (1 - s_i) X_src + s_i N   (N fresh every step),   Z_tar = Z + Z_src - X_src,
    Z <- Z + (s_{i-1} - s_i) [V(Z_tar, s_i, c_tar) - V(Z_src, s_i, c_src)].

Z-Image's CFG is ZImagePipeline's ``pos + s (pos - neg)`` against the empty prompt, per branch
(``source_guidance_scale`` / ``target_guidance_scale`` are that ``s``); at 0 on both (the default:
Z-Image-Turbo is guidance-distilled and diffusers runs it at ``guidance_scale=0``) each step is one batched call on
[src, tar] (2 forward passes per image), otherwise on [src, src-uncond, tar, tar-uncond] (4). The grid is
ZImagePipeline's: sigmas ``linspace(1, 1/T, T)`` under the scheduler's shift. FlowEdit has no published Z-Image
setting: the defaults are Turbo's own 8 steps, editing from level 7 (``lsb.families.zimage.FLOWEDIT_DEFAULTS``).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers
custom pipeline (``custom_pipeline=<this folder>, trust_remote_code=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from lsb.families import zimage
from lsb.helpers.flow import transformer_latents
from lsb.helpers.flowedit import (
    check_flowedit_args,
    check_flowedit_inputs,
    flow_timesteps,
    flowedit_counts,
    flowedit_output,
    integrate_flowedit,
)
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import check_callback_tensor_inputs, preprocess_images
from lsb.helpers.zimage import captions_for_batch, check_zimage_pixels
from lsb.io.execution import execution_device, model_dtype
from lsb.io.latents import decode_latents

DEFAULTS = zimage.FLOWEDIT_DEFAULTS


def guided(v: torch.Tensor, v_uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """ZImagePipeline's CFG on velocities: ``v + s (v - v_uncond)`` (linear: the same as on its raw outputs)."""
    return v if v_uncond is None or scale == 0 else v + scale * (v - v_uncond)


class FlowEditZImagePipeline(DiffusionPipeline):
    r"""FlowEdit on a Z-Image checkpoint: ``FlowEditZImagePipeline.from_pretrained(<z-image folder or repo>)``.

    Components are those of diffusers' ``ZImagePipeline``.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "ZImageTransformer2DModel")
        self.register_modules(
            scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # resizes nothing: the sides are checked instead (check_zimage_pixels)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family is refused first."""
        check_model_folder_family(
            cls.__name__, pretrained_model_name_or_path, "transformer", "ZImageTransformer2DModel"
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
            image: PIL image, numpy (H, W, 3), tensor (3, H, W) in [0, 1] / (B, 3, H, W) in [-1, 1], or a list;
                sides multiples of 16 px.
            source_prompt / target_prompt: text.
            num_inference_steps / n_max / n_min / n_avg: FlowEdit's T, n_max, n_min, n_avg (default 8 / 7 / 0 / 1).
            source_guidance_scale / target_guidance_scale: ZImagePipeline's CFG scale ``s`` of each branch (>= 0;
                None: 0, Turbo's setting).
            generator: the per-step noise N.
            output_type: "pil", "np", "pt" or "latent".
            max_sequence_length: caption tokens after the chat template (ZImagePipeline: 512).

        Returns:
            ``FlowEditPipelineOutput`` (``images``, ``nfe``, ``forward_passes``), or a tuple of those.
        """
        s_src = DEFAULTS["source_guidance_scale"] if source_guidance_scale is None else source_guidance_scale
        s_tar = DEFAULTS["target_guidance_scale"] if target_guidance_scale is None else target_guidance_scale
        check_flowedit_inputs(image, source_prompt, target_prompt)
        edit_steps, sampling_steps = check_flowedit_args(num_inference_steps, n_max, n_min, n_avg, s_src, s_tar)
        if s_src < 0 or s_tar < 0:
            raise ValueError(f"Z-Image guidance scales must be >= 0 (0: no CFG), got {s_src!r} / {s_tar!r}")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_zimage_pixels(pixels, self.vae_scale_factor)
        device, dtype, batch = execution_device(self), model_dtype(self.transformer), pixels.shape[0]

        # 1. source latents X_src (VAE mode, (z - shift) * scale), unpacked
        x_src = transformer_latents(self, pixels, device)

        # 2. captions: [src; tar] (+ the empty prompt's when a branch uses CFG)
        def captions(name, prompt):
            return [c.to(dtype) for c in captions_for_batch(self, name, prompt, batch, device, max_sequence_length)]

        src, tar = captions("source", source_prompt), captions("target", target_prompt)
        use_cfg = s_src > 0 or s_tar > 0
        empty = captions("negative", "") if use_cfg else []
        pair_cond = zimage.condition(src + empty + tar + empty if use_cfg else src + tar)
        target_cond = zimage.condition(tar + empty if s_tar > 0 else tar)

        # 3. ZImagePipeline's grid: sigmas linspace(1, 1/T, T) under the scheduler's shift
        h, w = x_src.shape[-2:]
        flow_timesteps(self.scheduler, num_inference_steps, device, (h // 2) * (w // 2), "zimage")
        self._num_timesteps = len(edit_steps) + len(sampling_steps)

        def velocity_pair(z_src, z_tar, t):
            if not use_cfg:
                return zimage.network_call(self.transformer, torch.cat([z_src, z_tar]), t, pair_cond).chunk(2)
            v = zimage.network_call(self.transformer, torch.cat([z_src, z_src, z_tar, z_tar]), t, pair_cond)
            v_src, v_src_u, v_tar, v_tar_u = v.chunk(4)
            return guided(v_src, v_src_u, s_src), guided(v_tar, v_tar_u, s_tar)

        def target_velocity(x_tar, t):
            if s_tar == 0:
                return zimage.network_call(self.transformer, x_tar, t, target_cond)
            v, v_u = zimage.network_call(self.transformer, torch.cat([x_tar, x_tar]), t, target_cond).chunk(2)
            return guided(v, v_u, s_tar)

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
        )
        images = decode_latents(self.vae, self.image_processor, z, output_type)
        nfe, passes = flowedit_counts(
            len(edit_steps), len(sampling_steps), n_avg, 4 if use_cfg else 2, 2 if s_tar > 0 else 1
        )
        self.maybe_free_model_hooks()
        return flowedit_output(images, nfe, passes, return_dict)
