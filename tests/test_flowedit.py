"""FlowEdit on SD3 / FLUX: the update against an independent computation, step semantics, counting, CFG
branches, determinism, FLUX packing, bad input.

The independent computation: for Gaussian data x ~ N(m_c, a^2 I) under prompt c, the exact rectified-flow
velocity v(z, s) = E[e - x | z_s = z] is linear in z with a slope A(s) that does not depend on c:

    q = (1 - s)^2 a^2 + s^2,   A(s) = (s - (1 - s) a^2) / q,   v_c(z, s) = A(s) (z - (1 - s) m_c) - m_c.

FlowEdit's bracket V(Z + Z_src - X_src) - V(Z_src) is then A (Z - X_src) + b_tar - b_src: the fresh noise
cancels exactly, and D = Z - X_src follows a deterministic scalar recursion per channel that the test rolls by
hand (and that converges to an RK4 solution of the continuous ODE as T grows). A ModelMixin "transformer"
computing this closed form (m_c read from the pooled prompt embedding) is put into the real pipelines.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ConfigMixin, FluxTransformer2DModel, ModelMixin, SD3Transformer2DModel
from diffusers.configuration_utils import register_to_config

from lsb.bridges.flowedit import flowedit_steps
from lsb.helpers.flowedit import SD3_FLOWEDIT_DEFAULTS, flowedit_counts
from lsb.models.random_flow import tiny_flux_components, tiny_sd3_components

A_DATA = 0.7  # data standard deviation of the analytic model


class AnalyticFlowModel(ModelMixin, ConfigMixin):
    """Exact velocity of Gaussian data N(m_c, a^2 I); m_c = the first C features of the pooled embedding
    (times the distilled guidance value when the model has a guidance embedding, as a FLUX stand-in)."""

    @register_to_config
    def __init__(
        self,
        channels: int = 4,
        a: float = A_DATA,
        timestep_scale: float = 1000.0,
        packed: bool = False,
        patch_size: int = 2,
        joint_attention_dim: int = 48,
        guidance_embeds: bool = False,
    ):
        ModelMixin.__init__(self)  # not super(): the SD3/FLUX subclasses below must not build a real transformer
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[dict] = []

    def means(self, pooled, guidance=None):
        m = pooled[:, : self.config.channels].float()
        if guidance is not None:
            m = m * guidance.float()[:, None]
        if self.config.packed:  # packed tokens: feature index c * 4 + (dy, dx)
            return m.repeat_interleave(4, dim=1)[:, None, :]
        return m[:, :, None, None]

    def forward(
        self,
        hidden_states,
        timestep,
        encoder_hidden_states=None,
        pooled_projections=None,
        guidance=None,
        txt_ids=None,
        img_ids=None,
        return_dict=False,
        **kwargs,
    ):
        self.calls.append(
            {
                "batch": hidden_states.shape[0],
                "timestep": timestep.detach().clone(),
                "enc": encoder_hidden_states.detach().clone(),
                "pooled": pooled_projections.detach().clone(),
                "guidance": None if guidance is None else guidance.detach().clone(),
                "img_ids": None if img_ids is None else img_ids.detach().clone(),
            }
        )
        s = (timestep.float() / self.config.timestep_scale).reshape(-1, *[1] * (hidden_states.ndim - 1))
        a2 = self.config.a**2
        m = self.means(pooled_projections, guidance)
        slope = (s - (1 - s) * a2) / ((1 - s) ** 2 * a2 + s**2)
        v = slope * (hidden_states.float() - (1 - s) * m) - m
        return (v.to(hidden_states.dtype),)


class AnalyticSD3(AnalyticFlowModel, SD3Transformer2DModel):
    """The analytic field passing the pipelines' check of the transformer class (an SD3Transformer2DModel)."""


class AnalyticFlux(AnalyticFlowModel, FluxTransformer2DModel):
    """The analytic field as a FluxTransformer2DModel (packed tokens, guidance per row)."""


