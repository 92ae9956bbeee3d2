"""DDIBXLPipeline: Dual Diffusion Implicit Bridges with a Stable Diffusion XL model (the LSB paper's DDIB baseline).

DDIB (Su, Song, Meng & Ermon, ICLR 2023) as the SD :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline` runs it
(same NFE split, schedulers and loop: :mod:`lsb.helpers.ddib`), with SDXL's conditioning: both text encoders'
penultimate hidden states, the pooled embedding of the second, and ``add_time_ids`` (original size, crop, target
size; default the image's size and (0, 0)) as ``added_cond_kwargs``. The null prompt of the inversion (and the
default negative of the sampling CFG) is what diffusers' ``StableDiffusionXLPipeline`` uses for an empty negative
prompt: zero token and pooled embeddings when the model's ``force_zeros_for_empty_prompt`` is set (SDXL base), the
encoded "" otherwise.

Loads as a diffusers custom pipeline too: ``DiffusionPipeline.from_pretrained(sdxl_model,
custom_pipeline=lsb.pipeline_dir("ddib_xl"), trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from lsb_pipelines.ddib.pipeline import DDIBPipelineOutput

from lsb.families import sdxl
from lsb.helpers.masks import decode_region, is_empty, layout_mask, passthrough, prepare_region
from lsb.helpers.ddib import (
    DDIB_SCHEDULER_OVERRIDES,
    cfg_network,
    ddib_schedulers,
    integrate_ddib,
    split_ddib_nfe,
)
from lsb.helpers.model_family import check_vp_components
from lsb.helpers.sdxl import (
    vae_upcast,
    SDXL_OPTIONAL_COMPONENTS,
    check_sdxl_components,
    check_sdxl_prompt_args,
    check_unet_folder,
    encode_images_upcast,
    image_time_ids,
    sdxl_prompt_embeds,
    unet_conditioning,
    zero_conditioning,
)
from lsb.helpers.translation import (
    check_callback_tensor_inputs,
    check_nfe,
    check_prompt_args,
    preprocess_images,
    require_image,
    vae_image_processor,
)
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import check_guidance


class DDIBXLPipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    r"""Translate images from a source domain to a target domain with Dual Diffusion Implicit Bridges on SDXL.

    Components are those of an SDXL base pipeline; the scheduler is converted to a ``DDIMScheduler`` with
    ``timestep_spacing="trailing"`` (see :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline` for the NFE split).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    _optional_components = list(SDXL_OPTIONAL_COMPONENTS)
    _callback_tensor_inputs = ["latents", "source_prompt_embeds", "target_prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ):
        super().__init__()
        check_vp_components(type(self).__name__, unet, scheduler)  # a flow model (SD3 / FLUX) is refused by name
        check_sdxl_components(unet, text_encoder, text_encoder_2, tokenizer, tokenizer_2, type(self).__name__)
        scheduler = DDIMScheduler.from_config(scheduler.config, **DDIB_SCHEDULER_OVERRIDES)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=None,
            feature_extractor=None,
        )
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)
        self._phase = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a local folder of another family (SD 1.x/2.x, SD3 / FLUX) is refused first,
        naming the pipeline for it."""
        check_unet_folder(cls.__name__, pretrained_model_name_or_path, want_sdxl=True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def phase(self) -> str | None:
        """``"inversion"`` or ``"sampling"`` while a call runs (readable from ``callback_on_step_end``)."""
        return self._phase

    def _set_phase(self, phase: str | None) -> None:
        self._phase = phase

    def check_inputs(
        self,
        image,
        source_prompt,
        target_prompt,
        source_prompt_2,
        target_prompt_2,
        source_prompt_embeds,
        target_prompt_embeds,
        source_pooled_prompt_embeds,
        target_pooled_prompt_embeds,
        negative_prompt,
        num_inference_steps,
        guidance_scale,
        inversion_guidance_scale,
        callback_on_step_end_tensor_inputs,
    ):
        require_image(image)
        check_sdxl_prompt_args(
            "source", source_prompt, source_prompt_2, source_prompt_embeds, source_pooled_prompt_embeds
        )
        check_sdxl_prompt_args(
            "target", target_prompt, target_prompt_2, target_prompt_embeds, target_pooled_prompt_embeds
        )
        if negative_prompt is not None:
            check_prompt_args("negative", negative_prompt, None)
        check_nfe(num_inference_steps)
        check_guidance(guidance_scale)
        check_guidance(inversion_guidance_scale, name="inversion_guidance_scale")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def encode_prompt(
        self,
        source_prompt,
        target_prompt,
        device,
        batch_size: int,
        dtype,
        time_ids,
        source_prompt_2=None,
        target_prompt_2=None,
        source_prompt_embeds=None,
        target_prompt_embeds=None,
        source_pooled_prompt_embeds=None,
        target_pooled_prompt_embeds=None,
        negative_prompt=None,
        negative_prompt_2=None,
        clip_skip=None,
    ):
        """UNet conditionings ``(source, target, null, negative)`` (dicts of ``encoder_hidden_states`` and
        ``added_cond_kwargs``) for ``batch_size`` images."""

        def cond(prompt, prompt_2, embeds, pooled, name):
            e, p = sdxl_prompt_embeds(
                self, prompt, prompt_2, embeds, pooled, batch_size, device, dtype, name, clip_skip
            )
            return unet_conditioning(e, p, time_ids)

        source = cond(source_prompt, source_prompt_2, source_prompt_embeds, source_pooled_prompt_embeds, "source")
        target = cond(target_prompt, target_prompt_2, target_prompt_embeds, target_pooled_prompt_embeds, "target")
        null = (
            zero_conditioning(target)
            if self.config.force_zeros_for_empty_prompt
            else cond("", None, None, None, "null")
        )
        negative = null if negative_prompt is None else cond(negative_prompt, negative_prompt_2, None, None, "negative")
        return source, target, null, negative

    def prepare_latents(self, pixels: torch.Tensor, device) -> torch.Tensor:
        """Checked pixels in [-1, 1] -> source latents (VAE posterior mode; an fp16 ``force_upcast`` VAE runs in fp32)."""
        return encode_images_upcast(self.vae, pixels, device, model_dtype(self.unet))

    @torch.no_grad()
    def __call__(
        self,
        image,
        source_prompt: str | list[str] | None = None,
        target_prompt: str | list[str] | None = None,
        source_prompt_2: str | list[str] | None = None,
        target_prompt_2: str | list[str] | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 11.0,
        source_prompt_embeds: torch.Tensor | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        source_pooled_prompt_embeds: torch.Tensor | None = None,
        target_pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        inversion_guidance_scale: float = 0.0,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mask_image=None,
        mask_feather: float | None = None,
    ):
        r"""Translate ``image`` from ``source_prompt``'s domain to ``target_prompt``'s with DDIB on SDXL.

        Arguments as :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline`'s, plus SDXL's ``*_prompt_2`` (prompts for the
        second text encoder, default the same), ``*_pooled_prompt_embeds`` (required with ``*_prompt_embeds``) and the
        micro-conditioning ``original_size`` / ``crops_coords_top_left`` / ``target_size`` (default the image's
        ``(height, width)`` and ``(0, 0)``). ``generator`` is accepted for symmetry; DDIB is deterministic.
            mask_image / mask_feather: translate a region only (white = may change, black = keep; soft values mix): the
                kept region follows the source's own DDIM path while sampling and the output is pasted onto the input
                outside the mask (:mod:`lsb.helpers.masks`); an all-black mask returns the input (nfe 0).
        """
        self.check_inputs(
            image,
            source_prompt,
            target_prompt,
            source_prompt_2,
            target_prompt_2,
            source_prompt_embeds,
            target_prompt_embeds,
            source_pooled_prompt_embeds,
            target_pooled_prompt_embeds,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            inversion_guidance_scale,
            callback_on_step_end_tensor_inputs,
        )
        device = execution_device(self)
        dtype = model_dtype(self.unet)
        num_inversion_steps, num_sampling_steps = split_ddib_nfe(num_inference_steps)

        # 1. images -> checked pixels, micro-conditioning, source latents
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        region = prepare_region(mask_image, pixels, mask_feather)
        if is_empty(region):  # nothing may change: the input, no model call
            images = passthrough(self.image_processor, region, output_type, lambda p: self.prepare_latents(p, device))
            return (
                (images, 0, None)
                if not return_dict
                else DDIBPipelineOutput(images=images, nfe=0, inverted_latents=None)
            )
        batch = pixels.shape[0]
        time_ids = image_time_ids(self, pixels, original_size, crops_coords_top_left, target_size, dtype)

        # 2. prompts -> SDXL conditionings
        source, target, null, negative = self.encode_prompt(
            source_prompt,
            target_prompt,
            device,
            batch,
            dtype,
            time_ids,
            source_prompt_2,
            target_prompt_2,
            source_prompt_embeds,
            target_prompt_embeds,
            source_pooled_prompt_embeds,
            target_pooled_prompt_embeds,
            negative_prompt,
            negative_prompt_2,
            clip_skip,
        )
        latents = self.prepare_latents(pixels, device)

        # 3. schedules, then the shared DDIB loop
        inverse, sampler = ddib_schedulers(self.scheduler, num_inversion_steps, num_sampling_steps, device)
        self._num_timesteps = num_inversion_steps + num_sampling_steps

        def call(x, t, cond):
            return sdxl.network_call(self.unet, x, t, cond)

        latents, inverted, nfe = integrate_ddib(
            self,
            latents,
            inverse,
            sampler,
            cfg_network(call, null, source, inversion_guidance_scale),
            cfg_network(call, negative, target, guidance_scale),
            set_phase=self._set_phase,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            region_mask=layout_mask(region, latents),
            callback_state={
                "source_prompt_embeds": source["encoder_hidden_states"],
                "target_prompt_embeds": target["encoder_hidden_states"],
                "negative_prompt_embeds": negative["encoder_hidden_states"],
            },
        )

        # 4. decode
        with vae_upcast(self.vae):  # pasted onto the input when masked
            images = decode_region(self.vae, self.image_processor, latents, output_type, region)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, nfe, inverted)
        return DDIBPipelineOutput(images=images, nfe=nfe, inverted_latents=inverted)
