"""DDMPipeline: text-to-image and image-conditioned generation with a Decoupled Diffusion Model.

Huang, Qin, Liu, Xu, "Decoupled Diffusion Models: Simultaneous Image-to-Zero and Zero-to-Noise Diffusion"
(arXiv 2306.13720). Components are those of a Stable Diffusion pipeline (VAE, CLIP text encoder and
tokenizer, UNet2DConditionModel) with a :class:`lsb.DDMScheduler` and a UNet that follows the two-head
channel convention of :mod:`lsb.models.ddm` (out_channels = 2 x latent channels: C then eps; 3 x for
the linear attenuation: K, C, eps). A UNet with in_channels = 2 x latent channels is image-conditioned:
the VAE latent of ``image`` (the degraded picture, e.g. the bicubic-upsampled low-resolution image for
4x super-resolution) is concatenated after the noisy latent.

NFE: with the scheduler's default ``denoise=True``, ``num_inference_steps=N`` costs N + 1 UNet calls (the
paper's "10 steps" = 11 NFE); the output's ``nfe`` field reports the calls actually made. Classifier-free
guidance batches the unconditional and conditional inputs in one call, so it does not change the NFE.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=lsb.pipeline_dir("ddm"), trust_remote_code=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lsb.io.execution import execution_device, model_dtype
from lsb.bridges.guidance import classifier_free_guidance
from lsb.models.ddm import check_ddm_unet
from lsb.prompts.encoding import broadcast_embeds, encode_text
from lsb.schedulers import DDMScheduler
from lsb.helpers.translation import (
    check_callback_tensor_inputs,
    check_nfe,
    decode_latents,
    encode_images,
    preprocess_images,
    vae_image_processor,
)


@dataclass
class DDMPipelineOutput(BaseOutput):
    """Output of :class:`DDMPipeline`.

    Args:
        images: generated images (PIL list, numpy array or tensor per ``output_type``).
        nfe: number of batched UNet forward calls spent.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int


