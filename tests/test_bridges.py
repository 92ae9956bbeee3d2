"""The LSB bridge math: schedules, SNR matching, predictor conversions and one-step updates."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from lsb.bridges import (
    alpha_bar_to_sb_time,
    alpha_bar_to_timestep,
    alphas_cumprod_from_betas,
    ddim_step,
    euler_step,
    model_output_to_eps,
    multistep_step,
    sb_alpha_bar,
    sb_marginal,
    sb_noise_predictor,
    sb_predictors,
    sb_sigma,
    sb_sigma_dot,
    sb_sigma_integral,
    sb_time_to_timestep,
    sb_velocity,
    timestep_to_alpha_bar,
)

torch.set_num_threads(1)
TAU = 5.29
F64 = torch.float64


def _quad_sigma(s, t, n=2001):
    """int_s^t sigma_r dr by Simpson after r = (1 - cos th) / 2 (smooth integrand sqrt(tau) sin^2(th) / 4)."""
    a, b = math.acos(1 - 2 * s), math.acos(1 - 2 * t)
    return _quad(lambda th: math.sqrt(TAU) / 4 * torch.sin(th) ** 2, a, b, n)


def _quad(f, s, t, n=20001):
    """Composite Simpson's rule on [s, t] (n odd)."""
    r = torch.linspace(s, t, n, dtype=F64)
    w = torch.ones(n, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (f(r) * w).sum().item() * (t - s) / (3 * (n - 1))


# ------------------------------------------------------------------ schedules


def test_sigma_endpoints_symmetry_and_float_tensor_agree():
    assert sb_sigma(0.0, TAU) == 0.0 and sb_sigma(1.0, TAU) == 0.0
    t = torch.linspace(0, 1, 101, dtype=F64)
    torch.testing.assert_close(sb_sigma(t, TAU), sb_sigma(1 - t, TAU))
    for tt in (0.1, 0.37, 0.5, 0.9):
        assert sb_sigma(tt, TAU) == pytest.approx(sb_sigma(torch.tensor(tt, dtype=F64), TAU).item(), rel=1e-14)
        assert sb_sigma(tt, TAU) ** 2 == pytest.approx(TAU * tt * (1 - tt), rel=1e-14)
    assert sb_sigma(0.5, TAU) == pytest.approx(math.sqrt(TAU) / 2)


@pytest.mark.parametrize("t", [0.05, 0.2, 0.4999, 0.5, 0.73, 0.97])
def test_sigma_dot_matches_central_difference(t):
    h = 1e-6
    fd = (sb_sigma(t + h, TAU) - sb_sigma(t - h, TAU)) / (2 * h)
    assert sb_sigma_dot(t, TAU) == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert sb_sigma_dot(torch.tensor(t, dtype=F64), TAU).item() == pytest.approx(sb_sigma_dot(t, TAU), rel=1e-14)


def test_sigma_dot_rejects_endpoints():
    with pytest.raises(ValueError, match="singular"):
        sb_sigma_dot(1.0, TAU)


@pytest.mark.parametrize("s,t", [(0.2, 0.3), (0.45, 0.55), (0.8, 1.0), (0.0, 1.0), (0.9, 0.2)])
def test_sigma_integral_matches_quadrature(s, t):
    exact = sb_sigma_integral(s, t, TAU)
    assert exact == pytest.approx(_quad(lambda r: sb_sigma(r, TAU), s, t), rel=1e-5, abs=1e-9)
    assert exact == pytest.approx(_quad_sigma(s, t), rel=1e-12, abs=1e-14)
    if (s, t) == (0.0, 1.0):  # int_0^1 sqrt(r (1 - r)) dr = pi / 8
        assert exact == pytest.approx(math.sqrt(TAU) * math.pi / 8, rel=1e-14)


def test_sb_marginal_monte_carlo_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    x0, x1, t, n = -1.5, 2.0, 0.3, 200_000
    noise = torch.randn(n, generator=gen, dtype=F64)
    xt = sb_marginal(torch.full((n,), x0, dtype=F64), torch.full((n,), x1, dtype=F64), t, TAU, noise)
    mean, var = (1 - t) * x0 + t * x1, TAU * t * (1 - t)
    assert abs(xt.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(xt.var().item() - var) < 4 * var * math.sqrt(2 / n)
    # per-sample time tensor, broadcast over the non-batch dims
    tb = torch.tensor([0.0, 0.5, 1.0], dtype=F64).view(3, 1)
    out = sb_marginal(torch.zeros(3, 2), torch.ones(3, 2), tb, TAU, torch.ones(3, 2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 0.5 + math.sqrt(TAU) / 2, 1.0]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(trained_betas=[0.01] * 50, num_train_timesteps=50),
    ],
)
def test_alphas_cumprod_equal_diffusers(kwargs):
    ours = alphas_cumprod_from_betas(**kwargs)
    ref = DDIMScheduler(**kwargs).alphas_cumprod
    if "beta_start" in kwargs and kwargs["beta_schedule"] == "scaled_linear":  # our defaults are SD's
        torch.testing.assert_close(alphas_cumprod_from_betas(), ours, rtol=0, atol=0)
    assert ours.dtype == F64
    torch.testing.assert_close(ours, ref.to(F64), rtol=0, atol=0)


def test_unknown_beta_schedule():
    with pytest.raises(ValueError, match="beta_schedule"):
        alphas_cumprod_from_betas(beta_schedule="nope")


# ------------------------------------------------------------------ SNR matching

AC = alphas_cumprod_from_betas()


def test_timestep_alpha_bar_round_trips_including_non_integer():
    s = torch.linspace(0, 999, 2997, dtype=F64)  # mostly non-integer
    torch.testing.assert_close(alpha_bar_to_timestep(timestep_to_alpha_bar(s, AC), AC), s, rtol=0, atol=1e-8)
    ab = torch.linspace(AC[-1].item(), AC[0].item(), 1001, dtype=F64)
    torch.testing.assert_close(timestep_to_alpha_bar(alpha_bar_to_timestep(ab, AC), AC), ab, rtol=0, atol=1e-14)
    # integer timesteps hit the table exactly, halfway interpolates linearly
    k = torch.arange(1000)
    torch.testing.assert_close(timestep_to_alpha_bar(k, AC), AC, rtol=0, atol=0)
    assert timestep_to_alpha_bar(10.5, AC).item() == pytest.approx(0.5 * (AC[10] + AC[11]).item(), rel=1e-15)
    assert alpha_bar_to_timestep(AC[500], AC).item() == pytest.approx(500.0, abs=1e-12)


def test_matching_clamps_outside_the_table():
    s = alpha_bar_to_timestep(torch.tensor([1.0, 0.99999, 1e-6, 0.0]), AC)
    torch.testing.assert_close(s, torch.tensor([0.0, 0.0, 999.0, 999.0], dtype=F64))
    torch.testing.assert_close(timestep_to_alpha_bar(torch.tensor([-3.0, 1500.0]), AC), AC[[0, -1]])
    # near the bridge's ends alphabar > alphas_cumprod[0]: timestep 0
    assert sb_time_to_timestep(1e-6, TAU, AC).item() == 0.0


def test_sb_time_to_timestep_symmetric_and_monotone():
    t = torch.linspace(0.01, 0.5, 50, dtype=F64)
    s = sb_time_to_timestep(t, TAU, AC)
    torch.testing.assert_close(s, sb_time_to_timestep(1 - t, TAU, AC), rtol=0, atol=1e-9)
    assert torch.all(s[1:] > s[:-1])
    # matched alphas_cumprod equals the SB alphabar
    torch.testing.assert_close(timestep_to_alpha_bar(s, AC), sb_alpha_bar(t, TAU), rtol=0, atol=1e-12)
    assert sb_alpha_bar(0.2, TAU) == pytest.approx(1 / (1 + TAU * 0.16))


def test_alpha_bar_to_sb_time_inverts_both_sides():
    t = torch.linspace(0.01, 0.49, 25, dtype=F64)
    ab = sb_alpha_bar(t, TAU)
    torch.testing.assert_close(alpha_bar_to_sb_time(ab, TAU, "source"), t)
    torch.testing.assert_close(alpha_bar_to_sb_time(ab, TAU, "target"), 1 - t)
    assert alpha_bar_to_sb_time(0.01, TAU).item() == 0.5  # noisier than the bridge ever gets
    with pytest.raises(ValueError):
        alpha_bar_to_sb_time(0.5, TAU, "middle")


# ------------------------------------------------------------------ predictors


@pytest.mark.parametrize("alpha_bar", [0.9, 0.3, torch.tensor([0.2, 0.7], dtype=F64).view(2, 1, 1, 1)])
def test_prediction_type_conversions_recover_eps(alpha_bar):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 3, generator=gen, dtype=F64)
    eps = torch.randn(2, 4, 3, 3, generator=gen, dtype=F64)
    a = alpha_bar
    y = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    v = a**0.5 * eps - (1 - a) ** 0.5 * x0
    torch.testing.assert_close(model_output_to_eps(eps, y, a, "epsilon"), eps)
    torch.testing.assert_close(model_output_to_eps(v, y, a, "v_prediction"), eps)
    torch.testing.assert_close(model_output_to_eps(x0, y, a, "sample"), eps)


