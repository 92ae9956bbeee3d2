"""Text encoding for Z-Image: a Qwen3 language model's hidden states of the chat-formatted prompt.

The numbers are those of ``diffusers.ZImagePipeline.encode_prompt`` for one prompt side:

- each prompt becomes one user turn of the tokenizer's chat template, with the generation prompt and thinking on
  (``enable_thinking=True``: no empty think block);
- the texts are padded / truncated to ``max_sequence_length`` tokens (512 in diffusers) with their attention mask;
- the embeddings are the second-to-last hidden states (``hidden_states[-2]``) of the encoder, and each prompt keeps
  only its real (unpadded) tokens: the result is a **list** of ``(tokens_i, hidden)`` tensors, one per prompt, of
  different lengths (the transformer takes the list as it is).
"""

from __future__ import annotations

import torch

from .encoding_sd3 import prompt_list
from .tokens import check_prompt_tokens

#: Z-Image's longest caption (diffusers' default and limit of its examples)
MAX_SEQUENCE_LENGTH = 512


def chat_prompts(tokenizer, prompts: list[str]) -> list[str]:
    """Each prompt as one user turn of ``tokenizer``'s chat template, generation prompt added, thinking on."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        for p in prompts
    ]


def encode_prompt_zimage(
    text_encoder,
    tokenizer,
    prompt,
    device=None,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> list[torch.Tensor]:
    """The caption features of ``prompt`` (a string or a list): one ``(tokens_i, hidden)`` tensor per prompt, its
    padding removed, on ``device`` in the encoder's dtype."""
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be a positive integer, got {max_sequence_length!r}")
    prompts = prompt_list(prompt, "prompt")
    check_prompt_tokens(tokenizer, prompts)
    device = device if device is not None else text_encoder.device
    tokens = tokenizer(
        chat_prompts(tokenizer, prompts),
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        return_tensors="pt",
    )
    ids = tokens.input_ids.to(device)
    mask = tokens.attention_mask.to(device).bool()
    hidden = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    return [hidden[i][mask[i]] for i in range(len(prompts))]


__all__ = ["MAX_SEQUENCE_LENGTH", "chat_prompts", "encode_prompt_zimage"]
