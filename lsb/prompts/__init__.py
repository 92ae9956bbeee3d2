"""Prompt components: tokens, templates, text encoding per model family, learned-domain files."""
