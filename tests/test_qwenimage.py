"""Qwen-Image as an lsb family (lsb.families.qwenimage): the transformer's inputs equal QwenImagePipeline's (hook
tests on tiny random models of the real classes), the family's call with true CFG and norm rescale reproduces
QwenImagePipeline's sampling, the latents_mean / std normalisation, LSB / FlowEdit / SDEdit through the translators
and the CLI, the real transformer config on the meta device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

from lsb.families import FAMILIES, detect_family, pixel_multiple, qwenimage
from lsb.helpers.flowedit import flow_timesteps
from lsb.helpers.qwenimage import decode_qwen_latents, encode_qwen_latents
from lsb.models.random_zimage import build_real_qwenimage_transformer, tiny_qwenimage_components
from lsb_pipelines.lsb_qwenimage.pipeline import LatentSchrodingerBridgeQwenImagePipeline
from tests.cli_helpers import translate_argv
from tests.flow_testing import max_diff, recorded_calls, shapes_image

CONFIGS = Path(os.environ.get("LSB_CONFIGS", Path(__file__).resolve().parents[2] / "shared" / "configs"))
SOURCE, TARGET = "a photo of a red circle", "a blue square"  # different token counts: the mask matters


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwenimage") / "tiny-qwenimage"
    QwenImagePipeline(**tiny_qwenimage_components(0)).save_pretrained(folder)
    return folder


def test_lsb_transformer_inputs_equal_qwenimage_pipeline():
    """Our batched [source; target] call against QwenImagePipeline's true-CFG calls (prompt=target,
    negative_prompt=source) at the same sigmas: each side's embeddings equal diffusers' (0) with the shorter side
    zero-padded and masked, timesteps equal up to one float32 ulp (3e-8), img_shapes equal, no guidance, and the
    packed hidden states equal (0) when diffusers starts from our first state."""
    comps = tiny_qwenimage_components(0)
    ours = LatentSchrodingerBridgeQwenImagePipeline(**comps)
    kw = dict(num_inference_steps=3, tau=0.5, t0=0.1, generator=torch.Generator().manual_seed(0), output_type="np")
    with recorded_calls(comps["transformer"]) as mine:
        out = ours(shapes_image(), SOURCE, TARGET, **kw)
    assert out.nfe == len(mine) == 3 and np.isfinite(out.images).all()
    levels = ours.scheduler.flow_levels.tolist()
    stock = QwenImagePipeline(**{**comps, "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0)})
    with recorded_calls(comps["transformer"]) as theirs:
        stock(
            prompt=TARGET, negative_prompt=SOURCE, true_cfg_scale=2.0, height=64, width=64, sigmas=levels,
            num_inference_steps=len(levels), output_type="latent", latents=mine[0]["hidden_states"][:1].clone(),
        )  # fmt: skip
    assert len(theirs) == 2 * len(mine)
    for i, a in enumerate(mine):
        pos, neg = theirs[2 * i], theirs[2 * i + 1]
        assert pos["encoder_hidden_states_mask"] is None and neg["encoder_hidden_states_mask"] is None
        n_src, n_tgt = neg["encoder_hidden_states"].shape[1], pos["encoder_hidden_states"].shape[1]
        assert n_src != n_tgt
        embeds, mask = a["encoder_hidden_states"], a["encoder_hidden_states_mask"]
        assert max_diff(embeds[0, :n_src], neg["encoder_hidden_states"][0]) == 0.0
        assert max_diff(embeds[1, :n_tgt], pos["encoder_hidden_states"][0]) == 0.0
        assert mask[0].sum() == n_src and mask[1].sum() == n_tgt and not embeds[mask == 0].any()
        assert max_diff(a["timestep"], torch.cat([neg["timestep"], pos["timestep"]])) <= 3e-8
        assert a["img_shapes"] == pos["img_shapes"] * 2 == [[(1, 4, 4)]] * 2 and a["guidance"] is None
    assert max_diff(mine[0]["hidden_states"][:1], theirs[0]["hidden_states"]) == 0.0


def test_padded_and_masked_text_gives_the_unpadded_prediction():
    """The shorter side zero-padded and masked in the batched call predicts what diffusers' unpadded call does
    (float noise: the attention runs over a longer, masked sequence)."""
    comps = tiny_qwenimage_components(0)
    pipe = QwenImagePipeline(**comps)
    short, _ = pipe.encode_prompt(TARGET)
    long, _ = pipe.encode_prompt(SOURCE)
    x = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    pad = long.shape[1] - short.shape[1]
    mask = torch.cat([torch.ones(1, short.shape[1]), torch.zeros(1, pad)], dim=1).long()
    padded = qwenimage.condition(torch.nn.functional.pad(short, (0, 0, 0, pad)), mask, 8, 8)
    alone = qwenimage.condition(short, None, 8, 8)
    t = torch.tensor(500.0)
    diff = max_diff(
        qwenimage.network_call(comps["transformer"], x, t, padded),
        qwenimage.network_call(comps["transformer"], x, t, alone),
    )
    assert diff < 1e-5


def test_network_call_and_true_cfg_reproduce_qwenimage_sampling():
    """The family's call, its true CFG with the per-token norm rescale, stepped over QwenImagePipeline's grid
    (linspace sigmas, exponential dynamic shift from the token count), gives QwenImagePipeline's latents (0)."""
    comps = tiny_qwenimage_components(1)
    pipe = QwenImagePipeline(**comps)
    noise = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(3))
    ref = pipe(
        prompt=TARGET, negative_prompt=SOURCE, true_cfg_scale=3.0, height=64, width=64, num_inference_steps=3,
        latents=noise.clone(), output_type="latent",
    ).images  # fmt: skip
    pos, _ = pipe.encode_prompt(TARGET)
    neg, _ = pipe.encode_prompt(SOURCE)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    flow_timesteps(scheduler, 3, "cpu", 16, "qwenimage")
    x = noise.clone()
    for t in scheduler.timesteps:
        v_pos = qwenimage.network_call(comps["transformer"], x, t, qwenimage.condition(pos, None, 8, 8))
        v_neg = qwenimage.network_call(comps["transformer"], x, t, qwenimage.condition(neg, None, 8, 8))
        x = scheduler.step(qwenimage.true_cfg(v_pos, v_neg, 3.0), t, x).prev_sample
    assert max_diff(x, ref) == 0.0