class DDMPipeline(DiffusionPipeline):
    r"""Generate images with a Decoupled Diffusion Model (DDM) in a VAE latent space.

    ``scheduler`` must be a :class:`lsb.DDMScheduler` whose ``attenuation`` matches the UNet's heads; a mismatch
    (e.g. a plain epsilon-prediction UNet) raises ValueError at construction.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        if not isinstance(scheduler, DDMScheduler):
            raise ValueError(
                f"DDMPipeline needs a DDMScheduler, got {type(scheduler).__name__}: a DDM network "
                "predicts attenuation parameters and noise, which other schedulers cannot use"
            )
        check_ddm_unet(unet, vae.config.latent_channels, scheduler.config.attenuation)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)

    @property
    def image_conditioned(self) -> bool:
        return check_ddm_unet(self.unet, self.vae.config.latent_channels, self.scheduler.config.attenuation)

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self, prompt, prompt_embeds, image, num_inference_steps, guidance_scale, eta, callback_on_step_end_tensor_inputs
    ):
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("give at most one of `prompt` and `prompt_embeds`")
        if prompt is not None:
            ok = isinstance(prompt, str) or (
                isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
            )
            if not ok:
                raise TypeError("`prompt` must be a string or a non-empty list of strings")
        check_nfe(num_inference_steps, minimum=1, name="num_inference_steps")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if eta is not None and not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if self.image_conditioned and image is None:
            raise ValueError("this DDM UNet is image-conditioned (in_channels = 2 x latent channels): pass `image`")
        if not self.image_conditioned and image is not None:
            raise ValueError("this DDM UNet takes no condition image (in_channels = latent channels); drop `image`")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def encode_prompt(
        self,
        prompt,
        batch: int,
        device,
        negative_prompt=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        do_cfg: bool = False,
    ):
        """(negative, positive) embeddings of batch ``batch`` (negative is None without guidance)."""
        if prompt_embeds is None:
            if isinstance(prompt, list) and len(prompt) not in (1, batch):
                raise ValueError(f"`prompt` has {len(prompt)} entries for a batch of {batch}")
            prompt_embeds = encode_text(self, prompt, device)
        pos = broadcast_embeds(prompt_embeds.to(device=device, dtype=model_dtype(self.unet)), batch, "prompt_embeds")
        neg = None
        if do_cfg:
            if negative_prompt_embeds is None:
                negative_prompt_embeds = encode_text(self, negative_prompt or "", device)
            neg = broadcast_embeds(
                negative_prompt_embeds.to(device=device, dtype=model_dtype(self.unet)), batch, "negative_prompt_embeds"
            )
        return neg, pos

    def prepare_latents(self, batch: int, height: int, width: int, dtype, device, generator, latents=None):
        """x_1 = eps ~ N(0, I) (the DDM prior), or the given ``latents``."""
        shape = (
            batch,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        num_inference_steps: int = 10,
        guidance_scale: float = 1.0,
        negative_prompt: str | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, float, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Generate images.

        Args:
            prompt: text prompt(s); ``None`` or ``""`` for an unconditional (or image-only conditioned) sample.
            image: the condition picture(s) of an image-conditioned model (PIL, numpy or tensor, sides multiples of
                the VAE factor), one per output image or one shared.
            num_inference_steps: N, the official sampler's number of equal steps; NFE = N + 1 with the scheduler's
                ``denoise=True`` (default), N otherwise (see ``output.nfe``).
            guidance_scale: classifier-free guidance weight w on both heads, out_uncond + w (out_cond - out_uncond);
                1 disables guidance. One batched UNet call per step either way.
            eta: overrides the scheduler's ``eta`` for this call (1 = DDM's posterior step, 0 = deterministic).
            generator, latents: randomness of x_1 and of the posterior noise; or a given x_1.
            output_type: "pil", "np", "pt" or "latent".
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each step.
        """
        self.check_inputs(
            prompt, prompt_embeds, image, num_inference_steps, guidance_scale, eta, callback_on_step_end_tensor_inputs
        )
        device = execution_device(self)
        cond = None
        if image is not None:
            pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
            height, width = pixels.shape[-2:]
            cond = encode_images(self.vae, pixels, device).to(model_dtype(self.unet))
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        if prompt is None and prompt_embeds is None:
            prompt = ""
        if prompt_embeds is not None:
            n_prompts = prompt_embeds.shape[0]
        else:
            n_prompts = len(prompt) if isinstance(prompt, list) else 1
        n_images = cond.shape[0] if cond is not None else 1
        if n_prompts > 1 and n_images > 1 and n_prompts != n_images:
            raise ValueError(f"{n_prompts} prompts for {n_images} condition images")
        batch = max(n_prompts, n_images) * num_images_per_prompt
        if cond is not None:
            if cond.shape[0] == 1:
                cond = cond.expand(batch, -1, -1, -1)
            else:
                cond = cond.repeat_interleave(batch // cond.shape[0], dim=0)
        if prompt_embeds is not None and prompt_embeds.shape[0] not in (1, batch):
            prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        if isinstance(prompt, list) and len(prompt) > 1:
            prompt = [p for p in prompt for _ in range(batch // len(prompt))]
        do_cfg = guidance_scale != 1.0
        neg, pos = self.encode_prompt(
            prompt, batch, device, negative_prompt, prompt_embeds, negative_prompt_embeds, do_cfg
        )

        scheduler = self.scheduler
        if eta is not None and eta != scheduler.config.eta:
            scheduler = DDMScheduler.from_config(scheduler.config, eta=eta)
        scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(batch, height, width, model_dtype(self.unet), device, generator, latents)

        nfe = 0
        with self.progress_bar(total=len(scheduler.timesteps)) as progress_bar:
            for i, t in enumerate(scheduler.timesteps):
                x_in = scheduler.scale_model_input(latents, t)
                if cond is not None:
                    x_in = torch.cat([x_in, cond], dim=1)
                if do_cfg:
                    out = self.unet(
                        torch.cat([x_in, x_in]), t, encoder_hidden_states=torch.cat([neg, pos]), return_dict=False
                    )[0]
                    out_u, out_c = out.chunk(2)
                    out = classifier_free_guidance(out_u, out_c, guidance_scale)
                else:
                    out = self.unet(x_in, t, encoder_hidden_states=pos, return_dict=False)[0]
                nfe += 1
                latents = scheduler.step(out, t, latents, generator=generator).prev_sample
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": pos}
                    res = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs or []}
                    )
                    latents = (res or {}).get("latents", latents)
                progress_bar.update()

        images = decode_latents(self.vae, self.image_processor, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, nfe
        return DDMPipelineOutput(images=images, nfe=nfe)
