"""One set of translation defaults per model, carried by the model folder (lsb_defaults.json; lsb.io.settings):
the Python pipeline and `lsb translate` give the same pixels with default options, a stock SD folder gets the
paper's settings, and the embedded model loads in plain diffusers (no dtype, no warning)."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import lsb
from lsb.data import shapes
from lsb.io.settings import (
    DEFAULTS_FILE,
    PAPER_TRANSLATION,
    TranslationDefaults,
    check_guidance,
    check_t0,
    check_tau,
    resolve_translation_args,
    translation_defaults,
    write_translation_defaults,
)


def test_paper_and_embedded_values():
    assert PAPER_TRANSLATION.as_dict() == dict(
        num_inference_steps=8, tau=5.29, t0=0.2, guidance_scale=11.0, solver="euler"
    )
    assert translation_defaults(None).as_dict() == dict(
        num_inference_steps=8, tau=0.35, t0=0.02, guidance_scale=3.0, solver="euler"
    )
    assert translation_defaults(lsb.MINI_SD) == translation_defaults("mini-sd") == translation_defaults(None)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_tau(0.0), "tau must be a positive number, got 0.0"),
        (lambda: check_tau(float("nan"), "--tau"), "--tau must be a positive number, got nan"),
        (lambda: check_t0(1.0, "--t0"), "--t0 must lie strictly between 0 and 1, got 1.0"),
        (lambda: check_guidance(float("inf"), "--guidance"), "--guidance must be a finite number, got inf"),
        (lambda: TranslationDefaults(solver="rk4"), "solver must be one of"),
    ],
)
def test_checks_name_the_input(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_malformed_file_is_named(tmp_path):
    (tmp_path / DEFAULTS_FILE).write_text(json.dumps({"translation": {"tau": -1}}))
    with pytest.raises(ValueError, match=f"{DEFAULTS_FILE}.*tau must be a positive number"):
        translation_defaults(tmp_path)


def test_stock_folder_gets_the_papers_settings_and_a_file_changes_them(tiny_sd_dir):
    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    assert translation_defaults(pipe) == PAPER_TRANSLATION
    # no file: 8 NFE, w 11, tau / t0 left to the scheduler's config (the paper's 5.29 / 0.2)
    assert resolve_translation_args(pipe) == (8, 11.0, None, None)
    assert (pipe.scheduler.config.tau, pipe.scheduler.config.t0) == (5.29, 0.2)
    assert resolve_translation_args(pipe, 4, 2.0, 1.0, 0.1) == (4, 2.0, 1.0, 0.1)  # given values win
    write_translation_defaults(
        tiny_sd_dir, TranslationDefaults(num_inference_steps=5, tau=1.5, t0=0.1, guidance_scale=2.0)
    )
    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    assert resolve_translation_args(pipe) == (5, 2.0, 1.5, 0.1)
    assert (
        pipe(Image.new("RGB", (64, 64)), source_prompt="a circle", target_prompt="a square", output_type="latent").nfe
        == 5
    )


def test_pipeline_defaults_change_the_output(tiny_sd_dir):  # the test can fail: the file is really read
    img = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    kw = dict(source_prompt="a circle", target_prompt="a square", output_type="np")
    stock = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    a = stock(img, generator=torch.Generator().manual_seed(0), **kw).images
    shutil.copy(f"{lsb.MINI_SD}/{DEFAULTS_FILE}", tiny_sd_dir)
    tuned = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    b = tuned(img, generator=torch.Generator().manual_seed(0), **kw).images
    c = stock(img, generator=torch.Generator().manual_seed(0), guidance_scale=3.0, tau=0.35, t0=0.02, **kw).images
    assert not np.array_equal(a, b) and np.array_equal(b, c)


def _cli_pixels(tmp_path, source) -> np.ndarray:
    """`lsb translate` with default options on ``source`` (seed 0): the output PNG's pixels."""
    from lsb.surfaces.cli import main

    source.save(tmp_path / "in.png")
    argv = ["translate", str(tmp_path / "in.png"), "--source", "a circle", "--target", "a square"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    return np.asarray(Image.open(tmp_path / "out" / "in.png").convert("RGB"))


def test_python_pipeline_equals_lsb_translate_with_default_options(tmp_path):
    source = shapes.render(shapes.scenes("test", 1, shape="circle")[0])
    cli = _cli_pixels(tmp_path, source)
    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(lsb.MINI_SD)
    out = pipe(source, source_prompt="a circle", target_prompt="a square", generator=[torch.Generator().manual_seed(0)])
    assert out.nfe == 8
    assert np.array_equal(np.asarray(out.images[0]), cli)
    paper = pipe(
        source,
        source_prompt="a circle",
        target_prompt="a square",
        guidance_scale=11.0,
        tau=5.29,
        t0=0.2,
        generator=[torch.Generator().manual_seed(0)],
    )
    assert not np.array_equal(np.asarray(paper.images[0]), cli)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _warnings_while(fn):
    """``fn()`` and the warnings diffusers / transformers log meanwhile (their loggers do not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger("diffusers"), logging.getLogger("transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        return fn(), handler.messages
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def test_unexpected_config_keys_would_be_seen(tmp_path):  # the check below can fail
    from diffusers import StableDiffusionPipeline

    folder = shutil.copytree(lsb.MINI_SD, tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "lsb_translation": {"tau": 0.35}}))
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, "tau": 0.35}))
    _, messages = _warnings_while(lambda: StableDiffusionPipeline.from_pretrained(folder))
    assert any("tau" in m for m in messages), messages


def test_embedded_model_in_plain_diffusers_no_dtype_no_warning():
    from diffusers import StableDiffusionPipeline

    pipe, messages = _warnings_while(lambda: StableDiffusionPipeline.from_pretrained(lsb.MINI_SD))
    assert not [m for m in messages if "torchvision" not in m], messages
    assert {pipe.text_encoder.dtype, pipe.unet.dtype, pipe.vae.dtype} == {torch.float32}
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    half = StableDiffusionPipeline.from_pretrained(lsb.MINI_SD, dtype=torch.float16)
    assert {half.text_encoder.dtype, half.unet.dtype, half.vae.dtype} == {torch.float16}
    # the float32 copies hold exactly the stored (float16) values: upcasting is exact
    for a, b in zip(pipe.text_encoder.parameters(), half.text_encoder.parameters()):
        assert torch.equal(a, b.float())


def test_four_surfaces_give_identical_pixels(tmp_path):
    """CLI, Python pipeline, demo and an exported translator, all with default options, same input and seed."""
    from lsb.surfaces.demo import Translator
    from lsb.surfaces.export import export_translator, load_translator

    source = shapes.render(shapes.scenes("test", 2, shape="circle")[1])  # native size: no resize anywhere
    cli = _cli_pixels(tmp_path, source)

    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(lsb.MINI_SD)
    python = np.asarray(
        pipe(
            source, source_prompt="a circle", target_prompt="a square", generator=torch.Generator().manual_seed(0)
        ).images[0]
    )

    demo_out = Translator(None)(str(tmp_path / "in.png"), "a circle", "a square", seed=0, trajectory=False)[0]
    demo = np.asarray(demo_out.convert("RGB") if isinstance(demo_out, Image.Image) else demo_out)

    export_translator(tmp_path / "exp", "a circle", "a square")
    exported_pipe, _ = load_translator(tmp_path / "exp")
    exported = np.asarray(
        exported_pipe(source, "a circle", "a square", generator=torch.Generator().manual_seed(0)).images[0]
    )

    for name, pixels in (("python", python), ("demo", demo), ("export", exported)):
        assert pixels.shape == cli.shape and np.array_equal(pixels, cli), f"{name} differs from `lsb translate`"
