"""Text encoding for Qwen-Image: the last hidden states of Qwen2.5-VL over a fixed describing template.

The numbers are those of ``diffusers.QwenImagePipeline.encode_prompt`` for one prompt side: each prompt is placed
in the template (a system turn asking to describe the image, the user turn, the assistant prompt), the texts are
tokenized together (padded to the longest, at most ``1024 + DROP_IDX`` tokens), encoded, and each prompt keeps its
real tokens of ``hidden_states[-1]`` minus the first ``DROP_IDX`` (the template's system part with the real
tokenizer), re-padded with zeros to the longest; the mask marks the real tokens and is None when all are real.
"""

from __future__ import annotations

import torch

from .encoding_sd3 import prompt_list
from .tokens import check_prompt_tokens

TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
#: template tokens dropped from the front (diffusers' ``prompt_template_encode_start_idx``)
DROP_IDX = 34
#: QwenImagePipeline's tokenizer limit and default max_sequence_length
TOKENIZER_MAX_LENGTH = 1024


def encode_prompt_qwenimage(text_encoder, tokenizer, prompt, device=None, max_sequence_length: int = 512):
    """``(prompt_embeds (B, L, D), mask (B, L) or None)`` of ``prompt`` (a string or a list)."""
    if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int):
        raise ValueError(f"max_sequence_length must be an integer, got {max_sequence_length!r}")
    if not 1 <= max_sequence_length <= TOKENIZER_MAX_LENGTH:
        raise ValueError(f"max_sequence_length must lie in 1..{TOKENIZER_MAX_LENGTH}, got {max_sequence_length}")
    prompts = prompt_list(prompt, "prompt")
    check_prompt_tokens(tokenizer, prompts)
    device = device if device is not None else text_encoder.device
    tokens = tokenizer(
        [TEMPLATE.format(p) for p in prompts],
        max_length=TOKENIZER_MAX_LENGTH + DROP_IDX,
        padding=True,
        truncation=True,
        return_tensors="pt",
    ).to(device)
    hidden = text_encoder(
        input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True
    ).hidden_states[-1]
    real = tokens.attention_mask.bool()
    parts = [h[m][DROP_IDX:] for h, m in zip(hidden, real)]
    longest = max(p.shape[0] for p in parts)
    embeds = torch.stack([torch.cat([p, p.new_zeros(longest - p.shape[0], p.shape[1])]) for p in parts])
    mask = torch.stack(
        [
            torch.cat(
                [
                    torch.ones(p.shape[0], dtype=torch.long, device=device),
                    torch.zeros(longest - p.shape[0], dtype=torch.long, device=device),
                ]
            )
            for p in parts
        ]
    )
    embeds = embeds.to(dtype=text_encoder.dtype)[:, :max_sequence_length]
    mask = mask[:, :max_sequence_length]
    return embeds, (None if mask.all() else mask)


__all__ = ["DROP_IDX", "TEMPLATE", "TOKENIZER_MAX_LENGTH", "encode_prompt_qwenimage"]
