"""BridgeRestorationPipeline: paired image restoration with a latent diffusion bridge (I2SB, DDBM, DBIM).

A bridge walks from the degraded image's latent x_T to the clean latent x_0 along
q(x_t | x_0, x_T) = N(a_t x_T + b_t x_0, c_t^2 I) (Liu et al., "I2SB", arXiv 2302.05872; Zhou et al., "DDBM",
arXiv 2309.16948; Zheng et al., "DBIM", arXiv 2405.15885). The network is a Stable-Diffusion UNet with the
degraded latent concatenated to its input (8 channels) and a fixed empty-prompt text embedding; it predicts x_0
through the scheduler's preconditioning. All bridge math lives in ``lsb.I2SBScheduler``, ``lsb.DDBMScheduler``
and ``lsb.DBIMScheduler``; this file is the diffusers loop around them.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>, trust_remote_code=True)``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline

from lsb.helpers.bridge_schedulers import make_bridge_scheduler
from lsb.helpers.concat_unet import bridge_denoise
from lsb.helpers.restoration import (
    check_restoration_inputs,
    prepare_restoration,
    register_restoration,
    restoration_output,
)
from lsb.helpers.restoration_tasks import RestorationPipelineOutput
from lsb.schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler


def check_bridge_scheduler(scheduler, trained_bridge: dict) -> None:
    """ValueError unless ``scheduler`` is a bridge sampler (I2SB, DDBM or DBIM)."""
    if not isinstance(scheduler, (I2SBScheduler, DDBMScheduler, DBIMScheduler)):
        raise ValueError(
            f"BridgeRestorationPipeline needs an I2SB, DDBM or DBIM scheduler, got {type(scheduler).__name__}"
        )


class BridgeRestorationPipeline(DiffusionPipeline):
    r"""Restore degraded images (inpainting, 4x super-resolution, deblurring, JPEG) with a latent diffusion bridge.

    Components: ``vae`` (AutoencoderKL), ``text_encoder`` + ``tokenizer`` (for the fixed empty-prompt embedding),
    ``unet`` (UNet2DConditionModel with 8 input channels: x_t and the degraded latent) and ``scheduler`` (one of
    :class:`lsb.I2SBScheduler`, :class:`lsb.DDBMScheduler`, :class:`lsb.DBIMScheduler`).

    Config: ``task`` (the restoration task the model was trained for) and ``trained_bridge`` (the bridge it was
    trained on, :func:`lsb.helpers.bridge_schedulers.bridge_spec` of its training scheduler). A scheduler for another bridge is
    rejected before any compute; :meth:`set_sampler` builds a matching I2SB / DDBM / DBIM scheduler.

    NFE (batched UNet calls, reported as ``output.nfe``): I2SB and DBIM spend exactly ``num_inference_steps``;
    DDBM's ``num_inference_steps`` is its number of Karras intervals N and it spends 3N - 1 calls with churn
    (2N - 1 without); :func:`lsb.helpers.bridge_schedulers.steps_for_nfe` converts a target NFE. VAE encode/decode are not
    counted.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self, vae, text_encoder, tokenizer, unet, scheduler, task: str = "inpaint", trained_bridge: dict | None = None
    ):
        super().__init__()
        register_restoration(
            self, vae, text_encoder, tokenizer, unet, scheduler, task, trained_bridge, check_bridge_scheduler
        )

    def check_inputs(self, image, num_inference_steps, output_type):
        check_restoration_inputs(self, image, num_inference_steps, output_type)

    def set_sampler(self, sampler: str, **settings) -> None:
        """Switch to the ``sampler`` ("i2sb", "ddbm", "dbim") for the trained bridge, e.g.
        ``pipe.set_sampler("dbim", solver_order=2)``; ``settings`` are the scheduler's sampling arguments."""
        self.scheduler = make_bridge_scheduler(sampler, self.config.trained_bridge, **settings)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        mask=None,
        num_inference_steps: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> RestorationPipelineOutput | tuple:
        r"""Restore ``image``.

        Args:
            image: degraded image(s): PIL, numpy (H, W, 3) or tensor (3, H, W) / (B, 3, H, W) in [0, 1], or a list;
                sides must be multiples of the VAE factor (8).
            mask (optional): inpainting mask, 1 = missing pixel (PIL / numpy / tensor of the image's size). The known
                pixels (mask 0) of the input are kept in the output; the bridge itself sees only the degraded image.
            num_inference_steps: the scheduler's steps: the NFE for I2SB / DBIM, the Karras intervals N for DDBM
                (NFE 3N - 1).
            generator: torch.Generator(s) for the sampler's noise (I2SB posterior, DDBM churn, DBIM booting noise).
            output_type: "pil", "np", "pt" or "latent".
            return_dict: return a :class:`RestorationPipelineOutput` (else a tuple ``(images, nfe)``).
        """
        self.check_inputs(image, num_inference_steps, output_type)
        pixels, masks, x_T, embeds, device = prepare_restoration(self, image, mask, num_inference_steps)
        timesteps = self.scheduler.timesteps
        epsilon = isinstance(self.scheduler, I2SBScheduler) and self.scheduler.config.prediction_type == "epsilon"

        x = self.scheduler.prepare_initial_sample(x_T, generator=generator)
        nfe = 0
        for t in self.progress_bar(timesteps):
            x0_hat, raw = bridge_denoise(self.unet, self.scheduler, x, t, x_T, embeds)
            nfe += 1
            x = self.scheduler.step(raw if epsilon else x0_hat, t, x, x_T=x_T, generator=generator).prev_sample

        return restoration_output(self, x, pixels, masks, output_type, nfe, return_dict)

    def describe(self) -> dict[str, Any]:
        """The task, the trained bridge and the current sampler (for logs and benchmark tables)."""
        return {
            "task": self.config.task,
            "trained_bridge": dict(self.config.trained_bridge),
            "scheduler": type(self.scheduler).__name__,
        }
