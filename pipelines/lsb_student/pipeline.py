"""LatentSchrodingerBridgeStudentPipeline: one network call per image, with a student distilled from an LSB teacher.

A student (``lsb distill``) is a LoRA adapter on the teacher's Stable Diffusion UNet that maps the teacher's initial
bridge state x_{t0} = (1 - t0) x_src + sigma_{t0} z straight to the teacher's translated latent (the math:
:mod:`lsb.helpers.student`). This pipeline has a Stable Diffusion pipeline's components; the adapter loads with
diffusers' own ``load_lora_weights``::

    pipe = LatentSchrodingerBridgeStudentPipeline.from_student("students/circle-square")   # base + LoRA + settings
    image = pipe(source_image).images[0]                                                     # 1 UNet call

``from_student`` reads the student folder's ``lsb_student.json`` (base model, domains, t0, tau, student timestep),
loads the base, refuses another base network, loads the LoRA and the learned domains, and keeps the settings as
the call's defaults.

This file is self-contained apart from the installed ``lsb`` package (diffusers' custom-pipeline rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lsb.helpers.sdxl import check_sd_components
from lsb.helpers.student import (
    StudentError,
    check_student_base,
    check_student_timestep,
    default_student_timestep,
    read_student,
    resolve_student,
    student_domain_spec,
    student_translate_latents,
)
from lsb.helpers.translation import (
    as_lsb_scheduler,
    decode_latents,
    encode_images,
    preprocess_images,
    prompt_embeds_for_batch,
    require_image,
    vae_image_processor,
)
from lsb.io.execution import execution_device, model_dtype
from lsb.io.settings import check_t0, check_tau


@dataclass
class StudentPipelineOutput(BaseOutput):
    """Output of :class:`LatentSchrodingerBridgeStudentPipeline`: the images and the network calls spent (1)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int


class LatentSchrodingerBridgeStudentPipeline(
    DiffusionPipeline, StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
):
    r"""Translate images in one UNet call with a one-step student of an LSB translator (a LoRA on the same UNet).

    Components are those of a Stable Diffusion 1.x/2.x pipeline (the scheduler supplies ``alphas_cumprod``; any SD
    scheduler is converted to an ``LSBScheduler``).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor"]

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
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=as_lsb_scheduler(scheduler),
            safety_checker=None,
            feature_extractor=None,
        )
        self.vae_scale_factor, self.image_processor = vae_image_processor(self.vae)
        #: the loaded student's settings (``from_student``): target_prompt, t0, tau, student_timestep
        self.student_settings: dict = {}

    @classmethod
    def from_student(cls, student, model=None, device=None, dtype=torch.float32, fuse: bool = True, **kwargs):
        """The base model of ``student`` (or ``model``, which must be that same network) with the student loaded.

        Args:
            student: a student folder written by ``lsb distill`` (or its run folder, with the student in ``final/``).
            model: the base model to load instead of the one the folder names (a copy of it elsewhere, a Hub id);
                another network is refused with a :class:`lsb.helpers.student.StudentError`.
            fuse: fuse the LoRA into the UNet's weights and drop the adapter layers (diffusers' ``fuse_lora`` +
                ``unload_lora_weights``): the same function, without the adapters' extra matrix products per call.
                ``False`` keeps the adapter switchable (``pipe.unet.disable_adapters()``).
        """
        from lsb.helpers.loading import load_pipeline
        from lsb.prompts.domains import load_domain

        folder = resolve_student(student)
        info = read_student(folder)
        base = info["base_model"] if model is None else model
        base = None if base in ("mini-sd", "embedded") else base
        pipe = load_pipeline(cls, base, device=device, dtype=dtype, **kwargs)
        check_student_base(info, pipe.unet, folder, None if model is None else str(model))
        pipe.load_lora_weights(str(folder))
        if fuse:
            pipe.fuse_lora()
            pipe.unload_lora_weights()
        for side in ("source", "target"):
            spec = student_domain_spec(folder, info, side)
            info[f"{side}_prompt"] = load_domain(pipe, spec)
        s = info["student"]
        pipe.student_settings = {
            "source_prompt": info["source_prompt"],
            "target_prompt": info["target_prompt"],
            "t0": float(s["t0"]),
            "tau": float(s["tau"]),
            "student_timestep": int(s["timestep"]),
            "folder": str(folder),
            "info": info,
        }
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def __call__(
        self,
        image,
        target_prompt: str | list[str] | None = None,
        num_inference_steps: int = 1,
        t0: float | None = None,
        tau: float | None = None,
        student_timestep: int | None = None,
        target_prompt_embeds: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        **unused,
    ):
        r"""Translate ``image`` with the loaded student: ONE UNet call per image batch.

        Args:
            image: PIL image, numpy array, tensor, or a list of those (as :class:`lsb.LatentSchrodingerBridgePipeline`).
            target_prompt / target_prompt_embeds: the target domain (default: the student's).
            num_inference_steps: must be 1 (the student's single call; the teacher's NFE is fixed at distillation).
            t0, tau: the teacher's bridge start time and noise (default: the student's; other values are refused:
                the student was trained on that start).
            student_timestep: the UNet timestep the student was trained at (default: the student's).
            generator / noise: the start noise z of x_{t0} = (1 - t0) x_src + sigma_{t0} z.
            output_type: "pil", "np", "pt" or "latent".
            unused: ``source_prompt`` / ``guidance_scale`` and the like are accepted (the student fixed them) only when
                None.
        """
        s = self.student_settings
        bad = [k for k, v in unused.items() if v is not None]
        if bad:
            raise StudentError(f"a student fixes {', '.join(sorted(bad))} at distillation; do not pass them")
        if num_inference_steps != 1:
            raise StudentError(f"a student translates in 1 network call; num_inference_steps={num_inference_steps!r}")
        t0 = check_t0(s.get("t0") if t0 is None else t0)
        tau = check_tau(s.get("tau") if tau is None else tau)
        for name, v in (("t0", t0), ("tau", tau)):
            if name in s and abs(v - s[name]) > 1e-9:
                raise StudentError(
                    f"{name}={v} differs from the student's {s[name]} (it was distilled at that setting)"
                )
        k_max = self.scheduler.config.num_train_timesteps
        if student_timestep is None:
            student_timestep = s.get("student_timestep", default_student_timestep(self.scheduler.alphas_cumprod))
        k = check_student_timestep(student_timestep, k_max)
        if target_prompt is None and target_prompt_embeds is None:
            target_prompt = s.get("target_prompt")
            if target_prompt is None:
                raise StudentError("no target_prompt: load a student with from_student or pass target_prompt")
        require_image(image)
        device = execution_device(self)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        x_src = encode_images(self.vae, pixels, device)
        dtype = model_dtype(self.unet)
        embeds = prompt_embeds_for_batch(self, target_prompt, target_prompt_embeds, len(x_src), device, dtype, "target")
        if noise is None:
            noise = randn_tensor(x_src.shape, generator=generator, device=device, dtype=x_src.dtype)
        elif tuple(noise.shape) != tuple(x_src.shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, the latents {tuple(x_src.shape)}")
        alpha_bar = float(self.scheduler.alphas_cumprod[k])
        latents = student_translate_latents(
            self.unet, x_src.float(), noise.to(device).float(), embeds, t0=t0, tau=tau, timestep=k, alpha_bar=alpha_bar
        )
        if not torch.isfinite(latents).all():
            raise FloatingPointError("NaN/inf in the student's output latents")
        images = decode_latents(self.vae, self.image_processor, latents.to(dtype), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, 1)
        return StudentPipelineOutput(images=images, nfe=1)
