"""FLUX.2 (klein and dev) as an lsb family (lsb.families.flux2): the transformer's inputs equal Flux2KleinPipeline's
and Flux2Pipeline's (hook tests on tiny random models of the real classes), the family's call with CFG reproduces
klein's sampling (grid with the step-dependent mu), the BatchNorm latent normalisation equals diffusers', LSB /
FlowEdit through the translators and the CLI, the guidance refusals, dev's processor dependency, the real transformer
configs on the meta device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Pipeline

from lsb.families import FAMILIES, detect_family, flux2, pixel_multiple
from lsb.helpers.flowedit import flow_timesteps
from lsb.helpers.flux2 import encode_flux2_latents, from_tokens, to_tokens
from lsb.models.random_zimage import (
    build_real_flux2_transformer,
    tiny_flux2_dev_components,
    tiny_flux2_klein_components,
)
from lsb_pipelines.flowedit_flux2.pipeline import FlowEditFlux2Pipeline
from lsb_pipelines.lsb_flux2.pipeline import LatentSchrodingerBridgeFlux2Pipeline
from tests.cli_helpers import translate_argv
from tests.flow_testing import max_diff, recorded_calls, shapes_image

CONFIGS = Path(os.environ.get("LSB_CONFIGS", Path(__file__).resolve().parents[2] / "shared" / "configs"))
SOURCE, TARGET = "a photo of a red circle", "a blue square"


@pytest.fixture(scope="module")
def klein_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux2") / "tiny-klein"
    Flux2KleinPipeline(**tiny_flux2_klein_components(0), is_distilled=False).save_pretrained(folder)
    return folder


def test_lsb_transformer_inputs_equal_flux2_klein_pipeline():
    """Our batched [source; target] call against Flux2KleinPipeline's CFG calls (prompt=target, negative=source
    embeddings) at the same sigmas: embeddings, text / image ids (int64) equal (0), no guidance, timesteps up to one
    float32 ulp (3e-8), hidden states equal (0) when diffusers starts from our first state."""
    comps = tiny_flux2_klein_components(0)
    ours = LatentSchrodingerBridgeFlux2Pipeline(**comps)
    kw = dict(num_inference_steps=3, tau=0.5, t0=0.1, max_sequence_length=32, output_type="np")
    with recorded_calls(comps["transformer"]) as mine:
        out = ours(shapes_image(), SOURCE, TARGET, generator=torch.Generator().manual_seed(0), **kw)
    assert out.nfe == len(mine) == 3 and np.isfinite(out.images).all()
    levels = ours.scheduler.flow_levels.tolist()
    stock = Flux2KleinPipeline(**{**comps, "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0)}, is_distilled=False)
    negative = stock.encode_prompt(SOURCE, max_sequence_length=32)[0]
    first = from_tokens(mine[0]["hidden_states"][:1], 4, 4)
    with recorded_calls(comps["transformer"]) as theirs:
        stock(
            prompt=TARGET, negative_prompt_embeds=negative, guidance_scale=2.0, height=64, width=64, sigmas=levels,
            num_inference_steps=len(levels), max_sequence_length=32, output_type="latent", latents=first.clone(),
        )  # fmt: skip
    assert len(theirs) == 2 * len(mine)
    for i, a in enumerate(mine):
        pos, neg = theirs[2 * i], theirs[2 * i + 1]
        for key in ("encoder_hidden_states", "txt_ids", "img_ids"):
            both = torch.cat([neg[key], pos[key]])
            assert max_diff(a[key], both) == 0.0 and a[key].dtype == both.dtype, key
        assert max_diff(a["timestep"], torch.cat([neg["timestep"], pos["timestep"]])) <= 3e-8
        assert a["guidance"] is None and pos["guidance"] is None
    assert max_diff(mine[0]["hidden_states"][:1], theirs[0]["hidden_states"]) == 0.0


def test_network_call_with_cfg_reproduces_flux2_klein_sampling():
    """The family's call with klein's CFG (neg + s (pos - neg), negative ""), stepped over Flux2KleinPipeline's grid
    (linspace sigmas, mu = compute_empirical_mu(tokens, T)), gives its latents exactly (0)."""
    comps = tiny_flux2_klein_components(1)
    pipe = Flux2KleinPipeline(**comps, is_distilled=False)
    noise = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    ref = pipe(
        prompt=TARGET, guidance_scale=3.0, height=64, width=64, num_inference_steps=3, latents=noise.clone(),
        max_sequence_length=32, output_type="latent",
    ).images  # fmt: skip
    pos = pipe.encode_prompt(TARGET, max_sequence_length=32)[0]
    neg = pipe.encode_prompt("", max_sequence_length=32)[0]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    flow_timesteps(scheduler, 3, "cpu", 16, "flux2")
    x = to_tokens(noise)
    for t in scheduler.timesteps:
        v_pos = flux2.network_call(comps["transformer"], x, t, flux2.condition(pos, 4, 4))
        v_neg = flux2.network_call(comps["transformer"], x, t, flux2.condition(neg, 4, 4))
        x = scheduler.step(v_neg + 3.0 * (v_pos - v_neg), t, x).prev_sample
    vae = comps["vae"]
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    from lsb.helpers.flux2 import unpatchify

    assert max_diff(unpatchify(from_tokens(x, 4, 4) * std + mean), ref) == 0.0


def test_latents_equal_diffusers_batchnorm_normalisation():
    comps = tiny_flux2_klein_components(0)
    ours = LatentSchrodingerBridgeFlux2Pipeline(**comps)
    stock = Flux2KleinPipeline(**comps)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert max_diff(encode_flux2_latents(ours, pixels, "cpu"), stock._encode_vae_image(pixels, None)) == 0.0


def test_distilled_klein_refuses_guidance():
    comps = tiny_flux2_klein_components(0)
    pipe = FlowEditFlux2Pipeline(**comps, is_distilled=True)
    with (
        recorded_calls(comps["transformer"]) as calls,
        pytest.raises(ValueError, match="distilled .* ignores guidance"),
    ):
        pipe(shapes_image(), SOURCE, TARGET, num_inference_steps=2, n_max=1, target_guidance_scale=4.0)
    assert calls == []
    out = pipe(shapes_image(), SOURCE, TARGET, num_inference_steps=2, n_max=1, max_sequence_length=16, output_type="np")
    assert out.forward_passes == 2  # distilled: no negative pass


@pytest.mark.parametrize("method,per_call", [("lsb", 2), ("flowedit", 4)])
def test_translators_on_a_klein_folder(klein_dir, method, per_call):
    from lsb.surfaces.translators import load_translator, translate

    assert detect_family(str(klein_dir)) is FAMILIES["flux2"]
    pipe = load_translator(method, str(klein_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pixel_multiple(pipe) == 16
    images, nfe, passes = translate(
        method, pipe, [shapes_image()], SOURCE, TARGET, nfe=2, generator=[torch.Generator().manual_seed(0)],
        output_type="np", return_forward_passes=True, max_sequence_length=32,
    )  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert nfe == 2 and passes == per_call * 2
    with recorded_calls(pipe.transformer) as calls, pytest.raises(ValueError, match="not a multiple of 16 px"):
        translate(method, pipe, [shapes_image(72)], SOURCE, TARGET, nfe=2)
    assert calls == []


def test_cli_translates_with_a_klein_folder(klein_dir, tmp_path, capsys):
    from lsb.surfaces.cli import main

    shapes_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = translate_argv(tmp_path / "a.png", model=klein_dir, method="lsb", nfe=2, size=64, device="cpu", out=out)
    assert main(argv) == 0 and (out / "a.png").is_file()
    assert "NFE 2 per image, 4 forward passes" in capsys.readouterr().out


@pytest.mark.skipif(not (CONFIGS / "flux2-klein-4b").is_dir(), reason=f"real configs not found at {CONFIGS}")
@pytest.mark.parametrize(
    "name,millions", [("flux2-klein-4b", 3875.54), ("flux2-klein-9b", 9078.58), ("flux2-dev", 32223.28)]
)
def test_real_flux2_transformers_on_meta(name, millions):
    count = sum(p.numel() for p in build_real_flux2_transformer(CONFIGS, name).parameters())
    assert round(count / 1e6, 2) == millions  # configs/README.md (published: 4B, 9B, 32B)


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux2dev") / "tiny-dev"
    Flux2Pipeline(**tiny_flux2_dev_components(0)).save_pretrained(folder)
    return folder


def test_lsb_transformer_inputs_equal_flux2_dev_pipeline():
    """FLUX.2-dev: embeddings (Mistral3 layers 10/20/30 of the system-message conversation), ids and the distilled
    guidance of our [source; target] call equal Flux2Pipeline's for each prompt (0); timesteps up to 3e-8."""
    comps = tiny_flux2_dev_components(0)
    ours = LatentSchrodingerBridgeFlux2Pipeline(**comps)
    kw = dict(num_inference_steps=2, tau=0.5, t0=0.1, max_sequence_length=32, output_type="np")
    with recorded_calls(comps["transformer"]) as mine:
        ours(
            shapes_image(),
            SOURCE,
            TARGET,
            distilled_guidance_scale=3.0,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
    levels = ours.scheduler.flow_levels.tolist()
    stock = Flux2Pipeline(**{**comps, "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0)})
    calls = {}
    for prompt in (SOURCE, TARGET):
        with recorded_calls(comps["transformer"]) as theirs:
            stock(
                prompt=prompt, guidance_scale=3.0, height=64, width=64, sigmas=levels, num_inference_steps=len(levels),
                max_sequence_length=32, output_type="latent",
            )  # fmt: skip
        calls[prompt] = theirs
    for i, a in enumerate(mine):
        src, tgt = calls[SOURCE][i], calls[TARGET][i]
        for key in ("encoder_hidden_states", "txt_ids", "img_ids", "guidance"):
            both = torch.cat([src[key], tgt[key]])
            assert max_diff(a[key], both) == 0.0 and a[key].dtype == both.dtype, key
        assert max_diff(a["timestep"], torch.cat([src["timestep"], tgt["timestep"]])) <= 3e-8


@pytest.mark.parametrize("method,per_call", [("lsb", 2), ("flowedit", 2)])
def test_translators_on_a_flux2_dev_folder(dev_dir, method, per_call):
    from lsb.surfaces.translators import load_translator, translate

    assert detect_family(str(dev_dir)) is FAMILIES["flux2"]
    pipe = load_translator(method, str(dev_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    with recorded_calls(pipe.transformer) as calls:
        images, nfe, passes = translate(
            method, pipe, [shapes_image()], SOURCE, TARGET, nfe=2, generator=[torch.Generator().manual_seed(0)],
            output_type="np", return_forward_passes=True, max_sequence_length=32,
        )  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all() and passes == per_call * nfe
    expected = [4.0, 4.0] if method == "lsb" else [1.5, 5.5]  # Flux2Pipeline's default; FLUX.1-dev FlowEdit's
    assert calls[0]["guidance"].tolist() == expected


def test_flux2_dev_processor_without_torchvision_is_one_line(dev_dir, tmp_path, monkeypatch):
    import importlib.util
    import json
    import shutil

    from lsb.surfaces.translators import load_translator

    folder = tmp_path / "dev-pixtral"
    shutil.copytree(dev_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PixtralProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torchvision" else real(n, *a))
    with pytest.raises(ValueError, match=r"tokenizer \(PixtralProcessor\) needs the torchvision package"):
        load_translator("lsb", str(folder), device="cpu")
    with pytest.raises(ValueError, match="klein transformer, which has no guidance embedding"):
        LatentSchrodingerBridgeFlux2Pipeline(**tiny_flux2_klein_components(0))(
            shapes_image(), SOURCE, TARGET, num_inference_steps=2, distilled_guidance_scale=2.0
        )
