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


#: The tiny UNet's sizes (the mini SD's UNet, lsb.models.mini_sd, at toy widths: cross-attention 16).
TINY_UNET = dict(
    block_out_channels=(8, 16),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16,
    attention_head_dim=2,
    norm_num_groups=4,
)


def tiny_unet(**overrides):
    """A random UNet2DConditionModel of ``tiny_components`` (latents 4 x 8 x 8) from the current torch seed;
    ``overrides`` change its config (e.g. ``in_channels``, ``out_channels``)."""
    from lsb.models import mini_sd

    return mini_sd.build_unet(**{**TINY_UNET, **overrides})


def tiny_vae(block_out_channels=(4, 4, 8, 8), sample_size: int = 64, scaling_factor: float = 0.18215, **overrides):
    """A random AutoencoderKL: the mini SD's VAE (lsb.models.mini_sd) at toy widths (norm groups of 2), one
    encoder / decoder block per entry of ``block_out_channels``, from the current torch seed; SD 1.x's
    ``scaling_factor`` unless given; ``overrides`` change the rest of its config (e.g. ``shift_factor``)."""
    from lsb.models import mini_sd

    n = len(block_out_channels)
    return mini_sd.build_vae(
        block_out_channels=list(block_out_channels),
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        norm_num_groups=2,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
        **overrides,
    )


def tiny_components(prediction_type: str = "epsilon", seed: int = 0):
    """vae / text_encoder / tokenizer / unet / scheduler with SD 1.x's classes at toy size (64 px images)."""
    from diffusers import PNDMScheduler
    from lsb.models import mini_sd

    tok = mini_sd.build_tokenizer()
    torch.manual_seed(seed)
    unet = tiny_unet()
    torch.manual_seed(seed)
    vae = tiny_vae()
    torch.manual_seed(seed)
    te = mini_sd.build_text_encoder(
        tok, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, projection_dim=16
    )
    cfg = dict(mini_sd.SCHEDULER_CONFIG)
    cfg["prediction_type"] = prediction_type
    sched = PNDMScheduler.from_config(cfg)
    return {"vae": vae, "text_encoder": te, "tokenizer": tok, "unet": unet, "scheduler": sched}


def smoke_translate(pipe, image):
    """One translation "a circle" -> "a square" at NFE 2 (guidance 3, seed 0, output_type "pt") under
    ``torch.inference_mode``: the run the tests make on the real architectures (random weights)."""
    with torch.inference_mode():
        return pipe(
            image,
            "a circle",
            "a square",
            num_inference_steps=2,
            guidance_scale=3.0,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )


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
