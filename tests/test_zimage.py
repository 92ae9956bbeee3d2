"""Z-Image as an lsb family (lsb.families.zimage): the transformer's inputs equal ZImagePipeline's (hook tests on
tiny random models of the real classes), the timestep 1 - sigma and the negated output reproduce ZImagePipeline's
sampling, LSB / FlowEdit / SDEdit through the translators and the CLI, the real transformer config on the meta
device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

from lsb.families import FAMILIES, detect_family, pixel_multiple, zimage
from lsb.models.random_zimage import build_real_zimage_transformer, tiny_zimage_components
from lsb_pipelines.flowedit_zimage.pipeline import FlowEditZImagePipeline
from lsb_pipelines.lsb_zimage.pipeline import LatentSchrodingerBridgeZImagePipeline
from tests.cli_helpers import translate_argv
from tests.flow_testing import max_diff, recorded_calls, shapes_image

CONFIGS = Path(os.environ.get("LSB_CONFIGS", Path(__file__).resolve().parents[2] / "shared" / "configs"))
SOURCE, TARGET = "a photo of a red circle", "a blue square"  # different token counts: caption lists differ


@pytest.fixture(scope="module")
def zimage_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zimage") / "tiny-zimage"
    ZImagePipeline(**tiny_zimage_components(0)).save_pretrained(folder)
    return folder


def call_parts(call):
    """(latent list, timestep, caption list) of one recorded ZImageTransformer2DModel call."""
    latents, t, caps = call["args"]
    return latents, t, caps


def test_lsb_transformer_inputs_equal_zimage_pipeline():
    """Our batched [source; target] call against ZImagePipeline's CFG call (prompt=target, negative=source) at the
    same sigmas: caption lists equal (0), timesteps (1000 - t) / 1000 equal up to one float32 ulp (our levels are
    computed in float64 then cast; diffusers multiplies float32 sigmas by 1000), the first call's latent list equal
    (0) when diffusers starts from our first bridge state."""
    comps = tiny_zimage_components(0)
    ours = LatentSchrodingerBridgeZImagePipeline(**comps)
    with recorded_calls(comps["transformer"]) as mine:
        out = ours(
            shapes_image(),
            SOURCE,
            TARGET,
            num_inference_steps=3,
            tau=0.5,
            t0=0.1,
            max_sequence_length=32,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
    assert out.nfe == len(mine) == 3 and np.isfinite(out.images).all()
    levels = ours.scheduler.flow_levels.tolist()
    stock = ZImagePipeline(**{**comps, "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0)})
    first_state = call_parts(mine[0])[0][0].squeeze(1).unsqueeze(0)  # our source row at the first call
    with recorded_calls(comps["transformer"]) as theirs:
        stock(
            prompt=TARGET,
            negative_prompt=SOURCE,
            guidance_scale=2.0,
            height=64,
            width=64,
            sigmas=levels,
            num_inference_steps=len(levels),
            max_sequence_length=32,
            latents=first_state.float(),
            output_type="latent",
        )
    assert len(theirs) == len(mine)
    for a, b in zip(mine, theirs):
        (la, ta, ca), (lb, tb, cb) = call_parts(a), call_parts(b)
        assert [c.shape for c in ca] == [cb[1].shape, cb[0].shape] and ca[0].shape != ca[1].shape
        assert max(max_diff(x, y) for x, y in zip(ca, [cb[1], cb[0]])) == 0.0  # ours [src; tgt], theirs [tgt; src]
        assert max_diff(ta, torch.cat([tb[1:], tb[:1]])) <= 6e-8 and ta.dtype == tb.dtype
        assert [x.shape for x in la] == [x.shape for x in lb] == [(4, 1, 8, 8)] * 2
    first_mine, first_theirs = call_parts(mine[0])[0], call_parts(theirs[0])[0]
    assert max(max_diff(x, y) for x, y in zip(first_mine, first_theirs)) == 0.0


def test_network_call_reproduces_zimage_sampling():
    """The family's network call (timestep 1 - sigma, output negated) stepped by diffusers' scheduler over
    ZImagePipeline's grid gives ZImagePipeline's own latents: the convention and the sign are right."""
    comps = tiny_zimage_components(1)
    pipe = ZImagePipeline(**comps)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = pipe(
        prompt=TARGET, height=64, width=64, num_inference_steps=3, guidance_scale=0.0, latents=noise.clone(),
        max_sequence_length=32, output_type="latent",
    ).images  # fmt: skip
    caps = pipe.encode_prompt(TARGET, do_classifier_free_guidance=False, max_sequence_length=32)[0]

    def sample(sign):
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(sigmas=np.linspace(1, 1 / 3, 3), device="cpu")
        x = noise.clone()
        for t in scheduler.timesteps:
            v = sign * zimage.network_call(comps["transformer"], x, t, zimage.condition(caps))
            x = scheduler.step(v, t, x).prev_sample
        return x

    assert max_diff(sample(1), ref) == 0.0
    assert max_diff(sample(-1), ref) > 0.1  # the sign matters: an error would not be invisible


def test_flowedit_conditioning_and_grid_equal_zimage_pipeline():
    """FlowEdit with CFG on both branches: each call's caption list is [src, "", tar, ""] exactly as
    ZImagePipeline.encode_prompt gives them (0), at ZImagePipeline's timesteps (1000 - t) / 1000 (0) of the
    edited grid steps; counts 4 forward passes per step."""
    comps = tiny_zimage_components(0)
    pipe = FlowEditZImagePipeline(**comps)
    with recorded_calls(comps["transformer"]) as calls:
        out = pipe(
            shapes_image(), SOURCE, TARGET, num_inference_steps=4, n_max=3, source_guidance_scale=1.0,
            target_guidance_scale=2.0, max_sequence_length=32, output_type="np",
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    assert (out.nfe, out.forward_passes, len(calls)) == (3, 12, 3)
    stock = ZImagePipeline(**comps)
    pos, neg = stock.encode_prompt([SOURCE, TARGET], do_classifier_free_guidance=True, max_sequence_length=32)
    with recorded_calls(comps["transformer"]) as theirs:
        stock(prompt=TARGET, height=64, width=64, num_inference_steps=4, guidance_scale=0.0, output_type="latent")
    for i, call in enumerate(calls):
        latents, t, caps = call_parts(call)
        assert len(latents) == 4 and max(max_diff(a, b) for a, b in zip(caps, [pos[0], neg[0], pos[1], neg[1]])) == 0
        assert max_diff(t, call_parts(theirs[1 + i])[1].expand(4)) == 0.0  # grid steps 1..3 of 4


def test_family_record_and_bad_sizes(zimage_dir):
    from lsb.surfaces.translators import load_translator

    assert detect_family(str(zimage_dir)) is FAMILIES["zimage"] is zimage.FAMILY
    pipe = load_translator("flowedit", str(zimage_dir), device="cpu")
    assert pixel_multiple(pipe) == 16 and pipe.transformer.dtype == torch.float32
    with recorded_calls(pipe.transformer) as calls, pytest.raises(ValueError, match="not a multiple of 16 px"):
        pipe(shapes_image(72), SOURCE, TARGET, num_inference_steps=2, n_max=1)
    assert calls == []
    with pytest.raises(ValueError, match="ddib runs on"):
        load_translator("ddib", str(zimage_dir), device="cpu")


@pytest.mark.parametrize("method,per_call", [("lsb", 2), ("flowedit", 2), ("sdedit", 1)])
def test_translators_on_a_zimage_folder(zimage_dir, method, per_call):
    from lsb.surfaces.translators import load_translator, translate

    pipe = load_translator(method, str(zimage_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    images, nfe, passes = translate(
        method, pipe, [shapes_image()], SOURCE, TARGET, nfe=2, generator=[torch.Generator().manual_seed(0)],
        output_type="np", return_forward_passes=True,
    )  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert nfe == 2 and passes == per_call * 2


@pytest.mark.parametrize("method", ["lsb", "flowedit"])
def test_cli_translates_with_a_zimage_folder(zimage_dir, tmp_path, capsys, method):
    from lsb.surfaces.cli import main

    shapes_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = translate_argv(tmp_path / "a.png", model=zimage_dir, method=method, nfe=2, size=64, device="cpu", out=out)
    assert main(argv) == 0 and (out / "a.png").is_file()
    assert "NFE 2 per image, 4 forward passes" in capsys.readouterr().out


@pytest.mark.skipif(not (CONFIGS / "z-image-turbo").is_dir(), reason=f"real configs not found at {CONFIGS}")
def test_real_zimage_turbo_transformer_on_meta():
    transformer = build_real_zimage_transformer(CONFIGS)
    count = sum(p.numel() for p in transformer.parameters())
    assert round(count / 1e6, 2) == 6154.91  # published: 6B (configs/README.md)
    assert next(transformer.parameters()).device.type == "meta"


def test_learning_a_domain_is_refused_on_llm_encoder_families(zimage_dir, tmp_path):
    """Prompt optimization trains CLIP / T5 token rows only: a Z-Image folder is one line, before any weights load."""
    from lsb.prompts.tokens import PromptOptimizationError
    from lsb.training.prompt_optimization import learn_domain

    images = tmp_path / "images"
    images.mkdir()
    shapes_image().save(images / "a.png")
    with pytest.raises(PromptOptimizationError, match="not implemented for Z-Image models"):
        learn_domain(images, "<dom>", str(zimage_dir), output_dir=tmp_path / "dom", steps=1, device="cpu")
