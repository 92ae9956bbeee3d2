"""LatentSchrodingerBridgeSD3Pipeline on tiny models of SD3's real classes (offline), differential against diffusers'
StableDiffusion3Pipeline, the bad-input list of issue 17, and (slow) the real SD3-medium transformer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

import lsb
from lsb.models.random_flow import (
    build_clip_encoder,
    build_t5_tokenizer,
    tiny_flux_components,
    tiny_sd3_components,
)
from tests.flow_testing import SOURCE, TARGET, differential_calls, max_diff, recorded_calls
from tests.flow_testing import refused, same_prompt_errors, shapes_image

CONFIGS = Path(os.environ.get("LSB_CONFIGS", Path(__file__).resolve().parents[2] / "shared" / "configs"))
if not CONFIGS.is_dir():
    CONFIGS = Path("/work/shared/configs")


def lsb_sd3(**overrides):
    return lsb.LatentSchrodingerBridgeSD3Pipeline(**{**tiny_sd3_components(), **overrides})


# ---------------------------------------------------------------- differential: what the transformer receives
@pytest.mark.parametrize("t5", [True, False], ids=["t5", "no-t5"])
def test_transformer_inputs_equal_stable_diffusion_3(t5):
    """encoder_hidden_states, pooled_projections and timestep of our batched [source; target] call equal those of
    StableDiffusion3Pipeline's CFG call [negative=source; prompt=target] at the same sigmas and size."""
    mine, theirs = differential_calls(
        lsb.LatentSchrodingerBridgeSD3Pipeline,
        StableDiffusion3Pipeline,
        tiny_sd3_components(t5=t5),
        guidance_scale=5.0,
    )
    assert len(theirs) == len(mine)
    diffs = {}
    for a, b in zip(mine, theirs):
        for key in ("encoder_hidden_states", "pooled_projections", "timestep"):
            diffs[key] = max(diffs.get(key, 0.0), max_diff(a[key], b[key]))
        assert a["hidden_states"].shape == b["hidden_states"].shape
        assert a["encoder_hidden_states"].dtype == b["encoder_hidden_states"].dtype
    print(f"SD3 differential (t5={t5}) max |ours - diffusers|: {diffs}")
    assert diffs["encoder_hidden_states"] < 1e-6 and diffs["pooled_projections"] < 1e-6
    assert diffs["timestep"] < 1e-3  # 0-1000 scale, float32
    # the check can fail: the same hook sees a different prompt
    assert max_diff(mine[0]["encoder_hidden_states"][1:], theirs[0]["encoder_hidden_states"][:1]) > 1e-3


def test_encode_prompt_equals_diffusers_with_clip_skip_and_prompt_2_3():
    comps = tiny_sd3_components()
    ours = lsb.LatentSchrodingerBridgeSD3Pipeline(**comps)
    stock = StableDiffusion3Pipeline(**comps)
    kwargs = {
        "prompt": [SOURCE, TARGET],
        "prompt_2": ["red", "blue"],
        "prompt_3": ["circle", "square on white"],
        "clip_skip": 1,
        "max_sequence_length": 8,
    }
    embeds, pooled = ours.encode_prompt(**kwargs)
    ref, _, ref_pooled, _ = stock.encode_prompt(**kwargs, do_classifier_free_guidance=False)
    assert max_diff(embeds, ref) < 1e-5 and max_diff(pooled, ref_pooled) < 1e-5
    no_skip, _ = ours.encode_prompt(**{**kwargs, "clip_skip": None})
    assert max_diff(no_skip, embeds) > 1e-4


