"""The embedded mini SD3 (lsb.MINI_SD3): stock loading, its frozen parts, the training convention, `lsb train mini-sd3`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lsb
from lsb.models import mini_sd3

shipped = pytest.mark.skipif(not (Path(lsb.MINI_SD3) / "model_index.json").is_file(), reason="mini SD3 not installed")
TINY = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8, "caption_projection_dim": 16}


@shipped
def test_shipped_folder_loads_with_stock_pipeline_and_draws_64px():
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(lsb.MINI_SD3)  # no arguments, no dtype
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.vae.config.shift_factor == 0.0 and pipe.text_encoder_3 is not None
    assert {
        m.dtype for m in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
    } == {torch.float32}
    pipe.set_progress_bar_config(disable=True)
    img = pipe(
        "a red circle on a white background",
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()
    size = sum(p.stat().st_size for p in Path(lsb.MINI_SD3).rglob("*") if p.is_file())
    assert size < 25e6, f"{size / 1e6:.1f} MB"
    assert max(p.stat().st_size for p in Path(lsb.MINI_SD3).rglob("*")) < 8 * 2**20  # repository file limit


@shipped
def test_shipped_vae_shift_factor_through_sd3_encode_and_decode():
    """SD3's decode ((z / scaling) + shift) and img2img encode ((z - shift) * scaling) work with shift_factor 0: the
    pipeline's latent output decodes like the mini SD's VAE, and a light img2img pass keeps a rendered scene."""
    from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline
    from lsb.data import shapes
    from lsb.metrics.reader import read_scene

    pipe = StableDiffusion3Pipeline.from_pretrained(lsb.MINI_SD3)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a blue square on a gray background", num_inference_steps=3, generator=None)
    lat = pipe(**{**kw, "generator": torch.Generator().manual_seed(0)}, output_type="latent").images
    img = pipe(**{**kw, "generator": torch.Generator().manual_seed(0)}, output_type="pt").images
    with torch.no_grad():
        ref = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    torch.testing.assert_close(img, (ref / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=1e-5)

    i2i = StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
    scene = shapes.scenes("test", 1)[0]
    out = i2i(
        scene.caption,
        image=shapes.render(scene),
        strength=0.2,
        num_inference_steps=10,
        guidance_scale=3.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    r = read_scene((out * 255).round().astype(np.uint8))
    assert (r.shape, r.colour, r.background) == (scene.shape, scene.colour, scene.background)


def _components():
    return mini_sd3.components_from_mini_sd(lsb.MINI_SD)


def test_text_encoders_carry_the_mini_sd_features_and_t5_is_silent():
    """text_encoder's penultimate state is the mini SD encoder's last layer, its pooled projection the mini SD's
    pooled output; the T5 stream is zeros, so images are the same with text_encoder_3=None."""
    from transformers import CLIPTextModel

    c = _components()
    clip = CLIPTextModel.from_pretrained(Path(lsb.MINI_SD) / "text_encoder", dtype=torch.float32)
    ids = c["tokenizer"](
        ["a red circle on a white background", ""], padding="max_length", return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        ref = clip(ids, output_hidden_states=True)
        one = c["text_encoder"](ids, output_hidden_states=True)
        two = c["text_encoder_2"](ids, output_hidden_states=True)
    torch.testing.assert_close(one.hidden_states[-2], ref.hidden_states[-1])
    torch.testing.assert_close(one.text_embeds, ref.pooler_output)
    torch.testing.assert_close(two.hidden_states[-2], ref.hidden_states[-2])
    assert not torch.allclose(one.hidden_states[-2], two.hidden_states[-2])

    pipe = mini_sd3.build_pipeline(mini_sd3.build_transformer(**TINY), c)
    pipe.set_progress_bar_config(disable=True)
    embeds, _, pooled, _ = pipe.encode_prompt("a blue square", None, None, do_classifier_free_guidance=False)
    assert embeds.shape == (1, mini_sd3.CLIP_MAX_LENGTH + mini_sd3.T5_SEQUENCE_LENGTH, 256) and pooled.shape == (1, 256)
    assert embeds[:, mini_sd3.CLIP_MAX_LENGTH :].abs().max() == 0
    kw = dict(num_inference_steps=2, output_type="np", height=64, width=64)
    a = pipe("a blue square", generator=torch.Generator().manual_seed(1), **kw).images
    pipe.text_encoder_3, pipe.tokenizer_3 = None, None
    b = pipe("a blue square", generator=torch.Generator().manual_seed(1), **kw).images
    np.testing.assert_array_equal(a, b)


def test_repeated_token_attention_equals_the_full_sequence():
    """One T5 token weighed as K (the training shortcut) against the stock processor on K copies; K +- 1 differs."""
    torch.manual_seed(0)
    tr = mini_sd3.build_transformer(**TINY).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([250.0, 800.0])
    clip_part, t5_token = torch.randn(2, 5, 256), torch.randn(2, 1, 256)
    pooled = torch.randn(2, 256)
    K = 37
    with torch.no_grad():
        full = tr(x, torch.cat([clip_part, t5_token.expand(-1, K, -1)], 1), pooled, t).sample
        mini_sd3.set_repeated_token_attention(tr, K)
        short = tr(x, torch.cat([clip_part, t5_token], 1), pooled, t).sample
        mini_sd3.set_repeated_token_attention(tr, K + 1)
        wrong = tr(x, torch.cat([clip_part, t5_token], 1), pooled, t).sample
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
    assert (wrong - full).abs().max() > 1e-4
    with pytest.raises(ValueError, match="repeats"):
        mini_sd3.RepeatedTokenJointAttnProcessor(0)


def test_flow_convention_matches_the_shipped_scheduler():
    """The training target e - x at timestep 1000 s is what the pipeline's Euler scheduler integrates: with the exact
    velocity of a straight path, stepping from s_0 lands on x (and passes through (1 - s) x + s e)."""
    sched = mini_sd3.build_scheduler()
    sched.set_timesteps(5)
    torch.testing.assert_close(sched.timesteps, sched.sigmas[:-1] * 1000)
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    s0 = float(sched.sigmas[0])
    z = (1 - s0) * x + s0 * e
    for i, t in enumerate(sched.timesteps):
        z = sched.step(e - x, t, z).prev_sample
        s = float(sched.sigmas[i + 1])
        torch.testing.assert_close(z, (1 - s) * x + s * e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, x, atol=1e-5, rtol=1e-5)


def test_task_batch_and_loss(tmp_path):
    """The loss the task computes: the model sees z = (1 - s) x + s e at 1000 s and regresses e - x (an oracle
    that returns e - x has loss 0); captions are encoded as the pipeline encodes them."""
    from lsb.data import shapes
    from lsb.training.mini_sd3 import MiniSD3Task

    scenes = shapes.scenes("train", 4)
    latents = torch.randn(4, 4, 8, 8)
    task = MiniSD3Task(_components(), latents, scenes, batch_size=5, transformer=mini_sd3.build_transformer(**TINY))
    b = task.batch(np.random.default_rng(0), 0, torch.device("cpu"))
    seen = {}

    class Oracle(torch.nn.Module):
        def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, return_dict=True):
            seen.update(z=hidden_states, t=timestep)
            return (b["noise"] - b["x"],)

    task.wrapped_modules = {"transformer": Oracle()}
    loss, _ = task.loss(b, 0)
    assert float(loss) == 0.0
    s = b["s"].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["z"], (1 - s) * b["x"] + s * b["noise"])
    torch.testing.assert_close(seen["t"], b["s"] * 1000)
    assert ((b["s"] > 0) & (b["s"] < 1)).all()
    embeds, _, pooled, _ = task.pipeline().encode_prompt(["a circle"], None, None, do_classifier_free_guidance=False)
    ctx, pool = task.captions["a circle"]
    torch.testing.assert_close(ctx, embeds[0, : ctx.shape[0]])
    torch.testing.assert_close(pool, pooled[0])
    assert ctx.shape[0] == mini_sd3.CLIP_MAX_LENGTH + 1 and "" in task.captions
    with pytest.raises(ValueError, match="batch_size"):
        MiniSD3Task(_components(), latents, scenes, batch_size=0, transformer=mini_sd3.build_transformer(**TINY))
    with pytest.raises(ValueError, match="logit_normal_fraction"):
        MiniSD3Task(
            _components(), latents, scenes, logit_normal_fraction=1.5, transformer=mini_sd3.build_transformer(**TINY)
        )


def test_logit_normal_share_of_the_timesteps():
    """s is logit-normal(0, 1) for the given share, uniform otherwise: P(s < 0.1) is the mixture's (Monte Carlo)."""
    from lsb.data import shapes
    from lsb.training.mini_sd3 import MiniSD3Task

    task = MiniSD3Task(
        _components(),
        torch.zeros(2, 4, 8, 8),
        shapes.scenes("train", 2),
        batch_size=4000,
        transformer=mini_sd3.build_transformer(**TINY),
        logit_normal_fraction=0.7,
    )
    s = task.batch(np.random.default_rng(3), 0, torch.device("cpu"))["s"].numpy()
    phi = 0.5 * (1 + math.erf(math.log(0.1 / 0.9) / math.sqrt(2)))  # P(sigmoid(N(0,1)) < 0.1)
    expected = 0.7 * phi + 0.3 * 0.1
    assert abs(np.mean(s < 0.1) - expected) < 4 * math.sqrt(expected * (1 - expected) / len(s))


def test_cli_train_smoke_and_resume(tmp_path, capsys):
    from diffusers import StableDiffusion3Pipeline
    from lsb.surfaces.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "mini-sd3",
        "--out",
        str(out),
        "--batch",
        "4",
        "--cached-scenes",
        "16",
        "--transformer-config",
        json.dumps(TINY),
    ]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4"]) == 0
    assert "resumed mini-sd3" in capsys.readouterr().out
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in runs] == [2, 4]
    pipe = StableDiffusion3Pipeline.from_pretrained(out / "final")
    assert pipe.transformer.config.num_layers == 2 and pipe.transformer.dtype == torch.float32
    # the shipped (stock) attention processor, not the training one
    assert {type(p).__name__ for p in pipe.transformer.attn_processors.values()} == {"JointAttnProcessor2_0"}
