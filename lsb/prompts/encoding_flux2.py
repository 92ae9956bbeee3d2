"""Text encoding for FLUX.2: hidden states of three layers of a language model, stacked on features.

- klein (``diffusers.Flux2KleinPipeline.encode_prompt``, a Qwen3): each prompt is one user turn of the chat template
  with the generation prompt and thinking off (``enable_thinking=False``: the empty think block), tokenized alone
  padded to ``max_sequence_length`` (512); hidden states of layers (9, 18, 27);
- dev (``diffusers.Flux2Pipeline.encode_prompt``, a Mistral3): each prompt is a conversation of diffusers' fixed
  system message and the user turn (text parts; "[IMG]" removed), the batch put through the processor's chat
  template without a generation prompt, padded to ``max_sequence_length``; hidden states of layers (10, 20, 30).

The layers are stacked and flattened per token: ``(B, L, 3 x hidden)``. No mask reaches the transformer; the text
position ids are ``(0, 0, 0, l)`` per token.
"""

from __future__ import annotations

import torch

from .encoding_sd3 import prompt_list
from .tokens import check_prompt_tokens

#: the Qwen3 layers klein reads (diffusers' ``text_encoder_out_layers``)
KLEIN_LAYERS = (9, 18, 27)
#: the Mistral3 layers FLUX.2-dev reads
DEV_LAYERS = (10, 20, 30)


def stacked_layers(hidden_states, layers, dtype, device) -> torch.Tensor:
    """Hidden states of ``layers`` stacked per token: ``(B, L, len(layers) x hidden)``."""
    stacked = torch.stack([hidden_states[k] for k in layers], dim=1).to(dtype=dtype, device=device)
    b, n, length, hidden = stacked.shape
    return stacked.permute(0, 2, 1, 3).reshape(b, length, n * hidden)


def encode_prompt_flux2(text_encoder, tokenizer, prompt, device=None, max_sequence_length: int = 512):
    """FLUX.2's prompt embeddings: dev's (a Mistral3 encoder) or klein's (a Qwen3)."""
    if type(text_encoder).__name__.startswith("Mistral3"):
        return encode_prompt_flux2_dev(text_encoder, tokenizer, prompt, device, max_sequence_length)
    return encode_prompt_flux2_klein(text_encoder, tokenizer, prompt, device, max_sequence_length)


def encode_prompt_flux2_dev(text_encoder, tokenizer, prompt, device=None, max_sequence_length: int = 512):
    """``prompt_embeds (B, L, 3 x hidden)`` of ``prompt`` for FLUX.2-dev (diffusers' system message)."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be a positive integer, got {max_sequence_length!r}")
    prompts = prompt_list(prompt, "prompt")
    check_prompt_tokens(getattr(tokenizer, "tokenizer", tokenizer), prompts)
    device = device if device is not None else text_encoder.device
    conversations = [
        [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_MESSAGE}]},
            {"role": "user", "content": [{"type": "text", "text": p.replace("[IMG]", "")}]},
        ]
        for p in prompts
    ]
    tokens = tokenizer.apply_chat_template(
        conversations,
        add_generation_prompt=False,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        padding="max_length",
        truncation=True,
        max_length=max_sequence_length,
    )
    out = text_encoder(
        input_ids=tokens["input_ids"].to(device),
        attention_mask=tokens["attention_mask"].to(device),
        output_hidden_states=True,
        use_cache=False,
    )
    return stacked_layers(out.hidden_states, DEV_LAYERS, text_encoder.dtype, device)


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
    return stacked_layers(out.hidden_states, KLEIN_LAYERS, text_encoder.dtype, device)


__all__ = [
    "DEV_LAYERS",
    "KLEIN_LAYERS",
    "encode_prompt_flux2",
    "encode_prompt_flux2_dev",
    "encode_prompt_flux2_klein",
    "stacked_layers",
]
