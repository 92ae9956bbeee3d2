"""Functions the SDXL translation pipelines (LSB-XL, DDIB-XL) and SDEdit-XL share: component checks, the
micro-conditioning ``add_time_ids``, source/target prompt pairs with pooled embeddings, the UNet conditioning
dicts, and the fp16 VAE upcast diffusers applies when ``vae.config.force_upcast`` is set.

SDXL's UNet takes, besides the token embeddings (``encoder_hidden_states``),
``added_cond_kwargs = {"text_embeds": pooled (B, P), "time_ids": (B, 6)}`` with
``time_ids = original_size + crops_coords_top_left + target_size`` (each ``(height, width)`` / ``(top, left)``).
For an image-to-image translation diffusers' ``StableDiffusionXLImg2ImgPipeline`` defaults ``original_size`` and
``target_size`` to the image's own ``(height, width)`` and the crop to ``(0, 0)``; so do these helpers.
"""

from __future__ import annotations

import contextlib

import torch

from ..families import sdxl
from ..prompts.encoding import broadcast_embeds
from ..prompts.encoding_sdxl import broadcast_pooled, encode_text_sdxl
from .model_family import check_model_folder_family
from .translation import check_prompt_args, decode_latents, encode_images

SDXL_PIPELINE_HINT = "load SDXL checkpoints with lsb.LatentSchrodingerBridgeXLPipeline"
SD_PIPELINE_HINT = "load SD 1.x/2.x checkpoints with lsb.LatentSchrodingerBridgePipeline"

#: The components an SDXL pipeline may load without (``_optional_components`` of diffusers' SDXL pipelines).
SDXL_OPTIONAL_COMPONENTS = (
    "tokenizer",
    "tokenizer_2",
    "text_encoder",
    "text_encoder_2",
    "image_encoder",
    "feature_extractor",
)


def is_sdxl_unet(unet) -> bool:
    """True for a UNet with SDXL's added text/time conditioning (``addition_embed_type="text_time"``)."""
    return unet is not None and getattr(unet.config, "addition_embed_type", None) == "text_time"


def check_sd_components(unet, text_encoder, pipeline: str) -> None:
    """Refuse an SDXL UNet (or a text encoder of the wrong width) in an SD 1.x/2.x pipeline, before any compute."""
    if is_sdxl_unet(unet):
        raise ValueError(
            f"{pipeline} got an SDXL UNet (addition_embed_type='text_time', cross-attention "
            f"{unet.config.cross_attention_dim}): {SDXL_PIPELINE_HINT}"
        )
    if unet is not None and text_encoder is not None and isinstance(unet.config.cross_attention_dim, int):
        width = getattr(text_encoder.config, "hidden_size", unet.config.cross_attention_dim)
        if unet.config.cross_attention_dim != width:
            raise ValueError(
                f"{pipeline}: the UNet cross-attends to {unet.config.cross_attention_dim}-d text "
                f"embeddings but the text encoder gives {width}-d ones"
            )


def check_sdxl_components(unet, text_encoder, text_encoder_2, tokenizer, tokenizer_2, pipeline: str) -> None:
    """The checks an SDXL pipeline makes in ``__init__``: both text encoders and tokenizers present, a text_time UNet
    whose cross-attention width is the sum of the encoders' widths. One ValueError naming the problem."""
    missing = [
        n
        for n, c in (
            ("text_encoder", text_encoder),
            ("text_encoder_2", text_encoder_2),
            ("tokenizer", tokenizer),
            ("tokenizer_2", tokenizer_2),
        )
        if c is None
    ]
    if missing:
        hint = SD_PIPELINE_HINT if "text_encoder_2" in missing else "SDXL base checkpoints have both text encoders"
        raise ValueError(f"{pipeline} needs SDXL's two text encoders; missing: {', '.join(missing)} ({hint})")
    if unet is None:
        return
    if not is_sdxl_unet(unet):
        raise ValueError(
            f"{pipeline} got a UNet without SDXL's added conditioning (addition_embed_type="
            f"{getattr(unet.config, 'addition_embed_type', None)!r}): {SD_PIPELINE_HINT}"
        )
    width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    if unet.config.cross_attention_dim != width:
        raise ValueError(
            f"{pipeline}: the UNet cross-attends to {unet.config.cross_attention_dim}-d embeddings but "
            f"text_encoder + text_encoder_2 give {text_encoder.config.hidden_size} + "
            f"{text_encoder_2.config.hidden_size} = {width}"
        )