def test_latents_honour_shift_factor():
    pipe = lsb_sd3()
    pixels = pipe.preprocess_images(shapes_image())
    vae = pipe.vae
    expected = (vae.encode(pixels).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor
    latents = pipe.encode_image(pixels)
    assert vae.config.shift_factor != 0 and max_diff(latents, expected) < 1e-6
    decoded = pipe.decode_latents(latents, output_type="pt")
    ref = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    assert max_diff(decoded, (ref / 2 + 0.5).clamp(0, 1)) < 1e-6


# ---------------------------------------------------------------- behaviour
def test_same_prompt_tiny_tau_returns_the_vae_round_trip():
    pipe = lsb_sd3()
    image = shapes_image()
    pixels = pipe.preprocess_images(image)
    round_trip = pipe.decode_latents(pipe.encode_image(pixels), output_type="np")
    err_near, err_far = same_prompt_errors(pipe, image, round_trip)
    assert err_near < 0.02, err_near
    assert err_far > 5 * err_near  # the check can fail: starting far from the source does not return it


def test_call_contract_nfe_trajectory_callback_and_seed():
    pipe = lsb_sd3()
    image = shapes_image()
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, float(t), sorted(tensors)))
        return {"latents": tensors["latents"]}

    with recorded_calls(pipe.transformer) as calls:
        out = pipe(
            [image, image],
            SOURCE,
            TARGET,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(1),
            return_trajectory=True,
            output_type="pt",
            max_sequence_length=8,
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=[
                "latents",
                "target_pooled_prompt_embeds",
            ],
        )
    assert out.nfe == 3 and len(calls) == 3 and len(out.trajectory) == 3
    assert all(c["hidden_states"].shape[0] == 4 for c in calls)  # one batched call: 2 images x [source; target]
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == [
        "latents",
        "target_pooled_prompt_embeds",
    ]
    assert out.images.shape == (2, 3, 64, 64)
    assert set(out.trajectory[0]) == {"t", "timestep", "x_t", "source", "target"}
    again, other = (
        pipe(
            image,
            SOURCE,
            TARGET,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            max_sequence_length=8,
        ).images
        for seed in (1, 2)
    )
    assert torch.allclose(again[0], out.images[0], atol=1e-5) and not torch.allclose(other, again, atol=1e-3)


def test_embeds_instead_of_prompts_give_the_same_result():
    pipe = lsb_sd3()
    kw = {
        "num_inference_steps": 2,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "pt",
        "max_sequence_length": 8,
    }
    src, src_pooled = pipe.encode_prompt(SOURCE, max_sequence_length=8)
    tgt, tgt_pooled = pipe.encode_prompt(TARGET, max_sequence_length=8)
    a = pipe(shapes_image(), SOURCE, TARGET, **kw).images
    kw["generator"] = torch.Generator().manual_seed(0)
    b = pipe(
        shapes_image(),
        source_prompt_embeds=src,
        source_pooled_prompt_embeds=src_pooled,
        target_prompt_embeds=tgt,
        target_pooled_prompt_embeds=tgt_pooled,
        **kw,
    ).images
    assert torch.allclose(a, b, atol=1e-6)


def test_folder_without_t5_loads_plainly_and_as_custom_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    comps = tiny_sd3_components(t5=False)
    StableDiffusion3Pipeline(**comps).save_pretrained(tmp_path / "sd3")
    pipe = lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(tmp_path / "sd3")  # no text_encoder_3=None needed
    assert pipe.text_encoder_3 is None and pipe.scheduler.base == "flow"
    custom = DiffusionPipeline.from_pretrained(
        tmp_path / "sd3",
        custom_pipeline=lsb.pipeline_dir("lsb_sd3"),
        trust_remote_code=True,
    )
    assert type(custom).__name__ == "LatentSchrodingerBridgeSD3Pipeline"
    a, b = (
        p(
            shapes_image(),
            SOURCE,
            TARGET,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            max_sequence_length=8,
        ).images
        for p in (pipe, custom)
    )
    assert torch.allclose(a, b, atol=1e-6)


def test_folder_with_t5_round_trips(tmp_path):
    pipe = lsb_sd3()
    pipe.save_pretrained(tmp_path / "lsb-sd3")
    again = lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(tmp_path / "lsb-sd3")
    assert type(again.text_encoder_3).__name__ == "T5EncoderModel"
    e1, _ = pipe.encode_prompt(TARGET, max_sequence_length=8)
    e2, _ = again.encode_prompt(TARGET, max_sequence_length=8)
    assert torch.equal(e1, e2)


# ---------------------------------------------------------------- bad input: ValueError before any transformer call
def test_bad_inputs_are_refused_before_compute():
    pipe = lsb_sd3()
    refused(pipe, "multiple of 16", image=shapes_image(72))
    refused(pipe, "beyond the T5 encoder's limit of 512", max_sequence_length=600)
    refused(
        pipe,
        "source_pooled_prompt_embeds",
        source_prompt=None,
        source_prompt_embeds=torch.zeros(1, 85, 48),
    )
    refused(
        pipe,
        r"\(batch, tokens, 48\)",
        source_prompt=None,
        source_prompt_embeds=torch.zeros(1, 85, 32),
        source_pooled_prompt_embeds=torch.zeros(1, 40),
    )
    refused(pipe, "position table", image=shapes_image(512))
    refused(pipe, "tau", tau=-1.0)
    no_t5 = lsb_sd3(text_encoder_3=None, tokenizer_3=None)
    refused(no_t5, "no T5 encoder", target_prompt_3="a blue square")
    no_clip = lsb_sd3(text_encoder_2=None)
    refused(no_clip, "text_encoder_2")
    short_t5 = lsb_sd3(tokenizer_3=build_t5_tokenizer(model_max_length=64))
    refused(short_t5, "limit of 64", max_sequence_length=100)


