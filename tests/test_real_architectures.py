"""The LSB pipeline on the real SD 1.5 and SD 2.1 architectures (random weights, tiny 16 x 16 latents).

These exercise the real code paths (CLIP ViT-L / OpenCLIP ViT-H text encoders, the 860M-parameter
UNets, SD's VAE, epsilon and v-prediction) without downloading weights. The text encoders keep their
architecture but use the project's offline tokenizer (vocabulary size adjusted). Marked slow: each
case builds ~1.1-1.3 B parameters on the CPU.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

import lsb
from tests.conftest import smoke_translate

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"real SD configs not found at {CONFIGS}"),
]


def _real_pipeline(family: str):
    from lsb.models.random_sd import build_components

    pipe = lsb.LatentSchrodingerBridgePipeline(**build_components(CONFIGS, family))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("family,prediction", [("sd15", "epsilon"), ("sd21", "v_prediction")])
def test_lsb_on_real_architecture(family, prediction):
    pipe = _real_pipeline(family)
    try:
        assert pipe.scheduler.config.prediction_type == prediction
        assert pipe.vae_scale_factor == 8
        calls = []
        orig = pipe.unet.forward
        pipe.unet.forward = lambda sample, *a, **k: (calls.append(sample.shape[0]), orig(sample, *a, **k))[1]
        out = smoke_translate(pipe, torch.rand(3, 128, 128))
        assert out.images.shape == (1, 3, 128, 128)
        assert torch.isfinite(out.images).all()
        assert calls == [2, 2]  # NFE 2: two batched calls on [source; target]
    finally:
        del pipe
        gc.collect()
