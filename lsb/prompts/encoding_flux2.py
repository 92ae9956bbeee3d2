"""Text encoding for FLUX.2 klein: hidden states of three layers of a Qwen3 language model, stacked on features.

The numbers are those of ``diffusers.Flux2KleinPipeline.encode_prompt``: each prompt is one user turn of the chat
template with the generation prompt and thinking off (``enable_thinking=False``: the empty think block), tokenized
alone padded to ``max_sequence_length`` (512); the encoder's hidden states of layers (9, 18, 27) are stacked and
flattened per token: ``(B, L, 3 x hidden)``. No mask reaches the transformer; the text position ids are
``(0, 0, 0, l)`` per token.
"""

from __future__ import annotations

import torch

from .encoding_sd3 import prompt_list
from .tokens import check_prompt_tokens

#: the Qwen3 layers klein reads (diffusers' ``text_encoder_out_layers``)
KLEIN_LAYERS = (9, 18, 27)


def encode_prompt_flux2_klein(text_encoder, tokenizer, prompt, device=None, max_sequence_length: int = 512):
    """``prompt_embeds (B, L, 3 x hidden)`` of ``prompt`` (a string or a list)."""
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be a positive integer, got {max_sequence_length!r}")
    prompts = prompt_list(prompt, "prompt")
    check_prompt_tokens(tokenizer, prompts)
    device = device if device is not None else text_encoder.device
    ids, masks = [], []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        tokens = tokenizer(
            text, return_tensors="pt", padding="max_length", truncation=True, max_length=max_sequence_length
        )
        ids.append(tokens["input_ids"])
        masks.append(tokens["attention_mask"])
    out = text_encoder(
        input_ids=torch.cat(ids).to(text_encoder.device),
        attention_mask=torch.cat(masks).to(text_encoder.device),
        output_hidden_states=True,
        use_cache=False,
    )
    stacked = torch.stack([out.hidden_states[k] for k in KLEIN_LAYERS], dim=1).to(
        dtype=text_encoder.dtype, device=device
    )
    b, n, length, hidden = stacked.shape
    return stacked.permute(0, 2, 1, 3).reshape(b, length, n * hidden)


__all__ = ["KLEIN_LAYERS", "encode_prompt_flux2_klein"]
