"""Prompt optimization (textual inversion of a domain) on the tiny random pipeline: a few steps each."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image, ImageDraw

from lsb.io.images import ImageInputError
from lsb.prompts.templates import PAPER_TEMPLATES, resolve_templates
from lsb.training.prompt_optimization import DomainImages, PromptOptimizationTask, learn_domain
from lsb.prompts.tokens import PromptOptimizationError
from lsb.training.loop import TrainConfig, train

FAST = dict(checkpoint_every=100, num_validation_images=0, progress=False)


def _pipe(components, prediction_type="epsilon"):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    components = dict(components)
    components["scheduler"] = PNDMScheduler.from_config(components["scheduler"].config, prediction_type=prediction_type)
    return StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


@pytest.fixture
def circles(tmp_path):
    """Three small RGB images of red circles, of different sizes."""
    d = tmp_path / "circles"
    d.mkdir()
    for i, size in enumerate([(64, 64), (80, 48), (32, 32)]):
        im = Image.new("RGB", size, "white")
        ImageDraw.Draw(im).ellipse((4, 4, size[0] - 8, size[1] - 8), fill="red")
        im.save(d / f"img{i}.png")
    return d


def test_domain_images_other_modes(circles):
    """An RGBA or grayscale file in a domain folder is refused by name, or converted with convert_mode."""
    im = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((4, 4, 40, 40), fill="red")
    im.save(circles / "img3.png")
    Image.new("L", (32, 32), 90).save(circles / "img4.png")
    with pytest.raises(ImageInputError, match="img3.png: mode RGBA"):
        DomainImages(circles, 64)
    imgs = DomainImages(circles, 64, convert_mode=True)
    assert imgs.uint8.shape == (5, 3, 64, 64)
    assert imgs.uint8[3, :, 0, 0].tolist() == [255, 255, 255]  # transparent corner composited on white


def _states(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_domain_images(circles, tiny_sd_components):
    imgs = DomainImages(circles, 64)
    assert len(imgs) == 3 and imgs.uint8.shape == (3, 3, 64, 64) and imgs.uint8.dtype == torch.uint8
    x = imgs.tensor()
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32
    pipe = _pipe(tiny_sd_components)
    z = imgs.encode(pipe.vae)
    assert z.shape == (3, 4, 8, 8) and imgs.encode(pipe.vae) is z  # cached


def test_only_new_rows_change(circles, tiny_sd_components, tmp_path):
    torch.set_num_threads(1)
    pipe = _pipe(tiny_sd_components)
    te0, unet0, vae0 = _states(pipe.text_encoder), _states(pipe.unet), _states(pipe.vae)
    task = PromptOptimizationTask(pipe, circles, "<circle>", tmp_path / "run", num_validation_images=0)
    assert task.templates == ("a {}",) and task.initializer_token == "shape"
    init = task.learned_embeddings()
    # A big weight decay would shrink every row if decay reached the frozen ones.
    train(
        task,
        TrainConfig(
            str(tmp_path / "run"),
            max_steps=5,
            learning_rate=1e-2,
            weight_decay=0.5,
            lr_schedule="constant",
            checkpoint_every=100,
            progress=False,
        ),
    )
    new = task.text_encoder.state_dict()
    key = "embeddings.token_embedding.weight"
    w, w0 = new[key], te0[key]
    (tid,) = task.token_ids
    assert tid == w0.shape[0]  # appended after the original vocabulary
    assert torch.equal(w[:tid], w0)  # every original row bit-identical
    assert not torch.equal(task.learned_embeddings(), init)  # the placeholder row trained
    assert all(torch.equal(new[k], v) for k, v in te0.items() if k != key)
    assert all(torch.equal(v, unet0[k]) for k, v in pipe.unet.state_dict().items())
    assert all(torch.equal(v, vae0[k]) for k, v in pipe.vae.state_dict().items())
    # the caller's pipeline keeps its own tokenizer and text encoder
    assert "<circle>" not in pipe.tokenizer.get_vocab()
    assert all(torch.equal(v, te0[k]) for k, v in pipe.text_encoder.state_dict().items())


def test_learn_domain_loads_in_diffusers_and_lsb(circles, tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    from lsb.prompts.domains import load_domain, read_domain

    out = tmp_path / "run"
    path = learn_domain(
        circles,
        "<circle>",
        str(tiny_sd_dir),
        output_dir=out,
        steps=4,
        checkpoint_every=2,
        num_validation_images=2,
        validation_steps=2,
        progress=False,
    )
    assert path == out / "learned_embeds.safetensors" and path.is_file()
    assert (out / "learned_embeds-steps-2.safetensors").is_file()
    assert (out / "learned_embeds-steps-4.safetensors").is_file()
    assert (out / "samples" / "validation-000004.png").is_file()
    token, emb, meta = read_domain(path)
    assert token == "<circle>" and emb.shape == (1, 16)
    assert meta["format"] == "pt" and meta["lsb_prompt"] == "a {}"
    assert torch.equal(read_domain(out / "learned_embeds-steps-4.safetensors")[1], emb)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(out)  # stock diffusers, folder form
    tid = pipe.tokenizer.convert_tokens_to_ids("<circle>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[tid].detach(), emb[0])
    img = pipe("a <circle>", num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 64, 64, 3)

    pipe2 = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    assert load_domain(pipe2, str(out)) == "a <circle>"


def test_multi_vector(circles, tiny_sd_components, tmp_path):
    pipe = _pipe(tiny_sd_components)
    path = learn_domain(circles, "<sq>", pipe, output_dir=tmp_path / "run", steps=3, num_vectors=3, **FAST)
    from lsb.prompts.domains import read_domain

    _, emb, _ = read_domain(path)
    assert emb.shape == (3, 16)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(path)
    assert {"<sq>", "<sq>_1", "<sq>_2"} <= set(pipe.tokenizer.get_vocab())
    assert pipe.maybe_convert_prompt("a <sq>", pipe.tokenizer) == "a <sq> <sq>_1 <sq>_2"
    assert pipe("a <sq>", num_inference_steps=2, output_type="np").images.shape == (1, 64, 64, 3)


def test_resume_matches_uninterrupted(circles, tiny_sd_dir, tmp_path, capsys):
    from lsb.prompts.domains import read_domain

    kw = dict(steps=4, checkpoint_every=4, num_validation_images=0, progress=False, seed=3)
    resumed = tmp_path / "resumed"
    learn_domain(circles, "<c>", str(tiny_sd_dir), output_dir=resumed, **kw)
    first = read_domain(resumed / "learned_embeds.safetensors")[1]
    capsys.readouterr()
    learn_domain(circles, "<c>", str(tiny_sd_dir), output_dir=resumed, **{**kw, "steps": 8})
    assert re.search(r"resumed prompt from .*checkpoint-4 at step 4", capsys.readouterr().out)
    assert torch.equal(read_domain(resumed / "learned_embeds-steps-4.safetensors")[1], first)
    straight = tmp_path / "straight"
    learn_domain(circles, "<c>", str(tiny_sd_dir), output_dir=straight, **{**kw, "steps": 8})
    a = read_domain(resumed / "learned_embeds.safetensors")[1]
    b = read_domain(straight / "learned_embeds.safetensors")[1]
    assert not torch.equal(a, first)
    assert torch.equal(a, b)
    # a finished run cannot be shortened, and its folder belongs to its token
    with pytest.raises(PromptOptimizationError, match="step 8"):
        learn_domain(circles, "<c>", str(tiny_sd_dir), output_dir=resumed, **kw)
    with pytest.raises(PromptOptimizationError, match="other settings"):
        learn_domain(circles, "<d>", str(tiny_sd_dir), output_dir=resumed, **{**kw, "steps": 8})


def test_v_prediction_target(circles, tiny_sd_components, tmp_path):
    pipe = _pipe(tiny_sd_components, "v_prediction")
    task = PromptOptimizationTask(pipe, circles, "<v>", tmp_path, num_validation_images=0)
    z, eps, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    assert torch.equal(task.target(z, eps, t), task.noise_scheduler.get_velocity(z, eps, t))
    train(task, TrainConfig(str(tmp_path), max_steps=2, lr_schedule="constant", progress=False))


def test_templates(tiny_sd_components):
    assert resolve_templates("paper") == PAPER_TEMPLATES and len(PAPER_TEMPLATES) == 27
    assert resolve_templates(None, tiny_sd_components["tokenizer"]) == ("a {}",)
    assert resolve_templates(None) == PAPER_TEMPLATES
    assert resolve_templates("an image of {}") == ("an image of {}",)
    with pytest.raises(PromptOptimizationError, match="exactly one"):
        resolve_templates(["a photo"])


def test_errors(circles, tiny_sd_components, tmp_path):
    pipe = _pipe(tiny_sd_components)
    run = dict(output_dir=tmp_path / "run", steps=1, **FAST)
    pipe.load_textual_inversion({"<old>": torch.zeros(1, 16)}, token="<old>")
    with pytest.raises(PromptOptimizationError, match="already exists"):
        learn_domain(circles, "<old>", pipe, **run)
    with pytest.raises(PromptOptimizationError, match="word"):
        learn_domain(circles, "circle", pipe, **run)  # would shadow the caption word
    with pytest.raises(PromptOptimizationError, match="initializer_token 'photo of' is 2 tokens"):
        learn_domain(circles, "<x>", pipe, initializer_token="photo of", **run)
    with pytest.raises(PromptOptimizationError, match="initializer_token"):
        learn_domain(circles, "<x>", pipe, initializer_token="<zz>", **run)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError, match="no image files"):
        learn_domain(empty, "<x>", pipe, **run)
    (circles / "broken.png").write_text("not a picture")
    with pytest.raises(ImageInputError, match="broken.png"):
        learn_domain(circles, "<x>", pipe, **run)
