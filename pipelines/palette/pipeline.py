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
from diffusers.utils.torch_utils import randn_tensor

from lsb.helpers.concat_unet import unet_call
from lsb.helpers.restoration import (
    check_restoration_inputs,
    prepare_restoration,
    register_restoration,
    restoration_output,
)
from lsb.helpers.restoration_tasks import RestorationPipelineOutput


def check_noise_scheduler(scheduler, trained_bridge: dict) -> None:
    """ValueError unless the model was trained on a noise-to-image schedule (``trained_bridge`` of kind "noise")."""
    if trained_bridge.get("bridge") != "noise":
        raise ValueError(
            f"ConditionalDiffusionRestorationPipeline needs a noise-to-image scheduler (DDIM, DDPM, "
            f"...), got {type(scheduler).__name__}"
        )


class ConditionalDiffusionRestorationPipeline(DiffusionPipeline):
    r"""Restore degraded images with a Palette-style conditional diffusion model (the bridges' baseline).

    Components: ``vae``, ``text_encoder`` + ``tokenizer`` (fixed empty-prompt embedding), ``unet`` (8 input
    channels: x_t and the degraded latent; epsilon prediction) and ``scheduler`` (a diffusers noise scheduler on the
    training betas, DDIM by default). Config: ``task`` and ``trained_bridge`` (``{"bridge": "noise", ...}``, the noise
    schedule it was trained on); a scheduler with other betas, or a bridge scheduler, is rejected.

    NFE = ``num_inference_steps`` (one UNet call per DDIM step; VAE encode/decode not counted).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self, vae, text_encoder, tokenizer, unet, scheduler, task: str = "inpaint", trained_bridge: dict | None = None
    ):
        super().__init__()
        register_restoration(
            self, vae, text_encoder, tokenizer, unet, scheduler, task, trained_bridge, check_noise_scheduler
        )

    def check_inputs(self, image, num_inference_steps, output_type):
        check_restoration_inputs(self, image, num_inference_steps, output_type)

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
        pixels, masks, x_T, embeds, device = prepare_restoration(self, image, mask, num_inference_steps)
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

        return restoration_output(self, x, pixels, masks, output_type, nfe, return_dict)
