"""The LSB bridge on a rectified-flow base: SNR matching, velocity conversions (lsb.bridges.flow)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from lsb.bridges import flow_interpolant, flow_level, flow_level_to_sb_time, flow_level_to_sigma, flow_model_input_scale
from lsb.bridges import flow_predictors, flow_timestep, flow_velocity, sb_time_to_flow_timestep, sigma_to_flow_level
from lsb.bridges import sb_alpha_bar, sb_predictors, sb_sigma, sb_sigma_dot, velocity_to_noise, velocity_to_sample

torch.set_num_threads(1)
TAU = 5.29
F64 = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ the flow model's own conventions


@pytest.mark.parametrize("s", [0.0, 0.03, 0.5, 0.91, 1.0])
def test_velocity_conversions_round_trip(s):
    x, e = _randn(3, 4, 5, seed=1), _randn(3, 4, 5, seed=2)
    z = flow_interpolant(x, e, s)
    torch.testing.assert_close(z, (1 - s) * x + s * e, rtol=0, atol=0)
    v = flow_velocity(x, e)
    torch.testing.assert_close(velocity_to_sample(v, z, s), x, rtol=0, atol=1e-14)
    torch.testing.assert_close(velocity_to_noise(v, z, s), e, rtol=0, atol=1e-14)
    # and back: the estimates re-noised at s give z, their difference gives v
    xhat, ehat = velocity_to_sample(v, z, s), velocity_to_noise(v, z, s)
    torch.testing.assert_close(flow_interpolant(xhat, ehat, s), z, rtol=0, atol=1e-14)
    torch.testing.assert_close(flow_velocity(xhat, ehat), v, rtol=0, atol=1e-14)


def test_interpolant_and_euler_step_agree_with_diffusers_flow_match():
    """diffusers' FlowMatchEulerDiscreteScheduler: scale_noise = the interpolant at sigma = timestep / 1000; its Euler
    step from s to s' equals re-noising our (xhat, ehat) at s' (the flow DDIM step)."""
    sched = FlowMatchEulerDiscreteScheduler()
    levels = [0.8, 0.55, 0.3]
    sched.set_timesteps(sigmas=levels)
    torch.testing.assert_close(sched.timesteps.double(), flow_timestep(torch.tensor(levels, dtype=F64)))
    x, e, v = (_randn(2, 4, 8, 8, seed=k).float() for k in (3, 4, 5))
    for i, s in enumerate(levels):
        ours = flow_interpolant(x, e, s)
        theirs = sched.scale_noise(x, sched.timesteps[i : i + 1], e)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    z = flow_interpolant(x, e, levels[0])
    out = sched.step(v, sched.timesteps[0], z).prev_sample
    s, s_next = sched.sigmas[0].item(), sched.sigmas[1].item()
    renoised = flow_interpolant(velocity_to_sample(v, z, s), velocity_to_noise(v, z, s), s_next)
    torch.testing.assert_close(out, renoised, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ SNR matching


def test_flow_level_matches_the_noise_to_signal_ratio():
    t = torch.linspace(0, 1, 201, dtype=F64)
    s = flow_level(t, TAU)
    sigma = sb_sigma(t, TAU)
    torch.testing.assert_close(s / (1 - s), sigma, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(flow_level_to_sigma(s), sigma, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(sigma_to_flow_level(sigma), s, rtol=0, atol=0)
    assert s[0] == 0 and s[-1] == 0 and bool((s >= 0).all() and (s < 1).all())
    torch.testing.assert_close(s, flow_level(1 - t, TAU))  # symmetric in t <-> 1 - t
    peak = (math.sqrt(TAU) / 2) / (1 + math.sqrt(TAU) / 2)
    assert flow_level(0.5, TAU) == pytest.approx(peak, rel=1e-15) and s.max().item() == pytest.approx(peak)
    assert bool((s[1:101] > s[:100]).all())  # increasing up to t = 1/2
    # float and tensor agree; the input scale is 1 - s = 1 / (1 + sigma_t)
    for tt in (0.02, 0.2, 0.5, 0.8):
        assert flow_level(tt, TAU) == pytest.approx(flow_level(torch.tensor(tt, dtype=F64), TAU).item(), rel=1e-15)
        assert flow_model_input_scale(tt, TAU) == pytest.approx(1 / (1 + sb_sigma(tt, TAU)), rel=1e-15)
    assert sb_time_to_flow_timestep(0.3, TAU) == pytest.approx(1000 * flow_level(0.3, TAU), rel=1e-15)
    assert sb_time_to_flow_timestep(0.3, TAU, 1) == pytest.approx(flow_level(0.3, TAU), rel=1e-15)


@pytest.mark.parametrize("t", [0.05, 0.2, 0.45, 0.7, 0.93])
def test_flow_level_derivatives_by_finite_differences(t):
    """d sigma / dt through the flow level (sigma = s / (1 - s)) is sigma_dot_t, and ds/dt = sigma_dot / (1 + sigma)^2."""
    h = 1e-6
    sig = lambda r: flow_level_to_sigma(flow_level(r, TAU))  # noqa: E731
    fd_sigma = (sig(t + h) - sig(t - h)) / (2 * h)
    assert fd_sigma == pytest.approx(sb_sigma_dot(t, TAU), rel=1e-7, abs=1e-9)
    fd_s = (flow_level(t + h, TAU) - flow_level(t - h, TAU)) / (2 * h)
    assert fd_s == pytest.approx(sb_sigma_dot(t, TAU) / (1 + sb_sigma(t, TAU)) ** 2, rel=1e-7, abs=1e-9)


def test_flow_level_to_sb_time_inverts_both_sides():
    t = torch.linspace(0.01, 0.49, 25, dtype=F64)
    s = flow_level(t, TAU)
    torch.testing.assert_close(flow_level_to_sb_time(s, TAU, "source"), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(flow_level_to_sb_time(s, TAU, "target"), 1 - t, rtol=0, atol=1e-10)
    assert flow_level_to_sb_time(0.99, TAU).item() == 0.5  # beyond the bridge's largest noise level
    assert flow_level_to_sb_time(0.0, TAU).item() == 0.0
    with pytest.raises(ValueError, match="side"):
        flow_level_to_sb_time(0.3, TAU, "middle")


def test_matched_marginal_is_a_flow_state_monte_carlo():
    """x_t = m + sigma_t z scaled by (1 - s) has the law of the flow state (1 - s) m + s e at level s around the
    bridge mean m: per-entry mean (1 - s) m and standard deviation s, and standardised residuals ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(16, generator=gen, dtype=F64), torch.randn(16, generator=gen, dtype=F64)
    n = 100_000
    for t in (0.1, 0.5, 0.8):
        m = (1 - t) * x0 + t * x1
        x_t = m + sb_sigma(t, TAU) * torch.randn(n, 16, generator=gen, dtype=F64)
        s = flow_level(t, TAU)
        y = flow_model_input_scale(t, TAU) * x_t
        z_flow = flow_interpolant(m, torch.randn(n, 16, generator=gen, dtype=F64), s)
        tol = 5 * s / math.sqrt(n)
        torch.testing.assert_close(y.mean(0), (1 - s) * m, rtol=0, atol=tol)
        torch.testing.assert_close(y.mean(0), z_flow.mean(0), rtol=0, atol=2 * tol)
        torch.testing.assert_close(y.std(0), torch.full((16,), s, dtype=F64), rtol=0.02, atol=0)
        torch.testing.assert_close(y.std(0), z_flow.std(0), rtol=0.03, atol=0)
        r = ((y - (1 - s) * m) / s).reshape(-1)
        for q, zq in ((0.1, -1.2815515655), (0.5, 0.0), (0.9, 1.2815515655)):
            assert torch.quantile(r[:200_000], q).item() == pytest.approx(zq, abs=0.02)


