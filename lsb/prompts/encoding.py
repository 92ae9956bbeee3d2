"""Text encoding for SD 1.x/2.x-style pipelines: prompt(s) -> CLIP hidden states, batched to the images."""

from __future__ import annotations

import torch

from .tokens import as_prompt_list, check_prompt_tokens, tokenize_padded


@torch.no_grad()
def encode_text(
    pipe, prompt: str | list[str], device, num_images_per_prompt: int = 1, clip_skip: int | None = None
) -> torch.Tensor:
    """Encode prompt(s) with the pipeline's tokenizer and text encoder, as StableDiffusionPipeline does."""
    prompts = as_prompt_list(prompt)
    check_prompt_tokens(pipe.tokenizer, prompts)
    if hasattr(pipe, "maybe_convert_prompt"):
        prompts = pipe.maybe_convert_prompt(prompts, pipe.tokenizer)  # multi-vector TI tokens
    ids = tokenize_padded(pipe.tokenizer, prompts, pipe.tokenizer.model_max_length)
    mask = ids.attention_mask.to(device) if getattr(pipe.text_encoder.config, "use_attention_mask", False) else None
    if clip_skip is None:
        emb = pipe.text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]
    else:
        out = pipe.text_encoder(ids.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
        emb = pipe.text_encoder.text_model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])
    emb = emb.to(dtype=pipe.text_encoder.dtype, device=device)
    return emb.repeat_interleave(num_images_per_prompt, dim=0)


def broadcast_batch(emb: torch.Tensor, batch: int, name: str, axes: tuple[str, ...]) -> torch.Tensor:
    """Repeat an embedding of batch 1 (or already ``batch``) to the image batch size; ``axes`` names its dimensions,
    e.g. ``("batch", "dim")``, and ``emb`` must have that many."""
    if emb.ndim != len(axes):
        raise ValueError(f"{name} must be ({', '.join(axes)}), got shape {tuple(emb.shape)}")
    if emb.shape[0] == batch:
        return emb
    if emb.shape[0] == 1:
        return emb.expand(batch, *([-1] * (emb.ndim - 1)))
    raise ValueError(f"{name} has batch {emb.shape[0]} but there are {batch} images")


def broadcast_embeds(emb: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Repeat a (1, L, D) or (B, L, D) embedding to the image batch size."""
    return broadcast_batch(emb, batch, name, ("batch", "tokens", "dim"))