def test_latents_are_normalised_with_the_vae_statistics():
    comps = tiny_qwenimage_components(0)
    pipe = LatentSchrodingerBridgeQwenImagePipeline(**comps)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    raw = comps["vae"].encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0]
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1)
    std = torch.tensor([1.5, 2.0, 0.8, 1.2]).view(1, 4, 1, 1)
    latents = encode_qwen_latents(pipe, pixels, "cpu")
    assert latents.shape == (1, 4, 8, 8) and max_diff(latents, (raw - mean) / std) < 1e-6
    image = decode_qwen_latents(pipe, latents, "pt")
    decoded = comps["vae"].decode((latents * std + mean).unsqueeze(2)).sample[:, :, 0]
    assert max_diff(image, pipe.image_processor.postprocess(decoded, output_type="pt")) < 1e-6


@pytest.mark.parametrize("method,per_call", [("lsb", 2), ("flowedit", 4), ("sdedit", 2)])
def test_translators_on_a_qwenimage_folder(qwen_dir, method, per_call):
    from lsb.surfaces.translators import load_translator, translate

    assert detect_family(str(qwen_dir)) is FAMILIES["qwenimage"]
    pipe = load_translator(method, str(qwen_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pixel_multiple(pipe) == 16
    images, nfe, passes = translate(
        method, pipe, [shapes_image()], SOURCE, TARGET, nfe=2, generator=[torch.Generator().manual_seed(0)],
        output_type="np", return_forward_passes=True,
    )  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert nfe == 2 and passes == per_call * 2


def test_bad_size_is_refused_before_the_transformer(qwen_dir):
    from lsb.surfaces.translators import load_translator

    pipe = load_translator("lsb", str(qwen_dir), device="cpu")
    with recorded_calls(pipe.transformer) as calls, pytest.raises(ValueError, match="not a multiple of 16 px"):
        pipe(shapes_image(72), SOURCE, TARGET, num_inference_steps=2)
    assert calls == []


@pytest.mark.parametrize("method", ["lsb", "flowedit"])
def test_cli_translates_with_a_qwenimage_folder(qwen_dir, tmp_path, capsys, method):
    from lsb.surfaces.cli import main

    shapes_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = translate_argv(tmp_path / "a.png", model=qwen_dir, method=method, nfe=2, size=64, device="cpu", out=out)
    assert main(argv) == 0 and (out / "a.png").is_file()
    passes = 4 if method == "lsb" else 8  # FlowEdit: true CFG on both branches by default (4 latents per call)
    assert f"NFE 2 per image, {passes} forward passes" in capsys.readouterr().out


@pytest.mark.skipif(not (CONFIGS / "qwen-image").is_dir(), reason=f"real configs not found at {CONFIGS}")
def test_real_qwenimage_transformer_on_meta():
    count = sum(p.numel() for p in build_real_qwenimage_transformer(CONFIGS).parameters())
    assert round(count / 1e6, 2) == 20430.40  # published: 20B (configs/README.md)
