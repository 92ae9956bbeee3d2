"""Prompt handling shared by the translation pipelines (LSB, DDIB): text or learned tokens -> embeddings.

Learned domain tokens are ordinary textual-inversion tokens (``pipe.load_textual_inversion``); a prompt
that names a ``<token>`` the tokenizer does not know is an error here, not a silent character-level
encoding of the angle brackets.
"""

from __future__ import annotations

import re

import torch

_TOKEN_RE = re.compile(r"<[^<>\s]+>")


class UnknownTokenError(ValueError):
    """A prompt names a placeholder token that has not been loaded."""


def check_prompt_tokens(tokenizer, prompt: str | list[str], what: str = "prompt") -> None:
    """Raise if ``prompt`` contains ``<token>`` placeholders missing from ``tokenizer``'s vocabulary."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    for p in prompts:
        for tok in _TOKEN_RE.findall(p):
            if tok not in vocab and tok not in specials:
                raise UnknownTokenError(
                    f"{what} {p!r} uses the token {tok}, which this pipeline's tokenizer does not know; "
                    f"load its learned embedding first (pipe.load_textual_inversion(path, token={tok!r})) "
                    f"or pass a learned_embeds.safetensors file where a prompt is expected")


@torch.no_grad()
def encode_text(pipe, prompt: str | list[str], device, num_images_per_prompt: int = 1,
                clip_skip: int | None = None) -> torch.Tensor:
    """Encode prompt(s) with the pipeline's tokenizer and text encoder, as StableDiffusionPipeline does."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    check_prompt_tokens(pipe.tokenizer, prompts)
    if hasattr(pipe, "maybe_convert_prompt"):
        prompts = pipe.maybe_convert_prompt(prompts, pipe.tokenizer)  # multi-vector TI tokens
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    mask = ids.attention_mask.to(device) if getattr(pipe.text_encoder.config, "use_attention_mask", False) else None
    if clip_skip is None:
        emb = pipe.text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]
    else:
        out = pipe.text_encoder(ids.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
        emb = pipe.text_encoder.text_model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])
    emb = emb.to(dtype=pipe.text_encoder.dtype, device=device)
    return emb.repeat_interleave(num_images_per_prompt, dim=0)


def broadcast_embeds(emb: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Repeat a (1, L, D) or (B, L, D) embedding to the image batch size."""
    if emb.ndim != 3:
        raise ValueError(f"{name} must be (batch, tokens, dim), got shape {tuple(emb.shape)}")
    if emb.shape[0] == batch:
        return emb
    if emb.shape[0] == 1:
        return emb.expand(batch, -1, -1)
    raise ValueError(f"{name} has batch {emb.shape[0]} but there are {batch} images")