def analytic_slope(s: float, a: float = A_DATA) -> float:
    return (s - (1 - s) * a * a) / ((1 - s) ** 2 * a * a + s * s)


def hand_rolled_flowedit(sigmas, b_src, b_tar):
    """D = Z - X_src after FlowEdit's Euler recursion D <- D + (s' - s)(A(s) D + b_tar(s) - b_src(s)), from D = 0;
    b_*(s) are callables giving the guided offsets (numpy arrays)."""
    d = np.zeros_like(b_src(float(sigmas[0])))
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = d + (s_next - s) * (analytic_slope(s) * d + b_tar(s) - b_src(s))
    return d


def offset(m, s):
    """b_c(s) = -A(s)(1 - s) m - m: the z-independent part of the analytic velocity."""
    return -analytic_slope(s) * (1 - s) * m - m


def eval_mode(components: dict) -> dict:
    """Freshly built transformers models are in train mode (T5 has dropout): switch every module to eval."""
    for c in components.values():
        if isinstance(c, torch.nn.Module):
            c.eval()
    return components


def quiet_pipe(pipeline_class, components: dict, model=None):
    """``pipeline_class`` on the eval-mode ``components`` (``model``: the transformer instead), no progress bar."""
    comps = eval_mode(components)
    if model is not None:
        comps["transformer"] = model
    pipe = pipeline_class(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_pipe(model=None, seed=0, with_t5=True):
    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    return quiet_pipe(FlowEditSD3Pipeline, tiny_sd3_components(seed, t5=with_t5), model)


def flux_pipe(model=None, seed=0, guidance_embeds=True):
    from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline

    return quiet_pipe(FlowEditFluxPipeline, tiny_flux_components(seed, guidance_embeds=guidance_embeds), model)


def image(seed=0, size=64):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.uniform(0, 1, (3, size, size)).astype(np.float32))


