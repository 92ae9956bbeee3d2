"""Latent Schrödinger Bridge (LSB) predictors and one-step updates (Kim, Kim & Ye 2024, arXiv 2411.14863).

Bridge x_t = (1 - t) x_0 + t x_1 + sigma_t z with sigma_t^2 = tau t (1 - t). Its probability-flow ODE,
with the paper's classifier-free guidance weight w on the predictor difference, is

    dx/dt = v = w D + sigma_dot_t epshat,      D = xhat_tgt - xhat_src,

with the source / target predictors xhat_i ~ E[x_i | x_t] and the noise predictor epshat ~ E[z | x_t].
All three come from one VP model (Stable Diffusion) evaluated under two prompts after SNR matching
(``lsb.bridges.matching``): xhat_i = x_t - sigma_t eps_i, so D = -sigma_t (eps_tgt - eps_src).

Three integrators over [s, t], h = t - s, each costing one (batched) model call:

- ``euler_step``      x_t = x_s + h v(x_s, s)                                           (the paper)
- ``ddim_step``       D and epshat held constant, sigma integrated exactly:
                      x_t = x_s + w D h + (sigma_t - sigma_s) epshat                    (exact at sigma_1 = 0)
- ``multistep_step``  D and epshat extrapolated linearly from the previous step (Adams-Bashforth-type,
                      exact when D and epshat vary linearly in t):
                      x_t = ddim + w D' h^2 / 2 + E' (sigma_t h - int_s^t sigma_r dr)

Accuracy note: D is smooth in t, but when the target distribution has a density epshat behaves like
sqrt(1 - t) near t = 1, so the extrapolation is only first order in the last steps (global error ~h on the
Gaussian test bridge, yet 1.5-2x smaller than ``ddim`` at NFE 2-16). An exponential integrator over the
endpoint predictors is truly second order for w = 1 but damps the guidance drift and is less accurate at
w > 1 and low NFE, which is why the paper's parametrisation is extrapolated here.

Tensors are used in their dtype; coefficients are Python floats (double precision).
"""

from __future__ import annotations

import torch

from .schedules import sb_sigma, sb_sigma_dot, sb_sigma_integral

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
NOISE_PREDICTORS = ("switch", "interpolate")


