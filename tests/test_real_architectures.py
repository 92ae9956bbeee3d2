"""The LSB pipeline on the real SD 1.5 and SD 2.1 architectures (random weights, tiny 16 x 16 latents).

These exercise the real code paths (CLIP ViT-L / OpenCLIP ViT-H text encoders, the 860M-parameter
UNets, SD's VAE, epsilon and v-prediction) without downloading weights. The text encoders keep their
architecture but use the project's offline tokenizer (vocabulary size adjusted). Marked slow: each
case builds ~1.1-1.3 B parameters on the CPU.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

import lsb

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"real SD configs not found at {CONFIGS}")]


def _load(name: str, family: str) -> dict:
    return json.loads((CONFIGS / family / f"{name}.json").read_text())


def _real_pipeline(family: str):
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lsb.models import mini_sd

    tok = mini_sd.build_tokenizer(max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_load("unet", family))
    vae = AutoencoderKL(**_load("vae", family))
    tcfg = _load("text_encoder", family)
    tcfg.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    te = CLIPTextModel(CLIPTextConfig(**tcfg))
    scfg = _load("scheduler", family)
    sched = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}[scfg["_class_name"]].from_config(scfg)
    pipe = lsb.LatentSchrodingerBridgePipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched)
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
        image = torch.rand(3, 128, 128)
        with torch.inference_mode():
            out = pipe(image, "a circle", "a square", num_inference_steps=2, guidance_scale=3.0, output_type="pt",
                       generator=torch.Generator().manual_seed(0))
        assert out.images.shape == (1, 3, 128, 128)
        assert torch.isfinite(out.images).all()
        assert calls == [2, 2]  # NFE 2: two batched calls on [source; target]
    finally:
        del pipe
        gc.collect()
