"""Plain functions shared by the image-to-image translation pipelines (LSB, DDIB) and the SDEdit wrapper.

Each pipeline file under ``pipelines/`` holds exactly one ``DiffusionPipeline`` subclass (diffusers'
custom-pipeline loader needs that), so the steps every translator repeats live here as functions:
the ``__init__`` set-up (VAE image processor, LSB scheduler), argument checks, image validation -> [-1, 1] tensor,
VAE encode/decode, prompt -> batched embeddings,
(classifier-free guidance: :func:`lsb.helpers.ddib.cfg_network` / :mod:`lsb.bridges.guidance`).
"""

from __future__ import annotations


import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..io.images import ImageInputError, check_pipeline_images, check_unit_range, to_rgb

# Re-exported, not redefined: THE VAE encode/decode (lsb.io.latents) and THE setting checks (lsb.io.settings).
from ..io.latents import decode_latents  # noqa: F401
from ..io.latents import encode_latents as encode_images  # noqa: F401
from ..io.settings import check_bridge_settings, check_nfe  # noqa: F401
from ..prompts.encoding import broadcast_embeds, encode_text
from ..schedulers import LSBScheduler


def vae_image_processor(vae) -> tuple[int, VaeImageProcessor]:
    """``(vae_scale_factor, image_processor)`` of a pipeline: the VAE's downsampling factor 2 ** (levels - 1) and a
    ``VaeImageProcessor`` for it, as diffusers' Stable Diffusion pipelines set them in ``__init__``."""
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return vae_scale_factor, VaeImageProcessor(vae_scale_factor=vae_scale_factor)


def as_lsb_scheduler(scheduler) -> LSBScheduler:
    """``scheduler`` itself if it is an :class:`lsb.LSBScheduler`, else ``LSBScheduler.from_config`` of its config
    (what every LSB pipeline's ``__init__`` does with the model folder's own scheduler)."""
    if not isinstance(scheduler, LSBScheduler):
        scheduler = LSBScheduler.from_config(scheduler.config)
    return scheduler


def require_image(image, what: str = "the picture(s) to translate") -> None:
    """ValueError if a pipeline's ``image`` argument is missing (``what`` says what the image is for)."""
    if image is None:
        raise ValueError(f"`image` is required: {what}")


def check_prompt_args(name: str, prompt, prompt_embeds) -> None:
    """Exactly one of ``<name>_prompt`` / ``<name>_prompt_embeds``; a prompt is a string or a list of strings."""
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError(f"give exactly one of `{name}_prompt` and `{name}_prompt_embeds`")
    if prompt is not None:
        if isinstance(prompt, list):
            if not prompt or not all(isinstance(p, str) for p in prompt):
                raise TypeError(f"`{name}_prompt` must be a string or a non-empty list of strings")
        elif not isinstance(prompt, str):
            raise TypeError(f"`{name}_prompt` must be a string or a list of strings, got {type(prompt).__name__}")
    if prompt_embeds is not None and not isinstance(prompt_embeds, torch.Tensor):
        raise TypeError(
            f"`{name}_prompt_embeds` must be a tensor (batch, tokens, dim), got {type(prompt_embeds).__name__}"
        )