def model_output_to_eps(
    model_output: torch.Tensor, y: torch.Tensor, alpha_bar: float | torch.Tensor, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Noise prediction eps from a VP model output at the input y = sqrt(ab) x0 + sqrt(1 - ab) eps.

    - ``epsilon``: the output is eps.
    - ``v_prediction``: v = sqrt(ab) eps - sqrt(1 - ab) x0, so eps = sqrt(ab) v + sqrt(1 - ab) y.
    - ``sample``: the output is x0, so eps = (y - sqrt(ab) x0) / sqrt(1 - ab).
    """
    if prediction_type == "epsilon":
        return model_output
    sqrt_ab = alpha_bar**0.5
    sqrt_one_minus_ab = (1 - alpha_bar) ** 0.5
    if prediction_type == "v_prediction":
        return sqrt_ab * model_output + sqrt_one_minus_ab * y
    if prediction_type == "sample":
        return (y - sqrt_ab * model_output) / sqrt_one_minus_ab
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}.")


def sb_noise_predictor(
    eps_src: torch.Tensor, eps_tgt: torch.Tensor, t: float, noise_predictor: str = "switch"
) -> torch.Tensor:
    """Noise predictor epshat at bridge time t from the two prompts' noise predictions.

    ``switch`` (the paper): eps_src for t <= 1/2, else eps_tgt. ``interpolate``: (1 - t) eps_src + t eps_tgt,
    which is E[z | x_t] whenever xhat_src, xhat_tgt are exact, because x_t = (1 - t) xhat_0 + t xhat_1 + sigma_t epshat.
    """
    if noise_predictor == "switch":
        return eps_src if t <= 0.5 else eps_tgt
    if noise_predictor == "interpolate":
        return (1 - t) * eps_src + t * eps_tgt
    raise ValueError(f"Unknown noise_predictor {noise_predictor!r}; expected one of {NOISE_PREDICTORS}.")


def sb_predictors(
    x: torch.Tensor,
    eps_src: torch.Tensor,
    eps_tgt: torch.Tensor,
    t: float,
    tau: float,
    noise_predictor: str = "switch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source, target and noise predictors (xhat_src, xhat_tgt, epshat) at bridge time t.

    xhat_i = x - sigma_t eps_i is the VP model's x0-prediction written in x space.
    """
    sigma = sb_sigma(t, tau)
    epshat = sb_noise_predictor(eps_src, eps_tgt, t, noise_predictor)
    return x - sigma * eps_src, x - sigma * eps_tgt, epshat


def sb_velocity(
    xhat_src: torch.Tensor,
    xhat_tgt: torch.Tensor,
    epshat: torch.Tensor,
    t: float,
    tau: float,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """PF-ODE drift v = w (xhat_tgt - xhat_src) + sigma_dot_t epshat, for 0 < t < 1."""
    return guidance_scale * (xhat_tgt - xhat_src) + sb_sigma_dot(t, tau) * epshat


def euler_step(
    sample: torch.Tensor,
    xhat_src: torch.Tensor,
    xhat_tgt: torch.Tensor,
    epshat: torch.Tensor,
    t: float,
    t_next: float,
    tau: float,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The paper's explicit Euler step x_{t_next} = x_t + (t_next - t) v(x_t, t); needs t < 1."""
    return sample + (t_next - t) * sb_velocity(xhat_src, xhat_tgt, epshat, t, tau, guidance_scale)


def ddim_step(
    sample: torch.Tensor,
    xhat_src: torch.Tensor,
    xhat_tgt: torch.Tensor,
    epshat: torch.Tensor,
    t: float,
    t_next: float,
    tau: float,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """First-order analytic step: D and epshat held constant over [t, t_next], the noise level integrated exactly.

        x_{t_next} = x_t + w D (t_next - t) + (sigma_{t_next} - sigma_t) epshat

    Reaches sigma = 0 at t_next = 1 without evaluating sigma_dot there; exact for the PF-ODE (w = 1,
    ``interpolate`` noise) when both endpoint distributions are point masses.
    """
    delta = xhat_tgt - xhat_src
    return sample + (guidance_scale * (t_next - t)) * delta + (sb_sigma(t_next, tau) - sb_sigma(t, tau)) * epshat


def multistep_step(
    sample: torch.Tensor,
    xhat_src: torch.Tensor,
    xhat_tgt: torch.Tensor,
    epshat: torch.Tensor,
    t: float,
    t_next: float,
    tau: float,
    guidance_scale: float = 1.0,
    prev_delta: torch.Tensor | None = None,
    prev_epshat: torch.Tensor | None = None,
    t_prev: float | None = None,
) -> torch.Tensor:
    """Two-step multistep (Adams-Bashforth-type) step; falls back to ``ddim_step`` without history.

    D(r) = D + (r - t) D' and epshat(r) = epshat + (r - t) E' with backward differences
    D' = (D - prev_delta) / (t - t_prev), E' = (epshat - prev_epshat) / (t - t_prev), integrated exactly:

        x_{t_next} = ddim_step + w D' h^2 / 2 + E' int_t^{t_next} sigma_dot_r (r - t) dr,
        int_t^{t_next} sigma_dot_r (r - t) dr = sigma_{t_next} h - int_t^{t_next} sigma_r dr,   h = t_next - t.

    ``prev_epshat`` must be the previous step's noise predictor on the same branch as ``epshat``: for the
    ``switch`` predictor the previous eps of the prompt that is active *now*, so the switch at t = 1/2 never
    enters a difference (``sb_noise_predictor(prev_eps_src, prev_eps_tgt, t, ...)``); for ``interpolate``
    the previous interpolated noise (``sb_noise_predictor(..., t_prev, ...)``).
    """
    x_next = ddim_step(sample, xhat_src, xhat_tgt, epshat, t, t_next, tau, guidance_scale)
    if prev_delta is None or prev_epshat is None or t_prev is None:
        return x_next
    h = t_next - t
    h_prev = t - t_prev
    delta_slope = ((xhat_tgt - xhat_src) - prev_delta) / h_prev
    eps_slope = (epshat - prev_epshat) / h_prev
    eps_weight = sb_sigma(t_next, tau) * h - sb_sigma_integral(t, t_next, tau)
    return x_next + (guidance_scale * h * h / 2) * delta_slope + eps_weight * eps_slope
