"""Shared fixtures: tiny random Stable-Diffusion-architecture pipelines that build offline in a second."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: fail fast, never hang
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

# Tiny models run fastest single-threaded (and do not fight a background job for cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_custom_pipeline_module():
    """diffusers imports every local custom pipeline.py as `diffusers_modules.local.pipeline`; drop the
    cached module around each test so loading the LSB and the DDIB pipeline in one process works."""
    import sys

    def drop():
        for name in [m for m in sys.modules if m.startswith("diffusers_modules.local")]:
            del sys.modules[name]

    drop()
    yield
    drop()


def tiny_components(prediction_type: str = "epsilon", seed: int = 0):
    """vae / text_encoder / tokenizer / unet / scheduler with SD 1.x's classes at toy size (64 px images)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from lsb.models import mini_sd

    tok = mini_sd.build_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[4, 4, 8, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    torch.manual_seed(seed)
    te = mini_sd.build_text_encoder(
        tok, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, projection_dim=16
    )
    cfg = dict(mini_sd.SCHEDULER_CONFIG)
    cfg["prediction_type"] = prediction_type
    sched = PNDMScheduler.from_config(cfg)
    return {"vae": vae, "text_encoder": te, "tokenizer": tok, "unet": unet, "scheduler": sched}


@pytest.fixture
def tiny_sd_components():
    return tiny_components()


@pytest.fixture
def tiny_sd_dir(tmp_path):
    """A saved tiny StableDiffusionPipeline folder (the layout of a real SD checkpoint)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    path = tmp_path / "tiny-sd"
    pipe.save_pretrained(path)
    return path
