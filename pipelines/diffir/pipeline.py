"""DiffIRPipeline: image restoration with a diffusion over a compact prior (DiffIR, Xia et al., ICCV 2023).

Xia, Zhang, Wang, Tian, Yang, Van Gool, "DiffIR: Efficient Diffusion Model for Image Restoration"
(arXiv 2303.09472; METHODS.md section 4). The diffusion does not run on the image: a 4-step deterministic
diffusion generates one IR-prior vector Z per image (:class:`lsb.PriorDenoiser` + :class:`lsb.DiffIRScheduler`,
conditioned on ``D = CPEN_S2(degraded)``), and the restorer :class:`lsb.DIRformer` runs once, modulated by Z.
A folder with ``cpen`` / ``denoiser`` / ``scheduler`` set to null holds the plain DIRformer (the no-prior ablation)
and runs it the same way with NFE 0.

Works in pixel space on the degraded image itself (no VAE). The pipeline config records the ``task`` the model was
trained for (``inpaint`` or ``sr4``, the degradations of ``lsb.data.degradations``).

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers custom
pipeline: ``DiffusionPipeline.from_pretrained(folder, custom_pipeline=<this folder>, trust_remote_code=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lsb.data.degradations import INPAINT_FILL, inpaint_mask
from lsb.io.execution import execution_device
from lsb.io.images import ImageInputError
from lsb.models.diffir import CPENS2, DIRformer, PriorDenoiser
from lsb.schedulers import DiffIRScheduler
from lsb.helpers.mask_parsing import preprocess_mask
from lsb.helpers.translation import preprocess_images

#: Tasks a DiffIR model can be trained for, and the DIRformer input channels each needs (RGB [+ hole mask]).
TASK_CHANNELS = {"inpaint": 4, "sr4": 3, "deblur": 3, "jpeg": 3}
OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class DiffIRPipelineOutput(BaseOutput):
    """Output of :class:`DiffIRPipeline`.

    Args:
        images: restored images (PIL list, numpy array (B, H, W, 3) in [0, 1] or tensor (B, 3, H, W) in [0, 1]).
        nfe: denoiser calls spent on the prior diffusion (0 for the plain DIRformer). The DIRformer itself runs once.
        prior: the generated IR prior Z, (B, prior_dim), or None for the plain DIRformer.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int
    prior: torch.Tensor | None = None


