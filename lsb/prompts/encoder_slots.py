"""Which text encoders a model family has, and the key each one's learned embedding is saved under.

A learned domain token lives in every text encoder of the model (textual inversion per encoder). The keys
are the ones model users share embeddings under (ComfyUI's embedding keys, the SDXL files on model hubs):

=======  ======================================================================================
family   encoders (key: tokenizer attribute, text-encoder attribute)
=======  ======================================================================================
sd       clip_l: tokenizer, text_encoder   (file format stays diffusers' ``{token: [n, dim]}``)
sdxl     clip_l: tokenizer, text_encoder;  clip_g: tokenizer_2, text_encoder_2
sd3      clip_l: tokenizer, text_encoder;  clip_g: tokenizer_2, text_encoder_2;
         t5xxl: tokenizer_3, text_encoder_3 (only when the pipeline has T5)
flux     clip_l: tokenizer, text_encoder;  t5xxl: tokenizer_2, text_encoder_2
=======  ======================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("sd", "sdxl", "sd3", "flux")


@dataclass(frozen=True)
class EncoderSlot:
    """One text encoder of a pipeline: the file key of its embedding and the pipeline attributes holding it."""

    key: str
    tokenizer_attr: str
    text_encoder_attr: str


_SLOTS = {
    "sd": (EncoderSlot("clip_l", "tokenizer", "text_encoder"),),
    "sdxl": (
        EncoderSlot("clip_l", "tokenizer", "text_encoder"),
        EncoderSlot("clip_g", "tokenizer_2", "text_encoder_2"),
    ),
    "sd3": (
        EncoderSlot("clip_l", "tokenizer", "text_encoder"),
        EncoderSlot("clip_g", "tokenizer_2", "text_encoder_2"),
        EncoderSlot("t5xxl", "tokenizer_3", "text_encoder_3"),
    ),
    "flux": (EncoderSlot("clip_l", "tokenizer", "text_encoder"), EncoderSlot("t5xxl", "tokenizer_2", "text_encoder_2")),
}


def model_family(pipe) -> str:
    """ "sd", "sdxl", "sd3" or "flux" for a pipeline (or any object with its components as attributes).

    By the denoiser's class: ``SD3Transformer2DModel`` -> sd3, ``FluxTransformer2DModel`` -> flux, a UNet with a
    second text encoder -> sdxl, a UNet alone -> sd. Anything else is a ValueError naming what was found.
    """
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        names = {c.__name__ for c in type(transformer).__mro__}
        if "SD3Transformer2DModel" in names:
            return "sd3"
        if "FluxTransformer2DModel" in names:
            return "flux"
        raise ValueError(f"unknown transformer {type(transformer).__name__}: expected SD3 or FLUX")
    if getattr(pipe, "unet", None) is not None:
        return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
    raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer: not a text-to-image model")


def text_encoder_slots(pipe, family: str | None = None) -> list[EncoderSlot]:
    """The encoders of ``pipe`` that a learned token lives in (SD3 without T5: the two CLIPs only)."""
    family = family or model_family(pipe)
    if family not in _SLOTS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return [
        s
        for s in _SLOTS[family]
        if getattr(pipe, s.text_encoder_attr, None) is not None and getattr(pipe, s.tokenizer_attr, None) is not None
    ]


def family_slot_keys(family: str) -> tuple[str, ...]:
    """All keys a full file of ``family`` holds (SD3 files may lack t5xxl when learned without T5)."""
    return tuple(s.key for s in _SLOTS[family])


__all__ = ["FAMILIES", "EncoderSlot", "model_family", "text_encoder_slots", "family_slot_keys"]
