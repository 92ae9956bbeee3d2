"""FlowEditFlux2Pipeline: inversion-free text-based image editing on FLUX.2 (dev or klein; rectified flow).

Kulikov et al., "FlowEdit" (ICCV 2025), our implementation of the paper's update (:mod:`lsb.bridges.flowedit`) as
in the other flow pipelines. Guidance is Flux2KleinPipeline's CFG ``neg + s (pos - neg)`` against "" per branch when
its scale is > 1 on a base (non-distilled) model: one batched call on [src, src-uncond, tar, tar-uncond] (4 forward
passes per image), else [src, tar] (2). A distilled klein takes no guidance (a scale given is refused). On dev
(guidance-distilled) the scales are each branch's embedded guidance, one per row of the [src, tar] call
(default FLUX.1-dev's published 1.5 / 5.5). The grid is
Flux2KleinPipeline's: sigmas ``linspace(1, 1/T, T)`` with ``mu = compute_empirical_mu(tokens, T)``. FlowEdit has no
published FLUX.2 setting: the defaults are FLUX.1's grid (T = 28, n_max = 24) with CFG 1.5 / 4.0 on base models.

Self-contained apart from the installed ``lsb`` package (a diffusers custom pipeline too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from lsb.families import flux2
from lsb.helpers.flowedit import (
    check_flowedit_args,
    check_flowedit_inputs,
    flow_timesteps,
    flowedit_counts,
    flowedit_output,
    integrate_flowedit,
)
from lsb.helpers.flux2 import (
    check_flux2_guidance,
    check_flux2_pixels,
    check_processor_packages,
    is_guidance_distilled,
    decode_flux2_latents,
    embeds_for_batch,
    encode_flux2_latents,
    from_tokens,
    to_tokens,
)
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import check_callback_tensor_inputs, preprocess_images
from lsb.io.execution import execution_device, model_dtype

DEFAULTS = flux2.FLOWEDIT_DEFAULTS


class FlowEditFlux2Pipeline(DiffusionPipeline):
    r"""FlowEdit on a FLUX.2 klein checkpoint; components are those of diffusers' ``Flux2KleinPipeline``."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]
    #: unset guidance scales are this pipeline's per-model defaults (lsb.surfaces.methods passes only given ones)
    resolves_guidance = True

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer, is_distilled: bool = False):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "Flux2Transformer2DModel")
        self.register_modules(
            scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
        )
        self.register_to_config(is_distilled=is_distilled)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
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
            source_guidance_scale / target_guidance_scale: klein base: CFG scale of each branch (> 1: CFG against "";
                None: 1.5 / 4.0); klein distilled: must stay None; dev: each branch's distilled guidance (None:
                1.5 / 5.5).
            generator: the per-step noise N. output_type: "pil", "np", "pt" or "latent" (the VAE latents).
            max_sequence_length: text tokens (512).

        Returns:
            ``FlowEditPipelineOutput`` (``images``, ``nfe``, ``forward_passes``), or a tuple of those.
        """
        check_flux2_guidance(self, source_guidance_scale, target_guidance_scale)
        dev = is_guidance_distilled(self)  # dev: the scales are each branch's embedded guidance, no CFG pass
        if dev:
            defaults = flux2.DEV_FLOWEDIT_GUIDANCE
        elif self.config.is_distilled:
            defaults = (0.0, 0.0)
        else:
            defaults = (DEFAULTS["source_guidance_scale"], DEFAULTS["target_guidance_scale"])
        s_src = defaults[0] if source_guidance_scale is None else source_guidance_scale
        s_tar = defaults[1] if target_guidance_scale is None else target_guidance_scale
        check_flowedit_inputs(image, source_prompt, target_prompt)
        edit_steps, sampling_steps = check_flowedit_args(num_inference_steps, n_max, n_min, n_avg, s_src, s_tar)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_flux2_pixels(pixels, self.vae_scale_factor)
        device, dtype, batch = execution_device(self), model_dtype(self.transformer), pixels.shape[0]

        x_src = encode_flux2_latents(self, pixels, device)
        h, w = x_src.shape[-2:]
        src = embeds_for_batch(self, "source", source_prompt, batch, device, max_sequence_length)
        tar = embeds_for_batch(self, "target", target_prompt, batch, device, max_sequence_length)
        use_cfg = not dev and (s_src > 1 or s_tar > 1)
        empty = embeds_for_batch(self, "negative", "", batch, device, max_sequence_length) if use_cfg else None
        rows = [src, empty, tar, empty] if use_cfg else [src, tar]
        pair_guidance = [s_src] * batch + [s_tar] * batch if dev else None
        pair_cond = flux2.condition(torch.cat(rows).to(dtype), h, w, guidance=pair_guidance)
        tail_cfg = not dev and s_tar > 1
        target_cond = flux2.condition(
            torch.cat([tar, empty] if tail_cfg else [tar]).to(dtype), h, w, guidance=s_tar if dev else None
        )

        flow_timesteps(self.scheduler, num_inference_steps, device, h * w, "flux2")
        self._num_timesteps = len(edit_steps) + len(sampling_steps)

        def call(latents, t, cond):
            return from_tokens(flux2.network_call(self.transformer, to_tokens(latents), t, cond), h, w)

        def guided(pos, neg, scale):
            return pos if scale <= 1 else neg + scale * (pos - neg)

        def velocity_pair(z_src, z_tar, t):
            if not use_cfg:
                return call(torch.cat([z_src, z_tar]), t, pair_cond).chunk(2)
            v_src, v_src_u, v_tar, v_tar_u = call(torch.cat([z_src, z_src, z_tar, z_tar]), t, pair_cond).chunk(4)
            return guided(v_src, v_src_u, s_src), guided(v_tar, v_tar_u, s_tar)

        def target_velocity(x_tar, t):
            if not tail_cfg:
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
        images = decode_flux2_latents(self, z, output_type)
        nfe, passes = flowedit_counts(
            len(edit_steps), len(sampling_steps), n_avg, 4 if use_cfg else 2, 2 if tail_cfg else 1
        )
        self.maybe_free_model_hooks()
        return flowedit_output(images, nfe, passes, return_dict)
