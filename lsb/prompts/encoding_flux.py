"""Text encoding for FLUX.1: CLIP's pooled output and T5's token states, plus the text position ids.

The numbers are those of ``diffusers.FluxPipeline.encode_prompt`` for one prompt side, as functions shared
by the FLUX pipelines of the project (LSB, FlowEdit) and prompt optimization:

- CLIP (``text_encoder``, no projection) sees the prompt padded/truncated to ``tokenizer.model_max_length``
  tokens; only its ``pooler_output`` is used (``pooled_prompt_embeds [B, 768]``);
- T5 (``text_encoder_2``) sees ``prompt_2`` (default: ``prompt``) padded/truncated to
  ``max_sequence_length`` tokens: ``prompt_embeds [B, L, 4096]``;
- ``text_ids`` are zeros ``[L, 3]`` (the text tokens carry no 2-D position in FLUX's rotary embedding).
"""

from __future__ import annotations

import torch

from .encoding_sd3 import prompt_list, t5_prompt_embeds
from .tokens import check_prompt_tokens, tokenize_padded


def clip_pooled_embeds(text_encoder, tokenizer, prompts: list[str], device) -> torch.Tensor:
    """CLIP text model's pooled output [B, H] for prompts padded to ``tokenizer.model_max_length``."""
    check_prompt_tokens(tokenizer, prompts)
    ids = tokenize_padded(tokenizer, prompts, tokenizer.model_max_length).input_ids
    out = text_encoder(ids.to(device), output_hidden_states=False)
    return out.pooler_output.to(dtype=text_encoder.dtype, device=device)


def text_position_ids(num_tokens: int, device, dtype) -> torch.Tensor:
    """FLUX's ``txt_ids``: zeros [num_tokens, 3]."""
    return torch.zeros(num_tokens, 3, device=device, dtype=dtype)


def encode_prompt_flux(
    text_encoder,
    text_encoder_2,
    tokenizer,
    tokenizer_2,
    prompt: str | list[str],
    prompt_2: str | list[str] | None = None,
    *,
    device,
    num_images_per_prompt: int = 1,
    max_sequence_length: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FLUX prompt embeddings ``(prompt_embeds [B, L, D], pooled_prompt_embeds [B, P], text_ids [L, 3])``.

    Each prompt's rows are repeated ``num_images_per_prompt`` times (diffusers' order).
    """
    prompts = prompt_list(prompt, "prompt")
    prompts_2 = prompt_list(prompt_2 or prompts, "prompt_2")
    if len(prompts_2) != len(prompts):
        raise ValueError(f"prompt_2 has {len(prompts_2)} entries but prompt has {len(prompts)}")
    if text_encoder is None or tokenizer is None:
        raise ValueError(
            "encoding a FLUX prompt needs the CLIP encoder and tokenizer (text_encoder, tokenizer); "
            "without them pass prompt embeddings"
        )
    if text_encoder_2 is None or tokenizer_2 is None:
        raise ValueError(
            "encoding a FLUX prompt needs the T5 encoder and tokenizer (text_encoder_2, tokenizer_2); "
            "without them pass prompt embeddings"
        )
    pooled = clip_pooled_embeds(text_encoder, tokenizer, prompts, device)
    embeds = t5_prompt_embeds(text_encoder_2, tokenizer_2, prompts_2, device, max_sequence_length)
    text_ids = text_position_ids(embeds.shape[1], device, text_encoder.dtype)
    return (
        embeds.repeat_interleave(num_images_per_prompt, dim=0),
        pooled.repeat_interleave(num_images_per_prompt, dim=0),
        text_ids,
    )


__all__ = ["clip_pooled_embeds", "encode_prompt_flux", "text_position_ids"]
