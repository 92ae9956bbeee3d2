"""Paired diffusion bridges: one schedule core for I2SB, DDBM (VP / VE) and DBIM (no diffusers classes needed).

A paired bridge pins a clean image x_0 and its degraded counterpart x_T and walks the Gaussian path

    q(x_t | x_0, x_T) = N(a_t x_T + b_t x_0, c_t^2 I),        t in [t_min, T]                      (1)

built from a reference diffusion p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) with sigma_t = alpha_t rho_t
(SNR_t = 1 / rho_t^2), alphabar_t = alpha_t / alpha_T and rhobar_t^2 = rho_T^2 - rho_t^2:

    a_t = alphabar_t rho_t^2 / rho_T^2,   b_t = alpha_t rhobar_t^2 / rho_T^2,   c_t = alpha_t rhobar_t rho_t / rho_T

(Zhou et al., "Denoising Diffusion Bridge Models", ICLR 2024, arXiv 2309.16948, eq. 8, in the unified notation of
Zheng et al., "Diffusion Bridge Implicit Models", ICLR 2025, arXiv 2405.15885). At t = T: a = 1, b = c = 0; at
t = 0: a = c = 0, b = alpha_0 = 1.

Three schedules share the interface ``alpha(t), alpha_bar(t), rho(t), rho_bar(t), rho_T, alpha_T, a(t), b(t),
c(t), abc(t), f(t), g2(t), log_snr(t), lam(t)`` plus ``marginal``, ``score`` and ``h_term``:

- :class:`VPBridgeSchedule` (DDBM "VP"): alpha_t = exp(-beta_min t / 2 - beta_d t^2 / 4),
  rho_t^2 = exp(beta_min t + beta_d t^2 / 2) - 1, f(t) = -(beta_min + beta_d t) / 2, g^2(t) = beta_min + beta_d t,
  T = 1, defaults beta_d = 2, beta_min = 0.1, t_min = 1e-4 (note beta_d = 2, not the usual 19.9).
- :class:`VEBridgeSchedule` (DDBM "VE"): alpha_t = 1, rho_t = t, T = rho_T = sigma_max (80), f = 0, g^2 = 2t:
  a_t = t^2 / T^2, b_t = 1 - t^2 / T^2, c_t = t sqrt(1 - t^2 / T^2).
- :class:`I2SBBridgeSchedule` (Liu et al., "I2SB: Image-to-Image Schrödinger Bridge", ICML 2023, arXiv 2302.05872):
  alpha = 1 and a discrete reference dX = sqrt(beta_n) dW on indices n = 0..N-1 with the symmetric
  "linear in sqrt" betas; a_t = mu_x1, b_t = mu_x0, c_t = std_sb (the paper's eq. 11 Gaussian product). Continuous
  times t in [0, 1] map to the index round((N - 1) t), exactly as DBIM's ``i2sb_cond`` schedule does.

Times are floats or tensors; coefficients are computed in float64 and returned as Python floats for float input
and as float64 tensors (on the input's device) for tensor input.

The preconditionings that turn a network F into the denoiser x0hat = D(x_t, t, x_T) = c_skip x_t + c_out F(c_in x_t,
c_noise, x_T) are their own small objects (:class:`DDBMPreconditioning`, EDM-style; :class:`I2SBPreconditioning`),
and the samplers' one-step updates are pure functions (``i2sb_posterior_step``, ``dbim_step``,
``dbim_multistep_step``, ``ddbm_ode_drift``, ``ddbm_sde_drift``) that the diffusers schedulers in
``lsb.schedulers`` call.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

Number = float | torch.Tensor

SCHEDULES = ("vp", "ve", "i2sb")


# ---------------------------------------------------------------------------------------------
# float64 helpers
# ---------------------------------------------------------------------------------------------


def _to64(t: Number) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


def _back(value: torch.Tensor, like: Number) -> Number:
    return value if isinstance(like, torch.Tensor) else float(value)


def broadcast_coef(coef: Number, x: torch.Tensor) -> Number:
    """A per-sample coefficient (float or tensor of shape (B,) / scalar) broadcast against ``x``, in x's dtype."""
    if not isinstance(coef, torch.Tensor):
        return coef
    if coef.ndim == 0:
        return float(coef)
    return coef.reshape(-1, *([1] * (x.ndim - 1))).to(device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------


class BridgeSchedule:
    """Base class of a paired bridge schedule (see the module docstring for the formulas).

    Subclasses define ``_alpha``, ``_rho`` (and may override ``_rho_bar`` / ``_abc`` for precision or by
    definition), ``_f``, ``_g2`` over float64 tensors, and set ``t_min``, ``t_max`` (= T), ``alpha_T``, ``rho_T``.
    """

    name: str = "bridge"
    t_min: float
    t_max: float
    alpha_T: float
    rho_T: float

    # -- to override (float64 tensors in and out) -------------------------------------------
    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rho(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rho_bar(self, t: torch.Tensor) -> torch.Tensor:
        return (self.rho_T**2 - self._rho(t) ** 2).clamp_min(0.0).sqrt()

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _abc(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha, rho, rho_bar = self._alpha(t), self._rho(t), self._rho_bar(t)
        rho_T = self.rho_T
        a = alpha / self.alpha_T * rho**2 / rho_T**2
        b = alpha * rho_bar**2 / rho_T**2
        c = alpha * rho_bar * rho / rho_T
        return a, b, c

    # -- public interface ----------------------------------------------------------------------
    def alpha(self, t: Number) -> Number:
        """Signal scale alpha_t of the reference diffusion p(x_t | x_0) = N(alpha_t x_0, alpha_t^2 rho_t^2 I)."""
        return _back(self._alpha(_to64(t)), t)

    def alpha_bar(self, t: Number) -> Number:
        """alphabar_t = alpha_t / alpha_T."""
        return _back(self._alpha(_to64(t)) / self.alpha_T, t)

    def rho(self, t: Number) -> Number:
        """rho_t = sigma_t / alpha_t = SNR_t^(-1/2)."""
        return _back(self._rho(_to64(t)), t)

    def rho_bar(self, t: Number) -> Number:
        """rhobar_t, with rhobar_t^2 = rho_T^2 - rho_t^2 (I2SB: its ``std_bwd``)."""
        return _back(self._rho_bar(_to64(t)), t)

    def f(self, t: Number) -> Number:
        """Drift coefficient f(t) = d log alpha_t / dt of the reference SDE dx = f x dt + g dw."""
        return _back(self._f(_to64(t)), t)

    def g2(self, t: Number) -> Number:
        """Squared diffusion coefficient g^2(t) = d sigma_t^2 / dt - 2 f(t) sigma_t^2."""
        return _back(self._g2(_to64(t)), t)

    def a(self, t: Number) -> Number:
        """Coefficient a_t of x_T in the bridge mean."""
        return _back(self._abc(_to64(t))[0], t)

    def b(self, t: Number) -> Number:
        """Coefficient b_t of x_0 in the bridge mean."""
        return _back(self._abc(_to64(t))[1], t)

    def c(self, t: Number) -> Number:
        """Bridge standard deviation c_t."""
        return _back(self._abc(_to64(t))[2], t)

    def abc(self, t: Number) -> tuple[Number, Number, Number]:
        """(a_t, b_t, c_t) in one call."""
        return tuple(_back(v, t) for v in self._abc(_to64(t)))

    def log_snr(self, t: Number) -> Number:
        """log SNR_t = -2 log rho_t of the reference diffusion."""
        return _back(-2.0 * torch.log(self._rho(_to64(t))), t)

    def lam(self, t: Number) -> Number:
        """DBIM's exponential-integrator time lambda_t = log(b_t / c_t) (+inf where c_t = 0)."""
        _, b, c = self._abc(_to64(t))
        return _back(torch.log(b) - torch.log(c), t)

    def marginal(self, x0: torch.Tensor, x_T: torch.Tensor, t: Number, noise: torch.Tensor | None) -> torch.Tensor:
        """A sample a_t x_T + b_t x0 + c_t noise of (1) (the mean when ``noise`` is None); t float or shape (B,)."""
        a, b, c = (broadcast_coef(v, x0) for v in self.abc(t))
        out = a * x_T + b * x0
        return out if noise is None else out + c * noise

    def score(self, x_t: torch.Tensor, x_T: torch.Tensor, x0_hat: torch.Tensor, t: Number) -> torch.Tensor:
        """Bridge score s = grad log q(x_t | x_T) ~ -(x_t - a_t x_T - b_t x0hat) / c_t^2 from a denoiser x0hat."""
        a, b, c = (broadcast_coef(v, x_t) for v in self.abc(t))
        return -(x_t - a * x_T - b * x0_hat) / c**2

    def h_term(self, x_t: torch.Tensor, x_T: torch.Tensor, t: Number) -> torch.Tensor:
        """Doob h-transform drift h = grad_{x_t} log p(x_T | x_t) = (alphabar_t x_T - x_t) / (alpha_t^2 rhobar_t^2)."""
        t64 = _to64(t)
        alpha = self._alpha(t64)
        alpha_bar = broadcast_coef(_back(alpha / self.alpha_T, t), x_t)
        denom = broadcast_coef(_back(alpha**2 * self._rho_bar(t64) ** 2, t), x_t)
        return (alpha_bar * x_T - x_t) / denom


class VPBridgeSchedule(BridgeSchedule):
    """DDBM's VP bridge (Zhou et al. 2024; DBIM's ``vp``): beta(t) = beta_min + beta_d t on t in [t_min, T = 1].

    Args:
        beta_d (`float`, defaults to 2.0): slope beta_d of the linear beta(t) (DDBM's value, not 19.9).
        beta_min (`float`, defaults to 0.1): beta(0).
        t_min (`float`, defaults to 1e-4): smallest time a sampler evaluates the denoiser at.
        t_max (`float`, defaults to 1.0): the terminal time T (where x_t = x_T).
    """

    name = "vp"

    def __init__(self, beta_d: float = 2.0, beta_min: float = 0.1, t_min: float = 1e-4, t_max: float = 1.0):
        if not 0.0 <= t_min < t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}.")
        self.beta_d, self.beta_min = float(beta_d), float(beta_min)
        self.t_min, self.t_max = float(t_min), float(t_max)
        T = _to64(self.t_max)
        self.alpha_T = float(self._alpha(T))
        self.rho_T = float(self._rho(T))

    def _int_beta(self, t):  # int_0^t beta(r) dr
        return self.beta_min * t + 0.5 * self.beta_d * t**2

    def _alpha(self, t):
        return torch.exp(-0.5 * self._int_beta(t))

    def _rho(self, t):
        return torch.expm1(self._int_beta(t)).clamp_min(0.0).sqrt()

    def _rho_bar(self, t):
        # rho_T^2 - rho_t^2 = e^{B_t} (e^{B_T - B_t} - 1), without cancellation near T
        B_t, B_T = self._int_beta(t), self._int_beta(_to64(self.t_max))
        return (torch.exp(B_t) * torch.expm1(B_T - B_t)).clamp_min(0.0).sqrt()

    def _f(self, t):
        return -0.5 * (self.beta_min + self.beta_d * t)

    def _g2(self, t):
        return self.beta_min + self.beta_d * t


class VEBridgeSchedule(BridgeSchedule):
    """DDBM's VE bridge (Zhou et al. 2024; DBIM's ``ve``): alpha = 1, rho_t = t, T = sigma_max.

    Args:
        sigma_max (`float`, defaults to 80.0): the terminal time T = rho_T (DDBM: 80 for edges2handbags, 20 for DIODE).
        t_min (`float`, defaults to 0.002): smallest time a sampler evaluates the denoiser at (DDBM's sigma_min).
    """

    name = "ve"

    def __init__(self, sigma_max: float = 80.0, t_min: float = 0.002):
        if not 0.0 <= t_min < sigma_max:
            raise ValueError(f"need 0 <= t_min < sigma_max, got t_min={t_min}, sigma_max={sigma_max}.")
        self.sigma_max = float(sigma_max)
        self.t_min, self.t_max = float(t_min), float(sigma_max)
        self.alpha_T, self.rho_T = 1.0, float(sigma_max)

    def _alpha(self, t):
        return torch.ones_like(t)

    def _rho(self, t):
        return t

    def _rho_bar(self, t):
        T = self.rho_T
        return ((T - t) * (T + t)).clamp_min(0.0).sqrt()

    def _f(self, t):
        return torch.zeros_like(t)

    def _g2(self, t):
        return 2.0 * t


def i2sb_betas(num_train_timesteps: int = 1000, beta_min: float = 0.1, beta_max: float = 0.3) -> torch.Tensor:
    """I2SB's symmetric per-index betas (float64, length N).

    betas = linspace(sqrt(beta_min / N), sqrt(beta_max / N), N)^2, then made symmetric by mirroring the first half:
    concat(betas[:N/2], flip(betas[:N/2])). beta_min / N is I2SB's ``linear_start`` 1e-4 for the defaults (DBIM
    parameterises it as beta_min = 0.1); beta_max / N is ``linear_end``. N must be even.
    """
    n = int(num_train_timesteps)
    if n < 2 or n % 2:
        raise ValueError(f"num_train_timesteps must be an even integer >= 2, got {num_train_timesteps}.")
    if not 0.0 < beta_min <= beta_max:
        raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
    betas = torch.linspace((beta_min / n) ** 0.5, (beta_max / n) ** 0.5, n, dtype=torch.float64) ** 2
    half = betas[: n // 2]
    return torch.cat([half, half.flip(0)])


def i2sb_stds(betas: torch.Tensor, official_cumsum: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(std_fwd, std_bwd) per index: sigma_n = sqrt(var from the clean end), sigmabar_n = sqrt(var to the degraded end).

    ``official_cumsum=False`` (the paper's continuous sigma_t^2 = int_0^t beta, sigmabar_t^2 = int_t^1 beta): a
    discrete Brownian motion whose increment from index k to k+1 has variance (beta_k + beta_{k+1}) / 2 (trapezoid
    rule), so std_fwd[0] = 0, std_bwd[N-1] = 0 and std_fwd^2 + std_bwd^2 = rho_T^2 at every index.

    ``official_cumsum=True`` reproduces the official code bit for bit: std_fwd[n]^2 = sum_{k<=n} beta_k and
    std_bwd[n]^2 = sum_{k>=n} beta_k both include beta_n, so std_fwd[0] = std_bwd[N-1] = sqrt(beta_0) = 0.01 and
    std_fwd^2 + std_bwd^2 = sum(beta) + beta_n. Use it for checkpoints trained by the official I2SB / DBIM code.
    """
    if official_cumsum:
        fwd = torch.cumsum(betas, 0)
        bwd = torch.cumsum(betas.flip(0), 0).flip(0)
    else:
        increments = 0.5 * (betas[:-1] + betas[1:])
        fwd = torch.cat([betas.new_zeros(1), torch.cumsum(increments, 0)])
        bwd = fwd[-1] - fwd
        bwd[-1] = 0.0
    return fwd.sqrt(), bwd.clamp_min(0.0).sqrt()


class I2SBBridgeSchedule(BridgeSchedule):
    """I2SB's symmetric-beta Schrödinger bridge (Liu et al. 2023, arXiv 2302.05872) as a paired bridge.

    Index n = 0 is the clean end x_0 and n = N - 1 the degraded end x_T. Per index (eq. 11, "Gaussian product"):

        mu_x0 = sigmabar^2 / (sigma^2 + sigmabar^2),  mu_x1 = sigma^2 / (sigma^2 + sigmabar^2),
        std_sb^2 = sigma^2 sigmabar^2 / (sigma^2 + sigmabar^2),      sigma = std_fwd, sigmabar = std_bwd,

    and a_t = mu_x1, b_t = mu_x0, c_t = std_sb. In the unified notation alpha = 1, rho_t = std_fwd,
    rhobar_t = std_bwd, rho_T = std_fwd[N-1]; with the default (paper) cumulative sums these are exactly the generic
    formulas. With ``official_cumsum=True`` they are I2SB's own tables; DBIM's code instead divides by
    rho_T^2 = std_fwd[N-1]^2 rather than std_fwd^2 + std_bwd^2 (a relative difference beta_n / sum(beta) <= 0.2%).
    A continuous time t in [0, 1] uses the index round((N - 1) t) (half to even, like torch.round), as DBIM's
    ``i2sb_cond`` does, so every coefficient is piecewise constant in t.

    f(t) = 0 and g^2(t) = (N - 1) beta_{round((N-1) t)}: the variance rate per unit of continuous time (DBIM's code
    returns the per-index beta_n and rescales dt instead).

    Args:
        num_train_timesteps (`int`, defaults to 1000): N, the number of indices (I2SB's ``interval``).
        beta_min (`float`, defaults to 0.1): N times the first beta (I2SB's ``linear_start`` = 1e-4).
        beta_max (`float`, defaults to 0.3): N times the last beta of the unmirrored ramp (I2SB: 0.3 for JPEG / SR,
            1.0 for deblurring and inpainting; DBIM's ImageNet inpainting: 1.0).
        official_cumsum (`bool`, defaults to `False`): the official off-by-one cumulative sums (see ``i2sb_stds``).
        t_min (`float`, defaults to 1e-4): smallest continuous time a sampler evaluates the denoiser at.
    """

    name = "i2sb"

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_min: float = 0.1,
        beta_max: float = 0.3,
        official_cumsum: bool = False,
        t_min: float = 1e-4,
    ):
        self.num_train_timesteps = int(num_train_timesteps)
        self.official_cumsum = bool(official_cumsum)
        self.betas = i2sb_betas(num_train_timesteps, beta_min, beta_max)
        self.std_fwd, self.std_bwd = i2sb_stds(self.betas, official_cumsum)
        var_fwd, var_bwd = self.std_fwd**2, self.std_bwd**2
        total = var_fwd + var_bwd
        self.mu_x0 = var_bwd / total
        self.mu_x1 = var_fwd / total
        self.std_sb = (var_fwd * var_bwd / total).sqrt()
        self.t_min, self.t_max = float(t_min), 1.0
        self.alpha_T, self.rho_T = 1.0, float(self.std_fwd[-1])

    def index(self, t: Number) -> Number:
        """The index round((N - 1) t) of a continuous time t in [0, 1] (an int, or an int64 tensor)."""
        if isinstance(t, torch.Tensor):
            return torch.round(t.to(torch.float64) * (self.num_train_timesteps - 1)).long()
        return round(float(t) * (self.num_train_timesteps - 1))

    def time_of(self, index: int | torch.Tensor) -> Number:
        """The continuous time n / (N - 1) of an index n (``index(time_of(n)) == n``)."""
        if isinstance(index, torch.Tensor):
            return index.to(torch.float64) / (self.num_train_timesteps - 1)
        return int(index) / (self.num_train_timesteps - 1)

    def _lookup(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        idx = self.index(t).clamp(0, self.num_train_timesteps - 1)
        return table[idx.cpu()].to(t.device)

    def _alpha(self, t):
        return torch.ones_like(t)

    def _rho(self, t):
        return self._lookup(self.std_fwd, t)

    def _rho_bar(self, t):
        return self._lookup(self.std_bwd, t)

    def _abc(self, t):
        return self._lookup(self.mu_x1, t), self._lookup(self.mu_x0, t), self._lookup(self.std_sb, t)

    def _f(self, t):
        return torch.zeros_like(t)

    def _g2(self, t):
        return (self.num_train_timesteps - 1) * self._lookup(self.betas, t)


def make_bridge_schedule(
    schedule: str = "vp",
    *,
    beta_d: float = 2.0,
    beta_min: float = 0.1,
    sigma_max: float = 80.0,
    beta_max: float = 1.0,
    num_train_timesteps: int = 1000,
    official_cumsum: bool = False,
    t_min: float | None = None,
) -> BridgeSchedule:
    """Builds a schedule by name: ``vp`` (beta_d, beta_min), ``ve`` (sigma_max) or ``i2sb`` (num_train_timesteps,
    beta_min, beta_max, official_cumsum). ``t_min=None`` takes the schedule's default (1e-4, 0.002, 1e-4)."""
    if schedule == "vp":
        return VPBridgeSchedule(beta_d, beta_min, 1e-4 if t_min is None else t_min)
    if schedule == "ve":
        return VEBridgeSchedule(sigma_max, 0.002 if t_min is None else t_min)
    if schedule == "i2sb":
        t_min = 1e-4 if t_min is None else t_min
        return I2SBBridgeSchedule(num_train_timesteps, beta_min, beta_max, official_cumsum, t_min)
    raise ValueError(f"Unknown bridge schedule {schedule!r}; expected one of {SCHEDULES}.")


# ---------------------------------------------------------------------------------------------
# preconditioning: x0hat = c_skip x_t + c_out F(c_in x_t, c_noise, x_T)
# ---------------------------------------------------------------------------------------------


class DDBMPreconditioning:
    """DDBM's EDM-style bridge preconditioning (Zhou et al. 2024, "bridge_karras"), also DBIM's for VP / VE.

    With A = a_t^2 sigma_T^2 + b_t^2 sigma_0^2 + 2 a_t b_t cov + c_t^2 (the variance of x_t):

        c_in = A^(-1/2),   c_skip = (b_t sigma_0^2 + a_t cov) / A,
        c_out = sqrt(a_t^2 (sigma_T^2 sigma_0^2 - cov^2) + sigma_0^2 c_t^2) c_in,   c_noise = 1000 / 4 log(t + 1e-44),

    so that c_in x_t and the regression target (x_0 - c_skip x_t) / c_out have unit variance; loss weight 1 / c_out^2.

    Args:
        schedule (`BridgeSchedule`): the bridge.
        sigma_data (`float`, defaults to 0.5): sigma_0, the std of the clean images.
        sigma_data_end (`float`, *optional*): sigma_T, the std of the degraded images (defaults to sigma_data).
        cov_xy (`float`, defaults to 0.0): the covariance of x_0 and x_T.
    """

    def __init__(
        self,
        schedule: BridgeSchedule,
        sigma_data: float = 0.5,
        sigma_data_end: float | None = None,
        cov_xy: float = 0.0,
    ):
        self.schedule = schedule
        self.sigma_data = float(sigma_data)
        self.sigma_data_end = float(sigma_data if sigma_data_end is None else sigma_data_end)
        self.cov_xy = float(cov_xy)

    def scalings(self, t: Number) -> tuple[Number, Number, Number, Number]:
        """(c_skip, c_in, c_out, c_noise) at time t."""
        t64 = _to64(t)
        a, b, c = self.schedule._abc(t64)
        s0, sT, cov = self.sigma_data, self.sigma_data_end, self.cov_xy
        A = a**2 * sT**2 + b**2 * s0**2 + 2 * a * b * cov + c**2
        c_in = A.rsqrt()
        c_skip = (b * s0**2 + a * cov) / A
        c_out = (a**2 * (sT**2 * s0**2 - cov**2) + s0**2 * c**2).sqrt() * c_in
        c_noise = 250.0 * torch.log(t64 + 1e-44)
        return tuple(_back(v, t) for v in (c_skip, c_in, c_out, c_noise))

    def loss_weight(self, t: Number) -> Number:
        """The "bridge_karras" loss weight 1 / c_out^2."""
        c_out = self.scalings(t)[2]
        return 1.0 / c_out**2


class I2SBPreconditioning:
    """I2SB's parameterisation as a preconditioning (DBIM's ``I2SB`` precond): the network predicts
    (x_t - x_0) / rho_t, so c_skip = 1, c_in = 1, c_out = -rho_t (``std_fwd``), loss weight 1 / rho_t^2, and the
    time input is I2SB's noise level c_noise = linspace(t0, T, N)[n] * N at the index n = round((N - 1) t).

    Args:
        schedule (`I2SBBridgeSchedule`): the bridge.
        t0 (`float`, defaults to 1e-4) and T (`float`, defaults to 1.0): the range of I2SB's ``noise_levels``.
    """

    def __init__(self, schedule: I2SBBridgeSchedule, t0: float = 1e-4, T: float = 1.0):
        if not isinstance(schedule, I2SBBridgeSchedule):
            raise ValueError("I2SBPreconditioning needs an I2SBBridgeSchedule.")
        self.schedule = schedule
        n = schedule.num_train_timesteps
        self.noise_levels = torch.linspace(t0, T, n, dtype=torch.float64) * n

    def scalings(self, t: Number) -> tuple[Number, Number, Number, Number]:
        """(c_skip, c_in, c_out, c_noise) at continuous time t."""
        t64 = _to64(t)
        rho = self.schedule._rho(t64)
        c_noise = self.schedule._lookup(self.noise_levels, t64)
        return tuple(_back(v, t) for v in (torch.ones_like(rho), torch.ones_like(rho), -rho, c_noise))

    def loss_weight(self, t: Number) -> Number:
        """1 / c_out^2 = 1 / rho_t^2 (infinite at index 0 with the paper's cumulative sums, where rho = 0)."""
        c_out = self.scalings(t)[2]
        return 1.0 / c_out**2


def make_preconditioning(
    schedule: BridgeSchedule, sigma_data: float = 0.5, cov_xy: float = 0.0
) -> DDBMPreconditioning | I2SBPreconditioning:
    """The preconditioning DBIM pairs with a schedule: I2SB's for ``i2sb``, DDBM's EDM-style one otherwise."""
    if isinstance(schedule, I2SBBridgeSchedule):
        return I2SBPreconditioning(schedule)
    return DDBMPreconditioning(schedule, sigma_data=sigma_data, cov_xy=cov_xy)


# ---------------------------------------------------------------------------------------------
# time grids
# ---------------------------------------------------------------------------------------------


def i2sb_step_indices(num_train_timesteps: int, nfe: int, official_grid: bool = False) -> list[int]:
    """I2SB's sampling grid: the nfe + 1 indices round(k (N - 1) / nfe), k = 0..nfe (ascending, 0 and N - 1 included).

    The rounding is half to even ("banker's rounding", Python's ``round``) of the exact fraction k (N - 1) / nfe.
    ``official_grid=True`` reproduces the official ``space_indices`` bit for bit: it also uses ``round`` but on a
    float stride accumulated k times, so exact halves may tip either way (for N = 1000 this changes the grid of
    283 of the 999 possible NFEs, the first being NFE = 20; NFE = 10 gives [0, 100, ..., 500, 599, ..., 999] both
    ways). Needs 1 <= nfe <= N - 1 so that the indices are distinct.
    """
    n = int(num_train_timesteps)
    if int(nfe) != nfe or not 1 <= nfe <= n - 1:
        raise ValueError(f"the I2SB NFE must be an integer in [1, {n - 1}], got {nfe}.")
    nfe = int(nfe)
    if not official_grid:
        return [round(Fraction(k * (n - 1), nfe)) for k in range(nfe + 1)]
    stride, position, indices = (n - 1) / nfe, 0.0, []
    for _ in range(nfe + 1):
        indices.append(round(position))
        position += stride
    return indices


def karras_times(n: int, t_min: float, t_max: float, rho: float = 7.0) -> list[float]:
    """The n times (t_max^(1/rho) + i / (n - 1) (t_min^(1/rho) - t_max^(1/rho)))^rho, i = 0..n-1 (descending;
    Karras et al. 2022, eq. 5; n = 1 gives [t_max])."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = t_min ** (1 / rho), t_max ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).tolist()


# ---------------------------------------------------------------------------------------------
# one-step updates
# ---------------------------------------------------------------------------------------------


def i2sb_posterior_step(
    x_n: torch.Tensor, x0_hat: torch.Tensor, std_n: float, std_prev: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """I2SB's sampler step: the DDPM posterior of the reference process dX = sqrt(beta) dW, X_0 = x0hat.

    For n_prev < n, with r = sigma_prev^2 / sigma_n^2 (sigma = std_fwd):

        p(X_prev | X_n, X_0) = N((1 - r) X_0 + r X_n,  sigma_prev^2 (1 - r) I).

    ``noise=None`` returns the mean (the OT-ODE and the final step).
    """
    r = std_prev**2 / std_n**2
    x = (1.0 - r) * x0_hat + r * x_n
    if noise is None:
        return x
    return x + math.sqrt(max(std_prev**2 * (1.0 - r), 0.0)) * noise


def _check_start(c_s: float, s: float) -> None:
    if c_s <= 0.0:
        raise ValueError(
            f"c_s = 0 at the step's start time s = {s} (an end of the bridge): the DBIM update divides by c_s; "
            "from t = T, boot with `BridgeSchedule.marginal` instead."
        )


def dbim_noise_level(schedule: BridgeSchedule, s: float, t: float, eta: float) -> float:
    """DBIM's rho_n for the step s -> t (s > t): omega = eta alpha_t rho_t sqrt(1 - rho_t^2 / rho_s^2)."""
    if eta == 0.0:
        return 0.0
    rho_s, rho_t = schedule.rho(s), schedule.rho(t)
    return eta * schedule.alpha(t) * rho_t * math.sqrt(max(1.0 - rho_t**2 / rho_s**2, 0.0))


def dbim_step(
    x_s: torch.Tensor,
    x0_hat: torch.Tensor,
    x_T: torch.Tensor,
    schedule: BridgeSchedule,
    s: float,
    t: float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DBIM's non-Markovian bridge step (Zheng et al. 2025, eq. 15) from time s to t < s.

        epshat = (x_s - a_s x_T - b_s x0hat) / c_s
        x_t = a_t x_T + b_t x0hat + sqrt(c_t^2 - omega^2) epshat + omega z,   omega = ``dbim_noise_level``

    eta = 0 is the deterministic (ODE, first-order exponential integrator) step, eta = 1 the Markovian bridge
    (for I2SB's schedule exactly ``i2sb_posterior_step``). ``noise=None`` drops the omega z term (DBIM's last step)
    but keeps the sqrt(c_t^2 - omega^2) coefficient.
    """
    a_s, b_s, c_s = schedule.abc(s)
    a_t, b_t, c_t = schedule.abc(t)
    _check_start(c_s, s)
    omega = dbim_noise_level(schedule, s, t, eta)
    k = math.sqrt(max(c_t**2 - omega**2, 0.0)) / c_s
    x = (a_t - k * a_s) * x_T + (b_t - k * b_s) * x0_hat + k * x_s
    if noise is None or omega == 0.0:
        return x
    return x + omega * noise


def dbim_multistep_step(
    x_s: torch.Tensor,
    x_T: torch.Tensor,
    x0_hats: list[torch.Tensor],
    times: list[float],
    schedule: BridgeSchedule,
    t: float,
) -> torch.Tensor:
    """DBIM's deterministic exponential-integrator multistep update from s = times[-1] to t (order = len(times)).

    The eta = 0 ODE d(x_t / c_t) = x_T d(a_t / c_t) + x0hat d(b_t / c_t) integrates exactly to

        x_t = (c_t / c_s) x_s + (a_t - a_s c_t / c_s) x_T + c_t int_{lambda_s}^{lambda_t} e^lambda x0hat dlambda,

    lambda = log(b / c) and c_t e^{lambda_t} = b_t. x0hat(lambda) is the polynomial through the last 1-3 denoiser
    outputs (``x0_hats`` / ``times``, oldest first, the current one last), h = lambda_t - lambda_s:

        order 1: b_t (1 - e^-h) x0hat_s                                            (= ``dbim_step`` with eta = 0)
        order 2: + b_t (e^-h + h - 1) (x0hat_s - x0hat_u) / h_2,                     h_2 = lambda_s - lambda_u
        order 3: + b_t [(e^-h + h - 1) D_1 + (h^2 / 2 - h + 1 - e^-h) D_2] instead, with h_1 = lambda_s - lambda_u1,
                 h_2 = lambda_u1 - lambda_u2 and the quadratic's derivatives at s
                 D_1 = [(x_s - x_u1)(2 h_1 + h_2) / h_1 - (x_u1 - x_u2) h_1 / h_2] / (h_1 + h_2),
                 D_2 = 2 [(x_s - x_u1) / h_1 - (x_u1 - x_u2) / h_2] / (h_1 + h_2)          (x_. = x0hat_.).

    Falls back to first order where c_t = 0 (lambda_t infinite) or two lambdas coincide (I2SB's rounded index).
    """
    order = len(times)
    if order not in (1, 2, 3) or len(x0_hats) != order:
        raise ValueError(f"need 1 to 3 matching denoiser outputs and times, got {len(x0_hats)} and {order}.")
    s = times[-1]
    a_s, b_s, c_s = schedule.abc(s)
    a_t, b_t, c_t = schedule.abc(t)
    _check_start(c_s, s)
    x0_s = x0_hats[-1]
    ratio = c_t / c_s
    x = ratio * x_s + (a_t - a_s * ratio) * x_T + (b_t - b_s * ratio) * x0_s
    if order == 1 or c_t == 0.0:
        return x
    lams = [schedule.lam(u) for u in times]
    lam_s, lam_t = lams[-1], schedule.lam(t)
    h = lam_t - lam_s
    phi2 = math.expm1(-h) + h  # e^-h + h - 1
    if order == 2:
        h2 = lam_s - lams[0]
        if h2 == 0.0:
            return x
        return x + (b_t * phi2 / h2) * (x0_s - x0_hats[0])
    h1, h2 = lam_s - lams[1], lams[1] - lams[0]
    if h1 == 0.0 or h2 == 0.0:
        return x
    phi3 = h * h / 2 - h - math.expm1(-h)  # h^2/2 - h + 1 - e^-h
    diff1, diff2 = x0_s - x0_hats[1], x0_hats[1] - x0_hats[0]
    d1 = (diff1 * ((2 * h1 + h2) / h1) - diff2 * (h1 / h2)) / (h1 + h2)
    d2 = (diff1 / h1 - diff2 / h2) * (2 / (h1 + h2))
    return x + b_t * (phi2 * d1 + phi3 * d2)


def ddbm_ode_drift(
    x: torch.Tensor, x_T: torch.Tensor, x0_hat: torch.Tensor, schedule: BridgeSchedule, t: float, guidance: float = 1.0
) -> torch.Tensor:
    """DDBM's probability-flow ODE dx/dt = f x - g^2 (s / 2 - w h) (Zhou et al. 2024; w = ``guidance``, 1 exact)."""
    s = schedule.score(x, x_T, x0_hat, t)
    h = schedule.h_term(x, x_T, t)
    return schedule.f(t) * x - schedule.g2(t) * (0.5 * s - guidance * h)


def ddbm_sde_drift(
    x: torch.Tensor, x_T: torch.Tensor, x0_hat: torch.Tensor, schedule: BridgeSchedule, t: float
) -> torch.Tensor:
    """Drift f x - g^2 (s - h) of DDBM's reverse-time bridge SDE dx = [f x - g^2 (s - h)] dt + g dw (dt < 0)."""
    s = schedule.score(x, x_T, x0_hat, t)
    h = schedule.h_term(x, x_T, t)
    return schedule.f(t) * x - schedule.g2(t) * (s - h)
