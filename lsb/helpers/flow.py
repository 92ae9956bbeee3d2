"""Functions the rectified-flow translation pipelines (SD3 / SD3.5, FLUX.1) share: the VAE's shift factor, prompt-side
checks (text or embeddings + pooled embeddings, the encoders a text prompt needs), embedding widths against the
transformer, image sizes the transformer's patching takes, source latents in the transformer's dtype, and
broadcasting a prompt side to the image batch.

Every check raises a ValueError naming the input before any transformer compute.
"""

from __future__ import annotations

import torch

from ..io.execution import execution_device, model_dtype
from ..io.latents import encode_latents
from ..prompts.encoding import broadcast_embeds
from ..prompts.encoding_sdxl import broadcast_pooled
from .translation import check_prompt_args


def check_vae_shift_factor(vae, family: str, known_value: str) -> None:
    """ValueError when ``vae`` (None: no VAE yet, accepted) has no ``config.shift_factor``: the flow models' latents
    are ``(vae_latent - shift_factor) * scaling_factor`` (``family`` e.g. "SD3", ``known_value`` e.g. "SD3's VAE:
    0.0609", the value to set)."""
    if vae is not None and getattr(vae.config, "shift_factor", None) is None:
        raise ValueError(
            f"{family}'s latents are (vae_latent - shift_factor) * scaling_factor, but vae.config.shift_factor "
            f"is None: set it ({known_value}) or use the checkpoint's VAE"
        )


def check_prompt_side(name: str, prompt, prompt_embeds, pooled_prompt_embeds, extra_prompts: dict) -> None:
    """One side (``source`` / ``target``): exactly one of the text prompt and ``<name>_prompt_embeds``; embeddings
    come with ``<name>_pooled_prompt_embeds``; the per-encoder prompts (``extra_prompts``, e.g.
    ``{"source_prompt_2": ..., "source_prompt_3": ...}``) only with a text prompt."""
    check_prompt_args(name, prompt, prompt_embeds)
    if (prompt_embeds is None) != (pooled_prompt_embeds is None):
        given, missing = (
            ("prompt_embeds", "pooled_prompt_embeds")
            if pooled_prompt_embeds is None
            else ("pooled_prompt_embeds", "prompt_embeds")
        )
        raise ValueError(f"`{name}_{given}` given without `{name}_{missing}`: give both or a text `{name}_prompt`")
    for key, value in extra_prompts.items():
        if value is None:
            continue
        if prompt_embeds is not None:
            raise ValueError(f"give `{key}` with `{name}_prompt`, not with `{name}_prompt_embeds`")
        check_prompt_args(key.removesuffix("_prompt"), value, None)


def check_text_encoders(pipeline_name: str, name: str, components: dict) -> None:
    """A text prompt on side ``name`` needs every component of ``components`` ({"text_encoder": obj, ...})."""
    missing = [key for key, value in components.items() if value is None]
    if missing:
        raise ValueError(
            f"{pipeline_name} has no {', '.join(missing)}: `{name}_prompt` cannot be encoded; load "
            f"the missing component(s) or pass `{name}_prompt_embeds` and `{name}_pooled_prompt_embeds`"
        )


def check_embeds_width(name: str, prompt_embeds, pooled_prompt_embeds, width: int, pooled_width: int) -> None:
    """Given embeddings must have the transformer's widths (``joint_attention_dim``, ``pooled_projection_dim``)."""
    if prompt_embeds is not None and (prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != width):
        raise ValueError(
            f"`{name}_prompt_embeds` must be (batch, tokens, {width}) for this transformer "
            f"(joint_attention_dim), got shape {tuple(prompt_embeds.shape)}"
        )
    if pooled_prompt_embeds is not None and (
        pooled_prompt_embeds.ndim != 2 or pooled_prompt_embeds.shape[-1] != pooled_width
    ):
        raise ValueError(
            f"`{name}_pooled_prompt_embeds` must be (batch, {pooled_width}) for this transformer "
            f"(pooled_projection_dim), got shape {tuple(pooled_prompt_embeds.shape)}"
        )