def source_latent(pipe, img):
    """X_src computed here, independently of the pipeline: VAE mode, (z - shift) * scale."""
    with torch.no_grad():
        z = pipe.vae.encode(img[None] * 2 - 1).latent_dist.mode()
    return (z - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor


@torch.no_grad()
def pooled_of(pipe, prompt, **kw):
    return pipe.encode_prompt(prompt, "cpu", **kw)[1][0].float()


def analytic_mean(pipe, prompt) -> np.ndarray:
    """m_c of the analytic model under ``prompt``: the first 4 pooled features, [4, 1, 1] (float64)."""
    return pooled_of(pipe, prompt, max_sequence_length=16)[:4].double().numpy()[:, None, None]


def edit(pipe, img=None, source="a red circle", target="a blue square", **kw):
    """``pipe`` edits ``img`` (default: a fresh :func:`image`) from ``source`` to ``target``, with 16 T5 tokens and
    latent output unless ``kw`` says otherwise."""
    return pipe(
        image() if img is None else img, source, target, **{"max_sequence_length": 16, "output_type": "latent", **kw}
    )


# ------------------------------------------------------------------------------------------------- the math
def test_step_window_semantics():
    assert flowedit_steps(50, 33) == (range(17, 50), range(50, 50))
    assert flowedit_steps(10, 10) == (range(0, 10), range(10, 10))
    assert flowedit_steps(10, 0) == (range(10, 10), range(10, 10))
    assert flowedit_steps(10, 6, 2) == (range(4, 8), range(8, 10))
    for bad in [dict(n_max=11), dict(n_max=-1), dict(n_max=3, n_min=4), dict(n_max=2.5)]:
        with pytest.raises(ValueError, match="n_m"):
            flowedit_steps(10, **{"n_min": 0, **bad})
    assert flowedit_counts(33, 0, 1, 4, 2) == (33, 132)
    assert flowedit_counts(24, 0, 1, 2, 1) == (24, 48)
    assert flowedit_counts(5, 2, 3, 4, 2) == (17, 64)


def test_hand_rolled_recursion_converges_to_the_continuous_ode():
    """Sanity of the reference itself: Euler on a fine grid -> RK4 of dD/ds = A D + db (s from s0 to 0)."""
    m_src, m_tar = np.array([0.3, -1.0]), np.array([1.2, 0.4])

    def rhs(s, d):
        return analytic_slope(s) * d + offset(m_tar, s) - offset(m_src, s)

    s0, n = 0.8, 4000
    d, hs = np.zeros(2), -s0 / n
    for k in range(n):  # RK4, independent of the Euler recursion
        s = s0 + k * hs
        k1 = rhs(s, d)
        k2 = rhs(s + hs / 2, d + hs / 2 * k1)
        k3 = rhs(s + hs / 2, d + hs / 2 * k2)
        k4 = rhs(s + hs, d + hs * k3)
        d = d + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    euler = hand_rolled_flowedit(np.linspace(s0, 0, 20001), lambda s: offset(m_src, s), lambda s: offset(m_tar, s))
    np.testing.assert_allclose(euler, d, atol=2e-3)


@pytest.mark.parametrize("cfg", [(3.5, 13.5), (1.0, 1.0)])
def test_sd3_update_matches_the_analytic_recursion(cfg):
    """The pipeline's FlowEdit (CFG on both branches) = the hand-rolled recursion with the guided offsets."""
    w_src, w_tar = cfg
    model = AnalyticSD3()
    pipe = sd3_pipe(model)
    img = image()
    T, n_max = 12, 8
    out = edit(
        pipe,
        img,
        num_inference_steps=T,
        n_max=n_max,
        source_guidance_scale=w_src,
        target_guidance_scale=w_tar,
        generator=torch.Generator().manual_seed(0),
    )
    x_src = source_latent(pipe, img)[0].double().numpy()

    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(T)
    sigmas = sched.sigmas.double().numpy()[T - n_max :]
    m_u, m_s, m_t = (analytic_mean(pipe, p) for p in ("", "a red circle", "a blue square"))

    def guided(m_c, w):
        return lambda s: offset(m_u, s) + w * (offset(m_c, s) - offset(m_u, s))

    d = hand_rolled_flowedit(sigmas, guided(m_s, w_src), guided(m_t, w_tar))
    np.testing.assert_allclose(out.images[0].double().numpy(), x_src + d, atol=2e-4, rtol=1e-4)
    assert np.abs(d).max() > 0.1  # the edit moved the latent
    per_step = 4 if cfg != (1.0, 1.0) else 2
    assert (out.nfe, out.forward_passes) == (n_max, per_step * n_max)
    assert len(model.calls) == n_max and all(c["batch"] == per_step for c in model.calls)
    # the timesteps visited: the scheduler's (shift 3) grid from step T - n_max on, 0-1000 scale
    np.testing.assert_allclose(
        [float(c["timestep"][0]) for c in model.calls], sched.timesteps[T - n_max :].numpy(), rtol=1e-6
    )


def test_sd3_cfg_branch_rows():
    """One batched call per step on [src-uncond, src-cond, tar-uncond, tar-cond] with the right embeddings."""
    model = AnalyticSD3()
    pipe = sd3_pipe(model)
    edit(pipe, num_inference_steps=4, n_max=2)
    enc_u, pool_u = pipe.encode_prompt("", "cpu", max_sequence_length=16)
    enc_s, pool_s = pipe.encode_prompt("a red circle", "cpu", max_sequence_length=16)
    enc_t, pool_t = pipe.encode_prompt("a blue square", "cpu", max_sequence_length=16)
    for call in model.calls:
        torch.testing.assert_close(call["enc"], torch.cat([enc_u, enc_s, enc_u, enc_t]))
        torch.testing.assert_close(call["pooled"], torch.cat([pool_u, pool_s, pool_u, pool_t]))


def test_n_max_zero_returns_the_input_and_n_max_T_starts_at_the_top():
    model = AnalyticSD3()
    pipe = sd3_pipe(model)
    img = image()
    out = edit(pipe, img, num_inference_steps=6, n_max=0)
    torch.testing.assert_close(out.images, source_latent(pipe, img), rtol=0, atol=1e-6)
    assert (out.nfe, out.forward_passes, len(model.calls)) == (0, 0, 0)
    seen = []
    edit(
        pipe,
        img,
        num_inference_steps=6,
        n_max=6,
        callback_on_step_end=lambda p, i, t, d: seen.append((i, float(t))) or {},
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert [i for i, _ in seen] == list(range(6)) and seen[0][1] == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="n_max"):
        pipe(img, "a", "b", num_inference_steps=6, n_max=7)
    with pytest.raises(ValueError, match="n_avg"):
        pipe(img, "a", "b", num_inference_steps=6, n_max=3, n_avg=0)


def test_n_avg_and_n_min_counts():
    model = AnalyticSD3()
    pipe = sd3_pipe(model)
    out = edit(pipe, num_inference_steps=8, n_max=5, n_min=2, n_avg=3)
    # 3 edit steps x 3 draws (4 latents each) + 2 plain target steps ([uncond, cond])
    assert (out.nfe, out.forward_passes) == (3 * 3 + 2, 3 * 3 * 4 + 2 * 2)
    assert [c["batch"] for c in model.calls] == [4] * 9 + [2] * 2


def test_sd3_determinism_with_a_generator_and_without_t5():
    pipe = sd3_pipe(seed=1, with_t5=False)  # the real tiny SD3 transformer: nonlinear, the noise matters
    kw = dict(num_inference_steps=6, n_max=4, output_type="np", max_sequence_length=16)
    a = pipe(image(), "a red circle", "a blue square", generator=torch.Generator().manual_seed(3), **kw).images
    b = pipe(image(), "a red circle", "a blue square", generator=torch.Generator().manual_seed(3), **kw).images
    c = pipe(image(), "a red circle", "a blue square", generator=torch.Generator().manual_seed(4), **kw).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-6
    assert a.shape == (1, 64, 64, 3)


def test_sd3_paper_defaults():
    import inspect

    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    p = inspect.signature(FlowEditSD3Pipeline.__call__).parameters
    assert (
        p["num_inference_steps"].default,
        p["n_max"].default,
        p["source_guidance_scale"].default,
        p["target_guidance_scale"].default,
        p["n_avg"].default,
    ) == (50, 33, 3.5, 13.5, 1)
    assert SD3_FLOWEDIT_DEFAULTS["n_max"] == 33


# ------------------------------------------------------------------------------------------------- FLUX
def test_flux_update_matches_the_analytic_recursion_through_packing():
    """FLUX: packed [src; tar] in one call, each row with its own distilled guidance; the unpacked result equals
    the hand-rolled recursion per channel (the packing is undone exactly)."""
    from lsb.helpers.flux import latent_image_ids

    model = AnalyticFlux(timestep_scale=1.0, packed=True, guidance_embeds=True)
    pipe = flux_pipe(model)
    img = image()
    T, n_max = 10, 7
    out = edit(pipe, img, num_inference_steps=T, n_max=n_max, generator=torch.Generator().manual_seed(0))
    x_src = source_latent(pipe, img)[0].double().numpy()
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    seq_len = (x_src.shape[1] // 2) * (x_src.shape[2] // 2)
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = sched.config
    mu = calculate_shift(seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / T, T), mu=mu)
    sigmas = sched.sigmas.double().numpy()[T - n_max :]
    m_s = analytic_mean(pipe, "a red circle") * 1.5
    m_t = analytic_mean(pipe, "a blue square") * 5.5
    d = hand_rolled_flowedit(sigmas, lambda s: offset(m_s, s), lambda s: offset(m_t, s))
    np.testing.assert_allclose(out.images[0].double().numpy(), x_src + d, atol=2e-4, rtol=1e-4)
    assert (out.nfe, out.forward_passes) == (n_max, 2 * n_max)
    for call in model.calls:
        assert call["batch"] == 2
        assert call["guidance"].tolist() == [1.5, 5.5]
        torch.testing.assert_close(call["img_ids"], latent_image_ids(x_src.shape[1], x_src.shape[2]))
        assert 0 < float(call["timestep"][0]) <= 1.0  # FLUX takes sigma itself


def test_flux_real_tiny_transformer_runs_and_is_deterministic():
    pipe = flux_pipe(seed=2)
    kw = dict(num_inference_steps=5, n_max=4, output_type="np", max_sequence_length=16)
    a = pipe(image(), "a red circle", "a blue square", generator=torch.Generator().manual_seed(1), **kw)
    b = pipe(image(), "a red circle", "a blue square", generator=torch.Generator().manual_seed(1), **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (1, 64, 64, 3) and (a.nfe, a.forward_passes) == (4, 8)


def test_flux_bad_input():
    schnell = flux_pipe(guidance_embeds=False)
    with pytest.raises(ValueError, match="guidance"):
        schnell(image(), "a", "b", num_inference_steps=4, n_max=2, source_guidance_scale=1.5, max_sequence_length=16)
    out = edit(schnell, num_inference_steps=4, n_max=2)  # schnell without guidance values runs
    assert out.nfe == 2
    dev = flux_pipe()
    with pytest.raises(ValueError, match="multiple of 16"):  # 2 x the VAE factor 8: FLUX's 2x2 packing
        dev(image(size=72), "a", "b", num_inference_steps=4, n_max=2, max_sequence_length=16)
    with pytest.raises(ValueError, match="max_sequence_length"):
        dev(image(), "a", "b", num_inference_steps=4, n_max=2, max_sequence_length=600)


def test_vp_scheduler_is_refused():
    from diffusers import DDIMScheduler

    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    comps = tiny_sd3_components()
    comps["scheduler"] = DDIMScheduler()
    with pytest.raises(ValueError, match="rectified-flow scheduler"):
        FlowEditSD3Pipeline(**comps)


# ------------------------------------------------------------------------------------------------- SDEdit on flow
@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("nfe", [2, 5])
def test_sdedit_flow_runs_exactly_nfe_steps_from_the_matched_level(family, nfe):
    from diffusers import FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

    from lsb.bridges.flow import flow_level
    from lsb.helpers.flowedit import flow_timesteps
    from lsb.helpers.sdedit import flow_image_seq_len, sdedit_flow_schedule, sdedit_flow_translate

    if family == "sd3":
        pipe = StableDiffusion3Img2ImgPipeline(**eval_mode(tiny_sd3_components(0)))
    else:
        pipe = FluxImg2ImgPipeline(**eval_mode(tiny_flux_components(0)))
    pipe.set_progress_bar_config(disable=True)
    t0, tau = 0.3, 1.0
    seen = []
    real_call = pipe.transformer.forward

    def counting(*a, **k):
        seen.append((k["hidden_states"].shape[0], float(k["timestep"].flatten()[0])))
        return real_call(*a, **k)

    pipe.transformer.forward = counting
    images, nfe_spent, passes = sdedit_flow_translate(
        pipe,
        image(),
        "a red circle",
        "a blue square",
        nfe=nfe,
        t0=t0,
        tau=tau,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        max_sequence_length=16,
    )
    assert nfe_spent == nfe == len(seen)
    per_step = 2 if family == "sd3" else 1
    assert passes == per_step * nfe and all(b == per_step for b, _ in seen)
    assert images.shape == (1, 64, 64, 3)
    # the first level visited is the grid level nearest LSB's start level s(t0), searched independently here
    target = float(flow_level(t0, tau))
    seq = flow_image_seq_len(pipe, 64, 64)
    n, _, level = sdedit_flow_schedule(nfe, target, pipe.scheduler, family, seq)
    probe = type(pipe.scheduler).from_config(pipe.scheduler.config)
    levels = [float(flow_timesteps(probe, m, "cpu", seq, family)[1][m - nfe]) for m in range(nfe, 400)]
    assert abs(level - target) == pytest.approx(min(abs(v - target) for v in levels))
    first = seen[0][1] * (1.0 if family == "sd3" else 1000.0)  # FLUX gets sigma, SD3 sigma * 1000
    assert first == pytest.approx(level * 1000, rel=1e-5)


# ------------------------------------------------------------------------------------------------- differential
def capture(module):
    """Record the keyword inputs of every forward call of ``module`` (a pre-hook)."""
    calls = []

    def hook(mod, args, kwargs):
        calls.append({k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})

    module.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def stock_then_flowedit_calls(stock_class, pipeline_class, components: dict, stock_kwargs: dict, **edit_kwargs):
    """The transformer calls of diffusers' ``stock_class`` on "a red circle" at 64 px (``stock_kwargs``: steps,
    guidance), then those of our FlowEdit ``pipeline_class`` (``edit_kwargs``) on the same modules (one hook sees
    both): ``(theirs, ours)``."""
    stock = quiet_pipe(stock_class, components)
    ref = capture(stock.transformer)
    stock("a red circle", **stock_kwargs, height=64, width=64, max_sequence_length=16, output_type="latent")
    pipe = quiet_pipe(pipeline_class, components)  # the same modules as the stock pipeline
    ref_n = len(ref)
    edit(pipe, **edit_kwargs)
    return ref[:ref_n], ref[ref_n:]


def test_sd3_inputs_equal_the_stock_pipelines():
    """With n_max = T, FlowEdit's source rows [uncond, cond] get the embeddings and timesteps that diffusers'
    StableDiffusion3Pipeline passes for the same prompt, negative prompt "" and size."""
    from diffusers import StableDiffusion3Pipeline

    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    theirs, ours = stock_then_flowedit_calls(
        StableDiffusion3Pipeline,
        FlowEditSD3Pipeline,
        tiny_sd3_components(3),
        {"negative_prompt": "", "num_inference_steps": 5, "guidance_scale": 3.5},
        num_inference_steps=5,
        n_max=5,
    )
    assert len(ours) == len(theirs) == 5
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b["timestep"][:2], a["timestep"])
        torch.testing.assert_close(b["encoder_hidden_states"][:2], a["encoder_hidden_states"])
        torch.testing.assert_close(b["pooled_projections"][:2], a["pooled_projections"])


def test_flux_inputs_equal_the_stock_pipelines():
    """FLUX: the source row gets FluxPipeline's timestep (sigma), distilled guidance, img_ids, txt_ids, T5 and
    pooled CLIP embeddings for the same prompt, guidance and size."""
    from diffusers import FluxPipeline

    from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline

    theirs, ours = stock_then_flowedit_calls(
        FluxPipeline,
        FlowEditFluxPipeline,
        tiny_flux_components(3),
        {"num_inference_steps": 4, "guidance_scale": 1.5},
        num_inference_steps=4,
        n_max=4,
        source_guidance_scale=1.5,
        target_guidance_scale=5.5,
    )
    assert len(ours) == len(theirs) == 4
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b["timestep"][:1], a["timestep"])
        torch.testing.assert_close(b["guidance"][:1], a["guidance"])
        assert float(b["guidance"][1]) == 5.5
        torch.testing.assert_close(b["img_ids"], a["img_ids"])
        torch.testing.assert_close(b["txt_ids"], a["txt_ids"])
        torch.testing.assert_close(b["encoder_hidden_states"][:1], a["encoder_hidden_states"])
        torch.testing.assert_close(b["pooled_projections"][:1], a["pooled_projections"])


