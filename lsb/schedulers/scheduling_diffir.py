# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""DiffIRScheduler: DiffIR's short, deterministic diffusion on the compact IR prior (METHODS.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .common import StepIndexMixin


@dataclass
class DiffIRSchedulerOutput(BaseOutput):
    """
    Output of [`DiffIRScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`):
            Z at the previous (smaller) step index; after the last call, the generated prior Z_0 (which equals the
            last x0-prediction, since the posterior mean into index -1 is the prediction itself).
        pred_original_sample (`torch.Tensor`):
            The x0-prediction Ẑ_0 that this step used.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class DiffIRScheduler(StepIndexMixin, SchedulerMixin, ConfigMixin):
    r"""
    `DiffIRScheduler` runs the prior diffusion of "DiffIR: Efficient Diffusion Model for Image Restoration" (Xia et al.,
    ICCV 2023, arXiv 2303.09472) on the IR prior representation Z (a vector per image, not an image).

    Forward process over indices t = 0 .. T-1 (T = `num_train_timesteps` = 4):
    Z_t = sqrt(ᾱ_t) Z + sqrt(1 - ᾱ_t) ε with β = linspace(sqrt(β_start), sqrt(β_end), T)², ᾱ_t = Π_{s<=t} (1 - β_s)
    (defaults: β = [0.100, 0.294, 0.591, 0.990], ᾱ = [0.900, 0.635, 0.260, 0.0026]).

    Reverse process: x0-parameterised and **deterministic**: every step returns the DDPM posterior mean, never adds
    noise (the official `p_sample` returns `model_mean`; clipping off):

        Z_prev = c1 Ẑ_0 + c2 Z_t,   c1 = sqrt(ᾱ_prev) β_{t|prev} / (1 - ᾱ_t),   c2 = sqrt(α_{t|prev}) (1 - ᾱ_prev) / (1 - ᾱ_t)

    with α_{t|prev} = ᾱ_t / ᾱ_prev, β_{t|prev} = 1 - α_{t|prev} (for adjacent indices these are β_t and α_t, the
    paper's formula) and ᾱ_{-1} = 1, so the last step returns Ẑ_0 itself. The only randomness of sampling is the
    initial Z_{T-1} ~ N(0, I); training starts instead from `add_noise(Z_S1, ε, T-1)` and back-propagates through
    all steps (METHODS.md pitfall 2).

    NFE: `num_inference_steps` is the number of denoiser calls (default and paper: T = 4, every index). Fewer steps
    use the grid round(linspace(T-1, 0, n)) with the same posterior mean between non-adjacent indices.
    `timesteps` are the integer indices t; the denoiser's time input is t / (10 T) (done by
    [`~lsb.models.diffir.PriorDenoiser`]). All coefficient math is float64; `step` keeps the sample's dtype and is
    differentiable (the coefficients are Python floats).

    Differences from diffusers' scheduler contract:
        - `num_inference_steps` is at most T = 4 (the whole prior diffusion has four steps); `set_timesteps()` with
          no argument uses all of them, and `timesteps` is set from the start (like `DDPMScheduler`), so `step` works
          before `set_timesteps`. `step` is keyed by its `timestep` (like `DDPMScheduler`), not by the call counter:
          any index of the schedule may be stepped again (`step_index` only counts calls).
        - `trained_betas` must have exactly T entries (diffusers' VP schedulers do not check the length).
        - `_compatibles` is empty: the prior diffusion runs on DiffIR's IR prior vector, not on a latent image, so no
          diffusers scheduler is a drop-in.

    Args:
        num_train_timesteps (`int`, defaults to 4): T.
        beta_start (`float`, defaults to 0.1): β_0.
        beta_end (`float`, defaults to 0.99): β_{T-1}.
        trained_betas (`np.ndarray` or `list[float]`, *optional*): the T betas, bypassing `beta_start` / `beta_end`.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 4,
        beta_start: float = 0.1,
        beta_end: float = 0.99,
        trained_betas: list[float] | None = None,
    ):
        if not (isinstance(num_train_timesteps, (int, np.integer)) and num_train_timesteps >= 1):
            raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64).reshape(-1)
            if len(betas) != num_train_timesteps or not ((betas > 0) & (betas < 1)).all():
                raise ValueError(
                    f"trained_betas must hold num_train_timesteps={num_train_timesteps} values in (0, 1), "
                    f"got {betas.tolist()}"
                )
            self.betas = betas
        elif not (0 < beta_start <= beta_end < 1):
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        else:
            self.betas = np.linspace(np.sqrt(beta_start), np.sqrt(beta_end), num_train_timesteps, dtype=np.float64) ** 2
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)
        self._step_index = None
        self._begin_index = None

    def _alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None):
        """The step indices, descending from T-1; `num_inference_steps` in 1..T (default T)."""
        T = self.config.num_train_timesteps
        n = T if num_inference_steps is None else num_inference_steps
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
            raise ValueError(
                f"num_inference_steps must be an integer in [1, {T}] (the prior diffusion has "
                f"{T} steps), got {num_inference_steps!r}"
            )
        grid = np.round(np.linspace(T - 1, 0, n)).astype(np.int64) if n > 1 else np.array([T - 1])
        self.num_inference_steps = int(n)
        self.timesteps = torch.from_numpy(grid).to(device)
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def previous_timestep(self, timestep) -> int:
        ts = [int(t) for t in self.timesteps]
        t = int(timestep)
        if t not in ts:
            raise ValueError(f"timestep {t} is not one of the scheduler's timesteps {ts}")
        i = ts.index(t)
        return ts[i + 1] if i + 1 < len(ts) else -1

    def posterior_coefficients(self, timestep, prev_timestep: int | None = None) -> tuple[float, float]:
        """(c1, c2) of the posterior mean Z_prev = c1 Ẑ_0 + c2 Z_t (float64 math)."""
        t = int(timestep)
        s = self.previous_timestep(t) if prev_timestep is None else int(prev_timestep)
        ab_t, ab_s = self._alpha_bar(t), self._alpha_bar(s)
        alpha = ab_t / ab_s
        c1 = np.sqrt(ab_s) * (1.0 - alpha) / (1.0 - ab_t)
        c2 = np.sqrt(alpha) * (1.0 - ab_s) / (1.0 - ab_t)
        return float(c1), float(c2)

    def step(
        self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True
    ) -> DiffIRSchedulerOutput | tuple:
        """One reverse step: the posterior mean given the x0-prediction `model_output` (no noise)."""
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ in shape"
            )
        if self._step_index is None:
            self._init_step_index()
        c1, c2 = self.posterior_coefficients(timestep)
        prev = c1 * model_output + c2 * sample
        self._step_index += 1
        if not return_dict:
            return (prev, model_output)
        return DiffIRSchedulerOutput(prev_sample=prev, pred_original_sample=model_output)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """Z_t = sqrt(ᾱ_t) Z + sqrt(1 - ᾱ_t) ε (timesteps: an int or one index per row)."""
        t = torch.as_tensor(timesteps, dtype=torch.long).cpu().reshape(-1)
        if (t < 0).any() or (t >= self.config.num_train_timesteps).any():
            raise ValueError(f"timesteps must lie in [0, {self.config.num_train_timesteps - 1}], got {t.tolist()}")
        ab = torch.from_numpy(self.alphas_cumprod)[t].to(original_samples.device)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = ab.sqrt().reshape(shape).to(original_samples.dtype)
        b = (1 - ab).sqrt().reshape(shape).to(original_samples.dtype)
        return a * original_samples + b * noise

    def __len__(self):
        return self.config.num_train_timesteps


__all__ = ["DiffIRScheduler", "DiffIRSchedulerOutput"]
