"""Test helpers for the rectified-flow pipelines: record what a transformer is called with, and small images."""

from __future__ import annotations

import contextlib

import numpy as np
import PIL.Image
import torch


@contextlib.contextmanager
def recorded_calls(module: torch.nn.Module):
    """Record every forward call of ``module`` as a dict of its keyword arguments (tensors detached, cloned)."""
    calls: list[dict] = []

    def hook(_module, args, kwargs):
        entry = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        if args:
            entry["args"] = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
        calls.append(entry)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max absolute difference of two tensors of the same shape (an AssertionError when the shapes differ)."""
    assert tuple(a.shape) == tuple(b.shape), f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item()


def shapes_image(size: int = 64, seed: int = 0) -> PIL.Image.Image:
    """A smooth random RGB picture of ``size`` x ``size`` (a test input with structure, deterministic)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    return PIL.Image.fromarray(small).resize((size, size), PIL.Image.BILINEAR)
