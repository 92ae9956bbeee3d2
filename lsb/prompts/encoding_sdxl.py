"""Text encoding for SDXL-style pipelines: two CLIP text encoders -> token embeddings and a pooled embedding.

As diffusers' ``StableDiffusionXLPipeline.encode_prompt`` computes them (diffusers 0.42.1):

* each prompt goes through ``(tokenizer, text_encoder)`` and ``prompt_2`` (default: the same prompt) through
  ``(tokenizer_2, text_encoder_2)``, padded to ``model_max_length``; multi-vector textual-inversion tokens are
  expanded per tokenizer (``maybe_convert_prompt``);
* the token embeddings are the *penultimate* hidden states of both encoders (``hidden_states[-2]``, or
  ``hidden_states[-(clip_skip + 2)]``), concatenated along the feature axis (768 + 1280 = 2048 for SDXL);
* the pooled embedding is the first 2-D output of an encoder, i.e. ``text_embeds`` of
  ``CLIPTextModelWithProjection`` (the second encoder), passed to the UNet as ``added_cond_kwargs["text_embeds"]``;
* both are cast to ``text_encoder_2``'s dtype.
"""

from __future__ import annotations

import torch

from .encoding import broadcast_batch
from .tokens import as_prompt_list, check_prompt_tokens, tokenize_padded


def encode_prompt_sdxl(
    text_encoder,
    text_encoder_2,
    tokenizer,
    tokenizer_2,
    prompt: str | list[str],
    prompt_2: str | list[str] | None = None,
    device=None,
    clip_skip: int | None = None,
    convert=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds (B, L, D1 + D2), pooled_prompt_embeds (B, P))`` from the two encoders, WITH autograd (prompt
    optimization backpropagates into the new token rows of both). ``convert(prompts, tokenizer)`` expands
    multi-vector textual-inversion tokens (a pipeline's ``maybe_convert_prompt``); unknown ``<token>``s are refused."""
    prompts = as_prompt_list(prompt)
    prompts_2 = as_prompt_list(prompt_2) if prompt_2 is not None else prompts
    if len(prompts_2) != len(prompts):
        raise ValueError(f"prompt_2 has {len(prompts_2)} entries for {len(prompts)} prompts")
    pairs = (
        (prompts, tokenizer, text_encoder, "prompt"),
        (prompts_2, tokenizer_2, text_encoder_2, "prompt (tokenizer_2)"),
    )
    embeds, pooled = [], None
    for texts, tok, encoder, what in pairs:
        check_prompt_tokens(tok, texts, what)
        if convert is not None:
            texts = convert(texts, tok)
        ids = tokenize_padded(tok, texts, tok.model_max_length).input_ids
        out = encoder(ids.to(device), output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:
            pooled = out[0]
        embeds.append(out.hidden_states[-2] if clip_skip is None else out.hidden_states[-(clip_skip + 2)])
    if pooled is None:
        raise ValueError(
            "text_encoder_2 returned no pooled embedding: SDXL's second text encoder must be a "
            "CLIPTextModelWithProjection"
        )
    return torch.cat(embeds, dim=-1), pooled


@torch.no_grad()
def encode_text_sdxl(
    pipe, prompt: str | list[str], prompt_2: str | list[str] | None = None, device=None, clip_skip: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds (B, L, D1 + D2), pooled_prompt_embeds (B, P))`` of ``prompt`` / ``prompt_2`` for an SDXL pipeline.

    ``pipe`` needs ``tokenizer``, ``tokenizer_2``, ``text_encoder`` and ``text_encoder_2``. A ``<token>`` that either
    tokenizer does not know raises :class:`lsb.prompts.tokens.UnknownTokenError` (naming the tokenizer), instead of
    being encoded character by character.
    """
    embeds, pooled = encode_prompt_sdxl(
        pipe.text_encoder,
        pipe.text_encoder_2,
        pipe.tokenizer,
        pipe.tokenizer_2,
        prompt,
        prompt_2,
        device,
        clip_skip,
        getattr(pipe, "maybe_convert_prompt", None),
    )
    dtype = pipe.text_encoder_2.dtype
    return embeds.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype)


def broadcast_pooled(pooled: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Repeat a (1, P) or (B, P) pooled embedding to the image batch size."""
    return broadcast_batch(pooled, batch, name, ("batch", "dim"))


__all__ = ["broadcast_pooled", "encode_prompt_sdxl", "encode_text_sdxl"]
