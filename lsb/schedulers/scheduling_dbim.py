# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""DBIMScheduler: Diffusion Bridge Implicit Models (eta-family and high-order solvers) as a diffusers scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..bridges.paired import (
    SCHEDULES,
    dbim_multistep_step,
    dbim_step,
    make_bridge_schedule,
    make_preconditioning,
)
from .common import PreconditionedBridgeMixin, StepIndexMixin, bridge_add_noise, bridge_step_inputs, grid_start
from .common import step_noise


@dataclass
class DBIMSchedulerOutput(BaseOutput):
    """
    Output of [`DBIMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`):
            The bridge state at the next (smaller) time of the grid; after the last call, the sample at t_min.
        pred_original_sample (`torch.Tensor`):
            The clean-image prediction x0hat used by this step (after clipping and the inpainting mask).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class DBIMScheduler(StepIndexMixin, PreconditionedBridgeMixin, SchedulerMixin, ConfigMixin):
    """
    `DBIMScheduler` implements the samplers of "Diffusion Bridge Implicit Models" (Zheng, He, Chen, Bao, Zhu;
    ICLR 2025, arXiv 2405.15885) for paired bridges q(x_t | x_0, x_T) = N(a_t x_T + b_t x_0, c_t^2 I) trained as
    DDBM / I2SB denoisers x0hat = D(x_t, t, x_T).

    Grid (N = NFE - 1 steps): t_0 = T - `t_max_offset` > t_1 > ... > t_N = t_min, uniform in t.

    - Boot (call 1, at t = T exactly, on x_T): c_T = 0 makes the deterministic update singular, so the first step
      samples the Markovian boundary x_{t_0} = a x_T + b x0hat + c eps with the booting noise eps (the latent of
      DBIM's encoding / interpolation; kept as `booting_noise`).
    - Calls 2..NFE, at t_0 .. t_{N-1}: `solver_order=1` uses the non-Markovian eta-family (paper eq. 15)
      x_t = a_t x_T + b_t x0hat + sqrt(c_t^2 - omega^2) epshat + omega z, omega = eta alpha_t rho_t
      sqrt(1 - rho_t^2 / rho_s^2), no fresh noise on the last step; `solver_order=2, 3` use the deterministic
      exponential-integrator multistep solver in lambda = log(b_t / c_t), first order on the first loop step (and on
      the last with `lower_order_final`), second order on the second loop step for `solver_order=3`.

    NFE: `num_inference_steps` is the NFE. `timesteps` = [T, t_0, ..., t_{N-1}] are the NFE network calls, one
    `step` per call; the returned sample after the last call lies at t_min (not 0: a residual noise of scale
    c_{t_min} remains, as in the official sampler). `timesteps` are float64 times t (the pipeline feeds the network
    `precondition_noise(t)`).

    `model_output` is the denoiser's clean-image prediction x0hat. A pipeline builds it like [`EDMEulerScheduler`]:
    `precondition_outputs(x, F(precondition_inputs(x, t), precondition_noise(t), x_T), t)`, with DDBM's EDM-style
    preconditioning for `vp` / `ve` and I2SB's (c_out = -rho_t) for `i2sb`. `scale_model_input` is the identity.

    Differences from diffusers' scheduler contract:
        - `step` needs the degraded endpoint: `step(model_output, timestep, sample, x_T=x_T)` (ValueError without it),
          and so does `add_noise(original_samples, noise, timesteps, x_T)`; `prepare_initial_sample(x_T)` is x_T.
        - The first call (the boot, at t = T) draws the booting noise even for eta = 0: pass a `generator` (or
          `variance_noise`) for reproducible samples.
        - `model_output` is the denoiser's x0hat (explicit preconditioning); `scale_model_input` is the identity;
          `timesteps` are float64 times t.
        - No `trained_betas`: the bridge schedules are continuous (VP / VE) or I2SB's beta ramp.
        - `_compatibles` is empty: a bridge scheduler is no drop-in for the noise-to-image schedulers of Stable
          Diffusion, because it needs x_T and a network trained on the bridge.

    Args:
        schedule (`str`, defaults to `"vp"`):
            The bridge: `vp` (DDBM VP: beta_d, beta_min, T = 1), `ve` (DDBM VE: T = sigma_max) or `i2sb` (I2SB's
            symmetric betas: num_train_timesteps, beta_min, beta_max, official_cumsum; continuous t in [0, 1] is used
            at the index round((N - 1) t), like DBIM's `i2sb_cond`).
        eta (`float`, defaults to 0.0):
            The paper's eta in [0, 1]: 0 is the deterministic DBIM (ODE), 1 the Markovian bridge (for `i2sb`
            exactly I2SB's posterior sampling). Must be 0 for `solver_order` 2 or 3.
        solver_order (`int`, defaults to 1):
            The paper's solver order: 1 (the eta-family), 2 or 3 (deterministic high-order solvers). Named like
            [`DPMSolverMultistepScheduler`]'s `solver_order`; the class attribute `order` (calls per step) is 1.
        lower_order_final (`bool`, defaults to `True`):
            Use a first-order last step for `solver_order` 2 / 3 (the official setting).
        beta_d (`float`, defaults to 2.0):
            VP: slope of beta(t) = beta_min + beta_d t.
        beta_min (`float`, defaults to 0.1):
            VP: beta(0). I2SB: N times the first beta (I2SB's 1e-4).
        sigma_max (`float`, defaults to 80.0):
            VE: the terminal time T = rho_T.
        beta_max (`float`, defaults to 1.0):
            I2SB: N times the last beta of the ramp (DBIM's ImageNet inpainting uses 1.0).
        num_train_timesteps (`int`, defaults to 1000):
            I2SB: the number of indices N.
        official_cumsum (`bool`, defaults to `False`):
            I2SB: the official off-by-one cumulative sums (see [`~lsb.bridges.paired.i2sb_stds`]).
        t_min (`float`, *optional*):
            The last time of the grid; defaults to 1e-4 (`vp`, `i2sb`) or 0.002 (`ve`).
        t_max_offset (`float`, defaults to 1e-3):
            The loop grid starts at T - t_max_offset (the boot call is at T).
        sigma_data (`float`, defaults to 0.5):
            DDBM preconditioning (vp / ve): the data std sigma_0 = sigma_T.
        cov_xy (`float`, defaults to 0.0):
            DDBM preconditioning (vp / ve): the covariance of x_0 and x_T.
        clip_sample (`bool`, defaults to `False`):
            Clamp x0hat to [-clip_sample_range, clip_sample_range] (the official scripts clamp pixel images to [-1, 1]).
        clip_sample_range (`float`, defaults to 1.0):
            The clamp bound for `clip_sample`.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        schedule: Literal["vp", "ve", "i2sb"] = "vp",
        eta: float = 0.0,
        solver_order: int = 1,
        lower_order_final: bool = True,
        beta_d: float = 2.0,
        beta_min: float = 0.1,
        sigma_max: float = 80.0,
        beta_max: float = 1.0,
        num_train_timesteps: int = 1000,
        official_cumsum: bool = False,
        t_min: float | None = None,
        t_max_offset: float = 1e-3,
        sigma_data: float = 0.5,
        cov_xy: float = 0.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; expected one of {SCHEDULES}.")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}.")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}.")
        if solver_order > 1 and eta != 0.0:
            raise ValueError(
                f"the high-order DBIM solvers (solver_order={solver_order}) are deterministic: "
                f"eta must be 0, got {eta}."
            )
        if not t_max_offset > 0.0:
            raise ValueError(f"t_max_offset must be > 0 (c_T = 0 at T), got {t_max_offset}.")
        self.bridge = make_bridge_schedule(
            schedule,
            beta_d=beta_d,
            beta_min=beta_min,
            sigma_max=sigma_max,
            beta_max=beta_max,
            num_train_timesteps=num_train_timesteps,
            official_cumsum=official_cumsum,
            t_min=t_min,
        )
        self.preconditioning = make_preconditioning(self.bridge, sigma_data=sigma_data, cov_xy=cov_xy)
        self.init_noise_sigma = 1.0  # the initial sample is x_T itself

        self.num_inference_steps = None
        self.timesteps = torch.empty(0, dtype=torch.float64)
        self.bridge_times = torch.empty(0, dtype=torch.float64)
        self.booting_noise = None
        self._history: list[tuple[float, torch.Tensor]] = []
        self._step_index = None
        self._begin_index = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """
        Sets the boot time T and the grid t_0 = T - t_max_offset > ... > t_N = t_min, N = NFE - 1 (run before
        inference).

        Args:
            num_inference_steps (`int`):
                The NFE, at least 2 (one boot call and N >= 1 steps).
            device (`str` or `torch.device`, *optional*):
                The device `timesteps` is moved to. The grid `bridge_times` stays on CPU in float64.
        """
        if int(num_inference_steps) != num_inference_steps or num_inference_steps < 2:
            raise ValueError(f"the DBIM NFE must be an integer >= 2 (boot + 1 step), got {num_inference_steps}.")
        nfe = int(num_inference_steps)
        T, t_min = self.bridge.t_max, self.bridge.t_min
        t_start = grid_start(self.bridge, self.config.t_max_offset)
        if self.bridge.c(t_start) <= 0.0:
            raise ValueError(
                f"c_t vanishes at the first grid time {t_start} (I2SB index rounding): raise t_max_offset."
            )
        grid = torch.linspace(t_start, t_min, nfe, dtype=torch.float64)  # N + 1 = NFE times
        self.bridge_times = grid
        self.timesteps = torch.cat([torch.tensor([T], dtype=torch.float64), grid[:-1]]).to(device)
        self.num_inference_steps = nfe
        self.booting_noise = None
        self._history = []
        self._step_index = None
        self._begin_index = None

    def prepare_initial_sample(
        self, x_T: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """The initial state: x_T itself (the boot call evaluates the denoiser there; the booting noise is drawn in
        the first `step`)."""
        return x_T

    def _step_order(self, j: int) -> int:
        n_steps = self.num_inference_steps - 1
        if self.config.solver_order == 1 or j == 0 or (self.config.lower_order_final and j == n_steps - 1):
            return 1
        if self.config.solver_order == 2 or j == 1:
            return 2
        return 3

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        x_T: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DBIMSchedulerOutput | tuple:
        """
        One network call: the boot (first call) or one DBIM step t_j -> t_{j+1}.

        Args:
            model_output (`torch.Tensor`):
                The denoiser's x0hat at (`sample`, `timestep`).
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (the scheduler tracks its position by a call counter).
            sample (`torch.Tensor`):
                The current state (x_T for the boot call).
            x_T (`torch.Tensor`):
                The degraded endpoint (required).
            mask (`torch.Tensor`, *optional*):
                Inpainting mask (1 = missing): x0hat is replaced by x_T on the known pixels,
                mask x0hat + (1 - mask) x_T.
            generator (`torch.Generator`, *optional*):
                Random generator for the booting noise and (eta > 0) the step noise.
            variance_noise (`torch.Tensor`, *optional*):
                Pre-drawn standard normal noise for this call (the booting noise on the first call).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`DBIMSchedulerOutput`] or a tuple.

        Returns:
            [`DBIMSchedulerOutput`] or `tuple` `(prev_sample, pred_original_sample)`.
        """
        i = self._begin_step(self.num_inference_steps, x_T=x_T)

        x, x_end, x0_hat = bridge_step_inputs(sample, x_T, model_output, self.config)
        if mask is not None:
            mask = mask.to(device=x.device, dtype=x.dtype)
            x0_hat = mask * x0_hat + (1 - mask) * x_end

        def draw():
            return step_noise(x, generator, variance_noise)

        grid = self.bridge_times
        if i == 0:  # boot: sample the Markovian boundary q(x_{t_0} | x0hat(x_T, T), x_T)
            eps = draw()
            self.booting_noise = eps
            x = self.bridge.marginal(x0_hat, x_end, grid[0].item(), eps)
        else:
            j = i - 1
            s, t = grid[j].item(), grid[j + 1].item()
            last = j == self.num_inference_steps - 2
            k = self._step_order(j)
            if self.config.solver_order == 1:
                eta = self.config.eta
                noise = draw() if eta > 0.0 and not last else None
                x = dbim_step(x, x0_hat, x_end, self.bridge, s, t, eta, noise)
            else:
                past = self._history[len(self._history) - (k - 1) :] if k > 1 else []
                times = [u for u, _ in past] + [s]
                x0_hats = [v for _, v in past] + [x0_hat]
                x = dbim_multistep_step(x, x_end, x0_hats, times, self.bridge, t)
                self._history = (self._history + [(s, x0_hat)])[-2:]

        return self._end_step(DBIMSchedulerOutput, sample.dtype, return_dict, x, x0_hat)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor,
        x_T: torch.Tensor,
    ) -> torch.Tensor:
        """A draw a_t x_T + b_t x_0 + c_t noise of the bridge marginal at time(s) t (one, or one per sample)."""
        return bridge_add_noise(self.bridge, original_samples, noise, timesteps, x_T)
