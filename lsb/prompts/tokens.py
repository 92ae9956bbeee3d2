"""Prompt handling shared by the translation pipelines (LSB, DDIB): text or learned tokens -> embeddings.

Learned domain tokens are ordinary textual-inversion tokens (``pipe.load_textual_inversion``); a prompt
that names a ``<token>`` the tokenizer does not know is an error here, not a silent character-level
encoding of the angle brackets.
"""

from __future__ import annotations

import re

import torch

_TOKEN_RE = re.compile(r"<[^<>\s]+>")


def as_prompt_list(prompt: str | list[str]) -> list[str]:
    """``prompt`` (one string or several) as a list of strings."""
    return [prompt] if isinstance(prompt, str) else list(prompt)


def tokenize_padded(tokenizer, prompts: list[str], max_length: int, **kwargs):
    """``tokenizer``'s encoding of ``prompts`` padded and truncated to ``max_length`` tokens, as PyTorch tensors (how
    diffusers' pipelines tokenize a prompt); ``kwargs`` go to the tokenizer call."""
    return tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt", **kwargs
    )


class UnknownTokenError(ValueError):
    """A prompt names a placeholder token that has not been loaded."""


def check_prompt_tokens(tokenizer, prompt: str | list[str], what: str = "prompt") -> None:
    """Raise if ``prompt`` contains ``<token>`` placeholders missing from ``tokenizer``'s vocabulary."""
    prompts = as_prompt_list(prompt)
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    for p in prompts:
        for tok in _TOKEN_RE.findall(p):
            if tok not in vocab and tok not in specials:
                raise UnknownTokenError(
                    f"{what} {p!r} uses the token {tok}, which this pipeline's tokenizer does not know; "
                    f"load its learned embedding first (pipe.load_textual_inversion(path, token={tok!r})) "
                    f"or pass a learned_embeds.safetensors file where a prompt is expected"
                )


class PromptOptimizationError(ValueError):
    """Settings that cannot work (a token that exists, an initializer that is not one token, ...)."""


def placeholder_tokens(token: str, num_vectors: int = 1) -> list[str]:
    """``[token, token_1, ..., token_{n-1}]``: the names diffusers gives a multi-vector embedding's rows."""
    if num_vectors < 1:
        raise PromptOptimizationError(f"num_vectors must be >= 1, got {num_vectors}")
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def add_placeholder_tokens(
    tokenizer,
    text_encoder,
    token: str,
    num_vectors: int = 1,
    initializer_token: str = "a",
    multi_token_initializer: bool = False,
) -> list[int]:
    """Add ``token`` (and ``token_1``... for ``num_vectors`` > 1) to ``tokenizer`` and ``text_encoder``.

    The new embedding rows start as copies of ``initializer_token``'s row. Raises
    :class:`PromptOptimizationError` if a token already exists (or would shadow an existing word) or
    the initializer is not exactly one token -- unless ``multi_token_initializer``: then the rows start as the
    mean of the initializer's token rows (a second encoder whose tokenizer splits the word, e.g. a
    character-level T5). Returns the new token ids.
    """
    if not token or any(c.isspace() for c in token):
        raise PromptOptimizationError(f"token {token!r} must be one non-empty word without spaces, e.g. '<circle>'")
    names = placeholder_tokens(token, num_vectors)
    init_ids = tokenizer.encode(initializer_token, add_special_tokens=False)
    if len(init_ids) != 1 and not (multi_token_initializer and init_ids):
        raise PromptOptimizationError(
            f"initializer_token {initializer_token!r} is {len(init_ids)} tokens for this tokenizer "
            f"({tokenizer.convert_ids_to_tokens(init_ids)}); pick a word that is exactly one token"
        )
    vocab = tokenizer.get_vocab()
    for name in names:
        if name in vocab:
            raise PromptOptimizationError(
                f"token {name!r} already exists in the tokenizer vocabulary; choose a new name such as '<my-domain>'"
            )
        ids = tokenizer.encode(name, add_special_tokens=False)
        if len(ids) == 1:
            raise PromptOptimizationError(
                f"token {name!r} is already the word {tokenizer.convert_ids_to_tokens(ids)[0]!r} of this tokenizer; "
                f"learning it would change every prompt that uses the word. Use a new name such as '<{name}>'"
            )
    if tokenizer.add_tokens(names) != len(names):
        raise PromptOptimizationError(f"the tokenizer refused to add {names}")
    new_ids = tokenizer.convert_tokens_to_ids(names)
    for name, i in zip(names, new_ids):
        # e.g. CLIP lower-cases text, so "<Circle>" could never be typed back: catch that here.
        if tokenizer.encode(name, add_special_tokens=False) != [i]:
            raise PromptOptimizationError(
                f"token {name!r} does not encode back to itself with this tokenizer "
                f"(got {tokenizer.tokenize(name)}); use lower case and no special characters inside"
            )
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    if max(new_ids) >= rows:  # grow only: existing rows keep their values
        text_encoder.resize_token_embeddings(max(new_ids) + 1, mean_resizing=False)
    with torch.no_grad():
        w = text_encoder.get_input_embeddings().weight
        w[new_ids] = w[init_ids].mean(0).clone()  # one row: that row itself
    return new_ids
