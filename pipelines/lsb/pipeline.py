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

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lsb.io.execution import execution_device, model_dtype
from lsb.schedulers import LSBScheduler
from lsb.helpers.translation import check_nfe, check_prompt_args, decode_latents, encode_images, preprocess_images, prompt_pair_embeds


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
    works on any SD checkpoint folder or repo (epsilon or v-prediction).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor"]
    _callback_tensor_inputs = ["latents", "source_prompt_embeds", "target_prompt_embeds"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None,
                 requires_safety_checker: bool = False):
        super().__init__()
        if not isinstance(scheduler, LSBScheduler):
            scheduler = LSBScheduler.from_config(scheduler.config)
        # The safety checker / feature extractor of SD folders are accepted and ignored: outputs are
        # translations of the user's own images, and the embedded model has none.
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              safety_checker=None, feature_extractor=None)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, image, source_prompt, target_prompt, source_prompt_embeds, target_prompt_embeds,
                     num_inference_steps, tau, t0, callback_on_step_end_tensor_inputs):
        if image is None:
            raise ValueError("`image` is required: the picture(s) to translate")
        check_prompt_args("source", source_prompt, source_prompt_embeds)
        check_prompt_args("target", target_prompt, target_prompt_embeds)
        check_nfe(num_inference_steps)
        if tau is not None and not (tau > 0 and np.isfinite(tau)):
            raise ValueError(f"tau must be a positive number, got {tau!r}")
        if t0 is not None and not (0 < t0 < 1):
            raise ValueError(f"t0 must lie strictly between 0 and 1, got {t0!r}")
        bad = [k for k in (callback_on_step_end_tensor_inputs or []) if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback tensor inputs {bad} not in {self._callback_tensor_inputs}")

    def preprocess_images(self, image) -> torch.Tensor:
        """PIL / numpy / tensor image(s) -> float tensor in [-1, 1], checked for a VAE-compatible size."""
        return preprocess_images(image, self.image_processor, self.vae_scale_factor)

    def encode_image(self, image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """VAE-encode images in [-1, 1] to scaled latents (posterior mode: deterministic)."""
        return encode_images(self.vae, image, device if device is not None else execution_device(self))

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        return decode_latents(self.vae, self.image_processor, latents, output_type)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 11.0,
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
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 8.
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain.
            num_inference_steps: NFE, the number of batched UNet calls (each call evaluates the source
                and target prompts together). With the paper's Euler solver this is NFE - 1 Euler steps
                plus one final denoise, exactly as the paper counts it.
            guidance_scale: the paper's CFG weight ``w`` on the predictor difference
                (x̂_target - x̂_source); the source prompt acts as the negative prompt.
            tau: the paper's τ, the variance of the bridge's Brownian reference (the official code's
                ``--tau`` is sqrt(τ): its default 2.3 is τ = 5.29). ``None``: the scheduler's config.
            t0: the bridge time the translation starts from (paper ``t_0``). ``None``: the scheduler's.
            source_prompt_embeds / target_prompt_embeds: precomputed text embeddings instead of prompts.
            generator / noise: randomness of the initial state x_{t0} = (1 - t0) x_src + σ_{t0} z.
            output_type: "pil", "np", "pt" or "latent".
            return_trajectory: also return x_t and both predictors (latents) after every step.
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step.
        """
        self.check_inputs(image, source_prompt, target_prompt, source_prompt_embeds, target_prompt_embeds,
                          num_inference_steps, tau, t0, callback_on_step_end_tensor_inputs)
        device = execution_device(self)  # once per call; diffusers' own lookup only when hooks are on

        # 1. images -> source latents
        pixels = self.preprocess_images(image)
        batch = pixels.shape[0]
        x_src = self.encode_image(pixels, device)

        # 2. prompts -> embeddings (source, target), broadcast to the batch
        dtype = model_dtype(self.unet)
        source_prompt_embeds, target_prompt_embeds = prompt_pair_embeds(
            self, source_prompt, source_prompt_embeds, target_prompt, target_prompt_embeds, batch, device, dtype,
            clip_skip=clip_skip)

        # 3. bridge time grid and the initial state x_{t0}
        self.scheduler.set_timesteps(num_inference_steps, device=device, t0=t0, tau=tau)
        if noise is None:
            noise = randn_tensor(x_src.shape, generator=generator, device=device, dtype=x_src.dtype)
        elif noise.shape != x_src.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, the latents {tuple(x_src.shape)}")
        latents = self.scheduler.prepare_initial_sample(x_src, noise.to(device=device, dtype=x_src.dtype))

        # 4. integrate the PF-ODE: one batched UNet call per step
        trajectory = [] if return_trajectory else None
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = self.scheduler.scale_model_input(latents, t)
                model_input = torch.cat([model_input, model_input])
                hidden = torch.cat([source_prompt_embeds, target_prompt_embeds])
                model_output = self.unet(model_input, t, encoder_hidden_states=hidden, return_dict=False)[0]
                out = self.scheduler.step(model_output, t, latents, guidance_scale=guidance_scale)
                latents = out.prev_sample
                if not torch.isfinite(latents).all():
                    raise FloatingPointError(f"NaN/inf in the latents after step {i} (timestep {float(t):.2f})")
                if trajectory is not None:
                    trajectory.append({"t": float(self.scheduler.bridge_times[i]), "timestep": float(t),
                                       "x_t": latents.detach().cpu(), "source": out.pred_source_sample.detach().cpu(),
                                       "target": out.pred_target_sample.detach().cpu()})
                if callback_on_step_end is not None:
                    local = {"latents": latents, "source_prompt_embeds": source_prompt_embeds,
                             "target_prompt_embeds": target_prompt_embeds}
                    res = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs or []})
                    latents = (res or {}).get("latents", latents)
                progress_bar.update()

        # 5. decode
        images = self.decode_latents(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, len(timesteps), trajectory)
        return LSBPipelineOutput(images=images, nfe=len(timesteps), trajectory=trajectory)