# ------------------------------------------------------------------------------------------------- real architecture
@pytest.mark.slow
def test_real_sd3_medium_transformer_flowedit_once():
    """FlowEdit through the real SD3-medium transformer (2.03B parameters, random weights, bf16) at 32 px
    (4x4 latents), 2 FlowEdit steps with CFG on both branches: one call of 4 latents per step; T5 absent."""
    import os
    import time
    from pathlib import Path

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from lsb.models import mini_sd
    from lsb.models.random_flow import build_clip_encoder, build_real_transformer, load_flow_config
    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    configs = Path(os.environ.get("LSB_CONFIGS", "/work/shared/configs"))
    if not configs.is_dir():
        pytest.skip("the real configs (../shared/configs) are not here")
    start = time.perf_counter()
    transformer = build_real_transformer(configs, "sd3-medium", dtype=torch.bfloat16)
    tok = mini_sd.build_tokenizer(max_length=77)
    pipe = FlowEditSD3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(load_flow_config(configs, "sd3-medium", "scheduler")),
        vae=AutoencoderKL(**load_flow_config(configs, "sd3-medium", "vae")).to(torch.bfloat16),
        tokenizer=tok,
        tokenizer_2=tok,
        text_encoder=build_clip_encoder(tok, 64, 768).to(torch.bfloat16),
        text_encoder_2=build_clip_encoder(tok, 64, 1280, seed=1).to(torch.bfloat16),
    )
    pipe.set_progress_bar_config(disable=True)
    calls = capture(transformer)
    built = time.perf_counter()
    out = pipe(
        image(size=32),
        "a red circle",
        "a blue square",
        num_inference_steps=3,
        n_max=2,
        max_sequence_length=8,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    print(
        f"real SD3-medium FlowEdit (bf16, 32 px, 2 steps): build {built - start:.1f} s, "
        f"edit {time.perf_counter() - built:.1f} s"
    )
    assert (out.nfe, out.forward_passes) == (2, 8) and len(calls) == 2
    assert calls[0]["hidden_states"].shape == (4, 16, 4, 4)
    assert calls[0]["encoder_hidden_states"].shape == (4, 77 + 8, 4096)
    assert calls[0]["pooled_projections"].shape == (4, 2048)
    assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()


def test_sd3_size_and_schnell_guidance_are_refused_before_compute():
    from diffusers import FluxImg2ImgPipeline

    from lsb.helpers.sdedit import sdedit_flow_translate
    from lsb.io.images import ImageInputError

    model = AnalyticSD3()
    pipe = sd3_pipe(model)
    with pytest.raises(ImageInputError, match="multiple of 16"):  # VAE factor 8 x patch 2
        pipe(image(size=72), "a", "b", num_inference_steps=4, n_max=2, max_sequence_length=16)
    assert model.calls == []
    schnell = FluxImg2ImgPipeline(**eval_mode(tiny_flux_components(0, guidance_embeds=False)))
    with pytest.raises(ValueError, match="schnell"):
        sdedit_flow_translate(schnell, image(), "a", "b", nfe=2, guidance_scale=3.5)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_no_edit_returns_the_input_exactly(family):
    """Same prompt and same guidance on both branches: Z_tar = Z_src at the first step, so the bracket is exactly
    zero and Z stays X_src at every step (for any model and any noise) -- the real tiny transformers here."""
    pipe = sd3_pipe(seed=4) if family == "sd3" else flux_pipe(seed=4)
    img = image()
    kw = {"source_guidance_scale": 4.0, "target_guidance_scale": 4.0}  # CFG (SD3) / distilled guidance (FLUX)
    kw = {**kw, "num_inference_steps": 6, "n_max": 5}
    out = edit(pipe, img, target="a red circle", generator=torch.Generator().manual_seed(0), **kw)
    x_src = source_latent(pipe, img)  # FLUX's output is unpacked back to [B, C, h, w] too
    torch.testing.assert_close(out.images, x_src, rtol=0, atol=1e-6)
    moved = edit(pipe, img, generator=torch.Generator().manual_seed(0), **kw)
    assert (moved.images - x_src).abs().max() > 1e-4