def check_folder_is_sdxl(pipeline: str, path, want_sdxl: bool) -> None:
    """Before ``from_pretrained`` of a local folder: refuse an SDXL folder in an SD 1.x/2.x pipeline and the reverse,
    naming the pipeline to use, before any weights load (a Hub id is left to the ``__init__`` checks)."""
    from pathlib import Path

    from .loading import detect_model_family

    if not (Path(str(path)).expanduser() / "model_index.json").is_file():
        return
    family = detect_model_family(str(path))
    if want_sdxl and family == "sd":
        raise ValueError(f"{pipeline}: {path} is an SD 1.x/2.x folder (no text_encoder_2): {SD_PIPELINE_HINT}")
    if not want_sdxl and family == "sdxl":
        raise ValueError(
            f"{pipeline}: {path} is an SDXL folder (text_encoder_2, text_time UNet): "
            f"{SDXL_PIPELINE_HINT} (DDIB: DDIBXLPipeline)"
        )


def check_unet_folder(pipeline: str, path, want_sdxl: bool) -> None:
    """What an SD / SDXL pipeline's ``from_pretrained`` checks first on a local folder: a UNet model (not an SD3 /
    FLUX transformer, :func:`lsb.helpers.model_family.check_model_folder_family`) of the right family
    (:func:`check_folder_is_sdxl`)."""
    check_model_folder_family(pipeline, path, "unet", "UNet2DConditionModel")
    check_folder_is_sdxl(pipeline, path, want_sdxl=want_sdxl)


def _pair(name: str, value, default):
    value = default if value is None else value
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
        raise ValueError(f"{name} must be a pair of numbers (height, width) / (top, left), got {value!r}")
    return tuple(value)


