"""Decoupled diffusion (DDM) as small pure functions (no diffusers classes).

Huang, Qin, Liu, Xu, "Decoupled Diffusion Models: Simultaneous Image-to-Zero and Zero-to-Noise
Diffusion" (arXiv 2306.13720). The forward process is an analytic attenuation of the image to zero
plus a standard Wiener process:

    x_t = x_0 + H_t + sqrt(t) eps,       H_t = int_0^t h_r dr,   x_0 + H_1 = 0,   t in [0, 1]

- constant attenuation h_t = C = -x_0:            H_t = C t                (x_t = (1 - t) x_0 + sqrt(t) eps)
- linear attenuation   h_t = K t + C, C = -x_0 - K / 2:  H_t = K t^2 / 2 + C t

Given x_0 (i.e. the attenuation parameters) the process is x_0 + H_t plus a Brownian motion W_t, so
the reverse step of ANY size s <= t is the Brownian-bridge conditional

    q(x_{t-s} | x_t, x_0) = N( x_t + H_{t-s} - H_t - (s / sqrt(t)) eps,  s (t - s) / t  I ),   eps = W_t / sqrt(t)

(:func:`ddm_posterior`). :func:`ddm_step` generalises it with DDIM's ``eta``: it keeps a
sqrt(t - s - sigma^2) share of the predicted noise and adds fresh noise of variance sigma^2 =
eta^2 s (t - s) / t; ``eta = 1`` is the posterior above (the paper's sampler), ``eta = 0`` the
deterministic variant.

All functions accept floats or tensors broadcastable against the latents; ``K`` is ``None`` for the
constant attenuation.
"""

from __future__ import annotations

import math

import torch

ATTENUATIONS = ("constant", "linear")
T_MIN = 1e-4  # the official `eps`: t = 0 is never fed to the network


def check_attenuation(attenuation: str) -> str:
    if attenuation not in ATTENUATIONS:
        raise ValueError(f"unknown DDM attenuation {attenuation!r}; choose one of {ATTENUATIONS}")
    return attenuation


def attenuation_integral(t, C, K=None):
    """H_t = C t (constant) or K t^2 / 2 + C t (linear)."""
    H = C * t
    if K is not None:
        H = H + K * (t * t / 2)
    return H


def attenuation_parameters(x0: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
    """The C that sends x_0 to zero at t = 1: -x_0 (constant) or -x_0 - K / 2 (linear)."""
    return -x0 if K is None else -x0 - K / 2


def sample_linear_k(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """The official training draw of the linear slope: K = clamp(N(0, 1), -1, 1), independently per element."""
    return torch.randn(shape, generator=generator, device=device, dtype=dtype).clamp(-1, 1)


def ddm_forward(x0: torch.Tensor, noise: torch.Tensor, t, K: torch.Tensor | None = None) -> torch.Tensor:
    """x_t = x_0 + H_t + sqrt(t) noise with C = attenuation_parameters(x_0, K)."""
    C = attenuation_parameters(x0, K)
    sqrt_t = torch.sqrt(t) if isinstance(t, torch.Tensor) else math.sqrt(t)
    return x0 + attenuation_integral(t, C, K) + sqrt_t * noise


def ddm_predict_x0(x_t: torch.Tensor, t, C: torch.Tensor, eps: torch.Tensor, K: torch.Tensor | None = None):
    """x0hat = x_t - H_t - sqrt(t) eps (the forward process solved for x_0)."""
    sqrt_t = torch.sqrt(t) if isinstance(t, torch.Tensor) else math.sqrt(t)
    return x_t - attenuation_integral(t, C, K) - sqrt_t * eps


def ddm_posterior(
    x_t: torch.Tensor, t: float, s: float, C: torch.Tensor, eps: torch.Tensor, K: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t-s} | x_t, x_0) (the exact reverse step of size s, 0 < s <= t)."""
    if not 0.0 < s <= t:
        raise ValueError(f"ddm_posterior: need 0 < s <= t, got s={s}, t={t}")
    mean = x_t + attenuation_integral(t - s, C, K) - attenuation_integral(t, C, K) - (s / math.sqrt(t)) * eps
    return mean, s * (t - s) / t


def ddm_step(
    x_t: torch.Tensor,
    t: float,
    s: float,
    C: torch.Tensor,
    eps: torch.Tensor,
    K: torch.Tensor | None = None,
    eta: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One reverse step t -> t - s:

        x_{t-s} = x_t + H_{t-s} - H_t - (sqrt(t) - sqrt(t - s - sigma^2)) eps + sigma z,   sigma^2 = eta^2 s (t-s) / t

    ``eta = 1`` draws from :func:`ddm_posterior` (the paper's sampler); ``eta = 0`` is deterministic.
    ``noise`` (standard normal) is needed whenever sigma > 0.
    """
    if not 0.0 < s <= t:
        raise ValueError(f"ddm_step: need 0 < s <= t, got s={s}, t={t}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddm_step: eta must be in [0, 1], got {eta}")
    var = eta * eta * s * (t - s) / t
    keep = math.sqrt(max(t - s - var, 0.0))
    x = x_t + attenuation_integral(t - s, C, K) - attenuation_integral(t, C, K) - (math.sqrt(t) - keep) * eps
    if var > 0:
        if noise is None:
            raise ValueError("ddm_step: eta > 0 and s < t need `noise`")
        x = x + math.sqrt(var) * noise
    return x


def ddm_input_scale(t) -> float | torch.Tensor:
    """c_in = 1 / sqrt((1 - t)^2 + t): unit-variance network input for unit-variance data under the constant
    attenuation (the linear one adds at most Var(K) (t^2 - t)^2 / 4 <= 0.01)."""
    v = (1 - t) ** 2 + t
    return 1.0 / (torch.sqrt(v) if isinstance(v, torch.Tensor) else math.sqrt(v))


def ddm_time_grid(num_inference_steps: int, denoise: bool = True, t_min: float = T_MIN) -> list[tuple[float, float]]:
    """The official grid as (t, s) pairs, one per network call, from t = 1 down to 0.

    ``N = num_inference_steps`` equal steps of 1/N; with ``denoise`` (the official default) the last one is split
    into (1/N - t_min) and t_min, so the sampler makes N + 1 network calls and the last call is at t = t_min.
    The last step always lands exactly on 0 (s = t).
    """
    if (
        isinstance(num_inference_steps, bool)
        or int(num_inference_steps) != num_inference_steps
        or num_inference_steps < 1
    ):
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    n = int(num_inference_steps)
    if denoise and not 0.0 < t_min < 1.0 / n:
        raise ValueError(f"t_min={t_min} must be in (0, 1/num_inference_steps) with denoise=True")
    sizes = [1.0 / n] * (n - 1) + ([1.0 / n - t_min, t_min] if denoise else [1.0 / n])
    grid, t = [], 1.0
    for k, s in enumerate(sizes):
        if k == len(sizes) - 1:
            s = t  # land exactly on 0
        grid.append((t, s))
        t = t - s
    return grid


def ddm_nfe(num_inference_steps: int, denoise: bool = True) -> int:
    """Network calls of the official sampler: N + 1 with ``denoise`` (the paper's "10 steps" = 11 calls), else N."""
    return int(num_inference_steps) + (1 if denoise else 0)
