"""Decoupled diffusion (DDM): math vs independent computations, scheduler, two-head convention, pipeline, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lsb
from lsb.bridges import ddm as D
from lsb.models.ddm import check_ddm_unet, merge_heads, split_heads
from tests.conftest import tiny_components, tiny_unet


# ------------------------------------------------------------------ math
def test_constant_attenuation_is_the_gaussian_schedule():
    x0, eps = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for t in (0.0, 0.3, 1.0):
        assert torch.allclose(D.ddm_forward(x0, eps, t), (1 - t) * x0 + math.sqrt(t) * eps)
    K = D.sample_linear_k((3, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert K.abs().max() <= 1
    # x_1 = eps for both attenuations (x_0 + H_1 = 0)
    assert torch.allclose(D.ddm_forward(x0, eps, 1.0, K), eps)
    # linear H_t is the integral of h = K r + C (trapezoid on a fine grid)
    C = D.attenuation_parameters(x0, K)
    r = torch.linspace(0, 0.7, 20001, dtype=torch.float64)
    h = K[None] * r[:, None, None] + C[None]
    assert torch.allclose(torch.trapezoid(h, r, dim=0), D.attenuation_integral(0.7, C, K), atol=1e-9)


def _conditional_gaussian(t: float, s: float):
    """Independent closed form: (W_{t-s}, W_t) is jointly Gaussian with cov [[t-s, t-s], [t-s, t]];
    condition the first on the second with the generic Schur-complement formula."""
    S = np.array([[t - s, t - s], [t - s, t]])
    a = S[0, 1] / S[1, 1]
    return a, S[0, 0] - S[0, 1] ** 2 / S[1, 1]


@pytest.mark.parametrize("K_on", [False, True])
@pytest.mark.parametrize("t,s", [(1.0, 0.1), (0.6, 0.25), (0.3, 0.3)])
def test_posterior_matches_gaussian_conditioning(t, s, K_on):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, dtype=torch.float64, generator=g)
    K = D.sample_linear_k((5,), g, dtype=torch.float64) if K_on else None
    C = D.attenuation_parameters(x0, K)
    W_t = math.sqrt(t) * torch.randn(5, dtype=torch.float64, generator=g)
    x_t = x0 + D.attenuation_integral(t, C, K) + W_t
    mean, var = D.ddm_posterior(x_t, t, s, C, W_t / math.sqrt(t), K)
    a, v = _conditional_gaussian(t, s)
    assert torch.allclose(mean, x0 + D.attenuation_integral(t - s, C, K) + a * W_t, atol=1e-12)
    assert var == pytest.approx(v, abs=1e-12)


def test_posterior_monte_carlo():
    """Simulate Brownian paths; the residual x_{t-s} - mean must have the stated variance and be uncorrelated with x_t."""
    t, s, n = 0.8, 0.3, 400_000
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    C = D.attenuation_parameters(x0)
    W1 = math.sqrt(t - s) * torch.randn(n, dtype=torch.float64, generator=g)
    W2 = W1 + math.sqrt(s) * torch.randn(n, dtype=torch.float64, generator=g)  # independent increment
    x_prev = x0 + D.attenuation_integral(t - s, C) + W1
    x_t = x0 + D.attenuation_integral(t, C) + W2
    mean, var = D.ddm_posterior(x_t, t, s, C, W2 / math.sqrt(t))
    r = x_prev - mean
    assert abs(r.mean().item()) < 4e-3
    assert r.var().item() == pytest.approx(var, rel=1e-2)
    assert abs(torch.corrcoef(torch.stack([r, x_t]))[0, 1].item()) < 1e-2
    # the step with eta = 1 draws exactly from this posterior; eta = 0 keeps the marginal variance t - s
    z = torch.randn(n, dtype=torch.float64, generator=g)
    step1 = D.ddm_step(x_t, t, s, C, W2 / math.sqrt(t), eta=1.0, noise=z)
    assert torch.allclose(step1, mean + math.sqrt(var) * z)
    step0 = D.ddm_step(x_t, t, s, C, W2 / math.sqrt(t), eta=0.0)
    assert (step0 - x0 - D.attenuation_integral(t - s, C)).var().item() == pytest.approx(t - s, rel=1e-2)


def test_time_grid_and_nfe():
    grid = D.ddm_time_grid(10)
    assert len(grid) == 11 == D.ddm_nfe(10)  # the official "10 steps" = 11 calls
    assert grid[0] == (1.0, 0.1) and grid[-1][0] == pytest.approx(1e-4) and grid[-1][0] == grid[-1][1]
    assert sum(s for _, s in grid) == pytest.approx(1.0, abs=1e-12)
    g2 = D.ddm_time_grid(4, denoise=False)
    assert len(g2) == 4 and g2[-1] == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError):
        D.ddm_time_grid(0)
    with pytest.raises(ValueError):
        D.ddm_step(torch.zeros(1), 0.5, 0.6, torch.zeros(1), torch.zeros(1))


# ------------------------------------------------------------------ scheduler
def test_scheduler_round_trip_and_api(tmp_path):
    sch = lsb.DDMScheduler(attenuation="linear", eta=0.5, denoise=False)
    sch.save_pretrained(tmp_path)
    back = lsb.DDMScheduler.from_pretrained(tmp_path)
    assert back.config.attenuation == "linear" and back.config.eta == 0.5 and not back.config.denoise
    back.set_timesteps(5)
    assert back.nfe == 5 == len(back.timesteps) and back.timesteps[0].item() == 1000.0
    s = lsb.DDMScheduler()
    s.set_timesteps(10)
    assert s.nfe == 11 == lsb.DDMScheduler.nfe_for(10)
    with pytest.raises(ValueError, match="attenuation"):
        lsb.DDMScheduler(attenuation="exponential")
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(s.scale_model_input(x, 500.0), x / math.sqrt(0.25 + 0.5))
    per = s.scale_model_input(x, torch.tensor([0.0, 1000.0]))
    assert torch.allclose(per[0], x[0]) and torch.allclose(per[1], x[1])
    with pytest.raises(ValueError, match="channels"):
        s.step(torch.randn(2, 4, 8, 8), s.timesteps[0], x)  # a plain epsilon output


def test_scheduler_add_noise_and_target():
    s = lsb.DDMScheduler()
    x0, n = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([100.0, 500.0, 1000.0])
    xt = s.add_noise(x0, n, t)
    for i, ti in enumerate([0.1, 0.5, 1.0]):
        assert torch.allclose(xt[i], (1 - ti) * x0[i] + math.sqrt(ti) * n[i], atol=1e-6)
    K, C, e = split_heads(s.get_target(x0, n), "constant")
    assert K is None and torch.equal(C, -x0) and torch.equal(e, n)
    lin = lsb.DDMScheduler(attenuation="linear")
    Kd = torch.rand(3, 4, 2, 2) * 2 - 1
    with pytest.raises(ValueError, match="K"):
        lin.add_noise(x0, n, t)
    Kt, Ct, _ = split_heads(lin.get_target(x0, n, Kd), "linear")
    assert torch.equal(Kt, Kd) and torch.allclose(Ct, -x0 - Kd / 2)


@pytest.mark.parametrize("attenuation", ["constant", "linear"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_sampler_recovers_x0(attenuation, eta):
    """With the true heads (an oracle network), any grid lands exactly on x_0 (correct C on or off)."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    K = D.sample_linear_k(x0.shape, g, dtype=torch.float64) if attenuation == "linear" else None
    for correct_c in (True, False):
        s = lsb.DDMScheduler(attenuation=attenuation, eta=eta, correct_c=correct_c)
        s.set_timesteps(3)
        x = eps.clone()
        W = eps.clone()  # the Brownian value sqrt(t) eps_t along the path
        for i, ts in enumerate(s.timesteps):
            t = s.times[i]
            target = s.get_target(x0, W / math.sqrt(t), K)
            x = s.step(target, ts, x, generator=g).prev_sample
            W = x - x0 - D.attenuation_integral(t - s.step_sizes[i], D.attenuation_parameters(x0, K), K)
        assert torch.allclose(x, x0, atol=1e-9)


