"""SNR matching of the LSB bridge onto a rectified-flow model (SD3 / SD3.5, FLUX.1), as pure functions.

A rectified-flow model at noise level s in [0, 1] sees ``z_s = (1 - s) x + s e`` (x data, e ~ N(0, I)) and
predicts the velocity ``v = e - x``. From a velocity estimate at z_s the data and noise estimates are

    xhat = z_s - s v,        ehat = z_s + (1 - s) v          (``velocity_to_sample`` / ``velocity_to_noise``)

The LSB bridge state x_t = m_t + sigma_t z, m_t = (1 - t) x_0 + t x_1, sigma_t^2 = tau t (1 - t), has the
noise-to-signal ratio sigma_t around its mean. A flow state has the ratio s / (1 - s), so the matched level is

    s / (1 - s) = sigma_t,    s = sigma_t / (1 + sigma_t),    model input (1 - s) x_t = (1 - s) m_t + s z

which is exactly a flow state at level s around the "data" m_t (``flow_level``, ``flow_model_input_scale``).
The bridge noise predictor of the VP path, eps with xhat = x_t - sigma_t eps, is then the flow model's noise
estimate itself: x_t - sigma_t ehat = (z_s - s v) for z_s = (1 - s) x_t (``flow_predictors``), so the one-step
updates of ``lsb.bridges.updates`` run unchanged on a flow base.

Timesteps: diffusers' ``FlowMatchEulerDiscreteScheduler`` lists ``timesteps = sigmas * num_train_timesteps``.
SD3's transformer takes that value (0-1000 scale); FLUX's pipeline passes ``timestep / 1000``, i.e. s itself.
The scheduler's ``shift`` / dynamic shifting (``mu``) changes which levels a sampler visits, not what s means;
LSB visits the levels its bridge grid dictates, so neither enters here.

Floats are computed in double precision; tensors in their dtype (pass float64 for coefficient math).
"""

from __future__ import annotations

import torch

from .matching import alpha_bar_to_sb_time
from .schedules import Number, sb_sigma


def sigma_to_flow_level(sigma: Number) -> Number:
    """The flow level s whose noise-to-signal ratio s / (1 - s) equals ``sigma``: s = sigma / (1 + sigma)."""
    return sigma / (1 + sigma)


def flow_level_to_sigma(s: Number) -> Number:
    """The noise-to-signal ratio s / (1 - s) of a flow state at level s (infinite at s = 1)."""
    return s / (1 - s)


def flow_level(t: Number, tau: float) -> Number:
    """The flow level matched to bridge time t: s = sigma_t / (1 + sigma_t); 0 at t = 0, 1; symmetric in t <-> 1 - t."""
    return sigma_to_flow_level(sb_sigma(t, tau))


def flow_model_input_scale(t: Number, tau: float) -> Number:
    """The factor 1 - s = 1 / (1 + sigma_t) that turns the bridge state x_t into the flow model's input."""
    return 1 - flow_level(t, tau)


def flow_interpolant(sample: torch.Tensor, noise: torch.Tensor, s: Number) -> torch.Tensor:
    """The flow state z_s = (1 - s) x + s e (diffusers' ``FlowMatchEulerDiscreteScheduler.scale_noise``)."""
    return (1 - s) * sample + s * noise


def flow_velocity(sample: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching velocity target v = e - x."""
    return noise - sample


def velocity_to_sample(velocity: torch.Tensor, z: torch.Tensor, s: Number) -> torch.Tensor:
    """The data estimate xhat = z_s - s v from a velocity estimate at the flow state z_s."""
    return z - s * velocity


def velocity_to_noise(velocity: torch.Tensor, z: torch.Tensor, s: Number) -> torch.Tensor:
    """The noise estimate ehat = z_s + (1 - s) v from a velocity estimate at the flow state z_s."""
    return z + (1 - s) * velocity


def flow_predictors(x: torch.Tensor, velocity: torch.Tensor, t: float, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(xhat, eps) at bridge time t from the velocity a flow model returns on ``(1 - s) x`` (s = ``flow_level``).

    ``eps`` is the bridge noise predictor of the VP path (xhat = x - sigma_t eps, see
    ``lsb.bridges.updates.sb_predictors``); it equals the flow model's noise estimate ehat.
    """
    s = flow_level(t, tau)
    z = (1 - s) * x
    return velocity_to_sample(velocity, z, s), velocity_to_noise(velocity, z, s)


def flow_timestep(s: Number, num_train_timesteps: int = 1000) -> Number:
    """The timestep diffusers' flow schedulers list for level s: s * num_train_timesteps (SD3's transformer input;
    FLUX pipelines pass ``timestep / 1000`` = s)."""
    return s * num_train_timesteps


def sb_time_to_flow_timestep(t: Number, tau: float, num_train_timesteps: int = 1000) -> Number:
    """The flow timestep s * num_train_timesteps matched to bridge time t."""
    return flow_timestep(flow_level(t, tau), num_train_timesteps)


def flow_level_to_sb_time(s: Number, tau: float, side: str = "source") -> torch.Tensor:
    """Inverse of ``flow_level`` on one half of the bridge (float64): the t <= 1/2 (``source``) or t >= 1/2
    (``target``) bridge time whose sigma_t is s / (1 - s); levels beyond the bridge's largest noise map to t = 1/2.
    """
    sigma = flow_level_to_sigma(torch.as_tensor(s, dtype=torch.float64))
    return alpha_bar_to_sb_time(1.0 / (1.0 + sigma * sigma), tau, side)
