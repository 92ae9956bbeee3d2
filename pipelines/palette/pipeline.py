"""ConditionalDiffusionRestorationPipeline: the Palette-style conditional-diffusion restoration baseline.

Saharia et al., "Palette: Image-to-Image Diffusion Models" (SIGGRAPH 2022), in a Stable Diffusion's latent space:
the UNet sees ``concat([x_t, x_T])`` (noisy latent and the degraded image's latent, 8 channels) and a fixed
empty-prompt embedding, and predicts the noise epsilon of the SD noise schedule; sampling starts from Gaussian
noise and runs any diffusers noise scheduler (DDIM by default, ``timestep_spacing="trailing"`` so that even one
step starts at the last training timestep). It is I2SB's baseline: same network, same data, same number of
training steps, but the sampler starts from noise instead of from the degraded image.

This file is self-contained apart from the installed ``lsb`` package (custom-pipeline loadable).
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from lsb.restoration import (RestorationPipelineOutput, bridge_spec, check_concat_unet, check_scheduler_for_bridge,
                             check_task, empty_prompt_embeds, paste_known, preprocess_mask, unet_call)
from lsb.translation_utils import encode_images, preprocess_images

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class ConditionalDiffusionRestorationPipeline(DiffusionPipeline):
    r"""Restore degraded images with a Palette-style conditional diffusion model (the bridges' baseline).

    Components: ``vae``, ``text_encoder`` + ``tokenizer`` (fixed empty-prompt embedding), ``unet`` (8 input
    channels: x_t and the degraded latent; epsilon prediction) and ``scheduler`` (a diffusers noise scheduler on the
    training betas, DDIM by default). Config: ``task`` and ``trained_bridge`` (``{"bridge": "noise", ...}``, the noise
    schedule it was trained on); a scheduler with other betas, or a bridge scheduler, is rejected.

    NFE = ``num_inference_steps`` (one UNet call per DDIM step; VAE encode/decode not counted).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, task: str = "inpaint",
                 trained_bridge: dict | None = None):
        super().__init__()
        check_task(task)
        check_concat_unet(unet, vae.config.latent_channels)
        trained_bridge = dict(trained_bridge) if trained_bridge else bridge_spec(scheduler)
        if trained_bridge.get("bridge") != "noise":
            raise ValueError(f"ConditionalDiffusionRestorationPipeline needs a noise-to-image scheduler (DDIM, DDPM, "
                             f"...), got {type(scheduler).__name__}")
        check_scheduler_for_bridge(scheduler, trained_bridge)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(task=task, trained_bridge=trained_bridge)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def check_inputs(self, image, num_inference_steps, output_type):
        if image is None:
            raise ValueError("`image` is required: the degraded picture(s) to restore")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        check_scheduler_for_bridge(self.scheduler, self.config.trained_bridge)

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask=None,
        num_inference_steps: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> RestorationPipelineOutput | tuple:
        r"""Restore ``image`` (same arguments as ``BridgeRestorationPipeline``; ``eta`` is DDIM's eta).

        Args:
            image: degraded image(s) (PIL / numpy / tensor in [0, 1], sides multiples of 8).
            mask (optional): inpainting mask (1 = missing); the known pixels of the input are kept in the output.
            num_inference_steps: the number of scheduler steps = NFE.
            generator: torch.Generator(s) for the initial noise (and DDIM's eta noise).
            eta: DDIM's eta (0 = deterministic), passed when the scheduler's ``step`` accepts it.
            output_type: "pil", "np", "pt" or "latent".
            return_dict: return a :class:`RestorationPipelineOutput` (else ``(images, nfe)``).
        """
        import inspect

        self.check_inputs(image, num_inference_steps, output_type)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        batch, _, height, width = pixels.shape
        masks = preprocess_mask(mask, batch, height, width) if mask is not None else None
        device = self._execution_device

        x_T = encode_images(self.vae, pixels, device).float()
        embeds = empty_prompt_embeds(self.text_encoder, self.tokenizer, device).expand(batch, -1, -1)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = randn_tensor(x_T.shape, generator=generator, device=device, dtype=torch.float32)
        x = x * self.scheduler.init_noise_sigma
        params = inspect.signature(self.scheduler.step).parameters
        extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}

        nfe = 0
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = self.scheduler.scale_model_input(x, t)
            eps = unet_call(self.unet, inp, x_T, t, embeds)
            nfe += 1
            x = self.scheduler.step(eps, t, x, **extra).prev_sample

        if output_type == "latent":
            images = x
        else:
            decoded = self.vae.decode(x.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.float()
            decoded = paste_known(decoded.clamp(-1, 1), pixels.to(decoded.device), masks)
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, nfe
        return RestorationPipelineOutput(images=images, nfe=nfe)
