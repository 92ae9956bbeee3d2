"""LatentSchrodingerBridgeFluxPipeline on tiny models of FLUX.1's real classes (offline), differential against
diffusers' FluxPipeline (dev-like with the guidance embedding, schnell-like without), packed latents, the bad-input
list of issue 17, and the real FLUX.1 transformer configs on the meta device."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline

import lsb
from lsb.helpers.flux import latent_image_ids, pack_latents, unpack_latents
from lsb.models.random_flow import (
    build_real_transformer,
    tiny_flux_components,
    tiny_sd3_components,
)
from tests.flow_testing import SOURCE, TARGET, differential_calls, max_diff, recorded_calls
from tests.flow_testing import refused, same_prompt_errors, shapes_image

CONFIGS = Path(os.environ.get("LSB_CONFIGS", "/work/shared/configs"))


def lsb_flux(guidance_embeds=True, **overrides):
    return lsb.LatentSchrodingerBridgeFluxPipeline(
        **{**tiny_flux_components(guidance_embeds=guidance_embeds), **overrides}
    )


# ---------------------------------------------------------------- differential: what the transformer receives
@pytest.mark.parametrize("guidance_embeds", [True, False], ids=["dev", "schnell"])
def test_transformer_inputs_equal_flux_pipeline(guidance_embeds):
    """encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids and guidance of our batched
    [source; target] call equal FluxPipeline's two true-CFG calls (prompt=target, negative_prompt=source) at the same
    sigmas and size."""
    mine, theirs = differential_calls(
        lsb.LatentSchrodingerBridgeFluxPipeline,
        FluxPipeline,
        tiny_flux_components(guidance_embeds=guidance_embeds),
        true_cfg_scale=2.0,
        guidance_scale=3.5,
    )
    assert len(theirs) == 2 * len(mine)  # FluxPipeline: positive (target) call, then negative (source) call
    diffs = {}
    for i, a in enumerate(mine):
        target, source = theirs[2 * i], theirs[2 * i + 1]
        for key in ("encoder_hidden_states", "pooled_projections", "timestep"):
            both = torch.cat([source[key], target[key]])
            diffs[key] = max(diffs.get(key, 0.0), max_diff(a[key], both))
        for key in ("img_ids", "txt_ids"):
            diffs[key] = max(
                diffs.get(key, 0.0),
                max_diff(a[key], target[key]),
                max_diff(a[key], source[key]),
            )
            assert a[key].dtype == target[key].dtype
        if guidance_embeds:
            both = torch.cat([source["guidance"], target["guidance"]])
            diffs["guidance"] = max(diffs.get("guidance", 0.0), max_diff(a["guidance"], both))
            assert a["guidance"].dtype == both.dtype
        else:
            assert a["guidance"] is None and target["guidance"] is None
        assert a["hidden_states"].shape[1:] == target["hidden_states"].shape[1:]
    print(f"FLUX differential ({'dev' if guidance_embeds else 'schnell'}) max |ours - diffusers|: {diffs}")
    assert all(v < 1e-6 for k, v in diffs.items() if k != "timestep") and diffs["timestep"] < 1e-6
    assert max_diff(mine[0]["encoder_hidden_states"][1:], theirs[1]["encoder_hidden_states"]) > 1e-3  # can fail


def test_packing_matches_diffusers_and_round_trips():
    x = torch.randn(2, 4, 6, 8)
    tokens = pack_latents(x)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 2, 4, 6, 8))
    assert torch.equal(unpack_latents(tokens, 6, 8), x)
    assert torch.equal(
        latent_image_ids(6, 8),
        FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32),
    )
    # patch (row 1, col 2) holds latent pixels rows 2-3, cols 4-5, channel-major
    assert torch.equal(tokens[0, 1 * 4 + 2].reshape(4, 2, 2), x[0, :, 2:4, 4:6])


def test_same_prompt_tiny_tau_returns_the_vae_round_trip():
    pipe = lsb_flux()
    image = shapes_image()
    pixels = pipe.preprocess_images(image)
    latents = pipe.encode_image(pixels)
    vae = pipe.vae
    expected = (vae.encode(pixels).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor
    assert max_diff(latents, expected) < 1e-6  # shift_factor honoured
    round_trip = pipe.decode_latents(latents, output_type="np")
    err_near, err_far = same_prompt_errors(pipe, image, round_trip)
    assert err_near < 0.02, err_near
    assert err_far > 5 * err_near


def test_call_contract_packed_state_trajectory_and_latent_output():
    pipe = lsb_flux(guidance_embeds=False)
    seen = []
    with recorded_calls(pipe.transformer) as calls:
        out = pipe(
            [shapes_image(), shapes_image(seed=1)],
            SOURCE,
            TARGET,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            return_trajectory=True,
            output_type="latent",
            max_sequence_length=8,
            callback_on_step_end=lambda p, i, t, d: seen.append(d["latents"].shape),
            callback_on_step_end_tensor_inputs=["latents"],
        )
    assert out.nfe == len(calls) == 3 and all(c["hidden_states"].shape == (4, 16, 16) for c in calls)
    assert out.images.shape == (2, 4, 8, 8) and out.trajectory[-1]["x_t"].shape == (
        2,
        4,
        8,
        8,
    )
    assert seen == [torch.Size([2, 16, 16])] * 3  # the callback sees the packed state
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    a, b = (
        pipe(
            [shapes_image(), shapes_image(seed=1)],
            SOURCE,
            TARGET,
            num_inference_steps=2,
            noise=given,
            output_type="latent",
            max_sequence_length=8,
        ).images
        for given in (noise, pack_latents(noise))  # unpacked or packed noise: the same run
    )
    assert torch.equal(a, b)


def test_distilled_guidance_reaches_the_transformer():
    pipe = lsb_flux()
    with recorded_calls(pipe.transformer) as calls:
        pipe(
            shapes_image(),
            SOURCE,
            TARGET,
            num_inference_steps=2,
            distilled_guidance_scale=5.5,
            max_sequence_length=8,
            output_type="latent",
        )
    assert torch.equal(calls[0]["guidance"], torch.full((2,), 5.5))


def test_custom_pipeline_loading(tmp_path):
    from diffusers import DiffusionPipeline

    FluxPipeline(**tiny_flux_components()).save_pretrained(tmp_path / "flux")
    plain = lsb.LatentSchrodingerBridgeFluxPipeline.from_pretrained(tmp_path / "flux")
    custom = DiffusionPipeline.from_pretrained(
        tmp_path / "flux",
        custom_pipeline=lsb.pipeline_dir("lsb_flux"),
        trust_remote_code=True,
    )
    assert type(custom).__name__ == "LatentSchrodingerBridgeFluxPipeline" and custom.scheduler.base == "flow"
    kw = {"num_inference_steps": 2, "output_type": "pt", "max_sequence_length": 8}
    a = plain(shapes_image(), SOURCE, TARGET, generator=torch.Generator().manual_seed(0), **kw).images
    b = custom(shapes_image(), SOURCE, TARGET, generator=torch.Generator().manual_seed(0), **kw).images
    assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- bad input: ValueError before any transformer call
def test_bad_inputs_are_refused_before_compute():
    schnell = lsb_flux(guidance_embeds=False)
    refused(schnell, "no guidance embedding.*schnell", distilled_guidance_scale=3.5)
    dev = lsb_flux()
    refused(dev, "not a multiple of 16 px", image=shapes_image(72))
    refused(dev, "beyond the T5 encoder's limit of 512", max_sequence_length=513)
    refused(dev, "distilled_guidance_scale must be", distilled_guidance_scale=float("nan"))
    refused(
        dev,
        r"\(batch, 16\)",
        source_prompt=None,
        source_prompt_embeds=torch.zeros(1, 8, 32),
        source_pooled_prompt_embeds=torch.zeros(1, 24),
    )
    refused(
        dev,
        "source_prompt_2.*not with",
        source_prompt=None,
        source_prompt_2="red",
        source_prompt_embeds=torch.zeros(1, 8, 32),
        source_pooled_prompt_embeds=torch.zeros(1, 16),
    )
    no_t5 = lsb_flux(text_encoder_2=None)
    refused(no_t5, "no text_encoder_2")


def test_wrong_components_are_refused_naming_both(tiny_sd_dir, tmp_path):
    from lsb.models.mini_sd import build_scheduler

    with pytest.raises(ValueError, match="VP diffusion scheduler.*LatentSchrodingerBridgePipeline"):
        lsb_flux(scheduler=build_scheduler())
    with pytest.raises(ValueError, match="SD3Transformer2DModel.*LatentSchrodingerBridgeSD3Pipeline"):
        lsb_flux(transformer=tiny_sd3_components()["transformer"])
    with pytest.raises(ValueError, match="UNet2DConditionModel.*LatentSchrodingerBridgePipeline"):
        lsb.LatentSchrodingerBridgeFluxPipeline.from_pretrained(tiny_sd_dir)
    FluxPipeline(**tiny_flux_components()).save_pretrained(tmp_path / "flux")
    with pytest.raises(ValueError, match="FluxTransformer2DModel.*LatentSchrodingerBridgeFluxPipeline"):
        lsb.LatentSchrodingerBridgePipeline.from_pretrained(tmp_path / "flux")
    with pytest.raises(ValueError, match="FluxTransformer2DModel.*LatentSchrodingerBridgeFluxPipeline"):
        lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(tmp_path / "flux")


# ---------------------------------------------------------------- the real FLUX.1 architectures (meta: no memory, no compute)
@pytest.mark.parametrize("family", ["flux-dev", "flux-schnell"])
def test_real_flux_configs_pass_our_checks_on_the_meta_device(family):
    transformer = build_real_transformer(CONFIGS, family, device="meta")
    assert sum(p.numel() for p in transformer.parameters()) > 11.8e9
    comps = tiny_flux_components()
    pipe = lsb.LatentSchrodingerBridgeFluxPipeline(**{**comps, "transformer": transformer})
    cfg = transformer.config
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.in_channels) == (
        4096,
        768,
        64,
    )
    embeds = {
        "source_prompt_embeds": torch.zeros(1, 512, 4096),
        "target_prompt_embeds": torch.zeros(1, 512, 4096),
        "source_pooled_prompt_embeds": torch.zeros(1, 768),
        "target_pooled_prompt_embeds": torch.zeros(1, 768),
    }
    args = dict(
        image=shapes_image(),
        source_prompt=None,
        target_prompt=None,
        source_prompt_2=None,
        target_prompt_2=None,
        **embeds,
        num_inference_steps=8,
        tau=None,
        t0=None,
        max_sequence_length=512,
        callback_on_step_end_tensor_inputs=None,
    )
    pipe.check_inputs(**args, distilled_guidance_scale=None)  # accepted
    if family == "flux-dev":
        pipe.check_inputs(**args, distilled_guidance_scale=3.5)
    else:
        with pytest.raises(ValueError, match="no guidance embedding"):
            pipe.check_inputs(**args, distilled_guidance_scale=3.5)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 4096\)"):
        pipe.check_inputs(
            **{**args, "source_prompt_embeds": torch.zeros(1, 512, 32)},
            distilled_guidance_scale=None,
        )
