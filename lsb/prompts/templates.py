"""Prompt templates for learning a domain token, and how to tell the embedded model's tokenizer apart."""

from __future__ import annotations

from typing import Sequence

from .tokens import PromptOptimizationError

#: The 27 textual-inversion templates of the LSB code (``textual_inversion.py``), for real SD models.
PAPER_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)
#: The embedded mini model only ever saw captions like "a circle" / "a red circle on a white background".
MINI_TEMPLATES = ("a {}",)
TEMPLATE_PRESETS = {"paper": PAPER_TEMPLATES, "mini": MINI_TEMPLATES}

#: A tokenizer smaller than this is the mini model's word-level tokenizer (CLIP's has 49408 entries).
MINI_VOCAB_LIMIT = 1000


def is_mini_tokenizer(tokenizer) -> bool:
    """True for the embedded mini model's word-level tokenizer (tiny vocabulary)."""
    return len(tokenizer) < MINI_VOCAB_LIMIT


def resolve_templates(templates: str | Sequence[str] | None, tokenizer=None) -> tuple[str, ...]:
    """Template list from a preset name ("paper", "mini"), one template, a list, or None (automatic).

    None picks "mini" for the mini model's tokenizer and "paper" otherwise. The first template is
    also the prompt the domain is used with at translation time (``lsb_prompt`` in the file).
    """
    if templates is None:
        templates = "mini" if tokenizer is not None and is_mini_tokenizer(tokenizer) else "paper"
    if isinstance(templates, str):
        if templates in TEMPLATE_PRESETS:
            return TEMPLATE_PRESETS[templates]
        if "{}" not in templates:
            raise PromptOptimizationError(
                f"templates={templates!r} is neither a preset ({', '.join(TEMPLATE_PRESETS)}) nor a template with {{}}"
            )
        templates = [templates]
    out = tuple(templates)
    if not out:
        raise PromptOptimizationError("templates is empty")
    bad = [t for t in out if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise PromptOptimizationError(f"every template needs exactly one {{}} for the token; these do not: {bad}")
    return out
