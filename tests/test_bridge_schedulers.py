"""Paired-bridge core (lsb.bridges.paired) and the I2SB / DDBM / DBIM schedulers: coefficients against independent
computations, exact samplers on analytic data, NFE accounting, save/load and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lsb.bridges import DDBMPreconditioning, I2SBBridgeSchedule, I2SBPreconditioning, VEBridgeSchedule, VPBridgeSchedule
from lsb.bridges import dbim_multistep_step, dbim_step, ddbm_ode_drift, i2sb_posterior_step, i2sb_step_indices
from lsb.bridges import karras_times, make_bridge_schedule
from lsb.schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler

torch.set_num_threads(1)
F64 = torch.float64

# a point-mass clean distribution: the exact denoiser is X0 whatever (x_t, t)
X0 = torch.tensor([-0.8, -0.3, 0.1, 0.7, 0.9, -0.5, 0.2, 0.4], dtype=F64).view(2, 1, 2, 2)
XT = X0 + torch.tensor([0.5, -0.4, 0.3, 0.6, -0.7, 0.2, -0.1, 0.8], dtype=F64).view(2, 1, 2, 2)


def point_mass(x, t):
    return X0.expand_as(x).clone()


def run(scheduler, nfe, x_T=XT, denoiser=point_mass, generator=None, **step_kwargs):
    """A pipeline loop: one denoiser call and one `step` per entry of `timesteps`; returns (sample, calls)."""
    scheduler.set_timesteps(nfe)
    x = scheduler.prepare_initial_sample(x_T)
    calls = 0
    for t in scheduler.timesteps:
        x0_hat = denoiser(x, t)
        calls += 1
        x = scheduler.step(x0_hat, t, x, x_T=x_T, generator=generator, **step_kwargs).prev_sample
    return x, calls


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ================================================================== (a) coefficients


def _numpy_i2sb_official(n, beta_max, linear_start=1e-4):
    """I2SB's official tables, recomputed with numpy (cumsums that include beta_n on both sides)."""
    betas = np.linspace(linear_start**0.5, (beta_max / n) ** 0.5, n) ** 2
    betas = np.concatenate([betas[: n // 2], betas[: n // 2][::-1]])
    var_fwd = np.cumsum(betas)
    var_bwd = np.cumsum(betas[::-1])[::-1]
    denom = var_fwd + var_bwd
    std_sb = np.sqrt(var_fwd * var_bwd / denom)
    return betas, np.sqrt(var_fwd), np.sqrt(var_bwd), var_bwd / denom, var_fwd / denom, std_sb


@pytest.mark.parametrize("beta_max,std_end,std_sb_max", [(0.3, 0.376, 0.188), (1.0, 0.497, 0.249)])
def test_i2sb_official_tables(beta_max, std_end, std_sb_max):
    sched = I2SBBridgeSchedule(1000, beta_min=0.1, beta_max=beta_max, official_cumsum=True)
    betas, fwd, bwd, mu0, mu1, std_sb = _numpy_i2sb_official(1000, beta_max)
    for ours, ref in [
        (sched.betas, betas),
        (sched.std_fwd, fwd),
        (sched.std_bwd, bwd),
        (sched.mu_x0, mu0),
        (sched.mu_x1, mu1),
        (sched.std_sb, std_sb),
    ]:
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-15)
    assert torch.equal(sched.betas, sched.betas.flip(0))  # symmetric
    assert abs(sched.std_fwd[0].item() - 0.01) < 1e-12 and abs(sched.std_bwd[-1].item() - 0.01) < 1e-12  # off-by-one
    assert round(sched.rho_T, 3) == std_end and round(sched.std_sb.max().item(), 3) == std_sb_max  # METHODS.md §1(c)
    # continuous t -> index round(999 t) (DBIM's i2sb_cond)
    assert sched.index(0.5) == 500 and sched.index(0.999) == 998 and sched.index(1e-4) == 0
    assert sched.a(0.25) == sched.mu_x1[250].item() and sched.c(0.25) == sched.std_sb[250].item()


def _brownian_variances(sched):
    """Cumulative variance V_n of the paper-form discrete Brownian motion (increments (beta_k + beta_{k+1}) / 2)."""
    b = sched.betas.numpy()
    return np.concatenate([[0.0], np.cumsum(0.5 * (b[:-1] + b[1:]))])


def test_i2sb_marginal_is_the_conditioned_reference_process():
    """Default (paper) form: a, b, c are the Brownian bridge's conditional law given (X_0, X_{N-1})."""
    sched = I2SBBridgeSchedule(1000, beta_max=0.3)
    V = _brownian_variances(sched)
    VT = V[-1]
    np.testing.assert_allclose(sched.mu_x1.numpy(), V / VT, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sched.mu_x0.numpy(), 1 - V / VT, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sched.std_sb.numpy() ** 2, V * (VT - V) / VT, rtol=0, atol=1e-13)
    assert sched.std_fwd[0] == 0 and sched.std_bwd[-1] == 0 and sched.c(0.0) == 0 and sched.c(1.0) == 0
    # the generic formulas (alpha = 1, rho = std_fwd, rho_bar = std_bwd) agree with the Gaussian product
    t = torch.tensor([0.1, 0.37, 0.5, 0.81], dtype=F64)
    rho, rho_bar = sched.rho(t), sched.rho_bar(t)
    torch.testing.assert_close(sched.a(t), rho**2 / sched.rho_T**2, rtol=0, atol=1e-13)
    torch.testing.assert_close(sched.b(t), rho_bar**2 / sched.rho_T**2, rtol=0, atol=1e-13)
    torch.testing.assert_close(sched.c(t), rho * rho_bar / sched.rho_T, rtol=0, atol=1e-13)


def test_i2sb_marginal_monte_carlo():
    """Simulate the reference dX = sqrt(beta) dW from random X_0; regressing X_n on (X_0, X_{N-1}) recovers b, a, c."""
    sched = I2SBBridgeSchedule(200, beta_max=0.3)
    g = gen(1)
    m = 20000
    b = sched.betas
    increments = torch.randn(m, 199, generator=g, dtype=F64) * (0.5 * (b[:-1] + b[1:])).sqrt()
    x0 = torch.randn(m, 1, generator=g, dtype=F64) * 0.3
    path = torch.cat([x0, x0 + torch.cumsum(increments, 1)], 1)
    design = torch.stack([path[:, 0], path[:, -1]], 1)
    for n in (20, 100, 170):
        coef = torch.linalg.lstsq(design, path[:, n : n + 1]).solution.flatten()
        resid = (path[:, n] - design @ coef).std().item()
        assert abs(coef[0].item() - sched.mu_x0[n].item()) < 0.03
        assert abs(coef[1].item() - sched.mu_x1[n].item()) < 0.03
        assert abs(resid / sched.std_sb[n].item() - 1) < 0.03


def test_vp_coefficients_against_ddbm_log_snr_form():
    vp = VPBridgeSchedule()
    assert abs(vp.alpha_T - 0.577) < 1e-3 and abs(vp.rho_T - 1.416) < 1e-3  # METHODS.md §3(a)
    t = torch.tensor([1e-4, 0.01, 0.3, 0.5, 0.9, 0.999], dtype=F64)
    B = 0.1 * t + 0.5 * 2.0 * t**2
    log_snr = lambda u: -torch.log(torch.expm1(u))  # noqa: E731
    log_alpha = -0.5 * B
    BT = torch.tensor(0.1 + 1.0, dtype=F64)
    diff = log_snr(BT) - log_snr(B)
    a_ref = torch.exp(diff + log_alpha - (-0.5 * BT))
    b_ref = -torch.expm1(diff) * torch.exp(log_alpha)
    c_ref = torch.sqrt(-torch.expm1(diff)) * torch.exp(log_alpha - log_snr(B) / 2)
    torch.testing.assert_close(vp.a(t), a_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.b(t), b_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.c(t), c_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(vp.log_snr(t), log_snr(B))
    # VP: sigma_t^2 = alpha_t^2 rho_t^2 = 1 - alpha_t^2
    torch.testing.assert_close(vp.alpha(t) ** 2 * vp.rho(t) ** 2, 1 - vp.alpha(t) ** 2, rtol=1e-10, atol=0)
    # endpoints: t -> 0 gives x_0, t = T gives x_T
    a0, b0, c0 = vp.abc(1e-12)
    assert a0 < 1e-11 and abs(b0 - 1) < 1e-11 and c0 < 1e-5
    assert vp.abc(1.0) == (1.0, 0.0, 0.0)
    assert isinstance(vp.a(0.5), float) and vp.a(t).dtype == F64


def test_ve_coefficients():
    ve = VEBridgeSchedule(sigma_max=80.0)
    t = torch.tensor([0.002, 1.0, 20.0, 79.9], dtype=F64)
    T = 80.0
    torch.testing.assert_close(ve.a(t), t**2 / T**2, rtol=1e-13, atol=0)
    torch.testing.assert_close(ve.b(t), 1 - t**2 / T**2, rtol=1e-13, atol=0)
    torch.testing.assert_close(ve.c(t), t * torch.sqrt(1 - t**2 / T**2), rtol=1e-13, atol=0)
    assert ve.abc(80.0) == (1.0, 0.0, 0.0) and ve.abc(0.0) == (0.0, 1.0, 0.0)
    assert ve.t_max == 80.0 and ve.t_min == 0.002


@pytest.mark.parametrize("bridge", [VPBridgeSchedule(), VEBridgeSchedule(sigma_max=20.0)])
def test_f_and_g2_generate_the_reference_diffusion(bridge):
    """f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (sigma = alpha rho), by finite differences."""
    eps = 1e-6
    for t in (0.05, 0.4, 0.8) if bridge.name == "vp" else (0.5, 5.0, 15.0):
        dlog_alpha = (math.log(bridge.alpha(t + eps)) - math.log(bridge.alpha(t - eps))) / (2 * eps)
        sigma2 = lambda u: (bridge.alpha(u) * bridge.rho(u)) ** 2  # noqa: E731
        dsigma2 = (sigma2(t + eps) - sigma2(t - eps)) / (2 * eps)
        assert abs(bridge.f(t) - dlog_alpha) < 1e-7
        assert abs(bridge.g2(t) - (dsigma2 - 2 * bridge.f(t) * sigma2(t))) < 1e-6 * max(1.0, bridge.g2(t))


@pytest.mark.parametrize("bridge", [VPBridgeSchedule(), VEBridgeSchedule(sigma_max=20.0)])
def test_pf_ode_transports_the_point_mass_marginal(bridge):
    """For a point mass, x_t = a_t x_T + b_t x_0 + c_t eps (eps fixed) solves DDBM's PF-ODE exactly (w = 1)."""
    eps_noise = torch.randn(X0.shape, generator=gen(2), dtype=F64)
    h = 1e-6
    for t in (0.1, 0.5, 0.9) if bridge.name == "vp" else (1.0, 8.0, 17.0):
        x = bridge.marginal(X0, XT, t, eps_noise)
        dx = (bridge.marginal(X0, XT, t + h, eps_noise) - bridge.marginal(X0, XT, t - h, eps_noise)) / (2 * h)
        torch.testing.assert_close(ddbm_ode_drift(x, XT, X0, bridge, t), dx, rtol=1e-6, atol=1e-6)


def test_score_and_h_term_by_autograd():
    vp = VPBridgeSchedule()
    t = 0.4
    x = (XT + 0.3).clone().requires_grad_(True)
    # h = grad_x log p(x_T | x_t = x), p(x_T | x_t) = N(alpha_T / alpha_t x_t, alpha_T^2 rhobar_t^2)
    mean = vp.alpha_T / vp.alpha(t) * x
    var = vp.alpha_T**2 * vp.rho_bar(t) ** 2
    (-(XT - mean).pow(2).sum() / (2 * var)).backward()
    torch.testing.assert_close(vp.h_term(x.detach(), XT, t), x.grad, rtol=1e-10, atol=1e-12)
    # s = grad_x log q(x_t | x_0, x_T) for the point mass
    x.grad = None
    a, b, c = vp.abc(t)
    (-(x - a * XT - b * X0).pow(2).sum() / (2 * c**2)).backward()
    torch.testing.assert_close(vp.score(x.detach(), XT, X0, t), x.grad, rtol=1e-10, atol=1e-12)
    # per-sample times broadcast over the batch
    tt = torch.tensor([0.3, 0.6], dtype=F64)
    out = vp.score(XT, XT, X0, tt)
    torch.testing.assert_close(out[1], vp.score(XT[1:], XT[1:], X0[1:], 0.6)[0])


@pytest.mark.parametrize("bridge", [VPBridgeSchedule(), VEBridgeSchedule()])
def test_ddbm_preconditioning_gives_unit_variance(bridge):
    """With independent x_0, x_T of std sigma_data: Var(c_in x_t) = 1 and Var((x_0 - c_skip x_t) / c_out) = 1."""
    pre = DDBMPreconditioning(bridge, sigma_data=0.5, cov_xy=0.0)
    g = gen(3)
    m = 200000
    x0 = 0.5 * torch.randn(m, generator=g, dtype=F64)
    xT = 0.5 * torch.randn(m, generator=g, dtype=F64)
    for t in (0.2, 0.7) if bridge.name == "vp" else (3.0, 60.0):
        c_skip, c_in, c_out, c_noise = pre.scalings(t)
        x_t = bridge.marginal(x0, xT, t, torch.randn(m, generator=g, dtype=F64))
        assert abs((c_in * x_t).var().item() - 1) < 0.02
        assert abs(((x0 - c_skip * x_t) / c_out).var().item() - 1) < 0.02
        assert abs(c_noise - 250 * math.log(t)) < 1e-9
        assert abs(pre.loss_weight(t) - 1 / c_out**2) < 1e-9


def test_i2sb_preconditioning():
    sched = I2SBBridgeSchedule(1000, beta_max=1.0, official_cumsum=True)
    pre = I2SBPreconditioning(sched)
    c_skip, c_in, c_out, c_noise = pre.scalings(0.3)
    assert (c_skip, c_in) == (1.0, 1.0)
    assert c_out == -sched.std_fwd[300].item()
    assert abs(c_noise - (1e-4 + (1 - 1e-4) * 300 / 999) * 1000) < 1e-9


# ================================================================== (b) analytic samplers


@pytest.mark.parametrize("ot_ode", [False, True])
@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_i2sb_lands_on_the_point_mass(ot_ode, prediction_type):
    sched = I2SBScheduler(prediction_type=prediction_type, ot_ode=ot_ode)

    def denoiser(x, n):
        if prediction_type == "sample":
            return point_mass(x, n)
        return (x - X0) / sched.bridge.std_fwd[int(n)]  # I2SB's label (X_n - X_0) / std_fwd[n]

    for nfe in (1, 2, 5, 10):
        x, _ = run(sched, nfe, denoiser=denoiser, generator=gen(nfe))
        torch.testing.assert_close(x, X0, rtol=0, atol=1e-12)


def test_i2sb_official_cumsum_lands_close():
    """With the official sums std_fwd[0] = 0.01: the last step keeps r = 1e-4 / std_fwd[n]^2 of the state."""
    sched = I2SBScheduler(official_cumsum=True, ot_ode=True)
    x, _ = run(sched, 1)
    r = 1e-4 / sched.bridge.std_fwd[999].item() ** 2
    torch.testing.assert_close(x, (1 - r) * X0 + r * XT, rtol=0, atol=1e-12)


def test_i2sb_inpainting_mask():
    sched = I2SBScheduler(ot_ode=True)
    mask = torch.zeros_like(XT)
    mask[..., 0, :] = 1.0  # top row missing
    x_T = XT * (1 - mask)  # degraded: known pixels of the clean image (= XT here), hole anywhere
    sched.set_timesteps(5)
    x = sched.prepare_initial_sample(x_T, generator=gen(4), mask=mask)
    assert torch.equal(x * (1 - mask), x_T * (1 - mask)) and not torch.equal(x * mask, x_T * mask)
    for t in sched.timesteps:
        x = sched.step(point_mass(x, t), t, x, x_T=x_T, mask=mask).prev_sample
    torch.testing.assert_close(x, mask * X0 + (1 - mask) * x_T, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="x_T"):
        sched.set_timesteps(2)
        sched.step(X0, sched.timesteps[0], XT, mask=mask)


@pytest.mark.parametrize("schedule", ["vp", "ve", "i2sb"])
@pytest.mark.parametrize("solver_order", [1, 2, 3])
def test_dbim_deterministic_is_exact_on_the_point_mass(schedule, solver_order):
    """eta = 0: after the boot, every step stays on x_t = a_t x_T + b_t x_0 + c_t eps_boot, so the output is that
    point at t_min (exactly x_0 for I2SB's schedule, whose c vanishes at index 0)."""
    for nfe in range(2, 11):
        sched = DBIMScheduler(schedule=schedule, solver_order=solver_order)
        x, calls = run(sched, nfe, generator=gen(nfe))
        expected = sched.bridge.marginal(X0, XT, sched.bridge.t_min, sched.booting_noise)
        torch.testing.assert_close(x, expected, rtol=1e-10, atol=1e-12)
        assert calls == nfe
        assert (x - X0).abs().max() < 3 * sched.bridge.c(sched.bridge.t_min) * sched.booting_noise.abs().max() + 1e-3
        if schedule == "i2sb":
            torch.testing.assert_close(x, X0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_dbim_stochastic_lands_near_the_point_mass(eta):
    for schedule in ("vp", "i2sb"):
        sched = DBIMScheduler(schedule=schedule, eta=eta)
        x, _ = run(sched, 6, generator=gen(5))
        tol = 6 * sched.bridge.c(sched.bridge.t_min) + 2 * sched.bridge.a(sched.bridge.t_min) + 1e-12
        assert (x - X0).abs().max() < tol, (schedule, (x - X0).abs().max())


@pytest.mark.parametrize("schedule", ["vp", "ve"])
@pytest.mark.parametrize("s_churn", [0.33, 0.0])
def test_ddbm_lands_near_the_point_mass(schedule, s_churn):
    """From N = 5 intervals on (N = 2 jumps from t_hat ~ 0.67 to t_min in one Heun step, where the 1 / c^2 of the
    score makes the corrector blow up: DDBM's known low-NFE failure, FID ~ 317 at NFE 5)."""
    errors = []
    for steps in (5, 10, 20):
        sched = DDBMScheduler(schedule=schedule, s_churn=s_churn)
        x, _ = run(sched, steps, generator=gen(steps))
        errors.append((x - X0).abs().max().item())
    assert max(errors) < 0.05 and errors[-1] < 0.01, errors


def test_dbim_high_order_on_a_gaussian_bridge():
    """x_0 ~ N(m, s^2) given x_T: the exact denoiser is linear, and the eta = 0 flow from the boot state keeps the
    standardized coordinate xi = (x - a x_T - b m) / sqrt(b^2 s^2 + c^2). Orders 2 / 3 beat order 1, errors shrink."""
    m, s = 0.3, 0.4
    xT = torch.linspace(-1, 1, 9, dtype=F64).view(9, 1)

    def run_order(order, nfe):
        sched = DBIMScheduler(schedule="vp", solver_order=order)
        bridge = sched.bridge

        def denoiser(x, t):
            a, b, c = bridge.abc(float(t))
            if b == 0.0:  # t = T: x_t = x_T carries no information on x_0
                return torch.full_like(x, m)
            return m + b * s**2 * (x - a * xT - b * m) / (b**2 * s**2 + c**2)

        boot = torch.linspace(-2, 2, 9, dtype=F64).view(9, 1)
        sched.set_timesteps(nfe)
        x = xT
        for k, t in enumerate(sched.timesteps):
            x = sched.step(denoiser(x, t), t, x, x_T=xT, variance_noise=boot if k == 0 else None).prev_sample
        t0, t_end = sched.bridge_times[0].item(), bridge.t_min
        a0, b0, c0 = bridge.abc(t0)
        xi = (a0 * xT + b0 * m + c0 * boot - a0 * xT - b0 * m) / math.sqrt(b0**2 * s**2 + c0**2)
        a1, b1, c1 = bridge.abc(t_end)
        exact = a1 * xT + b1 * m + math.sqrt(b1**2 * s**2 + c1**2) * xi
        return (x - exact).abs().max().item()

    errors = {order: [run_order(order, nfe) for nfe in (4, 8, 16)] for order in (1, 2, 3)}
    for errs in errors.values():
        assert errs[2] < errs[1] < errs[0], errors
    assert errors[2][1] < errors[1][1] and errors[3][1] < errors[1][1], errors
    assert errors[3][2] < errors[1][2] / 2, errors


@pytest.mark.parametrize("bridge", [VPBridgeSchedule(), VEBridgeSchedule(sigma_max=20.0)])
def test_dbim_multistep_is_exact_for_polynomial_denoisers(bridge):
    """If x0hat is a polynomial of degree k - 1 in lambda = log(b / c), the order-k update integrates the eta = 0 ODE
    exactly: x_t = (c_t / c_s) x_s + (a_t - a_s c_t / c_s) x_T + c_t int e^lambda P(lambda) dlambda."""
    times = [0.8, 0.6, 0.45, 0.3] if bridge.name == "vp" else [15.0, 9.0, 5.0, 2.0]
    lams = [bridge.lam(u) for u in times]
    x_s, x_T = torch.tensor([0.7], dtype=F64), torch.tensor([0.3], dtype=F64)
    (a_s, _, c_s), (a_t, _, c_t) = bridge.abc(times[2]), bridge.abc(times[3])
    coeffs = (0.2, -0.3, 0.05)
    for order in (1, 2, 3):
        p = coeffs[:order]
        poly = lambda lam, p=p: sum(c * lam**k for k, c in enumerate(p))  # noqa: E731

        # antiderivative of e^l (p0 + p1 l + p2 l^2): e^l (p0 + p1 (l - 1) + p2 (l^2 - 2 l + 2))
        def anti(lam, p=p):
            return math.exp(lam) * sum(c * v for c, v in zip(p, (1.0, lam - 1, lam * lam - 2 * lam + 2)))

        exact = (c_t / c_s) * x_s + (a_t - a_s * c_t / c_s) * x_T + c_t * (anti(lams[3]) - anti(lams[2]))
        history = [torch.tensor([poly(lam)], dtype=F64) for lam in lams[3 - order : 3]]
        out = dbim_multistep_step(x_s, x_T, history, times[3 - order : 3], bridge, times[3])
        torch.testing.assert_close(out, exact, rtol=1e-12, atol=1e-13)
    # first order is the eta = 0 DBIM step
    x0_hat = torch.tensor([0.25], dtype=F64)
    torch.testing.assert_close(
        dbim_multistep_step(x_s, x_T, [x0_hat], [times[2]], bridge, times[3]),
        dbim_step(x_s, x0_hat, x_T, bridge, times[2], times[3]),
    )
    with pytest.raises(ValueError, match="c_s = 0"):
        dbim_step(x_s, x0_hat, x_T, bridge, bridge.t_max, times[3])


def test_dbim_eta1_is_i2sb_posterior_sampling():
    """On I2SB's schedule, one DBIM eta = 1 step is I2SB's posterior step (same noise, same result)..."""
    bridge = I2SBBridgeSchedule(1000, beta_max=0.3)
    z = torch.randn(X0.shape, generator=gen(6), dtype=F64)
    x = bridge.marginal(X0, XT, 700 / 999, z)
    x0_hat = X0 + 0.1
    for n, n_prev in [(700, 300), (998, 1), (300, 299)]:
        ref = i2sb_posterior_step(x, x0_hat, bridge.std_fwd[n].item(), bridge.std_fwd[n_prev].item(), z)
        out = dbim_step(x, x0_hat, XT, bridge, n / 999, n_prev / 999, eta=1.0, noise=z)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)

    # ... and in distribution on the point mass, both samplers keep the bridge marginal at every step
    batch_x0 = torch.full((4000, 1), 0.25, dtype=F64)
    batch_xT = torch.full((4000, 1), -0.5, dtype=F64)

    def mass(x, t):
        return batch_x0.clone()

    for sched in (I2SBScheduler(), DBIMScheduler(schedule="i2sb", beta_max=0.3, eta=1.0)):
        sched.set_timesteps(5)
        x, g = batch_xT, gen(7)
        for k, t in enumerate(sched.timesteps[:-1]):
            x = sched.step(mass(x, t), t, x, x_T=batch_xT, generator=g).prev_sample
            index = sched.prev_timesteps[k].item() if isinstance(sched, I2SBScheduler) else None
            t_next = sched.bridge.time_of(index) if index is not None else sched.bridge_times[k].item()
            a, b, c = sched.bridge.abc(t_next)
            xi = (x - a * batch_xT - b * batch_x0) / c
            assert abs(xi.mean().item()) < 0.06 and abs(xi.std().item() - 1) < 0.05, (type(sched).__name__, k)


def test_float32_samples_keep_their_dtype():
    for sched, n in ((I2SBScheduler(), 4), (DBIMScheduler(solver_order=3), 4), (DDBMScheduler(), 10)):
        x, _ = run(sched, n, x_T=XT.float(), denoiser=lambda x, t: X0.float().expand_as(x).clone(), generator=gen())
        assert x.dtype == torch.float32
        assert (x.double() - X0).abs().max() < 0.05


# ================================================================== (c) NFE accounting


def test_nfe_accounting():
    for nfe in (1, 2, 7, 10, 999):
        sched = I2SBScheduler()
        _, calls = run(sched, nfe, generator=gen())
        assert calls == len(sched.timesteps) == nfe
        assert sched.timesteps[0] == 999 and sched.prev_timesteps[-1] == 0
    for nfe in (2, 3, 5, 10, 20):
        for order in (1, 2, 3):
            sched = DBIMScheduler(solver_order=order)
            _, calls = run(sched, nfe, generator=gen())
            assert calls == len(sched.timesteps) == nfe
            assert sched.timesteps[0] == 1.0 and len(sched.bridge_times) == nfe  # boot at T + N = NFE - 1 steps
    for steps in (1, 2, 5, 13):
        for churn, per_step in ((0.33, 3), (0.0, 2)):
            sched = DDBMScheduler(s_churn=churn)
            _, calls = run(sched, steps, generator=gen())
            assert calls == len(sched.timesteps) == sched.nfe == per_step * steps - 1
            assert sched.order == per_step
    assert DDBMScheduler.num_steps_for_nfe(119) == 40 and DDBMScheduler.num_steps_for_nfe(5, 0.0) == 3


def test_no_call_past_the_schedule():
    for sched, n in ((I2SBScheduler(), 2), (DBIMScheduler(), 2), (DDBMScheduler(), 1)):
        run(sched, n, generator=gen())
        with pytest.raises(ValueError, match="calls"):
            sched.step(X0, sched.timesteps[-1], X0, x_T=XT)
        with pytest.raises(ValueError, match="set_timesteps"):
            type(sched)().step(X0, 0, X0, x_T=XT)


# ================================================================== grids


def test_i2sb_grid():
    assert i2sb_step_indices(1000, 10) == [0, 100, 200, 300, 400, 500, 599, 699, 799, 899, 999]
    assert i2sb_step_indices(1000, 1) == [0, 999]
    for nfe in (20, 22, 26):  # an exact half tips differently under the official float accumulation
        ours, official = i2sb_step_indices(1000, nfe), i2sb_step_indices(1000, nfe, official_grid=True)
        assert ours != official and sum(a != b for a, b in zip(ours, official)) == 1
    for nfe in (3, 20, 999):
        grid = i2sb_step_indices(1000, nfe, official_grid=True)
        assert grid[0] == 0 and grid[-1] == 999 and all(b > a for a, b in zip(grid, grid[1:]))
    sched = I2SBScheduler(official_grid=True)
    sched.set_timesteps(20)
    assert sched.timesteps.tolist() == i2sb_step_indices(1000, 20, official_grid=True)[:0:-1]


def test_ddbm_grid_and_call_phases():
    sched = DDBMScheduler()
    sched.set_timesteps(3)
    t_max, t_min = 1 - 1e-4, 1e-4
    ramp = np.linspace(0, 1, 3)
    karras = (t_max ** (1 / 7) + ramp * (t_min ** (1 / 7) - t_max ** (1 / 7))) ** 7
    np.testing.assert_allclose(sched.bridge_times.numpy(), list(karras) + [0.0], rtol=1e-14)
    assert karras_times(1, t_min, t_max) == [pytest.approx(t_max, rel=1e-14)]
    assert sched.phases == ["churn", "heun1", "heun2", "churn", "heun1", "heun2", "churn", "euler"]
    t = sched.bridge_times
    hat = lambda i: t[i] + 0.33 * (t[i + 1] - t[i])  # noqa: E731
    expected = [t[0], hat(0), t[1], t[1], hat(1), t[2], t[2], hat(2)]
    torch.testing.assert_close(sched.timesteps, torch.stack(expected))


def test_dbim_grid():
    sched = DBIMScheduler(schedule="ve")
    sched.set_timesteps(5)
    torch.testing.assert_close(sched.bridge_times, torch.linspace(80 - 1e-3, 0.002, 5, dtype=F64))
    assert sched.timesteps[0] == 80.0 and torch.equal(sched.timesteps[1:], sched.bridge_times[:-1])


# ================================================================== (d) diffusers contract, save / load, errors


@pytest.mark.parametrize(
    "cls,kwargs,nfe",
    [
        (I2SBScheduler, dict(beta_max=1.0, official_cumsum=True, prediction_type="sample"), 4),
        (DBIMScheduler, dict(schedule="i2sb", eta=0.7, beta_max=0.3), 4),
        (DBIMScheduler, dict(schedule="ve", sigma_max=20.0, solver_order=3), 5),
        (DDBMScheduler, dict(schedule="ve", sigma_max=20.0, s_churn=0.2, guidance=0.5), 3),
    ],
)
def test_save_load_round_trip(tmp_path, cls, kwargs, nfe):
    sched = cls(**kwargs)
    sched.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(sched.config)
    out1, _ = run(sched, nfe, denoiser=lambda x, t: 0.5 * x + 0.1, generator=gen(8))
    out2, _ = run(loaded, nfe, denoiser=lambda x, t: 0.5 * x + 0.1, generator=gen(8))
    assert torch.equal(out1, out2)
    assert cls._compatibles == []


def test_preconditioning_helpers_and_add_noise():
    noise = torch.randn(XT.shape, generator=gen(9), dtype=F64)
    for sched in (DBIMScheduler(), DDBMScheduler(schedule="ve")):
        sched.set_timesteps(3)
        t = sched.timesteps[1]
        c_skip, c_in, c_out, c_noise = sched.preconditioning.scalings(t.item())
        F = torch.randn(XT.shape, generator=gen(10), dtype=F64)
        torch.testing.assert_close(sched.precondition_inputs(XT, t), c_in * XT)
        torch.testing.assert_close(sched.precondition_outputs(XT, F, t), c_skip * XT + c_out * F)
        assert abs(sched.precondition_noise(t).item() - c_noise) < 1e-3
        assert torch.equal(sched.scale_model_input(XT, t), XT) and sched.init_noise_sigma == 1.0
        tt = torch.tensor([t.item(), sched.timesteps[2].item()], dtype=F64)
        noisy = sched.add_noise(X0, noise, tt, XT)
        torch.testing.assert_close(noisy[1:], sched.bridge.marginal(X0[1:], XT[1:], tt[1].item(), noise[1:]))
        per_sample = sched.precondition_outputs(XT, F, tt)
        torch.testing.assert_close(per_sample[:1], sched.precondition_outputs(XT[:1], F[:1], tt[0]))
    sched = I2SBScheduler()
    torch.testing.assert_close(sched.precondition_outputs(XT, F, 400), XT - sched.bridge.std_fwd[400].item() * F)
    assert abs(sched.precondition_noise(400).item() - sched.preconditioning.noise_levels[400].item()) < 1e-3
    noisy = sched.add_noise(X0, noise, torch.tensor([100, 900]), XT)
    bridge = sched.bridge
    mu0, mu1, std = (v[900].item() for v in (bridge.mu_x0, bridge.mu_x1, bridge.std_sb))
    torch.testing.assert_close(noisy[1:], mu0 * X0[1:] + mu1 * XT[1:] + std * noise[1:])
    noise_free = I2SBScheduler(ot_ode=True).add_noise(X0, noise, 500, XT)
    torch.testing.assert_close(noise_free, bridge.marginal(X0, XT, 0.5005, None))


def test_config_errors():
    with pytest.raises(ValueError, match="eta"):
        DBIMScheduler(eta=1.5)
    with pytest.raises(ValueError, match="eta"):
        DBIMScheduler(eta=-0.1)
    with pytest.raises(ValueError, match="solver_order"):
        DBIMScheduler(solver_order=4)
    with pytest.raises(ValueError, match="deterministic"):
        DBIMScheduler(solver_order=2, eta=0.5)
    with pytest.raises(ValueError, match="schedule"):
        DBIMScheduler(schedule="cosine")
    with pytest.raises(ValueError, match="schedule"):
        DDBMScheduler(schedule="i2sb")
    with pytest.raises(ValueError, match="s_churn"):
        DDBMScheduler(s_churn=1.0)
    with pytest.raises(ValueError, match="prediction_type"):
        I2SBScheduler(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="schedule"):
        make_bridge_schedule("linear")
    with pytest.raises(ValueError, match=">= 2"):
        DBIMScheduler().set_timesteps(1)
    with pytest.raises(ValueError, match=r"\[1, 999\]"):
        I2SBScheduler().set_timesteps(0)
    with pytest.raises(ValueError, match=r"\[1, 999\]"):
        I2SBScheduler().set_timesteps(1000)
    with pytest.raises(ValueError, match=">= 1"):
        DDBMScheduler().set_timesteps(0)
    with pytest.raises(ValueError, match="c_t vanishes"):
        DBIMScheduler(schedule="i2sb", t_max_offset=1e-4).set_timesteps(3)
    with pytest.raises(ValueError, match="x_T"):
        sched = DBIMScheduler()
        sched.set_timesteps(2)
        sched.step(X0, sched.timesteps[0], XT)