def test_correct_c_and_clip():
    s = lsb.DDMScheduler(clip_sample=True, eta=0.0)
    s.set_timesteps(1)
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    C = torch.full_like(x, -5.0)  # x0hat far outside [-1, 1]
    out = s.step(torch.cat([C, torch.zeros_like(x)], 1), s.timesteps[0], x)
    assert out.pred_original_sample.abs().max() <= 1.0
    # correct C: the step uses C := -clip(x0hat): x_{1-s} = x_1 + x0hat_clipped s at eta 0 with eps 0
    st = s.step_sizes[0]
    assert torch.allclose(out.prev_sample, x + out.pred_original_sample * st)


# ------------------------------------------------------------------ two-head convention
def test_two_head_convention_round_trip(tmp_path):
    from diffusers import UNet2DModel

    x = torch.randn(1, 4 * 3, 2, 2)
    K, C, e = split_heads(x, "linear")
    assert torch.equal(merge_heads(C, e, K), x)
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=4,
        out_channels=8,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
    )
    unet.save_pretrained(tmp_path / "u2d")
    back = UNet2DModel.from_pretrained(tmp_path / "u2d")
    xin = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(unet.eval()(xin, 3).sample, back(xin, 3).sample, atol=1e-6)
    assert check_ddm_unet(back, 4, "constant") is False
    with pytest.raises(ValueError, match="out_channels"):
        check_ddm_unet(back, 4, "linear")
    cond = tiny_unet(in_channels=8, out_channels=8)
    assert check_ddm_unet(cond, 4, "constant") is True


