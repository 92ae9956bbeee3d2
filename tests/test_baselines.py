"""Baselines (DDIB pipeline, SDEdit through stock img2img) and the shared translate() entry point.

Tiny random SD components throughout; the DDIB maths is also checked against the exact DDIB map of
Gaussian "domains", where the answer is known in closed form.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

import lsb
from lsb.helpers import sdedit
from lsb.surfaces import translators
from lsb.bridges.matching import sb_alpha_bar, timestep_to_alpha_bar
from lsb.data import shapes
from lsb.io.images import ImageInputError
from lsb.prompts.tokens import UnknownTokenError
from lsb.prompts.encoding import encode_text
from lsb.helpers.translation import encode_images, preprocess_images
from lsb_pipelines.ddib.pipeline import DDIBPipeline
from tests.conftest import tiny_components

DYNAMIC_MODULE = "diffusers_modules.local.pipeline"


def _img(i=0):
    return shapes.render(shapes.scenes("test", i + 1)[i])


def _imgs(n):
    return [shapes.render(s) for s in shapes.scenes("test", n)]


def _ddib(prediction_type="epsilon", **components):
    comps = tiny_components(prediction_type)
    comps.update(components)
    pipe = DDIBPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _img2img():
    pipe = StableDiffusionImg2ImgPipeline(
        **tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _record_calls(pipe):
    """Wrap pipe.unet.forward; returns a list that receives (batch, timestep, encoder_hidden_states) per call."""
    calls = []
    orig = pipe.unet.forward

    def forward(sample, timestep, *args, encoder_hidden_states=None, **kwargs):
        calls.append((sample.shape[0], float(timestep), encoder_hidden_states))
        return orig(sample, timestep, *args, encoder_hidden_states=encoder_hidden_states, **kwargs)

    pipe.unet.forward = forward
    return calls


@pytest.fixture(autouse=True)
def one_thread():
    """These tests make many tiny UNet calls: on a loaded 2-core machine, 2 intra-op threads are far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fresh_dynamic_module():
    """diffusers 0.42.1 imports every local custom ``pipeline.py`` as the same module name and re-executes it in
    place, so loading two different pipeline folders in one process finds two pipeline classes. Start and end
    each custom-loading test with that module removed."""
    sys.modules.pop(DYNAMIC_MODULE, None)
    yield
    sys.modules.pop(DYNAMIC_MODULE, None)


# ----------------------------------------------------------------------------------------------- DDIB


@pytest.mark.parametrize("nfe", [2, 3, 5, 8])
def test_ddib_spends_exactly_nfe_unet_calls(nfe):
    pipe = _ddib()
    calls = _record_calls(pipe)
    out = pipe(_imgs(2), "a circle", "a square", num_inference_steps=nfe, guidance_scale=3.0, output_type="np")
    n_inv, n_samp = nfe // 2, nfe - nfe // 2
    assert DDIBPipeline.split_nfe(nfe) == (n_inv, n_samp)
    assert out.nfe == nfe and len(calls) == nfe
    assert out.images.shape == (2, 64, 64, 3)
    # inversion at w = 0: only the null prompt (batch 2 images); sampling with CFG: one call on [negative; target]
    assert [b for b, _, _ in calls] == [2] * n_inv + [4] * n_samp
    inv_t, samp_t = [t for _, t, _ in calls[:n_inv]], [t for _, t, _ in calls[n_inv:]]
    assert inv_t == sorted(inv_t) and samp_t == sorted(samp_t, reverse=True)
    assert inv_t[-1] == samp_t[0] == 999  # both phases meet at the last training timestep
    assert out.inverted_latents.shape == (2, 4, 8, 8)


def test_ddib_prompt_roles_and_guided_inversion_cost():
    """Default: null-prompt inversion + CFG(null, target). Options: source-prompt inversion, source as negative."""
    pipe = _ddib()
    null, src, tgt = (encode_text(pipe, p, "cpu") for p in ("", "a circle", "a square"))
    calls = _record_calls(pipe)
    pipe(_img(), "a circle", "a square", num_inference_steps=4, guidance_scale=2.0, output_type="latent")
    assert torch.equal(calls[0][2], null)
    assert torch.equal(calls[2][2], torch.cat([null, tgt]))

    calls.clear()
    pipe(
        _img(),
        "a circle",
        "a square",
        num_inference_steps=4,
        guidance_scale=2.0,
        inversion_guidance_scale=1.0,
        negative_prompt="a circle",
        output_type="latent",
    )
    assert torch.equal(calls[0][2], src)
    assert torch.equal(calls[2][2], torch.cat([src, tgt]))

    calls.clear()  # a guided inversion is still one (batched) call per step
    out = pipe(
        _img(), "a circle", "a square", num_inference_steps=4, inversion_guidance_scale=0.5, output_type="latent"
    )
    assert out.nfe == 4 and [b for b, _, _ in calls] == [2, 2, 2, 2]
    assert torch.equal(calls[0][2], torch.cat([null, src]))