def preprocess_images(image, image_processor, vae_scale_factor: int) -> torch.Tensor:
    """PIL / numpy / tensor image(s) -> float tensor (B, 3, H, W) in [-1, 1].

    Accepts an 8-bit RGB PIL image, a numpy array (H, W, 3) in [0, 1] (float) or uint8, a float tensor
    (3, H, W) in [0, 1] or (B, 3, H, W), or a list of those; float values outside [0, 1] are refused
    (:func:`lsb.io.images.check_unit_range`: a ValueError naming the range). Sides must be multiples of ``vae_scale_factor``.
    A wrong size, another PIL mode (RGBA, L, 16-bit ...: convert first, e.g. with
    ``lsb.io.images.to_rgb(image, allow_convert=True)``), another channel count, an integer dtype other than
    uint8, a NaN/inf value or an unsupported type raises :class:`ImageInputError` naming the image, instead
    of the silent resize or conversion diffusers' image processor would do. Images run at their own size; a list
    of images of different sizes is refused (:func:`lsb.io.images.check_pipeline_images`) rather than resized to
    the first one's: resize them first, e.g. to the model's native size with
    ``lsb.io.images.fit_size(img, name, lsb.families.native_resolution(pipe))`` (what ``lsb translate`` does).
    """
    images = image if isinstance(image, list) else [image]
    if not images:
        raise ImageInputError("no images given")
    checked = []
    for i, im in enumerate(images):
        if isinstance(im, PIL.Image.Image):
            im = to_rgb(im, f"image #{i}")
            w, h = im.size
        elif isinstance(im, (np.ndarray, torch.Tensor)):
            # numpy images are channels-last (diffusers' convention), tensors channels-first
            is_np = isinstance(im, np.ndarray)
            if im.ndim not in (3, 4) or im.shape[-1 if is_np else -3] != 3:
                raise ImageInputError(
                    f"image #{i}: expected an RGB {'array (H, W, 3)' if is_np else 'tensor (3, H, W)'}"
                    f" or a batch of them, got shape {tuple(im.shape)}"
                )
            if is_np and im.dtype == np.uint8:
                im = im.astype(np.float32) / 255.0
            elif not is_np and im.dtype == torch.uint8:
                im = im.float() / 255.0
            elif not (im.dtype.kind == "f" if is_np else im.is_floating_point()):
                raise ImageInputError(
                    f"image #{i}: dtype {im.dtype} is neither uint8 nor floating point "
                    f"(16-bit or integer pictures: scale them to uint8 or to floats in [0, 1])"
                )
            finite = np.isfinite(im).all() if is_np else torch.isfinite(im).all()
            if not bool(finite):
                raise ImageInputError(f"image #{i}: contains NaN or infinite values")
            check_unit_range(im, f"image #{i}")
            h, w = (im.shape[-3], im.shape[-2]) if is_np else (im.shape[-2], im.shape[-1])
        else:
            raise ImageInputError(f"image #{i}: unsupported type {type(im).__name__}; use PIL, numpy or torch")
        if w % vae_scale_factor or h % vae_scale_factor:
            raise ImageInputError(
                f"image #{i}: size {w}x{h} is not a multiple of {vae_scale_factor} "
                f"(the VAE's downsampling factor); resize or crop it first"
            )
        checked.append(im)
    check_pipeline_images(images, multiple=vae_scale_factor)  # a mixed-size list: refused, not resized silently
    return image_processor.preprocess(checked if len(checked) > 1 else checked[0])


def prompt_embeds_for_batch(
    pipe, prompt, prompt_embeds, batch: int, device, dtype, name: str, clip_skip: int | None = None
) -> torch.Tensor:
    """Text (or given embeddings) -> embeddings of batch ``batch`` on ``device``/``dtype``.

    A list of prompts must have 1 or ``batch`` entries; a single prompt is shared by all images. Prompts are
    encoded with :func:`lsb.prompts.encoding.encode_text`, which rejects unknown ``<token>`` placeholders.
    """
    if prompt_embeds is None:
        if isinstance(prompt, list) and len(prompt) not in (1, batch):
            raise ValueError(f"{name}_prompt has {len(prompt)} entries for {batch} images")
        prompt_embeds = encode_text(pipe, prompt, device, clip_skip=clip_skip)
    return broadcast_embeds(prompt_embeds.to(device=device, dtype=dtype), batch, f"{name}_prompt_embeds")


def prompt_pair_embeds(
    pipe,
    source_prompt,
    source_embeds,
    target_prompt,
    target_embeds,
    batch: int,
    device,
    dtype,
    clip_skip: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target embeddings of batch ``batch``; two single text prompts share one text-encoder call."""
    if (
        source_embeds is None
        and target_embeds is None
        and isinstance(source_prompt, str)
        and isinstance(target_prompt, str)
    ):
        both = encode_text(pipe, [source_prompt, target_prompt], device, clip_skip=clip_skip).to(dtype=dtype)
        return (
            broadcast_embeds(both[:1], batch, "source_prompt_embeds"),
            broadcast_embeds(both[1:], batch, "target_prompt_embeds"),
        )
    return (
        prompt_embeds_for_batch(pipe, source_prompt, source_embeds, batch, device, dtype, "source", clip_skip),
        prompt_embeds_for_batch(pipe, target_prompt, target_embeds, batch, device, dtype, "target", clip_skip),
    )


def check_callback_tensor_inputs(names, allowed) -> None:
    """ValueError if ``callback_on_step_end_tensor_inputs`` names a tensor the pipeline does not offer."""
    bad = [k for k in (names or []) if k not in allowed]
    if bad:
        raise ValueError(f"callback tensor inputs {bad} not in {list(allowed)}")


def initial_bridge_state(
    scheduler, source_latents: torch.Tensor, generator=None, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """x_{t0} = (1 - t0) x_src + sigma_{t0} z from ``scheduler.prepare_initial_sample`` (after ``set_timesteps``);
    ``noise`` (the z, shaped like the latents) or a draw from ``generator``."""
    if noise is None:
        noise = randn_tensor(
            source_latents.shape, generator=generator, device=source_latents.device, dtype=source_latents.dtype
        )
    elif tuple(noise.shape) != tuple(source_latents.shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the latents {tuple(source_latents.shape)}")
    return scheduler.prepare_initial_sample(
        source_latents, noise.to(device=source_latents.device, dtype=source_latents.dtype)
    )
