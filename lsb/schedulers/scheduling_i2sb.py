# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""I2SBScheduler: the Image-to-Image Schrödinger Bridge sampler (posterior sampling, OT-ODE) for diffusers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..bridges.paired import I2SBBridgeSchedule, I2SBPreconditioning, i2sb_posterior_step, i2sb_step_indices
from .common import StepIndexMixin, clip_prediction, per_sample_coef, step_noise, work_dtype as _work_dtype

PREDICTION_TYPES = ("sample", "epsilon")


@dataclass
class I2SBSchedulerOutput(BaseOutput):
    """
    Output of [`I2SBScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`):
            The bridge state X_{n_prev} at the next (smaller) index; after the last call, the restored image (index 0).
        pred_original_sample (`torch.Tensor`):
            The clean-image prediction x0hat used by this step (after clipping).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class I2SBScheduler(StepIndexMixin, SchedulerMixin, ConfigMixin):
    """
    `I2SBScheduler` runs the sampler of "I2SB: Image-to-Image Schrödinger Bridge" (Liu, Vahdat, Huang, Theodorou, Nie,
    Anandkumar; ICML 2023, arXiv 2302.05872) from a degraded image x_T (= the paper's X_1) to a clean image x_0.

    The bridge lives on indices n = 0 (clean) .. N - 1 (degraded) of a reference dX = sqrt(beta_n) dW with I2SB's
    symmetric betas ([`~lsb.bridges.paired.I2SBBridgeSchedule`]): X_n ~ N(mu_x0 X_0 + mu_x1 X_1, std_sb^2 I). The
    sampler starts at X_{N-1} = x_T itself (no added noise; `prepare_initial_sample`) and, at each index n of the grid
    round(k (N - 1) / NFE), predicts x0hat and draws from the DDPM posterior of the reference process

        X_prev ~ N((1 - r) x0hat + r X_n, sigma_prev^2 (1 - r) I),     r = sigma_prev^2 / sigma_n^2,  sigma = std_fwd

    (no noise on the step into index 0, and none at all with `ot_ode=True`).

    NFE: `num_inference_steps` is the NFE. `timesteps` holds the NFE indices n (descending, from N - 1) at which the
    network is called, one `step` per call; the last call moves to index 0.

    `model_output` is the network's clean-image prediction x0hat (`prediction_type="sample"`; a pipeline builds it
    with `precondition_inputs` / `precondition_noise` / `precondition_outputs`, I2SB's c_skip = 1, c_in = 1,
    c_out = -std_fwd[n], c_noise = I2SB's noise level, like [`EDMEulerScheduler`]), or the raw I2SB network output
    eps = (X_n - X_0) / std_fwd[n] (`prediction_type="epsilon"`, the official training label), from which
    x0hat = X_n - std_fwd[n] eps. `scale_model_input` is the identity: the input preconditioning is explicit.

    Differences from diffusers' scheduler contract:
        - The bridge starts from the degraded endpoint x_T, not from noise: `prepare_initial_sample(x_T)` is x_T itself
          (`init_noise_sigma` = 1 scales nothing), and `add_noise(original_samples, noise, timesteps, x_T)` needs x_T.
          `step` takes `x_T` (keyword) only for inpainting with `mask`.
        - `model_output` is the clean-image prediction (or I2SB's eps label); the preconditioning is explicit
          (`precondition_inputs` / `precondition_noise` / `precondition_outputs`) and `scale_model_input` is the
          identity. `timesteps` are integer bridge indices n, descending from N - 1.
        - No `trained_betas`: the schedule is I2SB's symmetric beta ramp (`beta_min`, `beta_max`).
        - `_compatibles` is empty: a bridge scheduler is no drop-in for the noise-to-image schedulers of Stable
          Diffusion, because it needs x_T and a network trained on the bridge.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            N, the number of bridge indices (I2SB's `interval`).
        beta_min (`float`, defaults to 0.1):
            N times the first beta (I2SB's `linear_start` = 1e-4).
        beta_max (`float`, defaults to 0.3):
            I2SB's `beta_max` (N times `linear_end`): 0.3 for JPEG restoration and super-resolution, 1.0 for
            deblurring and inpainting (used there with `ot_ode=True`).
        official_cumsum (`bool`, defaults to `False`):
            Reproduce the official code's cumulative sums, which include beta_n in both std_fwd[n] and std_bwd[n]
            (std_fwd[0] = 0.01, and the final step keeps r = 1e-4 / std_fwd[n]^2 of the last state); needed for
            checkpoints trained with the official code. `False` is the paper's continuous form (std_fwd[0] = 0).
        prediction_type (`str`, defaults to `"sample"`):
            `sample`: `model_output` is x0hat; `epsilon`: it is I2SB's (X_n - X_0) / std_fwd[n].
        official_grid (`bool`, defaults to `False`):
            Build the step grid exactly like the official `space_indices` (banker's rounding of an accumulated float
            stride) instead of rounding the exact fractions half to even; the two differ for some even NFEs (20, 22,
            26, ...) by one index at an exact half (see [`~lsb.bridges.paired.i2sb_step_indices`]).
        ot_ode (`bool`, defaults to `False`):
            I2SB's OT-ODE variant: no posterior noise (and `add_noise` returns the noise-free interpolant, the
            training input of OT-ODE models).
        clip_sample (`bool`, defaults to `False`):
            Clamp x0hat to [-clip_sample_range, clip_sample_range] (I2SB's `--clip-denoise`; off by default).
        clip_sample_range (`float`, defaults to 1.0):
            The clamp bound for `clip_sample`.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_min: float = 0.1,
        beta_max: float = 0.3,
        official_cumsum: bool = False,
        prediction_type: Literal["sample", "epsilon"] = "sample",
        official_grid: bool = False,
        ot_ode: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"Unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}.")
        self.bridge = I2SBBridgeSchedule(num_train_timesteps, beta_min, beta_max, official_cumsum)
        self.preconditioning = I2SBPreconditioning(self.bridge)
        self.init_noise_sigma = 1.0  # the initial sample is x_T itself

        self.num_inference_steps = None
        self.timesteps = torch.empty(0, dtype=torch.long)
        self.prev_timesteps = torch.empty(0, dtype=torch.long)
        self._step_index = None
        self._begin_index = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """
        Sets the bridge indices of the network calls (run before inference).

        Args:
            num_inference_steps (`int`):
                The NFE, 1 <= NFE <= N - 1. The grid is round(k (N - 1) / NFE), k = 0..NFE, with half-to-even
                rounding of the exact fraction (or the official float accumulation, `official_grid`).
            device (`str` or `torch.device`, *optional*):
                The device `timesteps` is moved to.
        """
        grid = i2sb_step_indices(self.config.num_train_timesteps, num_inference_steps, self.config.official_grid)
        self.timesteps = torch.tensor(grid[:0:-1], dtype=torch.long, device=device)  # n = grid[NFE], ..., grid[1]
        self.prev_timesteps = torch.tensor(grid[-2::-1], dtype=torch.long)  # n_prev = grid[NFE-1], ..., grid[0] = 0
        self.num_inference_steps = int(num_inference_steps)
        self._step_index = None
        self._begin_index = None

    def prepare_initial_sample(
        self,
        x_T: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The initial state X_{N-1}: the degraded image x_T itself (no noise is added).

        For inpainting, `mask` (1 = missing pixel, broadcastable to x_T) fills the hole with standard normal noise,
        (1 - mask) x_T + mask z, as I2SB does at training and test time; pass the same `mask` and the original x_T to
        every `step` to re-impose the known pixels.
        """
        if mask is None:
            return x_T
        noise = randn_tensor(x_T.shape, generator=generator, device=x_T.device, dtype=x_T.dtype)
        return (1 - mask) * x_T + mask * noise

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """The identity: I2SB's c_in is 1 (see `precondition_inputs`)."""
        return sample

    def precondition_inputs(self, sample: torch.Tensor, timestep: int | torch.Tensor) -> torch.Tensor:
        """c_in x_t with I2SB's c_in = 1."""
        return sample

    def precondition_noise(self, timestep: int | torch.Tensor) -> torch.Tensor:
        """The network's time input at index n: I2SB's noise level linspace(1e-4, 1, N)[n] * N (about n)."""
        n = torch.as_tensor(timestep).long().cpu()
        return self.preconditioning.noise_levels[n].to(torch.float32)

    def precondition_outputs(
        self, sample: torch.Tensor, model_output: torch.Tensor, timestep: int | torch.Tensor
    ) -> torch.Tensor:
        """x0hat = c_skip x_t + c_out F = x_t - std_fwd[n] F from the network output F = (X_n - X_0) / std_fwd[n]."""
        return sample - self._std(timestep, sample) * model_output

    def _std(self, timestep, like: torch.Tensor):
        n = torch.as_tensor(timestep).long().reshape(-1).cpu()
        return per_sample_coef(self.bridge.std_fwd[n], like)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        x_T: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> I2SBSchedulerOutput | tuple:
        """
        One network call: move X_n to X_{n_prev} by posterior sampling (or its mean, under `ot_ode`).

        Args:
            model_output (`torch.Tensor`):
                x0hat (`prediction_type="sample"`) or I2SB's (X_n - X_0) / std_fwd[n] (`"epsilon"`) at `sample`.
            timestep (`int` or `torch.Tensor`):
                The current entry n of `timesteps` (the scheduler tracks its position by a call counter).
            sample (`torch.Tensor`):
                The current bridge state X_n.
            x_T (`torch.Tensor`, *optional*):
                The degraded image; needed only with `mask`.
            mask (`torch.Tensor`, *optional*):
                Inpainting mask (1 = missing). After the update the known pixels are reset to
                x_T + std_sb[n_prev] z (exactly x_T under `ot_ode`), as I2SB does.
            generator (`torch.Generator`, *optional*):
                Random generator for the posterior noise.
            variance_noise (`torch.Tensor`, *optional*):
                Pre-drawn standard normal noise for the posterior draw (instead of `generator`).
            return_dict (`bool`, defaults to `True`):
                Whether to return an [`I2SBSchedulerOutput`] or a tuple.

        Returns:
            [`I2SBSchedulerOutput`] or `tuple` `(prev_sample, pred_original_sample)`.
        """
        i = self._begin_step(len(self.timesteps))
        if mask is not None and x_T is None:
            raise ValueError("I2SB inpainting (`mask`) needs the degraded image `x_T`.")
        n, n_prev = int(self.timesteps[i]), int(self.prev_timesteps[i])

        work_dtype = _work_dtype(sample.dtype)
        x = sample.to(work_dtype)
        std_n, std_prev = self.bridge.std_fwd[n].item(), self.bridge.std_fwd[n_prev].item()
        out = model_output.to(work_dtype)
        x0_hat = clip_prediction(out if self.config.prediction_type == "sample" else x - std_n * out, self.config)

        noise = None
        if not self.config.ot_ode and n_prev > 0:
            noise = step_noise(x, generator, variance_noise)
        x = i2sb_posterior_step(x, x0_hat, std_n, std_prev, noise)

        if mask is not None:
            known = x_T.to(work_dtype)
            if not self.config.ot_ode:
                known_noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=work_dtype)
                known = known + self.bridge.std_sb[n_prev].item() * known_noise
            mask = mask.to(device=x.device, dtype=work_dtype)
            x = (1 - mask) * known + mask * x

        return self._end_step(I2SBSchedulerOutput, sample.dtype, return_dict, x, x0_hat)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: int | torch.Tensor,
        x_T: torch.Tensor,
    ) -> torch.Tensor:
        """
        A draw of the bridge marginal at index n: mu_x0[n] x_0 + mu_x1[n] x_T + std_sb[n] noise (I2SB's `q_sample`;
        the noise-free interpolant under `ot_ode`). `timesteps` is one index or one per sample.
        """
        work_dtype = _work_dtype(original_samples.dtype)
        n = torch.as_tensor(timesteps).long().reshape(-1).cpu()

        def coef(table):
            return per_sample_coef(table[n], original_samples, work_dtype)

        x = coef(self.bridge.mu_x0) * original_samples.to(work_dtype) + coef(self.bridge.mu_x1) * x_T.to(work_dtype)
        if not self.config.ot_ode:
            x = x + coef(self.bridge.std_sb) * noise.to(work_dtype)
        return x.to(original_samples.dtype)

    def __len__(self):
        return self.config.num_train_timesteps
