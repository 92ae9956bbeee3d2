"""Text encoding for SD3 / SD3.5: two CLIP encoders (penultimate hidden states + pooled projections) and T5.

The numbers are those of ``diffusers.StableDiffusion3Pipeline.encode_prompt`` for one side (prompt or
negative prompt), written here as functions so that every SD3-family pipeline of the project (LSB,
FlowEdit) and prompt optimization share one copy:

- each CLIP encoder sees the prompt padded/truncated to ``tokenizer.model_max_length`` (77) tokens; its
  hidden state ``hidden_states[-2]`` (``[-(clip_skip + 2)]`` with ``clip_skip``) is the token embedding and
  its projected output ``text_embeds`` the pooled embedding;
- the two CLIP token embeddings are concatenated along the feature axis, zero-padded to T5's width and
  put in front of the T5 tokens: ``[B, 77 + max_sequence_length, joint_attention_dim]``;
- without T5 (``text_encoder_3=None``) the T5 part is zeros of ``[B, max_sequence_length,
  joint_attention_dim]``, as in diffusers; the pooled embedding is the two CLIP pooled ones concatenated.
"""

from __future__ import annotations

import torch

from .tokens import as_prompt_list, check_prompt_tokens, tokenize_padded

#: diffusers' SD3 and FLUX pipelines refuse a longer T5 sequence.
T5_MAX_SEQUENCE_LENGTH = 512


def check_max_sequence_length(max_sequence_length, tokenizer=None, name: str = "max_sequence_length") -> int:
    """``max_sequence_length`` as an int, or a ValueError if it is not in [1, T5's limit].

    T5's limit is 512 (diffusers' SD3 / FLUX limit) or the T5 tokenizer's ``model_max_length`` when smaller.
    """
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
        raise ValueError(f"{name} must be a positive integer, got {max_sequence_length!r}")
    limit = T5_MAX_SEQUENCE_LENGTH
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    if max_sequence_length > limit:
        raise ValueError(f"{name}={max_sequence_length} is beyond the T5 encoder's limit of {limit} tokens")
    return max_sequence_length


def prompt_list(prompt, name: str) -> list[str]:
    """``prompt`` (a string or a non-empty list of strings) as a list, else a TypeError naming it."""
    prompts = as_prompt_list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name} must be a string or a non-empty list of strings")
    return prompts


def clip_prompt_embeds(
    text_encoder,
    tokenizer,
    prompts: list[str],
    device,
    max_length: int,
    clip_skip: int | None = None,
    dtype: torch.dtype | None = None,
):
    """One CLIP encoder with projection: (penultimate hidden states [B, 77, H], pooled projection [B, P])."""
    check_prompt_tokens(tokenizer, prompts)
    ids = tokenize_padded(tokenizer, prompts, max_length).input_ids
    out = text_encoder(ids.to(device), output_hidden_states=True)
    pooled = out[0]
    hidden = out.hidden_states[-2 if clip_skip is None else -(clip_skip + 2)]
    return hidden.to(dtype=dtype or text_encoder.dtype, device=device), pooled


def t5_prompt_embeds(text_encoder, tokenizer, prompts: list[str], device, max_sequence_length: int):
    """T5 encoder's last hidden states [B, max_sequence_length, D] (padded to ``max_sequence_length``)."""
    check_prompt_tokens(tokenizer, prompts)
    ids = tokenize_padded(tokenizer, prompts, max_sequence_length, add_special_tokens=True).input_ids
    return text_encoder(ids.to(device))[0].to(dtype=text_encoder.dtype, device=device)


def encode_prompt_sd3(
    text_encoder,
    text_encoder_2,
    text_encoder_3,
    tokenizer,
    tokenizer_2,
    tokenizer_3,
    prompt: str | list[str],
    prompt_2: str | list[str] | None = None,
    prompt_3: str | list[str] | None = None,
    *,
    device,
    num_images_per_prompt: int = 1,
    max_sequence_length: int = 256,
    clip_skip: int | None = None,
    joint_attention_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3 prompt embeddings ``(prompt_embeds [B, 77 + L, D], pooled_prompt_embeds [B, P])``.

    ``prompt_2`` / ``prompt_3`` go to the second CLIP / T5 encoder and default to ``prompt``.
    ``joint_attention_dim`` (the transformer's ``config.joint_attention_dim``) is needed only without T5.
    Each prompt's rows are repeated ``num_images_per_prompt`` times (diffusers' order).
    """
    prompts = prompt_list(prompt, "prompt")
    prompts_2 = prompt_list(prompt_2 or prompts, "prompt_2")
    prompts_3 = prompt_list(prompt_3 or prompts, "prompt_3")
    for name, p in (("prompt_2", prompts_2), ("prompt_3", prompts_3)):
        if len(p) != len(prompts):
            raise ValueError(f"{name} has {len(p)} entries but prompt has {len(prompts)}")
    if text_encoder is None or text_encoder_2 is None or tokenizer is None or tokenizer_2 is None:
        raise ValueError(
            "encoding an SD3 prompt needs both CLIP encoders and tokenizers (text_encoder, tokenizer, "
            "text_encoder_2, tokenizer_2); without them pass prompt embeddings"
        )
    max_length = tokenizer.model_max_length
    embed_l, pooled_l = clip_prompt_embeds(text_encoder, tokenizer, prompts, device, max_length, clip_skip)
    embed_g, pooled_g = clip_prompt_embeds(
        text_encoder_2,
        tokenizer_2,
        prompts_2,
        device,
        max_length,
        clip_skip,
        dtype=text_encoder.dtype,
    )
    clip_embeds = torch.cat([embed_l, embed_g], dim=-1)
    if text_encoder_3 is None:
        if joint_attention_dim is None:
            raise ValueError(
                "without text_encoder_3 (T5) the zero T5 part needs joint_attention_dim "
                "(transformer.config.joint_attention_dim)"
            )
        t5 = torch.zeros(
            len(prompts),
            max_sequence_length,
            joint_attention_dim,
            device=device,
            dtype=text_encoder.dtype,
        )
    else:
        if tokenizer_3 is None:
            raise ValueError("text_encoder_3 (T5) is given but tokenizer_3 is None")
        t5 = t5_prompt_embeds(text_encoder_3, tokenizer_3, prompts_3, device, max_sequence_length)
    if clip_embeds.shape[-1] > t5.shape[-1]:
        raise ValueError(
            f"the CLIP embeddings ({clip_embeds.shape[-1]} features) are wider than T5's / "
            f"joint_attention_dim ({t5.shape[-1]})"
        )
    clip_embeds = torch.nn.functional.pad(clip_embeds, (0, t5.shape[-1] - clip_embeds.shape[-1]))
    prompt_embeds = torch.cat([clip_embeds, t5], dim=-2)
    pooled = torch.cat([pooled_l, pooled_g], dim=-1)
    return (
        prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0),
        pooled.repeat_interleave(num_images_per_prompt, dim=0),
    )


__all__ = [
    "T5_MAX_SEQUENCE_LENGTH",
    "check_max_sequence_length",
    "clip_prompt_embeds",
    "encode_prompt_sd3",
    "prompt_list",
    "t5_prompt_embeds",
]
