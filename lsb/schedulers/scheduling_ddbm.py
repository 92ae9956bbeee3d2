# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""DDBMScheduler: the hybrid Heun sampler of Denoising Diffusion Bridge Models as a diffusers scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..bridges.paired import (
    DDBMPreconditioning,
    ddbm_ode_drift,
    ddbm_sde_drift,
    karras_times,
    make_bridge_schedule,
)
from .common import PreconditionedBridgeMixin, StepIndexMixin, bridge_add_noise, bridge_step_inputs, grid_start
from .common import step_noise

DDBM_SCHEDULES = ("vp", "ve")


@dataclass
class DDBMSchedulerOutput(BaseOutput):
    """
    Output of [`DDBMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`):
            The state the next network call is made on (after a churn step: x at t_hat; after the first Heun call:
            the Euler predictor at t_{i+1}; after the second: the corrected x at t_{i+1}); after the last call, the
            sample at t = 0.
        pred_original_sample (`torch.Tensor`):
            The clean-image prediction x0hat used by this call (after clipping).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class DDBMScheduler(StepIndexMixin, PreconditionedBridgeMixin, SchedulerMixin, ConfigMixin):
    """
    `DDBMScheduler` implements the hybrid (stochastic + Heun) sampler of "Denoising Diffusion Bridge Models" (Zhou, Lou,
    Khanna, Ermon; ICLR 2024, arXiv 2309.16948, Algorithm 1) on the DDBM VP or VE bridge
    q(x_t | x_0, x_T) = N(a_t x_T + b_t x_0, c_t^2 I).

    Grid: the Karras times t_0 = T - `t_max_offset` > ... > t_{N-1} = t_min (exponent `rho`) and t_N = 0, starting from
    x = x_T. For each interval i, with t_hat = t_i + s_churn (t_{i+1} - t_i):

    1. churn (if s_churn > 0): one Euler-Maruyama step t_i -> t_hat of the reverse bridge SDE
       dx = [f x - g^2 (s - h)] dt + g dw, with the bridge score s = -(x - a_t x_T - b_t x0hat) / c_t^2 and the
       Doob h-term h = (alphabar_t x_T - x) / (alpha_t^2 rhobar_t^2);
    2. Heun t_hat -> t_{i+1} on the PF-ODE dx/dt = f x - g^2 (s / 2 - w h) (w = `guidance`), except on the last
       interval (t_N = 0), where it is a single Euler step.

    NFE: `num_inference_steps` is N, the number of intervals (the official `steps`). Every interval costs a churn
    call (if s_churn > 0) and two Heun calls, the last interval one Euler call: NFE = 3N - 1 with churn (N = 40 gives
    119, reported as "118" in the papers; N = round((NFE + 1) / 3) for a target NFE, see `num_steps_for_nfe`) and
    2N - 1 without. `timesteps` lists exactly these calls (duplicated times included, like diffusers'
    [`HeunDiscreteScheduler`]); the pipeline calls the network and `step` once per entry, and the scheduler keeps
    the Heun state between the two calls of an interval. `order` is the number of calls per interval (3 or 2).

    `model_output` is the denoiser's clean-image prediction x0hat. A pipeline builds it like [`EDMEulerScheduler`]:
    `precondition_outputs(x, F(precondition_inputs(x, t), precondition_noise(t), x_T), t)` with DDBM's EDM-style
    preconditioning (sigma_data, cov_xy). `scale_model_input` is the identity. `timesteps` are float64 times t.

    Differences from diffusers' scheduler contract:
        - `step` needs the degraded endpoint: `step(model_output, timestep, sample, x_T=x_T)` (ValueError without it),
          and so does `add_noise(original_samples, noise, timesteps, x_T)`; `prepare_initial_sample(x_T)` is x_T.
        - `num_inference_steps` is the number of Karras intervals N, not the NFE: `timesteps` lists every network
          call (3N - 1 with churn, 2N - 1 without; repeated times as in [`HeunDiscreteScheduler`]), and `order` is the
          number of calls per interval.
        - `model_output` is the denoiser's x0hat (explicit EDM-style preconditioning); `scale_model_input` is the
          identity; `timesteps` are float64 times t.
        - No `trained_betas`: the bridge schedule is continuous (VP: `beta_d`, `beta_min`; VE: `sigma_max`).
        - `_compatibles` is empty: a bridge scheduler is no drop-in for the noise-to-image schedulers of Stable
          Diffusion, because it needs x_T and a network trained on the bridge.

    Args:
        schedule (`str`, defaults to `"vp"`):
            `vp` (beta(t) = beta_min + beta_d t, T = 1) or `ve` (rho_t = t, T = sigma_max).
        beta_d (`float`, defaults to 2.0):
            VP: the slope of beta(t).
        beta_min (`float`, defaults to 0.1):
            VP: beta(0).
        sigma_max (`float`, defaults to 80.0):
            VE: the terminal time T (DDBM: 80 for edges2handbags, 20 for DIODE).
        t_min (`float`, *optional*):
            The smallest Karras time; defaults to 1e-4 (`vp`) or 0.002 (`ve`; DIODE used 5e-4).
        t_max_offset (`float`, defaults to 1e-4):
            The Karras grid starts at T - t_max_offset.
        rho (`float`, defaults to 7.0):
            The Karras exponent.
        s_churn (`float`, defaults to 0.33):
            DDBM's `churn_step_ratio` in [0, 1): the fraction of each interval done by the stochastic churn step
            (0 disables it).
        guidance (`float`, defaults to 1.0):
            DDBM's w, the weight of the h-term in the PF-ODE (1 is exact; the churn step always uses 1).
        sigma_data (`float`, defaults to 0.5):
            Preconditioning: the data std sigma_0 = sigma_T.
        cov_xy (`float`, defaults to 0.0):
            Preconditioning: the covariance of x_0 and x_T.
        clip_sample (`bool`, defaults to `False`):
            Clamp x0hat to [-clip_sample_range, clip_sample_range] (the official scripts clamp pixel images to [-1, 1]).
        clip_sample_range (`float`, defaults to 1.0):
            The clamp bound for `clip_sample`.
    """

    _compatibles = []

    @register_to_config
    def __init__(
        self,
        schedule: Literal["vp", "ve"] = "vp",
        beta_d: float = 2.0,
        beta_min: float = 0.1,
        sigma_max: float = 80.0,
        t_min: float | None = None,
        t_max_offset: float = 1e-4,
        rho: float = 7.0,
        s_churn: float = 0.33,
        guidance: float = 1.0,
        sigma_data: float = 0.5,
        cov_xy: float = 0.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ):
        if schedule not in DDBM_SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r} for DDBMScheduler; expected one of {DDBM_SCHEDULES}.")
        if not 0.0 <= s_churn < 1.0:
            raise ValueError(f"s_churn (DDBM's churn_step_ratio) must lie in [0, 1), got {s_churn}.")
        if not t_max_offset >= 0.0:
            raise ValueError(f"t_max_offset must be >= 0, got {t_max_offset}.")
        self.bridge = make_bridge_schedule(schedule, beta_d=beta_d, beta_min=beta_min, sigma_max=sigma_max, t_min=t_min)
        self.preconditioning = DDBMPreconditioning(self.bridge, sigma_data=sigma_data, cov_xy=cov_xy)
        self.init_noise_sigma = 1.0  # the initial sample is x_T itself

        self.num_inference_steps = None
        self.timesteps = torch.empty(0, dtype=torch.float64)
        self.bridge_times = torch.empty(0, dtype=torch.float64)
        self.phases: list[str] = []
        self._intervals: list[int] = []
        self._heun_state = None
        self._step_index = None
        self._begin_index = None

    @property
    def order(self) -> int:
        """Network calls per interval: 3 with churn (churn + two Heun calls), 2 without."""
        return 3 if self.config.s_churn > 0 else 2

    @staticmethod
    def num_steps_for_nfe(nfe: int, s_churn: float = 0.33) -> int:
        """The number of intervals N for a target NFE: round((NFE + 1) / 3) with churn (the official scripts'
        N = (NFE + 1) / 3), (NFE + 1) / 2 without; the exact NFE is then `len(timesteps)`."""
        return max(1, round((nfe + 1) / (3 if s_churn > 0 else 2)))

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """
        Sets the Karras grid and the list of network calls (run before inference).

        Args:
            num_inference_steps (`int`):
                N >= 1, the number of Karras intervals; NFE = len(timesteps) = 3N - 1 (churn) or 2N - 1.
            device (`str` or `torch.device`, *optional*):
                The device `timesteps` is moved to. The grid `bridge_times` stays on CPU in float64.
        """
        if int(num_inference_steps) != num_inference_steps or num_inference_steps < 1:
            raise ValueError(
                f"num_inference_steps (DDBM's N intervals) must be an integer >= 1, got {num_inference_steps}."
            )
        n = int(num_inference_steps)
        t_start = grid_start(self.bridge, self.config.t_max_offset)
        grid = karras_times(n, self.bridge.t_min, t_start, self.config.rho) + [0.0]
        churn = self.config.s_churn

        times, phases, intervals = [], [], []
        for i in range(n):
            t_hat = grid[i] + churn * (grid[i + 1] - grid[i])
            calls = [("churn", grid[i])] if churn > 0 else []
            if i == n - 1:
                calls += [("euler", t_hat)]
            else:
                calls += [("heun1", t_hat), ("heun2", grid[i + 1])]
            for phase, t in calls:
                phases.append(phase)
                times.append(t)
                intervals.append(i)

        self.bridge_times = torch.tensor(grid, dtype=torch.float64)
        self.timesteps = torch.tensor(times, dtype=torch.float64).to(device)
        self.phases = phases
        self._intervals = intervals
        self.num_inference_steps = n
        self._heun_state = None
        self._step_index = None
        self._begin_index = None

    @property
    def nfe(self) -> int:
        """Network calls of the current schedule (= len(timesteps))."""
        return len(self.phases)

    def prepare_initial_sample(
        self, x_T: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """The initial state: x_T itself (placed at t_0 = T - t_max_offset, as in the official sampler)."""
        return x_T

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        x_T: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDBMSchedulerOutput | tuple:
        """
        One network call of the hybrid sampler (a churn, first Heun, second Heun or final Euler call; `phases`).

        Args:
            model_output (`torch.Tensor`):
                The denoiser's x0hat at (`sample`, `timestep`).
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (the scheduler tracks its position by a call counter).
            sample (`torch.Tensor`):
                The state the network was called on (the previous call's `prev_sample`, x_T for the first).
            x_T (`torch.Tensor`):
                The degraded endpoint (required).
            generator (`torch.Generator`, *optional*):
                Random generator for the churn step's noise.
            variance_noise (`torch.Tensor`, *optional*):
                Pre-drawn standard normal noise for a churn call (instead of `generator`).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`DDBMSchedulerOutput`] or a tuple.

        Returns:
            [`DDBMSchedulerOutput`] or `tuple` `(prev_sample, pred_original_sample)`.
        """
        k = self._begin_step(self.nfe, x_T=x_T)

        x, x_end, x0_hat = bridge_step_inputs(sample, x_T, model_output, self.config)

        phase, i = self.phases[k], self._intervals[k]
        grid, churn, w = self.bridge_times, self.config.s_churn, self.config.guidance
        t_i, t_next = grid[i].item(), grid[i + 1].item()
        t_hat = t_i + churn * (t_next - t_i)
        bridge = self.bridge

        if phase == "churn":  # Euler-Maruyama step of the reverse bridge SDE, t_i -> t_hat (dt < 0)
            dt = t_hat - t_i
            z = step_noise(x, generator, variance_noise)
            drift = ddbm_sde_drift(x, x_end, x0_hat, bridge, t_i)
            x = x + drift * dt + (abs(dt) * bridge.g2(t_i)) ** 0.5 * z
        elif phase == "heun1":  # Euler predictor t_hat -> t_{i+1}; keep (x, d) for the corrector
            d = ddbm_ode_drift(x, x_end, x0_hat, bridge, t_hat, w)
            self._heun_state = (x, d)
            x = x + d * (t_next - t_hat)
        elif phase == "heun2":  # trapezoidal corrector with the slope at the predictor
            if self._heun_state is None:
                raise ValueError(
                    f"call {k} is the second Heun call of an interval whose first call was not made: a `begin_index` "
                    f"must be a multiple of `order` ({self.order})."
                )
            x_hat, d = self._heun_state
            d_next = ddbm_ode_drift(x, x_end, x0_hat, bridge, t_next, w)
            x = x_hat + 0.5 * (d + d_next) * (t_next - t_hat)
            self._heun_state = None
        else:  # "euler": the last interval, t_hat -> 0
            d = ddbm_ode_drift(x, x_end, x0_hat, bridge, t_hat, w)
            x = x + d * (t_next - t_hat)

        return self._end_step(DDBMSchedulerOutput, sample.dtype, return_dict, x, x0_hat)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor,
        x_T: torch.Tensor,
    ) -> torch.Tensor:
        """A draw a_t x_T + b_t x_0 + c_t noise of the bridge marginal at time(s) t (one, or one per sample)."""
        return bridge_add_noise(self.bridge, original_samples, noise, timesteps, x_T)