class DiffIRPipeline(DiffusionPipeline):
    r"""Restore degraded images with DiffIR (stage-2 model: CPEN_S2 + prior denoiser + DIRformer).

    Components:
        dirformer: :class:`lsb.DIRformer`, the restorer (``prior_dim=0`` for the no-prior ablation).
        cpen: :class:`lsb.CPENS2`, ``D = CPEN_S2(degraded)`` (None for the ablation).
        denoiser: :class:`lsb.PriorDenoiser`, the x0-predicting MLP on Z (None for the ablation).
        scheduler: :class:`lsb.DiffIRScheduler`, the 4-step deterministic prior diffusion (None for the ablation).
        task: the restoration task the model was trained for ("inpaint" or "sr4"; recorded in model_index.json).
    """

    model_cpu_offload_seq = "cpen->denoiser->dirformer"
    _optional_components = ["cpen", "denoiser", "scheduler"]

    def __init__(
        self,
        dirformer: DIRformer,
        cpen: CPENS2 | None = None,
        denoiser: PriorDenoiser | None = None,
        scheduler: DiffIRScheduler | None = None,
        task: str = "inpaint",
    ):
        super().__init__()
        if task not in TASK_CHANNELS:
            raise ValueError(f"unknown restoration task {task!r}; choose from {', '.join(TASK_CHANNELS)}")
        if dirformer.config.in_channels != TASK_CHANNELS[task]:
            raise ValueError(
                f"task {task!r} needs a DIRformer with in_channels={TASK_CHANNELS[task]}, "
                f"got {dirformer.config.in_channels}"
            )
        d = dirformer.config.prior_dim
        if d:
            missing = [n for n, m in (("cpen", cpen), ("denoiser", denoiser), ("scheduler", scheduler)) if m is None]
            if missing:
                raise ValueError(
                    f"this DIRformer is modulated by a prior (prior_dim={d}); it needs {', '.join(missing)}"
                )
            if not isinstance(scheduler, DiffIRScheduler):
                raise ValueError(f"scheduler must be a DiffIRScheduler, got {type(scheduler).__name__}")
            if cpen.config.prior_dim != d or denoiser.config.prior_dim != d:
                raise ValueError(
                    f"prior sizes differ: DIRformer {d}, CPEN_S2 {cpen.config.prior_dim}, "
                    f"denoiser {denoiser.config.prior_dim}"
                )
            if cpen.config.in_channels != dirformer.config.in_channels:
                raise ValueError(
                    f"CPEN_S2 takes {cpen.config.in_channels} channels, the DIRformer {dirformer.config.in_channels}"
                )
            if scheduler.config.num_train_timesteps != denoiser.config.num_train_timesteps:
                raise ValueError(
                    f"the scheduler has T={scheduler.config.num_train_timesteps} steps but the denoiser "
                    f"was trained for T={denoiser.config.num_train_timesteps}"
                )
        elif any(m is not None for m in (cpen, denoiser)):
            raise ValueError("a plain DIRformer (prior_dim=0) takes no cpen / denoiser")
        self.register_modules(dirformer=dirformer, cpen=cpen, denoiser=denoiser, scheduler=scheduler)
        self.register_to_config(task=task)
        self.multiple = math.lcm(dirformer.multiple, 4)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.multiple, do_resize=False)

    @property
    def uses_prior(self) -> bool:
        return self.dirformer.config.prior_dim > 0

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, image, mask, num_inference_steps, output_type):
        if image is None:
            raise ValueError("`image` is required: the degraded picture(s) to restore")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if mask is not None and self.config.task != "inpaint":
            raise ValueError(f"`mask` is only used for inpainting; this model restores {self.config.task!r}")
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"num_inference_steps must be an integer, got {n!r}")
        if self.uses_prior and not 1 <= n <= self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must lie in [1, {self.scheduler.config.num_train_timesteps}] "
                f"(the prior diffusion has that many steps), got {n}"
            )

    def prepare_mask(self, mask, batch: int, height: int, width: int) -> torch.Tensor:
        """Hole mask (B, 1, H, W) in {0, 1} (1 = missing). None: the shapes world's centred box."""
        if mask is None:
            m = torch.from_numpy(inpaint_mask((height, width)))[None, None].float()
        else:  # THE mask parser (lsb.helpers.mask_parsing.preprocess_mask), then holes binarized
            m = (preprocess_mask(mask, batch, height, width).cpu() > 0.5).float()
        if m.shape[-2:] != (height, width):
            raise ImageInputError(f"mask: size {m.shape[-1]}x{m.shape[-2]} does not match the image's {width}x{height}")
        return m.expand(batch, 1, height, width)

    def prepare_inputs(self, image, mask) -> torch.Tensor:
        """The DIRformer / CPEN input: degraded RGB in [-1, 1] (+ hole mask, hole filled with mid-gray)."""
        pixels = preprocess_images(image, self.image_processor, self.multiple)
        if pixels.shape[1] != 3:
            raise ImageInputError(f"image: expected RGB, got {pixels.shape[1]} channels")
        b, _, h, w = pixels.shape
        if self.config.task == "inpaint":
            m = self.prepare_mask(mask, b, h, w).to(pixels)
            fill = torch.tensor(INPAINT_FILL, dtype=pixels.dtype).reshape(1, 3, 1, 1) / 127.5 - 1.0
            pixels = pixels * (1 - m) + fill * m  # the model was trained on mid-gray holes
            pixels = torch.cat([pixels, m], dim=1)
        return pixels

    # ------------------------------------------------------------------ prior
    def generate_prior(self, x: torch.Tensor, num_inference_steps: int, generator=None) -> torch.Tensor:
        """Z by the prior diffusion: D = CPEN_S2(x); Z ~ N(0, I); deterministic posterior-mean steps."""
        cond = self.cpen(x)
        z = randn_tensor(cond.shape, generator=generator, device=cond.device, dtype=cond.dtype)
        z = z * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=cond.device)
        for t in self.progress_bar(self.scheduler.timesteps):
            z0 = self.denoiser(z, t, cond)
            z = self.scheduler.step(z0, t, z).prev_sample
        return z

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        mask=None,
        num_inference_steps: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        r"""Restore ``image``.

        Args:
            image: the degraded image(s): PIL, numpy (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] or
                (B, 3, H, W) in [-1, 1], or a list. Sides must be multiples of ``self.multiple`` (8 by default).
            mask: inpainting only: the hole (1/white = missing), PIL / numpy / tensor of the image's size, one per
                batch or one for all. None: the shapes world's centred 24 x 24 box (scaled to the image size).
                Pixels under the hole are replaced by mid-gray, as in training; pixels outside it are returned
                unchanged (only the hole is filled in).
            num_inference_steps: denoiser calls of the prior diffusion (the NFE), 1..T (paper: T = 4). The
                plain DIRformer (no prior) ignores it and spends NFE 0.
            generator: randomness of the initial prior Z_T ~ N(0, I), the only random draw.
            output_type: "pil", "np" or "pt" (tensor (B, 3, H, W) in [0, 1]).
        """
        self.check_inputs(image, mask, num_inference_steps, output_type)
        device, dtype = execution_device(self), self.dirformer.dtype
        x = self.prepare_inputs(image, mask).to(device=device, dtype=dtype)
        prior, nfe = None, 0
        if self.uses_prior:
            prior = self.generate_prior(x, int(num_inference_steps), generator)
            nfe = int(num_inference_steps)
        restored = self.dirformer(x, prior).clamp(-1, 1)
        if self.config.task == "inpaint":  # known pixels are kept; only the hole is filled in
            m = x[:, 3:4]
            restored = m * restored + (1 - m) * x[:, :3]
        images = self.image_processor.postprocess(restored.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, nfe, prior)
        return DiffIRPipelineOutput(images=images, nfe=nfe, prior=prior)
