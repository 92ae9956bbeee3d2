"""Measurements of pictures of the shapes world (WORLD.md), with no learned parts."""

from lsb.metrics.reader import (
    Reading,
    attribute_accuracy,
    centre_error,
    matches,
    read_batch,
    read_scene,
    translation_success,
)

__all__ = [
    "Reading",
    "attribute_accuracy",
    "centre_error",
    "matches",
    "read_batch",
    "read_scene",
    "translation_success",
]
