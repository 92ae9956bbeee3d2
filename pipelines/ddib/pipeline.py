"""DDIBPipeline: Dual Diffusion Implicit Bridges with a Stable Diffusion model (the LSB paper's DDIB baseline).

Su, Song, Meng & Ermon, "Dual Diffusion Implicit Bridges for Image-to-Image Translation" (ICLR 2023):
encode the source image to the diffusion's latent noise with the deterministic DDIM ODE of the source
model (DDIM inversion), then decode that noise with the DDIM ODE of the target model. With one
text-conditioned model, "source model" and "target model" are the UNet under two conditions.

As the Latent Schrödinger Bridge paper (Kim, Kim & Ye 2024, arXiv 2411.14863) runs it as a baseline
(its official ``sample.py``, method ``dual``; METHODS.md section 2 (b)):

* inversion: DDIM inversion with CFG weight w = 0, i.e. under the *null* (empty) prompt; the official code
  passes the source prompt but at w = 0 it does not enter the prediction. ``inversion_guidance_scale=1``
  inverts under the source prompt instead (DDIB as Su et al. define it, the source-conditioned ODE).
* sampling: DDIM sampling under the target prompt with CFG ``guidance_scale``, whose negative branch is the
  null prompt (the official code's unconditional embedding ""). ``negative_prompt`` replaces it, e.g.
  ``negative_prompt=source_prompt`` to guide away from the source as LSB and SDEdit do.

NFE accounting (``num_inference_steps`` is the total NFE, as the paper splits it):
    inversion: NFE // 2 DDIMInverseScheduler steps, one UNet call each (batch B at w in {0, 1}, else [null; source])
    sampling:  NFE - NFE // 2 DDIMScheduler steps, one UNet call each: a CFG step is ONE batched call on
               [negative; target] (batch 2B); at guidance_scale 1 only the target prompt is evaluated
    total:     exactly NFE UNet forward calls (NFE >= 2). The official code uses NFE // 2 for both phases,
               which equals this for even NFE.

Both schedulers are built from the pipeline scheduler's config (any SD scheduler converts; prediction_type
is kept, so v-prediction models work) with ``timestep_spacing="trailing"``: both grids then end at the last
training timestep T - 1, so the inversion (NFE // 2 steps) and the sampling (NFE - NFE // 2 steps) meet at
the same noise level even when their step counts differ, and the DDIB latent is the prior end of the ODE.
``clip_sample`` is switched off (SD latents are not in [-1, 1]). A diffusers DDIM step goes from t to
t - T // N; with "trailing" spacing this equals the next grid timestep only when N divides T (true for the
paper's NFE 4, 8, 16, 32, 50 with T = 1000); otherwise each step lands < 1 training timestep off the grid.

This file is self-contained apart from the installed ``lsb`` package, so it also loads as a diffusers
custom pipeline: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=lsb.pipeline_dir("ddib"),
trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.utils import BaseOutput

from lsb.families import sd
from lsb.helpers.masks import decode_region, is_empty, layout_mask, passthrough, prepare_region
from lsb.helpers.ddib import (
    DDIB_SCHEDULER_OVERRIDES,
    cfg_network,
    ddib_schedulers,
    integrate_ddib,
    split_ddib_nfe,
)
from lsb.helpers.sdxl import check_sd_components, check_unet_folder
from lsb.helpers.translation import (
    check_callback_tensor_inputs,
    check_nfe,
    check_prompt_args,
    encode_images,
    preprocess_images,
    prompt_embeds_for_batch,
    require_image,
    vae_image_processor,
)
from lsb.io.execution import execution_device, model_dtype

__all__ = ["DDIB_SCHEDULER_OVERRIDES", "DDIBPipeline", "DDIBPipelineOutput"]


@dataclass
class DDIBPipelineOutput(BaseOutput):
    """Output of :class:`DDIBPipeline` (and of the SDXL one).

    Args:
        images: translated images (PIL list, numpy array or tensor per ``output_type``).
        nfe: number of UNet forward calls spent (inversion + sampling).
        inverted_latents: the DDIM-inverted source latents at the last training timestep (the DDIB latent).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int
    inverted_latents: torch.Tensor | None = None


class DDIBPipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    r"""Translate images from a source domain to a target domain with Dual Diffusion Implicit Bridges.

    Components are those of a Stable Diffusion 1.x/2.x pipeline. The scheduler passed in (any SD scheduler) is
    converted to a :class:`~diffusers.DDIMScheduler` with ``timestep_spacing="trailing"`` and ``clip_sample=False``;
    the matching :class:`~diffusers.DDIMInverseScheduler` is built from its config at every call. SDXL checkpoints:
    ``lsb_pipelines.ddib_xl.pipeline.DDIBXLPipeline``.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor"]
    _callback_tensor_inputs = ["latents", "source_prompt_embeds", "target_prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker: bool = False,
    ):
        super().__init__()
        check_sd_components(unet, text_encoder, type(self).__name__)
        scheduler = DDIMScheduler.from_config(scheduler.config, **DDIB_SCHEDULER_OVERRIDES)
        # The safety checker / feature extractor of SD folders are accepted and ignored: outputs are
        # translations of the user's own images.
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
        )
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)
        self._phase = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another family (SDXL, SD3 / FLUX) is refused first,
        naming the pipeline for it."""
        check_unet_folder(cls.__name__, pretrained_model_name_or_path, want_sdxl=False)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def phase(self) -> str | None:
        """``"inversion"`` or ``"sampling"`` while a call runs (readable from ``callback_on_step_end``)."""
        return self._phase

    def _set_phase(self, phase: str | None) -> None:
        self._phase = phase

    @staticmethod
    def split_nfe(nfe: int) -> tuple[int, int]:
        """(inversion steps, sampling steps) = (NFE // 2, NFE - NFE // 2): one UNet call per step."""
        return split_ddib_nfe(nfe)

    def check_inputs(
        self,
        image,
        source_prompt,
        target_prompt,
        source_prompt_embeds,
        target_prompt_embeds,
        negative_prompt,
        negative_prompt_embeds,
        num_inference_steps,
        guidance_scale,
        inversion_guidance_scale,
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        check_prompt_args("source", source_prompt, source_prompt_embeds)
        check_prompt_args("target", target_prompt, target_prompt_embeds)
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give at most one of `negative_prompt` and `negative_prompt_embeds`")
        if negative_prompt is not None or negative_prompt_embeds is not None:
            check_prompt_args("negative", negative_prompt, negative_prompt_embeds)
        check_nfe(num_inference_steps)
        for name, w in (("guidance_scale", guidance_scale), ("inversion_guidance_scale", inversion_guidance_scale)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w):
                raise ValueError(f"{name} must be a finite number, got {w!r}")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def encode_prompt(
        self,
        source_prompt,
        target_prompt,
        device,
        batch_size: int,
        dtype,
        source_prompt_embeds=None,
        target_prompt_embeds=None,
        negative_prompt=None,
        negative_prompt_embeds=None,
        clip_skip=None,
    ):
        """``(source, target, null, negative)`` embeddings for ``batch_size`` images: the source prompt is encoded
        (and validated) even when the inversion runs under the null prompt ""; the negative defaults to the null."""

        def embeds(prompt, given, name):
            return prompt_embeds_for_batch(self, prompt, given, batch_size, device, dtype, name, clip_skip=clip_skip)

        source = embeds(source_prompt, source_prompt_embeds, "source")
        target = embeds(target_prompt, target_prompt_embeds, "target")
        null = embeds("", None, "null")
        if negative_prompt is None and negative_prompt_embeds is None:
            negative = null
        else:
            negative = embeds(negative_prompt, negative_prompt_embeds, "negative")
        return source, target, null, negative

    def prepare_latents(self, image, device) -> torch.Tensor:
        """Image(s) -> checked pixels -> the source latents DDIM inversion starts from (VAE posterior mode)."""
        return encode_images(self.vae, preprocess_images(image, self.image_processor, self.vae_scale_factor), device)

    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 11.0,
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        inversion_guidance_scale: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s.

        Args:
            image: PIL image, numpy array (H, W, 3) in [0, 1] or uint8, tensor (3, H, W) in [0, 1] /
                (B, 3, H, W) in [-1, 1], or a list of those. Sides must be multiples of 8.
            source_prompt / target_prompt: text (or learned ``<token>``s) describing each domain. At the default
                ``inversion_guidance_scale=0`` (the LSB paper's setting) the source prompt is checked but does not
                enter the model: the inversion runs under the null prompt.
            num_inference_steps: the total NFE (>= 2): NFE // 2 inversion steps + NFE - NFE // 2 sampling steps,
                one UNet call each (a CFG step is one batched call on [negative; target]).
            guidance_scale: CFG weight w of the sampling phase, out_neg + w (out_target - out_neg)
                (default 11, the LSB paper's ``--scale`` used for every method).
            source_prompt_embeds / target_prompt_embeds: precomputed text embeddings instead of prompts.
            negative_prompt / negative_prompt_embeds: the negative branch of the sampling CFG; default the null
                prompt "" (the paper's code). Pass the source prompt to guide away from the source domain.
            inversion_guidance_scale: CFG weight of the inversion between the null prompt and the source prompt:
                0 (default, the LSB paper's "null-text inversion with w = 0"), 1 = source prompt only (DDIB of
                Su et al.); other values cost a batched [null; source] call per step.
            generator: accepted for API symmetry with the other translators; DDIB is deterministic (the VAE
                posterior mode is used and DDIM has no noise).
            output_type: "pil", "np", "pt" or "latent".
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after each of the NFE steps;
                ``step`` counts both phases (0 .. NFE-1) and ``pipe.phase`` says which one is running.
            mask_image / mask_feather: translate a region only (white = may change, black = keep; soft values mix): the
                kept region follows the source's own DDIM path while sampling and the output is pasted onto the input
                outside the mask (:mod:`lsb.helpers.masks`); an all-black mask returns the input (nfe 0).
        """
        self.check_inputs(
            image,
            source_prompt,
            target_prompt,
            source_prompt_embeds,
            target_prompt_embeds,
            negative_prompt,
            negative_prompt_embeds,
            num_inference_steps,
            guidance_scale,
            inversion_guidance_scale,
            callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)
        dtype = model_dtype(self.unet)
        num_inversion_steps, num_sampling_steps = self.split_nfe(num_inference_steps)

        # 1. images -> source latents
        region = None
        if mask_image is not None:
            region = prepare_region(
                mask_image, preprocess_images(image, self.image_processor, self.vae_scale_factor), mask_feather
            )
            if is_empty(region):  # nothing may change: the input, no model call
                images = passthrough(
                    self.image_processor, region, output_type, lambda p: encode_images(self.vae, p, device)
                )
                return (
                    (images, 0, None)
                    if not return_dict
                    else DDIBPipelineOutput(images=images, nfe=0, inverted_latents=None)
                )
        latents = self.prepare_latents(image, device)
        batch = latents.shape[0]

        # 2. prompts -> embeddings, broadcast to the batch (source is validated even when unused)
        source_embeds, target_embeds, null_embeds, negative_embeds = self.encode_prompt(
            source_prompt,
            target_prompt,
            device,
            batch,
            dtype,
            source_prompt_embeds,
            target_prompt_embeds,
            negative_prompt,
            negative_prompt_embeds,
            clip_skip,
        )

        # 3. schedules: inversion ascends to T - 1, sampling descends from it
        inverse, sampler = ddib_schedulers(self.scheduler, num_inversion_steps, num_sampling_steps, device)
        self._num_timesteps = num_inversion_steps + num_sampling_steps

        # 4. one UNet call per step: DDIM inversion (null/source prompt), then DDIM sampling (CFG on the target)
        def call(x, t, embeds):
            return sd.network_call(self.unet, x, t, sd.condition(embeds))

        latents, inverted, nfe = integrate_ddib(
            self,
            latents,
            inverse,
            sampler,
            cfg_network(call, null_embeds, source_embeds, inversion_guidance_scale),
            cfg_network(call, negative_embeds, target_embeds, guidance_scale),
            set_phase=self._set_phase,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            region_mask=layout_mask(region, latents),
            callback_state={
                "source_prompt_embeds": source_embeds,
                "target_prompt_embeds": target_embeds,
                "negative_prompt_embeds": negative_embeds,
            },
        )

        # 5. decode
        images = decode_region(self.vae, self.image_processor, latents, output_type, region)  # pasted when masked
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, nfe, inverted)
        return DDIBPipelineOutput(images=images, nfe=nfe, inverted_latents=inverted)
