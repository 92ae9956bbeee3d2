"""Noise schedules as small pure functions (no diffusers classes needed).

Schrödinger bridge (SB) with a Brownian reference of variance ``tau`` (Kim, Kim & Ye 2024,
arXiv 2411.14863, the paper's tau; the official code's ``--tau`` is sqrt(tau)):

    x_t = (1 - t) x_0 + t x_1 + sigma_t z,        sigma_t = sqrt(tau t (1 - t)),  t in [0, 1]

and the VP schedule of a pretrained diffusion model (``alphas_cumprod`` built from diffusers'
beta schedules).

Every function accepts Python floats (computed in double precision) or tensors (computed in the
tensor's dtype; pass float64 tensors for coefficient math).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

Number = float | torch.Tensor


def _sqrt(x: Number) -> Number:
    if isinstance(x, torch.Tensor):
        return torch.sqrt(x.clamp_min(0.0))
    return math.sqrt(max(float(x), 0.0))


def _asin(x: Number) -> Number:
    if isinstance(x, torch.Tensor):
        return torch.asin(x.clamp(-1.0, 1.0))
    return math.asin(min(max(float(x), -1.0), 1.0))


# ---------------------------------------------------------------------------------------------
# Schrödinger bridge with Brownian reference: sigma_t^2 = tau t (1 - t)
# ---------------------------------------------------------------------------------------------


def sb_sigma(t: Number, tau: float) -> Number:
    """Bridge noise level sigma_t = sqrt(tau t (1 - t)); zero at both endpoints."""
    return _sqrt(tau * t * (1 - t))


def sb_sigma_dot(t: Number, tau: float) -> Number:
    """d sigma_t / dt = sqrt(tau) (1 - 2t) / (2 sqrt(t (1 - t))), for t in (0, 1) (singular at 0 and 1)."""
    if not isinstance(t, torch.Tensor) and not 0.0 < t < 1.0:
        raise ValueError(f"sb_sigma_dot is singular at the endpoints; got t={t}, need 0 < t < 1.")
    return math.sqrt(tau) * (1 - 2 * t) / (2 * _sqrt(t * (1 - t)))


def _sigma_antiderivative(r: Number) -> Number:
    # d/dr [ (2r-1)/4 sqrt(r - r^2) + arcsin(2r-1)/8 ] = sqrt(r - r^2)
    return (2 * r - 1) / 4 * _sqrt(r - r * r) + _asin(2 * r - 1) / 8


def sb_sigma_integral(s: Number, t: Number, tau: float) -> Number:
    """Closed form of  int_s^t sigma_r dr  for 0 <= s, t <= 1."""
    return math.sqrt(tau) * (_sigma_antiderivative(t) - _sigma_antiderivative(s))


def sb_marginal(x0: torch.Tensor, x1: torch.Tensor, t: Number, tau: float, noise: torch.Tensor) -> torch.Tensor:
    """A sample of the bridge between fixed endpoints: (1 - t) x0 + t x1 + sigma_t noise.

    ``t`` may be a float or a tensor broadcastable against ``x0`` (e.g. shape ``(B, 1, 1, 1)``).
    """
    if isinstance(t, torch.Tensor):
        t = t.to(dtype=torch.float64)
        sigma = sb_sigma(t, tau)
        out = (1 - t) * x0.double() + t * x1.double() + sigma * noise.double()
        return out.to(x0.dtype)
    return (1 - t) * x0 + t * x1 + sb_sigma(t, tau) * noise


# ---------------------------------------------------------------------------------------------
# VP schedule of the pretrained model (diffusers conventions)
# ---------------------------------------------------------------------------------------------


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    # Nichol & Dhariwal's "squaredcos_cap_v2" (GLIDE cosine) schedule, as in diffusers.
    def alpha_bar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def betas_for_schedule(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
    trained_betas: Sequence[float] | None = None,
) -> torch.Tensor:
    """The betas diffusers' DDPM/DDIM schedulers build for the same arguments (float32, like diffusers)."""
    if trained_betas is not None:
        return torch.as_tensor(trained_betas, dtype=torch.float32)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(num_train_timesteps)
    raise ValueError(
        f"Unknown beta_schedule {beta_schedule!r}; expected 'linear', 'scaled_linear', 'squaredcos_cap_v2' "
        "or trained_betas."
    )


def alphas_cumprod_from_betas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
    trained_betas: Sequence[float] | None = None,
) -> torch.Tensor:
    """``alphas_cumprod`` (index k = training timestep k, diffusers convention) as a float64 tensor.

    The cumulative product is taken in float32 exactly as diffusers does, so the values equal
    ``DDIMScheduler(...).alphas_cumprod`` for the same config, then promoted to float64.
    """
    betas = betas_for_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)