def check_flow_prompt_side(pipe, name: str, prompt, prompt_embeds, pooled_prompt_embeds, extra_prompts: dict) -> None:
    """All checks of one prompt side of an SD3 / FLUX translator ``pipe``: :func:`check_prompt_side`, the CLIP / T5
    components a text prompt needs (``text_encoder``, ``tokenizer``, ``text_encoder_2``, ``tokenizer_2``), and given
    embeddings' widths against ``pipe.transformer.config`` (``joint_attention_dim``, ``pooled_projection_dim``)."""
    check_prompt_side(name, prompt, prompt_embeds, pooled_prompt_embeds, extra_prompts)
    if prompt is not None:
        check_text_encoders(
            type(pipe).__name__,
            name,
            {key: getattr(pipe, key) for key in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")},
        )
    cfg = pipe.transformer.config
    check_embeds_width(name, prompt_embeds, pooled_prompt_embeds, cfg.joint_attention_dim, cfg.pooled_projection_dim)


def check_pixel_multiple(pixels: torch.Tensor, multiple: int, why: str) -> None:
    """ValueError unless the (B, 3, H, W) images' sides are multiples of ``multiple`` px (``why`` says whose)."""
    h, w = pixels.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"image size {w}x{h} is not a multiple of {multiple} px ({why}); resize or crop it first")


def transformer_latents(pipe, pixels: torch.Tensor, device=None) -> torch.Tensor:
    """Images in [-1, 1] -> ``pipe.vae``'s model latents ``(mode - shift_factor) * scaling_factor`` on ``device``
    (default: the pipeline's execution device), in ``pipe.transformer``'s dtype."""
    latents = encode_latents(pipe.vae, pixels, device if device is not None else execution_device(pipe))
    return latents.to(model_dtype(pipe.transformer))


def side_for_batch(
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    batch: int,
    device,
    dtype,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One side's ``(embeds (B, L, D), pooled (B, P))`` repeated to ``batch`` images on ``device`` / ``dtype``."""
    return (
        broadcast_embeds(prompt_embeds.to(device=device, dtype=dtype), batch, f"{name}_prompt_embeds"),
        broadcast_pooled(
            pooled_prompt_embeds.to(device=device, dtype=dtype),
            batch,
            f"{name}_pooled_prompt_embeds",
        ),
    )


def check_prompt_batch(name: str, prompt, batch: int) -> None:
    """A list of prompts must have 1 or ``batch`` entries (one per image)."""
    if isinstance(prompt, list) and len(prompt) not in (1, batch):
        raise ValueError(f"{name}_prompt has {len(prompt)} entries for {batch} images")


def prompt_pair_for_batch(encode, source_args: tuple, target_args: tuple, batch: int, device, dtype):
    """Both prompt sides through ``encode(*args) -> (embeds, pooled, *extra)`` (a pipeline's ``encode_prompt`` with
    its fixed settings bound), each broadcast to ``batch`` images. ``args[0]`` is the side's text prompt (a list must
    have 1 or ``batch`` entries). Returns ``(src, src_pooled, tgt, tgt_pooled, extra)`` with the target side's extra
    outputs (e.g. FLUX's ``text_ids``); a ValueError when the two sides' token counts differ (one batched call)."""
    out = {}
    for name, args in (("source", source_args), ("target", target_args)):
        check_prompt_batch(name, args[0], batch)
        embeds, pooled, *extra = encode(*args)
        out[name] = (
            *side_for_batch(embeds, pooled, batch, device, dtype, name),
            tuple(extra),
        )
    (src, src_pooled, _), (tgt, tgt_pooled, extra) = out["source"], out["target"]
    if src.shape[1] != tgt.shape[1]:
        raise ValueError(
            f"source and target prompt embeddings have {src.shape[1]} and {tgt.shape[1]} tokens; "
            "one batched call needs the same length (same max_sequence_length)"
        )
    return src, src_pooled, tgt, tgt_pooled, extra


def pair_callback_state(src, tgt, src_pooled, tgt_pooled) -> dict:
    """The tensors ``callback_on_step_end`` may ask for besides ``latents`` (the prompt pair with pooled embeddings)."""
    return {
        "source_prompt_embeds": src,
        "target_prompt_embeds": tgt,
        "source_pooled_prompt_embeds": src_pooled,
        "target_pooled_prompt_embeds": tgt_pooled,
    }


__all__ = [
    "check_embeds_width",
    "check_flow_prompt_side",
    "check_pixel_multiple",
    "check_prompt_batch",
    "check_prompt_side",
    "check_text_encoders",
    "check_vae_shift_factor",
    "pair_callback_state",
    "prompt_pair_for_batch",
    "side_for_batch",
    "transformer_latents",
]
