"""Paired pixel metrics for restoration: PSNR and SSIM on images in [0, 1].

``ssim`` is Wang et al. 2004's structural similarity with the usual constants (11 x 11 Gaussian window,
sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1), computed per channel over the valid window positions (no
padding) and averaged; ``psnr`` is 10 log10(1 / MSE) per image. Both take tensors (B, C, H, W) in [0, 1], and
return one value per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two image batches (B, C, H, W) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.double(), b.double()


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (data range 1)."""
    a, b = _check(a, b)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse.clamp_min(eps))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> torch.Tensor:
    """Per-image SSIM of images in [0, 1] (mean over channels and valid window positions)."""
    a, b = _check(a, b)
    c = a.shape[1]
    if min(a.shape[-2:]) < window:
        raise ValueError(f"images of {a.shape[-1]}x{a.shape[-2]} are smaller than the {window}x{window} SSIM window")
    w = _gaussian_window(window, sigma).to(a.device).expand(c, 1, window, window)

    def blur(x):
        return F.conv2d(x, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = k1**2, k2**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))
