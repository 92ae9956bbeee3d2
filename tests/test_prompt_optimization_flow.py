"""Prompt optimization on SD3 / FLUX: a token learned in every text encoder with the flow-matching loss, a
safetensors file keyed per encoder (clip_l / clip_g / t5xxl), resume, and loading by lsb.prompts.domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lsb.models.random_flow import tiny_flux_components, tiny_sd3_components
from lsb.prompts.domains import DomainFileError, load_domain
from lsb.prompts.encoder_slots import model_family, text_encoder_slots
from lsb.training.prompt_optimization import DomainImages, PromptOptimizationTask, flow_level_shift, learn_domain
from tests.prompt_optimization_helpers import LEARN_KW, assert_only_new_rows_train, write_noise_images


def eval_mode(components: dict) -> dict:
    for c in components.values():
        if isinstance(c, torch.nn.Module):
            c.eval()
    return components


def flow_pipe(family: str, seed: int = 0, t5: bool = True):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if family == "sd3":
        return StableDiffusion3Pipeline(**eval_mode(tiny_sd3_components(seed, t5=t5)))
    return FluxPipeline(**eval_mode(tiny_flux_components(seed)))


@pytest.fixture
def domain_dir(tmp_path):
    d = tmp_path / "domain"
    d.mkdir()
    return write_noise_images(d)


KEYS = {"sd3": ["clip_g", "clip_l", "t5xxl"], "flux": ["clip_l", "t5xxl"]}
KW = dict(LEARN_KW, max_sequence_length=16)


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_family_and_slots():
    assert model_family(flow_pipe("sd3")) == "sd3" and model_family(flow_pipe("flux")) == "flux"
    assert [s.key for s in text_encoder_slots(flow_pipe("sd3"))] == ["clip_l", "clip_g", "t5xxl"]
    assert [s.key for s in text_encoder_slots(flow_pipe("sd3", t5=False))] == ["clip_l", "clip_g"]
    assert [(s.key, s.text_encoder_attr) for s in text_encoder_slots(flow_pipe("flux"))] == [
        ("clip_l", "text_encoder"),
        ("t5xxl", "text_encoder_2"),
    ]


def test_one_network_call_per_family_and_old_import_paths():
    """Every family with text-encoder slots has its denoiser call (lsb.training.prompt_networks), and the names the
    split moved keep their lsb.training.prompt_optimization import path."""
    from lsb.data.domain_images import DomainImages as moved_images
    from lsb.training.prompt_runs import PROMPT_OPTIMIZATION_FAMILIES
    from lsb.training import prompt_networks
    from lsb.training.prompt_task import PromptOptimizationTask as moved_task

    assert list(prompt_networks.PREDICTIONS) == list(PROMPT_OPTIMIZATION_FAMILIES)  # not the LLM-encoder families
    assert DomainImages is moved_images and PromptOptimizationTask is moved_task
    assert flow_level_shift is prompt_networks.flow_level_shift


def test_level_shift_maps():
    u = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(flow_level_shift({"shift": 3.0}, "sd3", (1, 4, 8, 8))(u), 3 * u / (1 + 2 * u))
    cfg = {
        "use_dynamic_shifting": True,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "base_shift": 0.5,
        "max_shift": 1.15,
    }
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (16 - 256)  # 16 packed tokens of an 8x8 latent
    np.testing.assert_allclose(flow_level_shift(cfg, "flux", (1, 4, 8, 8))(u), np.exp(mu) / (np.exp(mu) + 1 / u - 1))


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_prompt_optimization_file_rows_and_resume(family, domain_dir, tmp_path):
    pipe = flow_pipe(family)
    before = {
        s.key: getattr(pipe, s.text_encoder_attr).get_input_embeddings().weight.detach().clone()
        for s in text_encoder_slots(pipe)
    }
    path = learn_domain(domain_dir, "<dom>", pipe, output_dir=tmp_path / "run", **KW)
    embeds, meta = read(path)
    assert sorted(embeds) == KEYS[family] and meta["lsb_token"] == "<dom>" and meta["lsb_family"] == family
    assert meta["format"] == "pt" and meta["lsb_prompt"] == "a {}"
    # the given pipeline is untouched (copies were trained), and the learned rows moved off the initializer
    for s in text_encoder_slots(pipe):
        w = getattr(pipe, s.text_encoder_attr).get_input_embeddings().weight
        assert torch.equal(w, before[s.key])
        tok = getattr(pipe, s.tokenizer_attr)
        init = w[tok.encode("shape", add_special_tokens=False)[0]]
        assert embeds[s.key].shape == (1, w.shape[1])
        assert (embeds[s.key][0] - init).abs().max() > 1e-4, s.key
    # resume: 2 steps, then extend to 3 = one run of 3
    learn_domain(domain_dir, "<dom>", pipe, output_dir=tmp_path / "split", **{**KW, "steps": 2})
    resumed = learn_domain(domain_dir, "<dom>", pipe, output_dir=tmp_path / "split", **KW)
    again, _ = read(resumed)
    for k in embeds:
        torch.testing.assert_close(again[k], embeds[k], rtol=0, atol=1e-6)


def test_other_rows_stay_and_only_new_rows_train(domain_dir, tmp_path):
    pipe = flow_pipe("sd3")
    task = PromptOptimizationTask(
        pipe, DomainImages(domain_dir, 64), "<dom>", tmp_path / "t", num_validation_images=0, max_sequence_length=16
    )
    assert_only_new_rows_train(task, tmp_path / "t", weight_decay=1e-2)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_load_domain_into_a_fresh_pipeline_and_translate(family, domain_dir, tmp_path):
    path = learn_domain(domain_dir, "<dom>", flow_pipe(family), output_dir=tmp_path / "run", **{**KW, "steps": 1})
    embeds, _ = read(path)
    fresh = flow_pipe(family)
    prompt = load_domain(fresh, str(path))
    assert prompt == "a <dom>"
    for s in text_encoder_slots(fresh):
        tok, te = getattr(fresh, s.tokenizer_attr), getattr(fresh, s.text_encoder_attr)
        (tid,) = tok.convert_tokens_to_ids(["<dom>"])
        torch.testing.assert_close(te.get_input_embeddings().weight[tid].detach(), embeds[s.key][0])
    assert load_domain(fresh, str(path)) == "a <dom>"  # loading twice is a no-op
    # FlowEdit runs with the learned prompt
    if family == "sd3":
        from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline as cls
    else:
        from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline as cls
    pipe = cls(**{k: v for k, v in fresh.components.items() if k not in ("image_encoder", "feature_extractor")})
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        Image.open(next(domain_dir.iterdir())),
        prompt,
        "a red circle",
        num_inference_steps=4,
        n_max=2,
        max_sequence_length=16,
        output_type="np",
    )
    assert out.images.shape == (1, 64, 64, 3)


def test_sd3_file_without_t5_and_wrong_family(domain_dir, tmp_path):
    path = learn_domain(
        domain_dir, "<dom>", flow_pipe("sd3", t5=False), output_dir=tmp_path / "no_t5", **{**KW, "steps": 1}
    )
    embeds, _ = read(path)
    assert sorted(embeds) == ["clip_g", "clip_l"]
    with pytest.raises(DomainFileError, match="t5xxl"):  # a pipeline WITH T5 needs the T5 row
        load_domain(flow_pipe("sd3"), str(path))
    assert load_domain(flow_pipe("sd3", t5=False), str(path)) == "a <dom>"
    with pytest.raises(DomainFileError, match="sd3"):
        load_domain(flow_pipe("flux"), str(path))


def test_multi_token_initializer_for_a_second_encoder():
    """A second encoder whose tokenizer splits the initializer word (e.g. a character-level T5): the new row is
    the mean of the word's token rows; without the flag the split word is refused by name."""
    from lsb.models.random_flow import build_t5_encoder, build_t5_tokenizer
    from lsb.prompts.tokens import PromptOptimizationError, add_placeholder_tokens

    tok = build_t5_tokenizer()
    te = build_t5_encoder(tok, 16)
    pieces = tok.encode("zq", add_special_tokens=False)
    assert len(pieces) > 1
    with pytest.raises(PromptOptimizationError, match="initializer_token 'zq'"):
        add_placeholder_tokens(tok, te, "<dom>", 1, "zq")
    rows = te.get_input_embeddings().weight[pieces].detach().clone()
    (new,) = add_placeholder_tokens(tok, te, "<dom>", 1, "zq", multi_token_initializer=True)
    torch.testing.assert_close(te.get_input_embeddings().weight[new].detach(), rows.mean(0))