def test_t5_limit_comes_from_the_tokenizer_too():
    from lsb.prompts.encoding_sd3 import check_max_sequence_length

    assert check_max_sequence_length(512, build_t5_tokenizer(model_max_length=512)) == 512
    with pytest.raises(ValueError, match="limit of 64"):
        check_max_sequence_length(65, build_t5_tokenizer(model_max_length=64))
    with pytest.raises(ValueError, match="positive integer"):
        check_max_sequence_length(0)


def test_wrong_components_are_refused_naming_both():
    from lsb.models.mini_sd import build_scheduler

    with pytest.raises(ValueError, match="VP diffusion scheduler.*LatentSchrodingerBridgePipeline"):
        lsb_sd3(scheduler=build_scheduler())
    with pytest.raises(ValueError, match="FluxTransformer2DModel.*LatentSchrodingerBridgeFluxPipeline"):
        lsb_sd3(transformer=tiny_flux_components()["transformer"])
    with pytest.raises(ValueError, match="T5.*go together"):
        lsb_sd3(tokenizer_3=None)
    vae = tiny_sd3_components()["vae"]
    vae.register_to_config(shift_factor=None)
    with pytest.raises(ValueError, match="shift_factor"):
        lsb_sd3(vae=vae)


def test_vp_folder_and_vp_pipeline_refuse_the_other_base(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="UNet2DConditionModel.*LatentSchrodingerBridgePipeline"):
        lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(tiny_sd_dir)
    comps = tiny_sd3_components()
    with pytest.raises(
        ValueError,
        match="SD3Transformer2DModel.*rectified-flow.*LatentSchrodingerBridgeSD3Pipeline",
    ):
        lsb.LatentSchrodingerBridgePipeline(
            vae=comps["vae"],
            text_encoder=build_clip_encoder(comps["tokenizer"], 16, None),
            tokenizer=comps["tokenizer"],
            unet=comps["transformer"],
            scheduler=comps["scheduler"],
        )
    StableDiffusion3Pipeline(**comps).save_pretrained(tmp_path / "sd3")
    with pytest.raises(ValueError, match="SD3Transformer2DModel.*LatentSchrodingerBridgeSD3Pipeline"):
        lsb.LatentSchrodingerBridgePipeline.from_pretrained(tmp_path / "sd3")


def test_scheduler_is_the_flow_base_lsb_scheduler():
    pipe = lsb_sd3()
    assert isinstance(pipe.scheduler, lsb.LSBScheduler) and pipe.scheduler.base == "flow"
    pipe.scheduler.set_timesteps(4, t0=0.2, tau=1.0)
    s = pipe.scheduler.flow_levels
    sigma = (1.0 * pipe.scheduler.bridge_times * (1 - pipe.scheduler.bridge_times)).sqrt()
    assert torch.allclose(s, sigma / (1 + sigma)) and torch.allclose(pipe.scheduler.timesteps.double(), 1000 * s)


@pytest.mark.skipif(
    not (Path(lsb.MINI_SD3) / "model_index.json").is_file(),
    reason="lsb.MINI_SD3 not shipped yet",
)
def test_mini_sd3_translates_a_shapes_scene():
    from lsb.data.shapes import caption, render, scenes
    from lsb.metrics.reader import read_scene, translation_success

    pipe = lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(lsb.MINI_SD3)
    sources = scenes("test", 4, shape="circle")
    out = pipe(
        [render(s) for s in sources],
        [caption(s) for s in sources],
        [caption(s.replace(shape="square")) for s in sources],
        num_inference_steps=8,
        generator=torch.Generator().manual_seed(0),
    )
    ok = [translation_success(read_scene(im), s, "square") for im, s in zip(out.images, sources)]
    assert sum(ok) >= 2, ok


