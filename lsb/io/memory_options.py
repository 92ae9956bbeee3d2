"""The names of the memory options (``--offload``, ``--quantize``), without importing torch: the CLI's ``--help``
reads them. What they do is :mod:`lsb.helpers.memory`."""

from __future__ import annotations

#: what ``--offload`` accepts
OFFLOAD_MODES = ("none", "model", "sequential")

#: what ``--quantize`` accepts: name -> (torchao config class, one-line description)
QUANTIZE_TYPES = {
    "int8": ("Int8WeightOnlyConfig", "int8 weight-only (torchao; any device)"),
    "float8": ("Float8WeightOnlyConfig", "float8 weight-only (torchao; CUDA GPUs of compute capability 8.9+)"),
}

__all__ = ["OFFLOAD_MODES", "QUANTIZE_TYPES"]