def sdxl_time_ids(
    unet,
    image_size: tuple[int, int],
    original_size=None,
    crops_coords_top_left=(0, 0),
    target_size=None,
    projection_dim: int | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """``(1, 6)`` ``add_time_ids = original_size + crops_coords_top_left + target_size``, as diffusers builds them.

    ``original_size`` and ``target_size`` default to ``image_size`` = (height, width) of the input image. The length
    ``6 * addition_time_embed_dim + projection_dim`` is checked against the UNet's ``add_embedding`` (a refiner-style
    UNet, which expects an aesthetic score instead of the target size, is refused naming the mismatch).
    """
    ids = (
        _pair("original_size", original_size, image_size)
        + _pair("crops_coords_top_left", crops_coords_top_left, (0, 0))
        + _pair("target_size", target_size, image_size)
    )
    if projection_dim is not None:
        passed = unet.config.addition_time_embed_dim * len(ids) + int(projection_dim)
        expected = unet.add_embedding.linear_1.in_features
        if passed != expected:
            raise ValueError(
                f"the UNet expects an added embedding of {expected} features, SDXL's micro-conditioning "
                f"gives {passed} (6 x {unet.config.addition_time_embed_dim} + {projection_dim}): not an "
                f"SDXL base UNet / text_encoder_2 pair (refiner checkpoints are not supported)"
            )
    return torch.tensor([list(ids)], dtype=dtype)


def image_time_ids(
    pipe, pixels: torch.Tensor, original_size=None, crops_coords_top_left=(0, 0), target_size=None, dtype=torch.float32
) -> torch.Tensor:
    """:func:`sdxl_time_ids` of an SDXL pipeline for its checked ``pixels`` (B, 3, H, W): sizes default to (H, W), the
    length is checked against ``pipe.unet`` and ``pipe.text_encoder_2``'s projection."""
    return sdxl_time_ids(
        pipe.unet,
        (pixels.shape[-2], pixels.shape[-1]),
        original_size,
        crops_coords_top_left,
        target_size,
        pipe.text_encoder_2.config.projection_dim,
        dtype,
    )


def check_sdxl_prompt_args(name: str, prompt, prompt_2, prompt_embeds, pooled_prompt_embeds) -> None:
    """``<name>_prompt`` xor ``<name>_prompt_embeds`` (as for SD); ``<name>_prompt_2`` only with a prompt; the pooled
    embedding required with given token embeddings (as diffusers' SDXL pipelines require it)."""
    check_prompt_args(name, prompt, prompt_embeds)
    if prompt_2 is not None:
        if prompt_embeds is not None:
            raise ValueError(f"give `{name}_prompt_2` with `{name}_prompt`, not with `{name}_prompt_embeds`")
        check_prompt_args(f"{name}_2", prompt_2, None)
    if prompt_embeds is not None and pooled_prompt_embeds is None:
        raise ValueError(
            f"`{name}_prompt_embeds` given without `{name}_pooled_prompt_embeds`: SDXL needs both "
            f"(the pooled embedding of text_encoder_2)"
        )


def sdxl_prompt_embeds(
    pipe,
    prompt,
    prompt_2,
    prompt_embeds,
    pooled_prompt_embeds,
    batch: int,
    device,
    dtype,
    name: str,
    clip_skip: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text (or given embeddings) -> ``(embeds (B, L, D), pooled (B, P))`` of batch ``batch`` on ``device``/``dtype``.

    With ``<name>_prompt_embeds`` given, ``<name>_pooled_prompt_embeds`` is required too (as in diffusers)."""
    check_sdxl_prompt_args(name, prompt, prompt_2, prompt_embeds, pooled_prompt_embeds)
    if prompt_embeds is None:
        if isinstance(prompt, list) and len(prompt) not in (1, batch):
            raise ValueError(f"{name}_prompt has {len(prompt)} entries for {batch} images")
        prompt_embeds, pooled_prompt_embeds = encode_text_sdxl(pipe, prompt, prompt_2, device, clip_skip=clip_skip)
    return (
        broadcast_embeds(prompt_embeds.to(device=device, dtype=dtype), batch, f"{name}_prompt_embeds"),
        broadcast_pooled(pooled_prompt_embeds.to(device=device, dtype=dtype), batch, f"{name}_pooled_prompt_embeds"),
    )


def unet_conditioning(embeds: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor) -> dict:
    """The UNet keyword arguments of one (batched) SDXL condition: ``encoder_hidden_states`` and
    ``added_cond_kwargs``, with ``time_ids`` (1, 6) repeated to the batch."""
    time_ids = time_ids.to(device=embeds.device, dtype=embeds.dtype).repeat(embeds.shape[0], 1)
    return sdxl.condition(embeds, pooled, time_ids)


def concat_conditioning(*conds: dict) -> dict:
    """Several conditioning dicts of :func:`unet_conditioning` concatenated along the batch (e.g. ``[source;
    target]`` for one batched UNet call)."""
    return {
        "encoder_hidden_states": torch.cat([c["encoder_hidden_states"] for c in conds]),
        "added_cond_kwargs": {
            k: torch.cat([c["added_cond_kwargs"][k] for c in conds]) for k in ("text_embeds", "time_ids")
        },
    }


def zero_conditioning(cond: dict) -> dict:
    """SDXL's unconditional branch when ``force_zeros_for_empty_prompt`` is set: zero token and pooled embeddings,
    the same time ids (what diffusers feeds the UNet for an empty negative prompt)."""
    return {
        "encoder_hidden_states": torch.zeros_like(cond["encoder_hidden_states"]),
        "added_cond_kwargs": {
            "text_embeds": torch.zeros_like(cond["added_cond_kwargs"]["text_embeds"]),
            "time_ids": cond["added_cond_kwargs"]["time_ids"],
        },
    }


@contextlib.contextmanager
def vae_upcast(vae):
    """Run the VAE in float32 when it is float16 and ``vae.config.force_upcast`` is set (SDXL's stock VAE overflows
    in fp16), restoring float16 afterwards; the fp16-fix VAE (``force_upcast=False``) stays in float16."""
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


def encode_images_upcast(vae, pixels: torch.Tensor, device, dtype) -> torch.Tensor:
    """:func:`lsb.helpers.translation.encode_images` under :func:`vae_upcast`, the latents cast to ``dtype`` (the
    UNet's)."""
    with vae_upcast(vae):
        latents = encode_images(vae, pixels, device)
    return latents.to(dtype)


def decode_latents_upcast(vae, image_processor, latents: torch.Tensor, output_type: str = "pil"):
    """:func:`lsb.helpers.translation.decode_latents` under :func:`vae_upcast`."""
    with vae_upcast(vae):
        return decode_latents(vae, image_processor, latents, output_type)


__all__ = [
    "SDXL_OPTIONAL_COMPONENTS",
    "SDXL_PIPELINE_HINT",
    "SD_PIPELINE_HINT",
    "check_sd_components",
    "check_folder_is_sdxl",
    "check_sdxl_components",
    "check_sdxl_prompt_args",
    "check_unet_folder",
    "concat_conditioning",
    "decode_latents_upcast",
    "encode_images_upcast",
    "image_time_ids",
    "is_sdxl_unet",
    "sdxl_prompt_embeds",
    "sdxl_time_ids",
    "unet_conditioning",
    "vae_upcast",
    "zero_conditioning",
]
