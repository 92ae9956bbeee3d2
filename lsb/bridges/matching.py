"""SNR matching between the SB time t and the timestep s of a pretrained VP model (e.g. Stable Diffusion).

Kim, Kim & Ye 2024 (arXiv 2411.14863): with sigma_t^2 = tau t (1 - t),

    alphabar(t) = 1 / (1 + sigma_t^2),    y = sqrt(alphabar(t)) x_t = sqrt(alphabar) m + sqrt(1 - alphabar) z,

so y is distributed like a VP training input at the timestep s with alphas_cumprod(s) = alphabar(t).
s is continuous: ``alphas_cumprod`` (diffusers convention, index k = timestep k, no prepended 1.0)
is linearly interpolated, and ``timestep_to_alpha_bar`` uses the same interpolation, so the two
maps are exact inverses inside the table's range [alphas_cumprod[T-1], alphas_cumprod[0]].
Outside it the timestep is clamped to [0, T-1].
"""

from __future__ import annotations

import torch

from .schedules import Number


def sb_alpha_bar(t: Number, tau: float) -> Number:
    """SNR-matched VP signal level alphabar(t) = 1 / (1 + tau t (1 - t)); symmetric in t <-> 1 - t."""
    return 1.0 / (1.0 + tau * t * (1 - t))


def _as_f64(x, device=None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def alpha_bar_to_timestep(alpha_bar: Number, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Continuous timestep s with interp(alphas_cumprod)(s) = alpha_bar (vectorised, float64).

    ``alphas_cumprod`` must be non-increasing (flat segments map to their left end). Values above
    ``alphas_cumprod[0]`` map to 0, values below ``alphas_cumprod[-1]`` to ``T - 1``.
    """
    table = _as_f64(alphas_cumprod)
    ab = _as_f64(alpha_bar, device=table.device)
    num = table.shape[0]
    # -table is increasing: i = number of entries with table > ab, so table[i-1] > ab >= table[i]
    k = torch.searchsorted(-table, -ab.reshape(-1).contiguous()).reshape(ab.shape) - 1
    k = k.clamp(0, num - 2)
    upper, lower = table[k], table[k + 1]
    gap = upper - lower
    safe_gap = torch.where(gap > 0, gap, torch.ones_like(gap))
    frac = torch.where(gap > 0, (upper - ab) / safe_gap, torch.zeros_like(gap))
    return (k.to(torch.float64) + frac).clamp(0.0, num - 1.0)


def timestep_to_alpha_bar(timestep: Number, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod linearly interpolated at a (possibly non-integer) timestep, clamped to [0, T-1] (float64)."""
    table = _as_f64(alphas_cumprod)
    num = table.shape[0]
    s = _as_f64(timestep, device=table.device).clamp(0.0, num - 1.0)
    k = torch.floor(s).long().clamp(0, num - 2)
    frac = s - k.to(torch.float64)
    return table[k] + frac * (table[k + 1] - table[k])


def sb_time_to_timestep(t: Number, tau: float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The VP timestep whose alphas_cumprod equals the SB alphabar(t) (float64, clamped to [0, T-1])."""
    return alpha_bar_to_timestep(sb_alpha_bar(_as_f64(t), tau), alphas_cumprod)


def alpha_bar_to_sb_time(alpha_bar: Number, tau: float, side: str = "source") -> torch.Tensor:
    """Inverse of ``sb_alpha_bar`` on one half of the bridge.

    Solves tau t (1 - t) = 1 / alpha_bar - 1 for t <= 1/2 (``side="source"``) or t >= 1/2
    (``side="target"``). Noise levels beyond the bridge's maximum (sigma^2 > tau / 4) map to t = 1/2.
    """
    ab = _as_f64(alpha_bar)
    sigma2 = 1.0 / ab - 1.0
    disc = (1.0 - 4.0 * sigma2 / tau).clamp_min(0.0)
    t = 0.5 * (1.0 - torch.sqrt(disc))
    if side == "source":
        return t
    if side == "target":
        return 1.0 - t
    raise ValueError(f"side must be 'source' or 'target', got {side!r}")