# ------------------------------------------------------------------ pipeline
def _tiny_ddm_pipe(image_conditioned=False, attenuation="constant"):
    comps = tiny_components()
    torch.manual_seed(0)
    heads = 3 if attenuation == "linear" else 2
    comps["unet"] = tiny_unet(in_channels=8 if image_conditioned else 4, out_channels=4 * heads)
    comps["scheduler"] = lsb.DDMScheduler(attenuation=attenuation)
    return lsb.DDMPipeline(**comps)


def test_pipeline_t2i_nfe_and_reload(tmp_path):
    pipe = _tiny_ddm_pipe()
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))

    def generate(p):
        return p(
            ["a red circle", "a square"],
            num_inference_steps=3,
            guidance_scale=2.0,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )

    out = generate(pipe)
    assert out.images.shape == (2, 3, 64, 64) and out.nfe == 4 == len(calls)  # N + 1, CFG batched
    pipe.save_pretrained(tmp_path / "p")
    from diffusers import DiffusionPipeline

    custom = DiffusionPipeline.from_pretrained(
        tmp_path / "p", custom_pipeline=lsb.pipeline_dir("ddm"), trust_remote_code=True
    )
    assert type(custom).__name__ == "DDMPipeline"
    back = lsb.DDMPipeline.from_pretrained(tmp_path / "p")
    assert isinstance(back.scheduler, lsb.DDMScheduler)
    again = generate(back)
    assert torch.allclose(out.images, again.images, atol=1e-5)
    det = [
        back(
            "a circle", num_inference_steps=2, eta=0.0, output_type="pt", generator=torch.Generator().manual_seed(k)
        ).images
        for k in (0, 0)
    ]
    assert torch.equal(det[0], det[1])


def test_pipeline_image_conditioned_and_errors():
    pipe = _tiny_ddm_pipe(image_conditioned=True, attenuation="linear")
    pipe.set_progress_bar_config(disable=True)
    from PIL import Image

    img = Image.new("RGB", (64, 64), (200, 30, 30))
    out = pipe(image=[img, img], num_inference_steps=2, output_type="np")
    assert out.images.shape == (2, 64, 64, 3) and out.nfe == 3
    with pytest.raises(ValueError, match="image"):
        pipe("a circle", num_inference_steps=2)
    with pytest.raises(lsb.io.images.ImageInputError if hasattr(lsb, "images") else Exception):
        pipe(image=Image.new("RGB", (60, 60)), num_inference_steps=2)
    comps = dict(pipe.components)
    from diffusers import DDIMScheduler

    with pytest.raises(ValueError, match="DDMScheduler"):
        lsb.DDMPipeline(**{**comps, "scheduler": DDIMScheduler()})
    with pytest.raises(ValueError, match="out_channels"):
        lsb.DDMPipeline(**{**comps, "scheduler": lsb.DDMScheduler()})  # 12 channels, constant needs 8


# ------------------------------------------------------------------ training
def test_training_entrypoint_exports_and_resumes(tmp_path, capsys):
    from lsb.training.ddm import main

    tiny = [
        "--batch-size",
        "4",
        "--cached-scenes",
        "16",
        "--unet-channels",
        "32",
        "32",
        "--no-progress",
        "--checkpoint-every",
        "2",
    ]
    out = tmp_path / "sr"
    res = main(["--kind", "ddm", "--task", "sr4", "--out", str(out), "--steps", "2", *tiny])
    assert res["steps"] == 2 and math.isfinite(res["last"]["loss"])
    pipe = lsb.DDMPipeline.from_pretrained(out / "final", dtype=torch.float32)
    assert pipe.image_conditioned and pipe.unet.config.out_channels == 8
    assert all(p.stat().st_size < 8 * 2**20 for p in (out / "final").rglob("*.safetensors"))
    res = main(["--kind", "ddm", "--task", "sr4", "--out", str(out), "--steps", "3", *tiny])
    assert res["steps"] == 3 and "resumed" in capsys.readouterr().out
    res = main(["--kind", "ddpm", "--task", "t2i", "--out", str(tmp_path / "b"), "--steps", "1", *tiny])
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(tmp_path / "b" / "final")
    assert sd.unet.config.out_channels == 4
    with pytest.raises(SystemExit):
        main(["--kind", "ddpm", "--task", "sr4", "--out", str(tmp_path / "c"), *tiny])