# ------------------------------------------------------------------ predictors from a flow model's velocity


@pytest.mark.parametrize("t", [0.1, 0.5, 0.85])
def test_point_mass_velocity_gives_the_bridge_mean_and_noise(t):
    """A flow model whose data is the point mass m returns v = e - m at (1 - s) x_t: the predictors are m and z."""
    m, noise = _randn(2, 3, 4, seed=6), _randn(2, 3, 4, seed=7)
    x = m + sb_sigma(t, TAU) * noise
    s = flow_level(t, TAU)
    z = (1 - s) * x
    e = (z - (1 - s) * m) / s  # the noise of the flow state z around m
    torch.testing.assert_close(e, noise, rtol=0, atol=1e-13)
    xhat, eps = flow_predictors(x, flow_velocity(m, e), t, TAU)
    torch.testing.assert_close(xhat, m, rtol=0, atol=1e-13)
    torch.testing.assert_close(eps, noise, rtol=0, atol=1e-13)
    # eps is the VP path's bridge noise predictor: sb_predictors(x, eps, ...) gives the same xhat
    xhat_vp, _, _ = sb_predictors(x, eps, eps, t, TAU)
    torch.testing.assert_close(xhat_vp, xhat, rtol=0, atol=1e-13)


@pytest.mark.parametrize("t", [0.03, 0.3, 0.5, 0.75])
def test_gaussian_data_flow_velocity_and_vp_eps_give_one_predictor(t):
    """For data N(mu, c^2) the exact flow velocity (at z = (1 - s) x) and the exact VP noise prediction (at
    y = sqrt(alphabar) x, alphabar = 1 / (1 + sigma_t^2)) are two different closed forms; after SNR matching both
    must give the posterior mean E[m | m + sigma_t z = x] = mu + c^2 (x - mu) / (c^2 + sigma_t^2)."""
    mu, c = 0.7, 1.3
    x = torch.linspace(-4, 4, 41, dtype=F64)
    sigma = sb_sigma(t, TAU)
    posterior = mu + c**2 * (x - mu) / (c**2 + sigma**2)

    s = flow_level(t, TAU)
    z = flow_model_input_scale(t, TAU) * x
    var_z = (1 - s) ** 2 * c**2 + s**2
    e_given_z = s * (z - (1 - s) * mu) / var_z
    x_given_z = mu + (1 - s) * c**2 * (z - (1 - s) * mu) / var_z
    xhat_flow, eps_flow = flow_predictors(x, e_given_z - x_given_z, t, TAU)

    ab = sb_alpha_bar(t, TAU)
    y = ab**0.5 * x
    eps_vp = (1 - ab) ** 0.5 * (y - ab**0.5 * mu) / (ab * c**2 + 1 - ab)
    xhat_vp, _, _ = sb_predictors(x, eps_vp, eps_vp, t, TAU)

    torch.testing.assert_close(xhat_flow, posterior, rtol=0, atol=1e-12)
    torch.testing.assert_close(xhat_vp, posterior, rtol=0, atol=1e-12)
    torch.testing.assert_close(eps_flow, eps_vp, rtol=0, atol=1e-12)
