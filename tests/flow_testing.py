"""Test helpers for the rectified-flow pipelines: record what a transformer is called with, small images, and the
runs the SD3 and FLUX translator tests share (the differential run against diffusers' pipeline, the same-prompt
round trip, a bad input refused before compute)."""

from __future__ import annotations

import contextlib

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

SOURCE, TARGET = "a photo of a red circle", "a photo of a blue square"


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


def differential_calls(ours_class, stock_class, components: dict, **stock_guidance):
    """The transformer calls of our translator (NFE 3, tau 0.5, t0 0.1, 64 px, 16 T5 tokens) and of diffusers'
    ``stock_class`` on the same ``components`` at our flow levels, as CFG with prompt=TARGET, negative_prompt=SOURCE
    (``stock_guidance``: the stock pipeline's guidance arguments). Returns ``(mine, theirs)``."""
    ours = ours_class(**components)
    with recorded_calls(components["transformer"]) as mine:
        out = ours(
            shapes_image(),
            SOURCE,
            TARGET,
            num_inference_steps=3,
            tau=0.5,
            t0=0.1,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
    assert out.nfe == len(mine) == 3
    levels = ours.scheduler.flow_levels.tolist()
    stock = stock_class(**{**components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0)})
    with recorded_calls(components["transformer"]) as theirs:
        stock(
            prompt=TARGET,
            negative_prompt=SOURCE,
            **stock_guidance,
            height=64,
            width=64,
            sigmas=levels,
            max_sequence_length=16,
            num_inference_steps=len(levels),
            output_type="latent",
        )
    return mine, theirs


def same_prompt_errors(pipe, image, reference) -> tuple[float, float]:
    """Max |output - reference| of a same-prompt translation (tau 1e-8, NFE 4) started near the source (t0 0.002)
    and far from it (t0 0.5)."""
    kw = {
        "num_inference_steps": 4,
        "tau": 1e-8,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "np",
        "max_sequence_length": 8,
    }
    near = pipe(image, SOURCE, SOURCE, t0=0.002, **kw).images
    far = pipe(image, SOURCE, SOURCE, t0=0.5, **kw).images
    return np.abs(near - reference).max(), np.abs(far - reference).max()


def refused(pipe, match, **call):
    """``pipe`` called with ``call`` over a valid default call raises a ValueError matching ``match`` before any
    transformer call."""
    with (
        recorded_calls(pipe.transformer) as calls,
        pytest.raises(ValueError, match=match),
    ):
        pipe(
            **{
                "image": shapes_image(),
                "source_prompt": SOURCE,
                "target_prompt": TARGET,
                "num_inference_steps": 2,
                "max_sequence_length": 8,
                **call,
            }
        )
    assert calls == []
