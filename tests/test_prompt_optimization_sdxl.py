"""Prompt optimization on SDXL (issue 18.3): the token learned in both text encoders (only the new rows train), one
``.safetensors`` with ``clip_l`` / ``clip_g`` tensors that two stock ``load_textual_inversion`` calls and lsb's
``load_domain`` / ``lsb translate --source <file>`` load; files with one tensor or a wrong width refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lsb
from lsb.models.sdxl import save_tiny_sdxl, tiny_sdxl_components
from lsb.prompts.domains import DomainFileError, load_domain
from lsb.prompts.encoder_slots import text_encoder_slots
from lsb.training.prompt_optimization import DomainImages, PromptOptimizationTask, learn_domain
from tests.cli_helpers import options, translate_argv
from tests.prompt_optimization_helpers import LEARN_KW, assert_only_new_rows_train, write_noise_images


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl-po") / "tiny-sdxl")


@pytest.fixture(scope="module")
def domain_dir(tmp_path_factory):
    return write_noise_images(tmp_path_factory.mktemp("domain"))


@pytest.fixture(scope="module")
def learned(tiny_sdxl_dir, domain_dir, tmp_path_factory):
    """`lsb learn-domain`'s function on the SDXL folder (3 steps) -> learned_embeds.safetensors."""
    return learn_domain(domain_dir, "<dom>", str(tiny_sdxl_dir), output_dir=tmp_path_factory.mktemp("run"), **LEARN_KW)


def _xl(folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_file_holds_clip_l_and_clip_g(learned, tiny_sdxl_dir):
    with safe_open(str(learned), "pt") as f:
        keys, meta = sorted(f.keys()), f.metadata()
        embeds = {k: f.get_tensor(k) for k in keys}
    assert keys == ["clip_g", "clip_l"] and meta["lsb_token"] == "<dom>" and meta["lsb_family"] == "sdxl"
    assert meta["format"] == "pt" and embeds["clip_l"].shape == (1, 16) and embeds["clip_g"].shape == (1, 24)
    base = _xl(tiny_sdxl_dir)
    for key, te, tok in (
        ("clip_l", base.text_encoder, base.tokenizer),
        ("clip_g", base.text_encoder_2, base.tokenizer_2),
    ):
        init = te.get_input_embeddings().weight[tok.encode("shape", add_special_tokens=False)[0]]
        assert (embeds[key][0] - init).abs().max() > 1e-4, key  # trained away from the initializer


def test_only_the_new_rows_train_in_both_encoders(domain_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(), add_watermarker=False)
    task = PromptOptimizationTask(pipe, DomainImages(domain_dir, 64), "<dom>", tmp_path / "t", num_validation_images=0)
    assert task.family == "sdxl" and sorted(task.embeddings) == ["clip_g", "clip_l"]
    unet0 = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    assert_only_new_rows_train(task, tmp_path / "t", weight_decay=0.5)
    assert all(torch.equal(v, unet0[k]) for k, v in pipe.unet.state_dict().items())
    assert "<dom>" not in pipe.tokenizer.get_vocab() and "<dom>" not in pipe.tokenizer_2.get_vocab()


def test_two_stock_load_textual_inversion_calls(learned, tiny_sdxl_dir):
    """What SDXL users do with a clip_l / clip_g file (diffusers' documented recipe)."""
    pipe = _xl(tiny_sdxl_dir)
    state = load_file(str(learned))
    pipe.load_textual_inversion(
        state["clip_l"], token="<dom>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        state["clip_g"], token="<dom>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    for key, te, tok in (
        ("clip_l", pipe.text_encoder, pipe.tokenizer),
        ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2),
    ):
        tid = tok.convert_tokens_to_ids("<dom>")
        assert torch.equal(te.get_input_embeddings().weight[tid].detach(), state[key][0])
    img = pipe("a <dom>", num_inference_steps=2, height=64, width=64, output_type="np").images
    assert img.shape == (1, 64, 64, 3)
    # lsb's loader gives the same rows (and the LSB-XL pipeline translates with the prompt)
    xl = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tiny_sdxl_dir)
    xl.set_progress_bar_config(disable=True)
    assert load_domain(xl, str(learned)) == "a <dom>"
    for s in text_encoder_slots(xl):
        a = getattr(xl, s.text_encoder_attr).get_input_embeddings().weight
        b = getattr(pipe, s.text_encoder_attr).get_input_embeddings().weight
        ta = getattr(xl, s.tokenizer_attr).convert_tokens_to_ids("<dom>")
        tb = getattr(pipe, s.tokenizer_attr).convert_tokens_to_ids("<dom>")
        assert torch.equal(a[ta], b[tb])
    out = xl(torch.rand(3, 64, 64), "a <dom>", "a square", num_inference_steps=2, output_type="np")
    assert np.isfinite(out.images).all()


def test_cli_translate_with_an_sdxl_domain_file(learned, tiny_sdxl_dir, tmp_path):
    from lsb.surfaces.cli import main

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "x.png")
    rc = main(translate_argv(tmp_path / "x.png", model=tiny_sdxl_dir, source=learned, nfe=2, out=tmp_path / "out"))
    assert rc == 0 and len(list((tmp_path / "out").glob("x*.png"))) == 1


def test_bad_domain_files_refused(learned, tiny_sdxl_dir, tmp_path):
    state = load_file(str(learned))
    meta = {"format": "pt", "lsb_token": "<dom>", "lsb_prompt": "a {}"}
    only_l = tmp_path / "only_l.safetensors"
    save_file({"clip_l": state["clip_l"]}, str(only_l), metadata=meta)
    wrong = tmp_path / "wrong.safetensors"  # a width neither encoder has (16 / 24)
    save_file({"clip_l": torch.zeros(1, 32), "clip_g": torch.zeros(1, 32)}, str(wrong), metadata=meta)
    xl = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tiny_sdxl_dir)
    with pytest.raises(DomainFileError, match="clip_g"):
        load_domain(xl, str(only_l))
    with pytest.raises(DomainFileError, match="32-d"):
        load_domain(xl, str(wrong))
    # and the SD pipeline refuses an SDXL file (two tensors) by name
    sd = lsb.LatentSchrodingerBridgePipeline.from_pretrained(lsb.MINI_SD)
    with pytest.raises(DomainFileError, match="clip_g"):
        load_domain(sd, str(learned))


def test_cli_learn_domain_on_sdxl(tiny_sdxl_dir, domain_dir, tmp_path):
    from lsb.surfaces.cli import main

    argv = options(images=domain_dir, token="<cli>", model=tiny_sdxl_dir, steps=2)
    rc = main(["learn-domain", *argv, "-o", str(tmp_path / "run")])
    assert rc == 0
    with safe_open(str(tmp_path / "run" / "learned_embeds.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["clip_g", "clip_l"] and f.metadata()["lsb_token"] == "<cli>"