def test_ddib_reconstructs_source_under_the_same_prompt():
    """DDIM inversion then DDIM sampling under the same prompt (w = 1) is the identity in the many-step limit."""
    unet = tiny_components()["unet"]
    with torch.no_grad():  # a damped random head keeps the random model's ODE non-stiff enough for 50 steps
        unet.conv_out.weight.mul_(0.3)
        unet.conv_out.bias.mul_(0.3)
    pipe = _ddib(unet=unet)
    images = _img()
    pixels = preprocess_images(images, pipe.image_processor, pipe.vae_scale_factor)
    raw = encode_images(pipe.vae, pixels, "cpu")
    # the random VAE's latents are ~0.06 in scale: rescale to unit variance, as SD's scaling_factor does
    pipe.vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor / float(raw.std()))
    x = encode_images(pipe.vae, pixels, "cpu")

    def rel_err(nfe):
        out = pipe(
            images,
            "a circle",
            "a circle",
            num_inference_steps=nfe,
            guidance_scale=1.0,
            inversion_guidance_scale=1.0,
            output_type="latent",
        )
        assert not torch.allclose(out.inverted_latents, x, atol=0.1)  # the inversion really moved
        return float(((out.images - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean())

    random = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    err_random = float(((random - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean())
    err_few, err_many = rel_err(4), rel_err(50)
    assert err_many < 0.3, err_many
    assert err_many < 0.2 * err_random
    assert err_many < 0.5 * err_few  # and it converges with the number of steps


class GaussianDomainsUNet(torch.nn.Module):
    """Exact noise predictor for latents ~ N(mu(prompt), std^2 I): a model whose DDIB map is known.

    For Gaussian domains with a shared variance the probability-flow ODE keeps (x_t - sqrt(ab_t) mu) / sigma(t)
    constant, so DDIB (invert under mu_a, sample under mu_b) maps x -> mu_b + (x - mu_a). CFG mixes the means:
    eps_neg + w (eps_pos - eps_neg) is the exact eps for mu_neg + w (mu_pos - mu_neg).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, embed_dim: int, std: float = 0.5):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float64))
        # mu(prompt): the token-averaged text embedding along a fixed random direction
        self.register_buffer("direction", torch.randn(embed_dim, generator=torch.Generator().manual_seed(0)).double())
        self.std = std
        self.config = type("Config", (), {"in_channels": 4, "time_cond_proj_dim": None})()

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return self.alphas_cumprod.device

    def mu(self, embeds):
        return (embeds.double().mean(dim=1) @ self.direction).view(-1, 1, 1, 1)

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **kwargs):
        ab = self.alphas_cumprod[int(timestep)]
        x, mu = sample.double(), self.mu(encoder_hidden_states)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * self.std**2 + 1 - ab)
        return (eps.float(),)


@pytest.mark.parametrize("w_inv,w,negative", [(1.0, 1.0, None), (0.0, 3.0, None), (1.0, 2.0, "source")])
def test_ddib_matches_exact_map_on_gaussian_domains(w_inv, w, negative):
    comps = tiny_components()
    pipe = DDIBPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    model = GaussianDomainsUNet(pipe.scheduler.alphas_cumprod, pipe.text_encoder.config.hidden_size)
    pipe.unet = model
    null, src, tgt = (model.mu(encode_text(pipe, p, "cpu")).item() for p in ("", "a circle", "a square"))
    assert min(abs(src - tgt), abs(null - tgt)) > 0.3, (null, src, tgt)  # the domains are distinguishable
    neg = null if negative is None else src
    mu_inv = null + w_inv * (src - null)
    mu_samp = neg + w * (tgt - neg)

    x = encode_images(pipe.vae, preprocess_images(_img(), pipe.image_processor, pipe.vae_scale_factor), "cpu")
    expected = mu_samp + (x.double() - mu_inv)

    def err(nfe):
        out = pipe(
            _img(),
            "a circle",
            "a square",
            num_inference_steps=nfe,
            guidance_scale=w,
            inversion_guidance_scale=w_inv,
            negative_prompt="a circle" if negative else None,
            output_type="latent",
        )
        return float((out.images.double() - expected).abs().max())

    scale = max(abs(mu_samp - mu_inv), 1.0)
    err_few, err_even, err_odd = err(4), err(100), err(51)
    assert err_even < 0.05 * scale, err_even
    assert err_odd < 0.1 * scale, err_odd  # odd NFE: 25 inversion + 26 sampling steps still meet
    assert err_few > 2 * err_even


def test_ddib_v_prediction_and_callback():
    pipe = _ddib("v_prediction")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.timestep_spacing == "trailing" and not pipe.scheduler.config.clip_sample
    seen = []

    def cb(p, i, t, tensors):
        seen.append((i, p.phase, tensors["latents"].shape))
        return tensors

    out = pipe(
        _img(),
        "a circle",
        "a square",
        num_inference_steps=5,
        output_type="np",
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert np.isfinite(out.images).all()
    assert [(i, ph) for i, ph, _ in seen] == [
        (0, "inversion"),
        (1, "inversion"),
        (2, "sampling"),
        (3, "sampling"),
        (4, "sampling"),
    ]
    assert pipe.phase is None


def test_ddib_from_pretrained_and_custom_pipeline(tiny_sd_dir, fresh_dynamic_module):
    from diffusers import DiffusionPipeline

    ref = DDIBPipeline.from_pretrained(tiny_sd_dir)  # a PNDM SD folder: the scheduler is converted
    ref.set_progress_bar_config(disable=True)
    assert isinstance(ref.scheduler, DDIMScheduler)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tiny_sd_dir, custom_pipeline=lsb.pipeline_dir("ddib"))
    pipe = DiffusionPipeline.from_pretrained(
        tiny_sd_dir, custom_pipeline=lsb.pipeline_dir("ddib"), trust_remote_code=True
    )
    assert type(pipe).__name__ == "DDIBPipeline"
    assert type(pipe).__module__ != DDIBPipeline.__module__  # diffusers' copy of the file, not our module
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=4, guidance_scale=2.0, output_type="pt")
    a = pipe(_img(), "a circle", "a square", **kw)
    b = ref(_img(), "a circle", "a square", **kw)
    assert a.nfe == b.nfe == 4
    assert torch.allclose(a.images, b.images)


# --------------------------------------------------------------------------------------------- SDEdit


@pytest.mark.parametrize("t0,tau", [(0.2, 5.29), (0.1, 1.0), (0.4, 20.0)])
def test_sdedit_strength_matches_lsb_start_snr(t0, tau):
    ac = DDIMScheduler.from_config(tiny_components()["scheduler"].config).alphas_cumprod
    strength = sdedit.sdedit_strength(t0, tau, ac)
    start = strength * len(ac)
    # the same timestep LSB's first model call uses
    sched = lsb.LSBScheduler.from_config(tiny_components()["scheduler"].config)
    sched.set_timesteps(4, t0=t0, tau=tau)
    assert start == pytest.approx(float(sched.timesteps[0]), abs=1e-3)
    # and its signal level is LSB's 1 / (1 + tau t0 (1 - t0))
    assert float(timestep_to_alpha_bar(start, ac)) == pytest.approx(sb_alpha_bar(t0, tau), rel=1e-6)
    assert 0 < strength < 1


@pytest.mark.parametrize("nfe", [4, 8])
def test_sdedit_spends_exactly_nfe_and_starts_at_lsb_snr(nfe):
    pipe = _img2img()  # PNDM scheduler: converted to DDIM, as the paper runs SDEdit
    calls = _record_calls(pipe)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    images, spent = sdedit.sdedit_translate(
        pipe,
        _imgs(2),
        "a circle",
        "a square",
        nfe=nfe,
        t0=0.2,
        tau=5.29,
        guidance_scale=3.0,
        generator=gens,
        output_type="np",
    )
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert spent == nfe and len(calls) == nfe
    assert images.shape == (2, 64, 64, 3)
    assert all(b == 4 for b, _, _ in calls)  # one batched CFG call on [source (negative); target] per step
    src, tgt = encode_text(pipe, "a circle", "cpu"), encode_text(pipe, "a square", "cpu")
    assert torch.equal(calls[0][2], torch.cat([src, src, tgt, tgt]))
    # the first denoising step is at the grid timestep nearest LSB's SNR-matched start, within half a step
    s_star = sdedit.sdedit_start_timestep(0.2, 5.29, pipe.scheduler.alphas_cumprod)
    first, second = calls[0][1], calls[1][1]
    assert abs(first - s_star) <= 0.5 * (first - second) + 1


def test_sdedit_schedule_runs_exactly_nfe_steps():
    sched = DDIMScheduler.from_config(tiny_components()["scheduler"].config)
    for nfe in (2, 3, 4, 8, 13, 50):
        for start in (50.0, 329.0, 700.0, 999.0):
            n, strength, first = sdedit.sdedit_schedule(nfe, start, sched)
            assert int(n * strength) == nfe and 0 < strength <= 1
            sched.set_timesteps(n)
            assert int(sched.timesteps[n - nfe]) == first


# --------------------------------------------------------------------------------- translate() for all


@pytest.mark.parametrize("method", translators.METHODS)
def test_translate_all_methods_load_and_are_deterministic(method, tiny_sd_dir):
    pipe = translators.load_translator(method, str(tiny_sd_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    if method == "sdedit":
        assert isinstance(pipe, StableDiffusionImg2ImgPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    calls = _record_calls(pipe)

    def run(seed):
        gens = [torch.Generator().manual_seed(seed + i) for i in range(2)]
        return translators.translate(
            method,
            pipe,
            _imgs(2),
            "a circle",
            "a square",
            nfe=4,
            guidance_scale=3.0,
            tau=5.29,
            t0=0.2,
            generator=gens,
            output_type="np",
        )

    a, nfe_a = run(0)
    assert nfe_a == 4 and len(calls) == 4
    b, _ = run(0)
    assert a.shape == (2, 64, 64, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    if method != "ddib":  # DDIB is deterministic: the seed does not enter
        c, _ = run(1)
        assert not np.array_equal(a, c)


def test_translate_accepts_prompt_embeddings():
    pipe = _ddib()
    src, tgt = encode_text(pipe, "a circle", "cpu"), encode_text(pipe, "a square", "cpu")
    kw = dict(nfe=4, guidance_scale=2.0, output_type="pt")
    a, _ = translators.translate("ddib", pipe, _img(), "a circle", "a square", **kw)
    b, _ = translators.translate("ddib", pipe, _img(), src, tgt, **kw)
    assert torch.allclose(a, b)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("method", translators.METHODS)
def test_translate_rejects_small_nfe_and_bad_prompts(method, tiny_sd_dir):
    pipe = translators.load_translator(method, str(tiny_sd_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    calls = _record_calls(pipe)
    kw = dict(nfe=4, output_type="np")
    for nfe in (1, 0, 2.5):
        with pytest.raises(ValueError, match="nfe"):
            translators.translate(method, pipe, _img(), "a circle", "a square", nfe=nfe, output_type="np")
    with pytest.raises(TypeError, match="source_prompt"):
        translators.translate(method, pipe, _img(), None, "a square", **kw)
    with pytest.raises(TypeError, match="target_prompt"):
        translators.translate(method, pipe, _img(), "a circle", 3, **kw)
    with pytest.raises(UnknownTokenError, match="<nonexistent>"):
        translators.translate(method, pipe, _img(), "a circle", "a <nonexistent>", **kw)
    with pytest.raises(ImageInputError, match="multiple of 8"):
        translators.translate(method, pipe, _img().resize((60, 64)), "a circle", "a square", **kw)
    assert calls == []  # every error is raised before any model compute


def test_other_errors():
    pipe = _ddib()
    with pytest.raises(ValueError, match="NFE"):
        pipe(_img(), "a circle", "a square", num_inference_steps=1)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(_img(), target_prompt="a square", num_inference_steps=2)
    with pytest.raises(TypeError, match="source_prompt"):
        pipe(_img(), 5, "a square", num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(_img(), "a circle", "a square", num_inference_steps=2, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="unknown translation method"):
        translators.translate("cyclegan", pipe, _img(), "a circle", "a square")
    with pytest.raises(ValueError, match="unknown translation method"):
        translators.load_translator("cyclegan")
    with pytest.raises(ValueError, match="t0"):
        sdedit.sdedit_translate(_img2img(), _img(), "a circle", "a square", nfe=4, t0=1.0)
    with pytest.raises(ValueError, match="tau"):
        sdedit.sdedit_strength(0.2, -1.0, DDIMScheduler().alphas_cumprod)