# ---------------------------------------------------------------- the real architectures
@pytest.mark.slow
def test_real_sd3_medium_transformer_translates_once():
    """The SD3-medium transformer of the real config (2.03B parameters, random weights, bf16) through the pipeline at
    the smallest size the patching takes (32 px -> 4x4 latents -> 2x2 patches), NFE 2, T5 absent (zero padding to
    joint_attention_dim 4096); CLIP stand-ins with the real output widths (768 / 1280 -> pooled 2048)."""
    from diffusers import AutoencoderKL

    from lsb.models import mini_sd
    from lsb.models.random_flow import build_real_transformer, load_flow_config

    start = time.perf_counter()
    transformer = build_real_transformer(CONFIGS, "sd3-medium", dtype=torch.bfloat16)
    assert sum(p.numel() for p in transformer.parameters()) > 2.0e9
    tok = mini_sd.build_tokenizer(max_length=77)
    vae = AutoencoderKL(**load_flow_config(CONFIGS, "sd3-medium", "vae")).to(torch.bfloat16)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(load_flow_config(CONFIGS, "sd3-medium", "scheduler"))
    pipe = lsb.LatentSchrodingerBridgeSD3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        tokenizer=tok,
        tokenizer_2=tok,
        text_encoder=build_clip_encoder(tok, 64, 768).to(torch.bfloat16),
        text_encoder_2=build_clip_encoder(tok, 64, 1280, seed=1).to(torch.bfloat16),
    )
    built = time.perf_counter()
    with recorded_calls(transformer) as calls:
        out = pipe(
            shapes_image(32),
            SOURCE,
            TARGET,
            num_inference_steps=2,
            max_sequence_length=8,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
    done = time.perf_counter()
    print(
        f"real SD3-medium transformer (bf16), NFE 2 at 32 px: build {built - start:.1f} s, "
        f"translate {done - built:.1f} s"
    )
    assert len(calls) == 2 and calls[0]["encoder_hidden_states"].shape == (
        2,
        77 + 8,
        4096,
    )
    assert calls[0]["pooled_projections"].shape == (2, 2048) and calls[0]["hidden_states"].shape == (2, 16, 4, 4)
    assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()


@pytest.mark.parametrize("family", ["sd3-medium", "sd35-medium", "sd35-large"])
def test_real_sd3_configs_pass_our_checks_on_the_meta_device(family):
    """The real SD3 / SD3.5 transformers (meta device: no memory, no compute) are accepted by the pipeline's checks:
    embedding widths 4096 / 2048, 16-channel latents, and the position table's size limit."""
    from lsb.models.random_flow import build_real_transformer

    transformer = build_real_transformer(CONFIGS, family, device="meta")
    pipe = lsb.LatentSchrodingerBridgeSD3Pipeline(**{**tiny_sd3_components(), "transformer": transformer})
    cfg = transformer.config
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.in_channels) == (
        4096,
        2048,
        16,
    )
    embeds = {
        "source_prompt_embeds": torch.zeros(1, 77 + 256, 4096),
        "target_prompt_embeds": torch.zeros(1, 77 + 256, 4096),
        "source_pooled_prompt_embeds": torch.zeros(1, 2048),
        "target_pooled_prompt_embeds": torch.zeros(1, 2048),
    }
    args = {
        "image": shapes_image(),
        "source_prompt": None,
        "target_prompt": None,
        "source_prompt_2": None,
        "target_prompt_2": None,
        "source_prompt_3": None,
        "target_prompt_3": None,
        **embeds,
        "num_inference_steps": 8,
        "tau": None,
        "t0": None,
        "max_sequence_length": 256,
        "callback_on_step_end_tensor_inputs": None,
    }
    pipe.check_inputs(**args)  # accepted
    with pytest.raises(ValueError, match=r"\(batch, 2048\)"):
        pipe.check_inputs(**{**args, "source_pooled_prompt_embeds": torch.zeros(1, 40)})
    limit_px = cfg.pos_embed_max_size * 16  # 16 px per patch (VAE 8 x patch 2)
    pipe.preprocess_images(shapes_image(min(limit_px, 1024)))
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        pipe.preprocess_images(torch.zeros(1, 3, 16, limit_px + 16))


def test_vp_pipeline_refuses_a_flow_scheduler(tiny_sd_components):
    with pytest.raises(ValueError, match="VP diffusion scheduler.*FlowMatchEulerDiscreteScheduler.*SD3Pipeline"):
        lsb.LatentSchrodingerBridgePipeline(
            **{**tiny_sd_components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}
        )