def test_unknown_prediction_type():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="prediction_type"):
        model_output_to_eps(x, x, 0.5, "flow")


def test_predictors_decompose_the_state():
    gen = torch.Generator().manual_seed(2)
    x, e0, e1 = torch.randn(3, 2, 4, 4, 4, generator=gen, dtype=F64)
    for t in (0.3, 0.5, 0.8):
        sigma = sb_sigma(t, TAU)
        xs, xt, eh = sb_predictors(x, e0, e1, t, TAU, "interpolate")
        torch.testing.assert_close(xs, x - sigma * e0)
        torch.testing.assert_close(xt, x - sigma * e1)
        torch.testing.assert_close((1 - t) * xs + t * xt + sigma * eh, x)  # x_t = (1-t) xhat0 + t xhat1 + sigma epshat
        torch.testing.assert_close(xt - xs, -sigma * (e1 - e0))
        _, _, sw = sb_predictors(x, e0, e1, t, TAU, "switch")
        assert sw is (e0 if t <= 0.5 else e1)
    with pytest.raises(ValueError, match="noise_predictor"):
        sb_noise_predictor(e0, e1, 0.3, "average")


def test_velocity_is_the_conditional_path_derivative():
    """With exact endpoints and noise the drift is d/dt [(1-t) x0 + t x1 + sigma_t z]."""
    gen = torch.Generator().manual_seed(3)
    x0, x1, z = torch.randn(3, 8, generator=gen, dtype=F64)
    for t in (0.1, 0.45, 0.9):
        h = 1e-6
        fd = (sb_marginal(x0, x1, t + h, TAU, z) - sb_marginal(x0, x1, t - h, TAU, z)) / (2 * h)
        torch.testing.assert_close(sb_velocity(x0, x1, z, t, TAU), fd, rtol=1e-6, atol=1e-6)
        x = sb_marginal(x0, x1, t, TAU, z)
        torch.testing.assert_close(
            euler_step(x, x0, x1, z, t, t + 0.01, TAU, guidance_scale=2.0),
            x + 0.01 * (2.0 * (x1 - x0) + sb_sigma_dot(t, TAU) * z),
        )


