"""LatentSchrodingerBridgeZImagePipeline: unpaired image-to-image translation with a Z-Image model.

The Latent Schrödinger Bridge (Kim, Kim & Ye 2024, arXiv 2411.14863) on a rectified-flow base, as in
``LatentSchrodingerBridgeSD3Pipeline``: the bridge state x_t is matched to the flow level s, the transformer sees
the scaled state at level s under the source and target prompts in one batched call, and :class:`lsb.LSBScheduler`
(``prediction_type="flow_prediction"``) turns the two velocities into the predictors; the loop is
:func:`lsb.helpers.bridge_loop.integrate_bridge`. Z-Image specifics (``lsb.families.zimage``): the prompts are
the Qwen3 caption lists ``ZImagePipeline`` builds (a list of variable-length tensors), the transformer takes the
latents as a list of (C, 1, h, w) frames at timestep 1 - sigma and predicts data - noise (negated to the
velocity in the family's network call). Latents are FLUX.1's ``(mode - shift) * scale``, unpacked.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(z_image_model, custom_pipeline=lsb.pipeline_dir("lsb_zimage"),
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from lsb_pipelines.lsb.pipeline import LSBPipelineOutput

from lsb.families import zimage
from lsb.helpers.bridge_loop import integrate_bridge
from lsb.helpers.flow import check_vae_shift_factor, transformer_latents
from lsb.helpers.model_family import check_flow_components, check_model_folder_family
from lsb.helpers.translation import (
    as_lsb_scheduler,
    check_bridge_settings,
    check_callback_tensor_inputs,
    initial_bridge_state,
    preprocess_images,
    require_image,
)
from lsb.helpers.zimage import captions_for_batch, check_zimage_pixels, check_zimage_prompt
from lsb.io.execution import execution_device, model_dtype
from lsb.io.latents import decode_latents
from lsb.io.settings import resolve_translation_args


class LatentSchrodingerBridgeZImagePipeline(DiffusionPipeline):
    r"""Translate images from a source domain to a target domain with a Latent Schrödinger Bridge on Z-Image.

    Components are those of diffusers' ``ZImagePipeline``. The checkpoint's flow-matching scheduler is converted
    with ``LSBScheduler.from_config`` (its shift does not apply: LSB visits the levels its bridge grid dictates).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer):
        super().__init__()
        check_flow_components(type(self).__name__, transformer, scheduler, "ZImageTransformer2DModel")
        check_vae_shift_factor(vae, "Z-Image", "FLUX.1's VAE: 0.1159")
        self.register_modules(
            scheduler=as_lsb_scheduler(scheduler),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another model family is refused first."""
        check_model_folder_family(
            cls.__name__, pretrained_model_name_or_path, "transformer", "ZImageTransformer2DModel"
        )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def check_inputs(self, image, source_prompt, target_prompt, num_inference_steps, tau, t0, callback_names):
        require_image(image)
        check_zimage_prompt("source", source_prompt)
        check_zimage_prompt("target", target_prompt)
        check_bridge_settings(num_inference_steps, tau, t0)
        check_callback_tensor_inputs(callback_names, self._callback_tensor_inputs)

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to Z-Image latents (posterior mode - shift_factor) x scaling_factor."""
        return transformer_latents(self, image, device)

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
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s on Z-Image.

        Args:
            image: PIL image, numpy array (H, W, 3), tensor (3, H, W) in [0, 1] / (B, 3, H, W) in [-1, 1], or a list;
                sides multiples of 16 px (the transformer patchifies the 8x downsampled latent 2x2).
            source_prompt / target_prompt: text describing each domain (a string, or a list of 1 or B strings).
            num_inference_steps: NFE, the number of batched transformer calls (each evaluates both prompts).
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference; NOT ZImagePipeline's
                ``guidance_scale``. ``None``: the folder's ``lsb_defaults.json``, else 1 (the plain bridge).
            tau / t0: the paper's τ and t_0 (``None``: the folder's defaults, else the scheduler's).
            generator / noise: randomness of the initial state x_{t0} (``noise`` shaped like the latents).
            output_type: "pil", "np", "pt" or "latent".
            return_trajectory: also return x_t and both predictors after every step.
            max_sequence_length: caption tokens after the chat template (ZImagePipeline: 512).
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step.
        """
        num_inference_steps, guidance_scale, tau, t0 = resolve_translation_args(
            self, num_inference_steps, guidance_scale, tau, t0, default_guidance_scale=1.0
        )
        self.check_inputs(
            image, source_prompt, target_prompt, num_inference_steps, tau, t0, callback_on_step_end_tensor_inputs
        )
        device = execution_device(self)
        dtype = model_dtype(self.transformer)

        # 1. images -> pixels (sides checked) -> source latents
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        check_zimage_pixels(pixels, self.vae_scale_factor)
        batch = pixels.shape[0]

        # 2. prompts -> caption lists (source rows, then target rows), as ZImagePipeline encodes them
        src = captions_for_batch(self, "source", source_prompt, batch, device, max_sequence_length)
        tgt = captions_for_batch(self, "target", target_prompt, batch, device, max_sequence_length)
        cond = zimage.condition([c.to(dtype) for c in src + tgt])

        # 3. source latents, bridge grid, initial state x_{t0}
        x_src = self.encode_image(pixels, device)
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        latents = initial_bridge_state(self.scheduler, x_src, generator, noise)

        # 4. the PF-ODE: one batched transformer call on [source; target] per step
        def network(model_input, t):
            return zimage.network_call(self.transformer, model_input.to(dtype), t, cond)

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
        images = decode_latents(self.vae, self.image_processor, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self._num_timesteps, trajectory)
        return LSBPipelineOutput(images=images, nfe=self._num_timesteps, trajectory=trajectory)
