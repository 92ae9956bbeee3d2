"""Model families: one record per family (SD 1.x/2.x, SDXL, SD3 / SD3.5, FLUX.1) with its facts and the one call
that drives its network; the registry that tells which family a model is. See :mod:`lsb.families.record`."""

from .record import EncoderSlot, ModelFamily
from .registry import (
    EMBEDDED_MODELS,
    FAMILIES,
    UnsupportedModelError,
    detect_family,
    embedded_path,
    family_of,
    family_of_index,
    get_family,
    native_resolution,
    pixel_multiple,
    read_model_index,
    supported_labels,
)

__all__ = [
    "EMBEDDED_MODELS",
    "FAMILIES",
    "EncoderSlot",
    "ModelFamily",
    "UnsupportedModelError",
    "detect_family",
    "embedded_path",
    "family_of",
    "family_of_index",
    "get_family",
    "native_resolution",
    "pixel_multiple",
    "read_model_index",
    "supported_labels",
]