@pytest.mark.parametrize("t,t_next", [(0.2, 0.35), (0.45, 0.6), (0.8, 1.0)])
def test_ddim_step_is_exact_for_point_endpoints(t, t_next):
    gen = torch.Generator().manual_seed(4)
    x0, x1, z = torch.randn(3, 16, generator=gen, dtype=F64)
    x = sb_marginal(x0, x1, t, TAU, z)
    out = ddim_step(x, x0, x1, z, t, t_next, TAU)
    torch.testing.assert_close(out, sb_marginal(x0, x1, t_next, TAU, z), rtol=0, atol=1e-12)
    # guidance scales only the predictor difference
    torch.testing.assert_close(ddim_step(x, x0, x1, z, t, t_next, TAU, 3.0) - out, 2.0 * (t_next - t) * (x1 - x0))


@pytest.mark.parametrize("t_prev,t,t_next", [(0.3, 0.4, 0.5), (0.7, 0.8, 1.0), (0.6, 0.8, 0.9)])
def test_multistep_step_integrates_linear_predictors_exactly(t_prev, t, t_next):
    """If D(r) and epshat(r) are linear in r, the second-order step equals the exact integral of the drift."""
    gen = torch.Generator().manual_seed(5)
    D0, D1, E0, E1, x = torch.randn(5, 6, generator=gen, dtype=F64)
    w = 2.5

    def delta(r):
        return D0 + r * D1

    def eps(r):
        return E0 + r * E1

    zero = torch.zeros_like(x)
    out = multistep_step(x, zero, delta(t), eps(t), t, t_next, TAU, w, delta(t_prev), eps(t_prev), t_prev)
    exact = x.clone()
    for j in range(x.numel()):  # int_t^{t_next} (w D(r) + sigma_dot(r) eps(r)) dr by quadrature, per entry
        exact[j] += _quad(lambda r, j=j: w * (D0[j] + r * D1[j]), t, t_next)
        # sigma_dot * eps: integrate by parts (the sigma_dot singularity at 1 is integrable)
        exact[j] += (
            sb_sigma(t_next, TAU) * (E0[j] + t_next * E1[j])
            - sb_sigma(t, TAU) * (E0[j] + t * E1[j])
            - E1[j] * _quad_sigma(t, t_next)
        )
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-10)
    # without history it is the ddim step
    torch.testing.assert_close(
        multistep_step(x, zero, delta(t), eps(t), t, t_next, TAU, w),
        ddim_step(x, zero, delta(t), eps(t), t, t_next, TAU, w),
    )
